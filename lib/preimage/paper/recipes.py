"""The papers' recipes: for a (model, layer, profile), the λ, schedule, pixel range (and for the
IJCV 2016 recipe the loss weight C, jitter stages and box) a paper's protocol inverts with, and
the figures' stand-in layers for networks other than CaffeNet.

``recipe`` is the one place these are worked out; the CLI, the sweeps, the explorer, Table 3 and the
notebooks all go through it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from .. import representations
from ..engine import optimise, parameterisations
from ..engine.objective import Setting
from ..engine.schedule import Schedule, Stage
from ..engine.transforms import Jitter, Transforms
from ..errors import SettingsError, unknown

# The reference schedules (§3; experiment_cnn.m, experiment_shallow.m), rates for the normalised variable u.
CNN = Schedule(((0.004, 100), (0.0004, 200), (0.00004, 100)))
SHALLOW = Schedule(((0.004, 200), (0.0004, 200), (0.00004, 200), (0.000004, 200)))
RECEPTIVE_FIELD = Schedule(((0.0004, 200), (0.00004, 200), (0.000004, 200)))
# Not in the paper: Adam on x / 68.9 (pixels in units of a typical pixel's RMS), same phases.
ADAM = Schedule(((0.05, 100), (0.005, 200), (0.0005, 100)))

SHALLOW_MODELS = ("hog", "hogb", "dsift")
RECIPES = ("cvpr2015", "ijcv2016")

# The IJCV 2016 recipe (ijcv.md §1–3; nnpreimage's get_defaults.m): σ a typical pixel's norm, the
# box at 2σ, λ_α = (1/σ)^α, λ_TV = (6.5/σ)^β, rate 0.05·σ²/α for 300 iterations (jittered), then a
# tenth of it for 50 (not jittered); C = 1 by default, the paper's figures sweep 1, 20, 100, 300.
IJCV_SIGMA = 80.0
IJCV_BOX = 2 * IJCV_SIGMA
IJCV_ALPHA, IJCV_BETA = 6.0, 2.0
IJCV_WEIGHTS = (1.0, 20.0, 100.0, 300.0)


def ijcv_setting(weight: float = 1.0, beta: float = IJCV_BETA, alpha: float = IJCV_ALPHA) -> Setting:
    """The IJCV energy's constants for C = ``weight`` (λ_TV follows β, λ_α follows α, as in the
    reference code)."""
    return Setting(form="ijcv2016", sigma=IJCV_SIGMA, weight=weight, beta=beta, alpha=alpha,
                   lambda_tv=(6.5 / IJCV_SIGMA) ** beta, lambda_l2=(1 / IJCV_SIGMA) ** alpha)


def ijcv_schedule(alpha: float = IJCV_ALPHA) -> Schedule:
    rate = 0.05 * IJCV_SIGMA ** 2 / alpha
    return Schedule(((rate, 300), (rate / 10, 50)))


# Lucid's Fourier images: Adam at 0.05 on the spectrum, a tenth of it in each later phase
FOURIER_CVPR = Schedule(((0.05, 100), (0.005, 200), (0.0005, 100)))
FOURIER_IJCV = Schedule(((0.05, 300), (0.005, 50)))


def jitter_for(model: str, layer: str | None) -> int:
    """The IJCV jitter J = max(round(s/4), 1), s the stride of the layer's receptive field."""
    info = next(i for i in representations.layers(model) if i.name == layer)
    return max(round(info.receptive_field.stride / 4), 1)


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


# Iterations per inversion in each profile; None keeps the schedule's own (see Schedule.with_iterations).
PROFILES = {"quick": 100, "paper": None}


@dataclass(frozen=True)
class Recipe:
    """How the paper inverts ``model`` at ``layer``: the ``setting`` (λ_TV of Fig. 6's block, the
    other constants at their defaults), the ``schedule`` (the model's reference schedule, its
    rates scaled where ``RATE_SCALE`` says, over the profile's iterations) and whether iterates
    are kept in the valid pixels (``pixel_range``)."""

    model: str
    layer: str | None
    profile: str
    optimizer: str
    setting: Setting
    schedule: Schedule
    pixel_range: bool
    name: str = "cvpr2015"
    stages: tuple[Stage, ...] = ()  # () runs ``schedule`` as one stage without transformations
    box: float | None = None
    param: str = "pixels"

    def run_options(self) -> dict:
        """The engine's keywords for this recipe (bar ``settings``: ``setting``, or a variant of it)."""
        run = dict(optimizer=self.optimizer, pixel_range=self.pixel_range, box=self.box, param=self.param)
        return {**run, "stages": list(self.stages)} if self.stages else {**run, "schedule": self.schedule}

    @property
    def jitter(self) -> int:
        """The first stage's jitter (1: none)."""
        steps = self.stages[0].transforms.steps if self.stages else ()
        return next((t.amount for t in steps if isinstance(t, Jitter)), 1)

    def describe(self) -> dict:
        d = {"recipe": self.name, "profile": self.profile, "optimizer": self.optimizer,
             "lambda_tv": self.setting.lambda_tv, "schedule": self.schedule.describe(),
             "pixel_range": self.pixel_range, "param": self.param}
        if self.name == "ijcv2016":
            d.update(weight=self.setting.weight, box=self.box, jitter=self.jitter)
        if self.stages:
            d.update(stages=[st.describe() for st in self.stages])
        return d


