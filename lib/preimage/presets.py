"""The paper's recipes: learning-rate schedules, per-layer λ, and the quick profile."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import SettingsError


@dataclass(frozen=True)
class Schedule:
    """Piecewise-constant learning rate: ``steps`` is ((rate, iterations), ...). Momentum
    restarts from zero whenever the rate changes."""

    steps: tuple[tuple[float, int], ...]

    @property
    def iterations(self) -> int:
        return sum(n for _, n in self.steps)

    def rates(self) -> list[float]:
        return [rate for rate, n in self.steps for _ in range(n)]

    def scaled(self, iterations: int) -> "Schedule":
        """The same rates over ``iterations`` in total, each phase kept in proportion."""
        if not isinstance(iterations, int) or iterations < 1:
            raise SettingsError(f"iterations must be a positive integer, not {iterations!r}")
        total, done, steps = self.iterations, 0, []
        for i, (rate, n) in enumerate(self.steps):
            end = round(iterations * sum(m for _, m in self.steps[:i + 1]) / total)
            if end > done:
                steps.append((rate, end - done))
                done = end
        return Schedule(tuple(steps))

    def shortened(self, iterations: int) -> "Schedule":
        """The same rates over ``iterations``: half at the first rate, where most of the progress
        is made, the rest shared by the later rates. (Measured on AlexNet conv1, random weights:
        100 iterations this way reach the error of the full 400, 0.16; ``scaled(100)`` reaches 0.26.)"""
        if not isinstance(iterations, int) or iterations < len(self.steps):
            raise SettingsError(f"iterations must be an integer >= {len(self.steps)}, not {iterations!r}")
        first = iterations - (iterations // 2) if len(self.steps) > 1 else iterations
        rest = self.steps[1:]
        steps = [(self.steps[0][0], first)]
        for i, (rate, _) in enumerate(rest):
            share = (iterations - first) * (i + 1) // len(rest) - (iterations - first) * i // len(rest)
            steps.append((rate, share))
        return Schedule(tuple((r, n) for r, n in steps if n > 0))

    def describe(self) -> list[list[float]]:
        return [[rate, n] for rate, n in self.steps]


# Reference code (experiment_cnn.m, experiment_shallow.m), rates for the normalised variable u.
CNN = Schedule(((0.004, 100), (0.0004, 200), (0.00004, 100)))
SHALLOW = Schedule(((0.004, 200), (0.0004, 200), (0.00004, 200), (0.000004, 200)))
RECEPTIVE_FIELD = Schedule(((0.0004, 200), (0.00004, 200), (0.000004, 200)))
# Not in the paper: Adam on x / 68.9 (pixels in units of a typical pixel's RMS), same phases.
ADAM = Schedule(((0.05, 100), (0.005, 200), (0.0005, 100)))

SHALLOW_MODELS = ("hog", "hogb", "dsift")


def default_schedule(model: str, optimizer: str = "sgd") -> Schedule:
    """The reference schedule for ``model``: SHALLOW for HOG/DSIFT, CNN otherwise (ADAM for Adam)."""
    if optimizer == "adam":
        return ADAM
    return SHALLOW if model in SHALLOW_MODELS else CNN


SCHEDULES = {"cnn": CNN, "shallow": SHALLOW, "receptive_field": RECEPTIVE_FIELD, "adam": ADAM}

# Fig. 6: λ_TV by layer block (layers 1-6: 1, 7-12: 10, 13-20: 100 in CaffeNet's numbering).
FIG6_LAMBDA_TV = {**dict.fromkeys(["conv1", "relu1", "pool1", "norm1", "conv2", "relu2"], 1.0),
                  **dict.fromkeys(["pool2", "norm2", "conv3", "relu3", "conv4", "relu4"], 10.0),
                  **dict.fromkeys(["conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8"], 100.0)}

# The same blocks for the offline network: early stages 1, middle 10, late 100.
EFFICIENTNET_LAMBDA_TV = {**dict.fromkeys(["stem", "stage1", "stage2"], 1.0),
                          **dict.fromkeys(["stage3", "stage4", "stage5"], 10.0),
                          **dict.fromkeys(["stage6", "stage7", "head", "pool", "logits"], 100.0)}
_LAMBDA_TV = {"alexnet": FIG6_LAMBDA_TV, "caffenet": FIG6_LAMBDA_TV, "efficientnet_lite0": EFFICIENTNET_LAMBDA_TV}


def lambda_tv_for(model: str, layer: str | None) -> float:
    """The paper's λ_TV for a layer (Fig. 6's blocks), 1 where the model has no such table."""
    return _LAMBDA_TV.get(model, {}).get(layer, 1.0)


# Layers where the reference recipe diverges, and what makes it converge. Measured on the offline
# network (chelsea, coffee, 3 restarts, λ_TV 1 to 100, 100 iterations): at η = 0.004 stage6 to
# logits blow up within 10-40 iterations; even at a tenth of the rates a few pixels, where the input
# gradient concentrates, run away until the α-norm overflows. A quarter of the rates with every
# iterate kept within the valid pixels 0..255 converges (stage6 0.19-0.25, logits 0.24-0.39 error);
# Adam leaves the start noise in place (0.49-0.96).
RATE_SCALE = {"efficientnet_lite0": dict.fromkeys(["stage6", "stage7", "head", "pool", "logits"], 0.25)}
PIXEL_RANGE = {"efficientnet_lite0": set(RATE_SCALE["efficientnet_lite0"])}


def pixel_range_for(model: str, layer: str | None) -> bool:
    """Whether inversions at ``layer`` keep their iterates in 0..255 (not in the paper; see above)."""
    return layer in PIXEL_RANGE.get(model, ())


def reference_schedule(model: str, layer: str | None = None, schedule: Schedule | None = None) -> Schedule:
    """``schedule`` (default: the model's reference schedule) with its rates scaled for
    ``layer`` where ``RATE_SCALE`` says so."""
    schedule = schedule or default_schedule(model)
    factor = RATE_SCALE.get(model, {}).get(layer, 1.0)
    return schedule if factor == 1.0 else Schedule(tuple((rate * factor, n) for rate, n in schedule.steps))


# The layers a quick overview shows, per model (the paper's spirit: early, middle, late, output).
OVERVIEW_LAYERS = {"alexnet": ["conv1", "relu3", "pool5", "fc8"], "caffenet": ["conv1", "relu3", "pool5", "fc8"],
                   "efficientnet_lite0": ["stem", "stage2", "stage4", "logits"]}

# Where a figure names a CaffeNet layer the model lacks: the layer doing the same job. For the
# offline network, by receptive field while the code is spatial (norm1 19 px = stage2, norm2
# 67 px = stage3), then by role (fc6/relu6 the last stage, fc7/relu7 the pooled vector, fc8 the
# logits); head is skipped because the reference schedule diverges there.
EQUIVALENT_LAYERS = {
    "alexnet": {"norm1": "pool1", "norm2": "pool2"},
    "efficientnet_lite0": {
        **dict.fromkeys(["conv1", "relu1"], "stem"), "pool1": "stage1",
        **dict.fromkeys(["norm1", "conv2", "relu2"], "stage2"), **dict.fromkeys(["pool2", "norm2"], "stage3"),
        **dict.fromkeys(["conv3", "relu3", "conv4", "relu4"], "stage4"),
        **dict.fromkeys(["conv5", "relu5"], "stage5"), "pool5": "stage6",
        **dict.fromkeys(["fc6", "relu6"], "stage7"), **dict.fromkeys(["fc7", "relu7"], "pool"), "fc8": "logits"},
}


def paper_layer(model: str, name: str, layers: list[str]) -> tuple[str, str]:
    """The layer of ``model`` (whose layers are ``layers``) standing for CaffeNet's ``name`` in a
    figure, and a note saying so when it is not ``name`` itself (empty otherwise)."""
    if name in layers:
        return name, ""
    other = EQUIVALENT_LAYERS.get(model, {}).get(name)
    if other is None or other not in layers:
        raise SettingsError(f"{model} has no layer {name!r} and no stand-in for it; pick one of {', '.join(layers)}")
    return other, f"{other} stands in for CaffeNet's {name}"


PROFILES = {"quick": 100, "paper": None}  # iterations per inversion; None keeps the schedule's


def schedule_for(profile: str, schedule: Schedule = CNN) -> Schedule:
    """``schedule`` as run in ``profile``: 'paper' keeps it, 'quick' shortens it for CPUs and CI."""
    if profile not in PROFILES:
        raise SettingsError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    n = PROFILES[profile]
    return schedule if n is None else schedule.shortened(n)