def recipe(model: str, layer: str | None, *, profile: str = "paper", iterations: int | None = None,
           lambda_tv: float | None = None, optimizer: str | None = None, schedule: Schedule | None = None,
           recipe: str = "cvpr2015", param: str = "pixels", weight: float | None = None,
           beta: float | None = None, alpha: float | None = None, transforms=(),
           jitter: int | None = None) -> Recipe:
    """How ``recipe`` (the CVPR 2015 paper's, the default, or the IJCV 2016 paper's) inverts
    ``layer`` of ``model``.

    ``iterations`` N (default: the profile's, 100 for quick, the reference schedule's own for
    paper) means one thing everywhere: the reference schedule when N is its length; fewer, half
    of them at the first rate and the rest shared by the later rates; more, every phase stretched
    in proportion (``Schedule.with_iterations``).

    cvpr2015: ``lambda_tv`` default Fig. 6's value for the layer; ``schedule`` another base schedule
    (Fig. 9's ``RECEPTIVE_FIELD``); default CNN, SHALLOW for HOG/DSIFT, ADAM for Adam (not in the
    paper). The layer's rate scale applies to SGD only.

    ijcv2016 (ijcv.md §1–3): C = ``weight`` (default 1), β (default 2, λ_TV following it),
    AdaGrad-momentum, the box, and two stages: the first phase jittered by the layer's stride/4
    (``jitter`` J replaces it; 1 switches it off, as ijcv.md §6's variants do), the rest without.
    Networks only: its jitter comes from a layer's stride.

    ``param`` "fourier" (either recipe, not in the papers) descends on Lucid's Fourier image with
    Adam at 0.05 on the spectrum, over the recipe's phases and stages. ``transforms`` (e.g.
    ["scale=1.1", "rotate=5"], not in the papers) are drawn every iteration of the first stage,
    after the IJCV jitter."""
    if profile not in PROFILES:
        raise unknown("profile", profile, PROFILES)
    if recipe not in RECIPES:
        raise unknown("recipe", recipe, RECIPES)
    if param not in parameterisations.PARAMETERISATIONS:
        raise unknown("parameterisation", param, parameterisations.PARAMETERISATIONS)
    if param == "fourier" and optimizer not in (None, "adam"):
        raise SettingsError(f"--param fourier runs with Adam on the spectrum (as Lucid); drop --optimizer {optimizer}")
    if optimizer is not None and optimizer not in optimise.OPTIMIZERS:
        raise unknown("optimizer", optimizer, optimise.OPTIMIZERS)
    n = iterations if iterations is not None else PROFILES[profile]
    extra = Transforms(tuple(transforms))
    if recipe == "ijcv2016":
        return _ijcv(model, layer, profile, n, optimizer, schedule, param, lambda_tv, weight, beta, alpha, extra,
                     jitter)
    if jitter is not None:
        raise SettingsError("jitter belongs to the ijcv2016 recipe; with cvpr2015 add a transformation "
                            "(--transform jitter=N)")
    if weight not in (None, 1, 1.0):
        raise SettingsError("the loss weight C belongs to the ijcv2016 recipe (the CVPR 2015 energy has none); "
                            "add --recipe ijcv2016 or drop the weight")
    optimizer = "adam" if param == "fourier" else optimizer or "sgd"
    base = schedule or (FOURIER_CVPR if param == "fourier" else ADAM if optimizer == "adam" else
                        SHALLOW if model in SHALLOW_MODELS else CNN)
    if optimizer == "sgd":
        base = base.times(RATE_SCALE.get(model, {}).get(layer, 1.0))
    steps = base.with_iterations(n)
    setting = Setting(lambda_tv=lambda_tv_for(model, layer) if lambda_tv is None else lambda_tv,
                      beta=Setting.beta if beta is None else beta, alpha=Setting.alpha if alpha is None else alpha)
    pixel_range = param == "pixels" and layer in PIXEL_RANGE.get(model, ())
    stages = (Stage(steps, extra),) if extra.steps else ()
    return Recipe(model, layer, profile, optimizer, setting, steps, pixel_range, param=param, stages=stages)


def _ijcv(model, layer, profile, iterations, optimizer, schedule, param, lambda_tv, weight, beta, alpha,
          extra: Transforms, jitter: int | None) -> Recipe:
    if model in SHALLOW_MODELS:
        raise SettingsError(f"the ijcv2016 recipe is defined for networks (its jitter comes from a layer's stride); "
                            f"invert {model} with --recipe cvpr2015")
    setting = ijcv_setting(1.0 if weight is None else weight, IJCV_BETA if beta is None else beta,
                           IJCV_ALPHA if alpha is None else alpha)
    if lambda_tv is not None:
        setting = replace(setting, lambda_tv=lambda_tv)
    if param == "fourier":
        optimizer, base = "adam", schedule or FOURIER_IJCV
    else:
        optimizer, base = optimizer or "adagrad", schedule or ijcv_schedule(setting.alpha)
    steps = base.with_iterations(iterations)
    jitter = Transforms((Jitter(jitter_for(model, layer) if jitter is None else jitter),) + extra.steps)
    first, rest = Schedule(steps.steps[:1]), Schedule(steps.steps[1:])
    stages = (Stage(first, jitter),) + ((Stage(rest),) if rest.steps else ())
    return Recipe(model, layer, profile, optimizer, setting, steps, False, name="ijcv2016", stages=stages,
                  box=IJCV_BOX if param == "pixels" else None, param=param)


@functools.wraps(optimise.invert)
def invert(representation, images=None, *, schedule: Schedule | None = None, optimizer: str = "sgd", **options):
    # The public ``preimage.invert``: the engine's, with the paper's CNN schedule (ADAM for Adam)
    # when none is given, so that the engine itself holds no paper constant.
    default = None if options.get("stages") else ADAM if optimizer == "adam" else CNN
    return optimise.invert(representation, images, schedule=schedule or default, optimizer=optimizer, **options)
