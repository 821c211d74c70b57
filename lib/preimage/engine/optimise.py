"""The render loop: gradient descent with momentum (reset when the rate changes), AdaGrad-momentum
(IJCV 2016) or Adam, on a batch of images × settings × restarts (× layers of one network, sharing
its forward pass), over one or more stages of random transformations, on pixels or another
parameterisation, with progress, callbacks and divergence checks."""
from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass, replace
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..errors import CodeError, DivergenceError, SettingsError, StopInversion
from . import budget, compiled, parameterisations
from .layout import MEMORY_FORMATS, choose_layout, set_layout
from .objective import Objective, Setting, mask, sigma
from .results import TERMS, InversionResult, describe_run
from .schedule import Schedule, Stage, joined
from .transforms import Transforms

MOMENTUM = 0.9
RECORD_BLOCK = 1024  # energy-record rows allocated at a time
BLOW_UP = 1e4  # energy this many times its start (and above 1e3) counts as divergence
OPTIMIZERS = ("sgd", "adagrad", "adam")


@dataclass
class Progress:
    """What a callback sees every ``every`` iterations."""

    iteration: int  # iterations done
    iterations: int  # in total
    x: torch.Tensor  # current reconstructions (B, C, H, W), mean-subtracted, detached
    energies: dict[str, np.ndarray]  # (iteration, B) per term so far


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError("device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    return device


def _generator(seed: int, restart: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, restart]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def start_noise(shape: tuple[int, ...], seed: int, restart: int, kind: str = "gaussian") -> torch.Tensor:
    """The random start of one item, fixed by (seed, restart) alone, so an item starts the same
    way whatever else shares its batch: ``gaussian`` of unit norm (CVPR 2015, scaled by σ), or
    ``uniform`` in [−1, 1] divided by its 95th percentile and by √3 (IJCV 2016, scaled by its σ)."""
    g = _generator(seed, restart)
    if kind == "gaussian":
        u = torch.randn(shape, generator=g, dtype=torch.float64)
        return (u / u.norm()).float()
    u = 2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1
    return (u / torch.quantile(u.flatten(), 0.95) / math.sqrt(3)).float()


@dataclass(frozen=True)
class RunOptions:
    """What one run shares across its items and layers (``invert``'s keywords bar the per-layer
    settings, schedules and pixel ranges)."""

    restarts: int = 1
    loss: str = "l2"
    optimizer: str = "sgd"
    seed: int = 0
    device: torch.device = torch.device("cpu")
    progress: bool = True
    callback: Callable[[Progress], None] | None = None
    every: int = 10
    batch_size: int | None = None
    memory_limit: int | str | None = None
    param: str = "pixels"
    box: float | None = None
    memory_format: str = "auto"
    compile: bool | None = None  # None: auto (``compiled.worth_compiling``)

    def __post_init__(self):
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.compile not in (None, True, False):
            raise SettingsError(f"compile must be True, False or None (auto), not {self.compile!r}")
        if self.memory_format not in MEMORY_FORMATS:
            raise SettingsError(f"unknown memory_format {self.memory_format!r}; valid ones: "
                                f"{', '.join(MEMORY_FORMATS)}")
        if self.param not in parameterisations.PARAMETERISATIONS:
            raise SettingsError(f"unknown parameterisation {self.param!r}; valid ones: "
                                f"{', '.join(parameterisations.PARAMETERISATIONS)}")
        if self.param != "pixels" and self.optimizer != "adam":
            raise SettingsError(f"the {self.param} parameterisation runs with optimizer adam (its rates are for "
                                f"the spectrum, as Lucid's); sgd and adagrad take rates in pixels")
        if self.box is not None:
            if isinstance(self.box, bool) or not (isinstance(self.box, (int, float)) and math.isfinite(self.box)
                                                  and self.box > 0):
                raise SettingsError(f"box must be a pixel norm > 0 (the IJCV paper's 160), not {self.box!r}")
            if self.param != "pixels":
                raise SettingsError(f"box bounds pixels; the {self.param} parameterisation keeps every pixel "
                                    f"within 0..255 by construction, so drop box")
        for name in ("restarts", "every", "batch_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise SettingsError(f"{name} must be a positive integer, not {v!r}")
        if self.optimizer not in OPTIMIZERS:
            raise SettingsError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")


MAX_SEED = 2 ** 63 - 1  # what both numpy's SeedSequence and torch.manual_seed take


def check_seed(seed) -> int:
    """``seed`` when it is an integer the random generators take, else a SettingsError."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise SettingsError(f"seed must be an integer from 0 to 2**63 - 1, not {seed!r}")
    return int(seed)


class Chunk(NamedTuple):
    """What descending on one chunk of items gives."""

    x: torch.Tensor  # (B, C, H, W) reconstructions
    energies: dict[str, np.ndarray]  # (iterations done, B) per term
    error: torch.Tensor  # (B,) final relative errors
    stopped: bool  # a callback raised StopInversion


def invert(representation, images: torch.Tensor | None = None, *, codes: torch.Tensor | None = None,
           image_size: tuple[int, int] | None = None, settings: Setting | list[Setting] = Setting(),
           restarts: int = 1, loss: str = "l2", schedule: Schedule | None = None,
           optimizer: str = "sgd", seed: int = 0, device: str | torch.device = "auto",
           progress: bool = True, callback: Callable[[Progress], None] | None = None,
           every: int = 10, batch_size: int | None = None, pixel_range: bool = False,
           memory_limit: int | str | None = None, transforms: Transforms | list | tuple = (),
           stages: list[Stage] | None = None, param: str = "pixels", box: float | None = None,
           start: torch.Tensor | None = None, memory_format: str = "auto",
           compile: bool | None = None) -> InversionResult:
    """Reconstruct images from their codes at ``representation``'s layer.

    Give ``images`` (N, C, H, W), mean-subtracted pixels, or ``codes`` (N, *code shape) with the
    ``image_size`` (H, W) to reconstruct. Every image is inverted under every setting with
    ``restarts`` random starts; items are ordered image-major, then setting, then restart, and
    run ``batch_size`` at a time (all at once by default). A callback may raise StopInversion
    to end the run early: the result then holds the items of the chunks started so far, with
    the iterations done (``provenance["stopped_early"]`` is True).

    ``pixel_range`` (not in the paper) projects every iterate into the valid pixels 0..255: for
    networks whose input gradient concentrates on a few pixels, which then run away until the
    α-norm overflows (measured on EfficientNet-Lite0's last layers). ``box`` (IJCV 2016) scales
    every pixel's colour vector down to that norm after each step.

    ``transforms`` (``Transforms`` or a list such as ["jitter=8"]) are drawn every iteration
    before the network sees the image; ``stages`` runs several (schedule, transforms) one after
    the other instead of ``schedule`` and ``transforms``. ``param`` "fourier" descends on a
    1/f-scaled spectrum (with Adam) instead of the pixels. ``start`` (N, C, H, W), one image per
    image inverted, replaces the random start (the IJCV paper's caricatures start from the photo).

    Speed, not results: ``memory_format`` "channels_last" or "contiguous" lays the network out so
    ("auto": ``engine.layout.choose_layout``); ``compile`` True fuses the regularisers and the
    momentum step with torch.compile, False never, None where it pays (``engine.compiled``;
    $PREIMAGE_COMPILE=0/1 decides for None); only momentum on pixels with one β = 2 and one α has
    that step, other runs stay eager (provenance's ``compiled`` says which ran).

    Before anything large is allocated, the memory the run needs is estimated (``budget``) against
    ``memory_limit`` (bytes or "8G"; default: $PREIMAGE_MEMORY_LIMIT, else 75 % of the memory
    available): a run that fits in smaller batches is split into them, one that cannot fit is
    refused with a ResourceError that gives the estimate and the limit.

    The engine holds no paper constant, so ``schedule`` must be given here; ``preimage.invert``
    defaults it to the paper's (``preimage.recipe(model, layer).schedule`` gives a layer's).
    """
    options = RunOptions(restarts, loss, optimizer, seed, resolve_device(device), progress, callback, every,
                         batch_size, memory_limit, param, box, memory_format, compile)
    stages = _stages(schedule, transforms, stages)
    rep = representation.to(options.device)
    shape, count = _shape(rep, images, codes, image_size)
    margin = max(st.transforms.margin for st in stages)
    padded = (shape[0], shape[1] + margin, shape[2] + margin)
    options = _budgeted(options, [rep], padded, count * _count(settings) * restarts, [joined(stages)])
    targets = _targets(rep, images, codes, shape, options)
    if start is not None:
        start = _start_images(start, count, shape, budget.value_type(rep), options.device)
    return _run([rep], [targets], [settings], shape, stages, None, [joined(stages)], [pixel_range], options,
                start=start)[0]


def _stages(schedule, transforms, stages) -> list[Stage]:
    if stages is None:
        if schedule is None:
            raise SettingsError("give a schedule: preimage.recipe(model, layer).schedule is the paper's")
        if not isinstance(transforms, Transforms):
            transforms = Transforms(tuple(transforms))
        return [Stage(schedule, transforms)]
    if schedule is not None or transforms:
        raise SettingsError("give either stages or a schedule (and transforms), not both")
    stages = list(stages)
    if not stages or not all(isinstance(st, Stage) for st in stages):
        raise SettingsError("stages must be a non-empty list of Stage(schedule, transforms)")
    return stages


def _start_images(start, count, shape, dtype, device) -> torch.Tensor:
    start = torch.as_tensor(start, dtype=dtype)
    if tuple(start.shape) != (count, *shape):
        raise SettingsError(f"start must hold one image per image inverted, {(count, *shape)}, "
                            f"not {tuple(start.shape)}")
    if not torch.isfinite(start).all():
        raise SettingsError("start holds NaN or Inf values")
    return start.to(device)


def invert_at_layers(representations: list, images: torch.Tensor, *,
                     settings: list[Setting | list[Setting]] | Setting = Setting(), restarts: int = 1,
                     loss: str = "l2", schedules: list[Schedule | None] | Schedule | None = None,
                     optimizer: str = "sgd", seed: int = 0, device: str | torch.device = "auto",
                     progress: bool = True, callback: Callable[[Progress], None] | None = None,
                     every: int = 10, batch_size: int | None = None,
                     pixel_range: list[bool] | bool = False,
                     memory_limit: int | str | None = None, memory_format: str = "auto",
                     compile: bool | None = None) -> list[InversionResult]:
    """``invert`` at several layers of one network at once: one result per representation, each
    as ``invert`` would give it (same starts, same settings), computed in one batch that shares
    the network's forward and backward passes (``engine.shared.SharedTrunk``).

    ``settings``, ``schedules`` and ``pixel_range`` are one per layer or one for all. The
    schedules may differ only by a factor on every rate (a layer's rate scale), and not at all
    under Adam. Items are ordered layer-major, then as in ``invert``."""
    from .shared import SharedTrunk

    per_layer = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * len(representations)  # noqa: E731
    settings, schedules, pixel_range = per_layer(settings), per_layer(schedules), per_layer(pixel_range)
    if not len(representations) == len(settings) == len(schedules) == len(pixel_range):
        raise SettingsError(f"give one settings, schedule and pixel_range per layer ({len(representations)}), "
                            f"or one for all")
    options = RunOptions(restarts, loss, optimizer, seed, resolve_device(device), progress, callback, every,
                         batch_size, memory_limit, memory_format=memory_format, compile=compile)
    reps = [rep.to(options.device) for rep in representations]
    trunk = SharedTrunk(reps) if len(reps) > 1 else None
    shape, count = _shape(reps[0], images, None, None)
    if any(sch is None for sch in schedules):
        raise SettingsError("give a schedule: preimage.recipe(model, layer).schedule is the paper's")
    options = _budgeted(options, reps, shape, count * sum(_count(s) for s in settings) * restarts, schedules)
    targets = [_targets(rep, images, None, shape, options) for rep in reps]
    schedule, rate_scales = _common_schedule(schedules, options.optimizer, reps)
    return _run(reps, targets, settings, shape, [Stage(schedule)], rate_scales, schedules, pixel_range, options,
                trunk)


def _run(reps, targets, settings, shape, stages: list[Stage], rate_scales, schedules, pixel_ranges,
         options: RunOptions, trunk=None, start: torch.Tensor | None = None) -> list[InversionResult]:
    """Invert ``targets[g]`` at ``reps[g]`` under ``settings[g]`` and ``pixel_ranges[g]`` for
    every layer g in one run of ``stages``, layer g's rates times ``rate_scales[g]`` (None: 1);
    ``schedules[g]`` is what layer g's provenance records."""
    restarts, device, batch_size = options.restarts, options.device, options.batch_size
    settings = [[s] if isinstance(s, Setting) else list(s) for s in settings]
    masks = [torch.stack([mask(tuple(t.shape[1:]), s, rep.layer, tokens=getattr(rep, "tokens", None))
                          for s in ss]).to(device)
             for rep, t, ss in zip(reps, targets, settings)]
    items = np.array([(g, n, s, r) for g in range(len(reps)) for n in range(len(targets[g]))
                      for s in range(len(settings[g])) for r in range(restarts)], dtype=np.int64).reshape(-1, 4)
    batch_size = batch_size or len(items)
    low, high = pixel_bounds(reps[0].mean, device)
    param = parameterisations.get(options.param, reps[0].mean)
    iterations = sum(st.schedule.iterations for st in stages)

    t0 = time.perf_counter()
    chunks, layouts, fusions = [], [], []
    label = reps[0].label if len(reps) == 1 else f"{reps[0].model} at {len(reps)} layers"
    bar = _bar(options.progress, iterations * math.ceil(len(items) / batch_size), label)
    try:
        for lo in range(0, len(items), batch_size):
            part = items[lo:lo + batch_size]
            rows = [torch.as_tensor(part[part[:, 0] == g][:, 1:3], device=device) for g in range(len(reps))]
            chosen = [settings[g][s] for g, _, s, _ in part]
            tgt = [t[r[:, 0]] for t, r in zip(targets, rows)]
            msk = [m[r[:, 1]] for m, r in zip(masks, rows)]
            objective = (Objective(reps[0], tgt[0], msk[0], chosen, shape, options.loss) if trunk is None else
                         Objective(trunk, tgt, msk, chosen, shape, options.loss, counts=[len(r) for r in rows]))
            first = _start(part, chosen, objective, stages[0].transforms, param, start, options, tgt[0].dtype)
            layout = choose_layout(objective.rep, len(part), device, options.memory_format)
            layouts.append(layout)
            fmt = set_layout(objective.rep, layout)
            first = first.contiguous(memory_format=fmt) if first.dim() == 4 else first  # pixels, not a spectrum
            bounded = torch.tensor([pixel_ranges[g] for g in part[:, 0]], device=device).view(-1, 1, 1, 1)
            bounds = None if not bounded.any() else (torch.where(bounded, low, -math.inf),
                                                     torch.where(bounded, high, math.inf))
            scale = None if rate_scales is None else torch.tensor(
                [rate_scales[g] for g in part[:, 0]], device=device, dtype=tgt[0].dtype).view(-1, 1, 1, 1)
            fusions.append(_fused(objective, first, stages, param, options))
            chunks.append(_descend(objective, first, stages, param, options, bar, lo, bounds, scale, fusions[-1]))
            if chunks[-1].stopped:
                break  # a callback stopped the run: later chunks are not started
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    stopped = chunks[-1].stopped
    items = items[:sum(len(c.x) for c in chunks)]
    x = torch.cat([c.x for c in chunks]).cpu().numpy()
    n_done = max(len(c.energies["total"]) for c in chunks)
    # a stopped chunk has fewer iterations than the chunks before it: NaN marks the ones not run
    energies = {k: np.concatenate([np.pad(c.energies[k], ((0, n_done - len(c.energies[k])), (0, 0)),
                                          constant_values=np.nan) for c in chunks], axis=1) for k in TERMS}
    error = torch.cat([c.error for c in chunks]).cpu().numpy()
    s = sigma(*shape)
    optimizer = options.optimizer
    natural = {}
    if len(stages) > 1 or any(st.transforms.steps for st in stages) or options.param != "pixels" or options.box:
        natural = dict(stages=[st.describe() for st in stages], param=options.param, box=options.box,
                       start="images" if start is not None else "noise")
    results = []
    for g, rep in enumerate(reps):
        mine = items[:, 0] == g
        provenance = describe_run(
            rep, image_size=list(shape[1:]), settings=[st.describe(s) for st in settings[g]], restarts=restarts,
            loss=options.loss, optimizer=optimizer, momentum=MOMENTUM if optimizer != "adam" else None,
            schedule=schedules[g].describe(), iterations=iterations, iterations_run=n_done, stopped_early=stopped,
            seed=options.seed, batch_size=batch_size, device=_device_name(device), pixel_range=pixel_ranges[g],
            shared_run=[r.layer for r in reps] if len(reps) > 1 else None,
            memory_format=" and ".join(dict.fromkeys(layouts)), compiled=any(fusions), **natural)
        results.append(InversionResult(x=x[mine], mean=rep.mean, energies={k: v[:, mine] for k, v in energies.items()},
                                       error=error[mine], items=items[mine, 1:], time_s=elapsed,
                                       provenance=provenance))
    return results


def _start(part, chosen, objective, transforms: Transforms, param, start, options: RunOptions, dtype):
    """The first stage's variable for the items ``part``: the start images (zero margin around
    them) or each item's random start, (seed, restart) alone fixing it."""
    device, seed = options.device, options.seed
    c, h, w = objective.image_shape
    size = (h + transforms.margin, w + transforms.margin)
    if start is not None:
        return param.variable(transforms.pad(start[torch.as_tensor(part[:, 1], device=device)]))
    if options.param != "pixels":
        return torch.stack([param.start(c, size, _generator(seed, int(r))) for r in part[:, 3]]).to(device, dtype)
    cvpr = objective.form == "cvpr2015"
    noise = torch.stack([start_noise((c, *size), seed, int(r), "gaussian" if cvpr else "uniform")
                         for r in part[:, 3]]).to(device, dtype)
    if cvpr:
        return noise * objective.sigma
    return noise * torch.tensor([st.sigma for st in chosen], device=device, dtype=dtype).view(-1, 1, 1, 1)


def _common_schedule(schedules: list[Schedule], optimizer: str, reps) -> tuple[Schedule, list[float] | None]:
    """The first schedule and each layer's factor on its rates (None when all are 1)."""
    base = schedules[0]
    factors = []
    for sch, rep in zip(schedules, reps):
        ratios = [r / b for (r, _), (b, _) in zip(sch.steps, base.steps)]
        same_phases = [n for _, n in sch.steps] == [n for _, n in base.steps]
        if not same_phases or not np.allclose(ratios, ratios[0], rtol=1e-9):
            raise SettingsError(f"the schedule of {rep.layer} is not the schedule of {reps[0].layer} with its "
                                f"rates scaled, so they cannot run together; invert them one at a time")
        factors.append(float(ratios[0]))
    if all(f == 1.0 for f in factors):
        return schedules[0], None
    if optimizer != "sgd":
        raise SettingsError(f"{optimizer} cannot run layers with different learning rates together; "
                            f"give them the same schedule or invert them one at a time")
    return schedules[0], factors


def _count(settings) -> int:
    return 1 if isinstance(settings, Setting) else len(settings)


def _shape(rep, images, codes, image_size) -> tuple[tuple[int, int, int], int]:
    """The (C, H, W) of the images to reconstruct and how many there are, checked, before
    anything is computed."""
    if (images is None) == (codes is None):
        raise SettingsError("give either images or codes to invert")
    if images is not None:
        array = images if torch.is_tensor(images) else np.asarray(images)
        if not torch.is_tensor(array) and array.dtype.kind not in "fiu":
            raise SettingsError(f"images must be real numbers, not {array.dtype}")
        shape = tuple(array.shape)
        if len(shape) != 4 or shape[1] != rep.in_channels:
            raise SettingsError(f"images must be (N, {rep.in_channels}, H, W), not {shape}")
        if shape[0] == 0:
            raise SettingsError("images is an empty batch; give at least one image")
        rep.check_image_size(*shape[2:])
        return (shape[1], shape[2], shape[3]), shape[0]
    if not (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in image_size)):
        raise SettingsError(f"inverting codes needs image_size=(H, W), two positive integers giving the size of "
                            f"the image to reconstruct, not {image_size!r}")
    array = codes if torch.is_tensor(codes) else np.asarray(codes)
    if not (array.dtype.is_floating_point if torch.is_tensor(array) else array.dtype.kind == "f"):
        raise CodeError(f"codes must hold real floating-point values, not {array.dtype}; a code is what the "
                        f"representation computes (float32)")
    code_shape = tuple(array.shape)
    if len(code_shape) < 2 or code_shape[0] == 0:
        raise CodeError(f"codes of shape {code_shape} are not a batch of one or more codes")
    h, w = (int(v) for v in image_size)
    rep.check_image_size(h, w)
    return (rep.in_channels, h, w), code_shape[0]


def _budgeted(options: RunOptions, reps, shape, items: int, schedules) -> RunOptions:
    """``options`` with the batch size the memory limit allows (see ``budget``)."""
    deepest = max(reps, key=lambda r: budget.per_item(r, shape, 1))
    size = budget.batch_size(deepest, shape, items, max(s.iterations for s in schedules), options.device,
                             options.batch_size, options.memory_limit)
    return replace(options, batch_size=size)


def _targets(rep, images, codes, shape, options: RunOptions) -> torch.Tensor:
    """The codes to match, computed ``options.batch_size`` images at a time, or the codes given."""
    device = options.device
    if images is not None:
        set_layout(rep, "contiguous")  # the targets, whatever layout a run took before
        images = torch.as_tensor(images, dtype=budget.value_type(rep))
        with torch.no_grad():
            targets = torch.cat([rep(images[lo:lo + options.batch_size].to(device))
                                 for lo in range(0, len(images), options.batch_size)])
        if not torch.isfinite(targets).all():
            raise CodeError(f"{rep.label} gives NaN or Inf codes for these images: its weights hold NaN or "
                            f"Inf values, or the images do; load other weights or check the images")
        return targets
    _, h, w = shape
    expected = rep.code_shape(h, w)
    codes = torch.as_tensor(codes, dtype=budget.value_type(rep))
    if tuple(codes.shape[1:]) != expected:
        raise CodeError(f"code shape {tuple(codes.shape[1:])} does not match {rep.model} {rep.layer}, whose "
                        f"code for a {h}x{w} image has shape {expected}; encode the image with the same "
                        f"model, layer and size")
    if not torch.isfinite(codes).all():
        raise CodeError("the code holds NaN or Inf values")
    return codes.to(device)


def pixel_bounds(mean, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean-subtracted values of pixels 0 and 255, (1, C, 1, 1) each."""
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return -m, 255 - m


def _fused(objective: Objective, variable, stages: list[Stage], param, options: RunOptions) -> bool:
    """Whether a chunk steps by ``compiled.descent_step``: momentum on pixels with the closed-form
    regularisers, and compiling asked for or (auto) worth it."""
    if not (options.optimizer == "sgd" and isinstance(param, parameterisations.Pixels) and options.box is None
            and objective.closed_form and variable.dim() == 4):
        return False
    choice = compiled.resolve(options.compile)
    if choice is not None:
        return choice
    return compiled.worth_compiling(tuple(variable.shape), sum(st.schedule.iterations for st in stages),
                                    variable.device)


def _descend(objective: Objective, variable, stages: list[Stage], param, options: RunOptions, bar, offset,
             bounds=None, rate_scale=None, fused: bool = False) -> Chunk:
    """Run one chunk through every stage, from the first stage's ``variable``. ``bounds`` (low,
    high) box the pixels; ``rate_scale`` (B, 1, 1, 1) multiplies each item's rates; ``fused``:
    each step by ``compiled.descent_step``."""
    iterations = sum(st.schedule.iterations for st in stages)
    B = variable.shape[0]
    # grown as the run goes, so that an absurd iteration count allocates nothing up front
    record = torch.zeros(min(iterations, RECORD_BLOCK), len(TERMS), B, device=variable.device)
    state = _State(record, iterations, 0, None, False, fused)
    for k, stage in enumerate(stages):
        if k:
            window = stages[k - 1].transforms.centre(param.image(variable, _size(objective, stages[k - 1])))
            variable = param.variable(stage.transforms.pad(window))
        variable = _stage(objective, variable, stage, param, options, bar, offset, bounds, rate_scale, state)
        if state.stopped:
            break
    x = stage.transforms.centre(param.image(variable, _size(objective, stage))).detach()
    return Chunk(x, _progress(state.done, iterations, x, state.record).energies, objective.error(x), state.stopped)


@dataclass
class _State:
    """What a chunk's stages carry from one to the next."""

    record: torch.Tensor  # (iterations, terms, B), grown as the run goes
    iterations: int  # in all stages
    done: int  # iterations done
    first: torch.Tensor | None  # the starting energy (divergence check)
    stopped: bool  # a callback raised StopInversion
    fused: bool  # steps by compiled.descent_step


def _size(objective, stage) -> tuple[int, int]:
    """The (H, W) of the image being optimised in ``stage``: the network's input and the margin."""
    _, h, w = objective.image_shape
    return h + stage.transforms.margin, w + stage.transforms.margin


def _stage(objective: Objective, variable, stage: Stage, param, options: RunOptions, bar, offset, bounds,
           rate_scale, state: _State):
    """One stage: its schedule under its transformations, from ``variable``; returns the last one."""
    optimizer, callback, every = options.optimizer, options.callback, options.every
    schedule, transforms = stage.schedule, stage.transforms
    pixels = isinstance(param, parameterisations.Pixels)
    size = _size(objective, stage)
    # The CVPR paper descends on u = x/σ (Adam here on x/PIXEL_RMS); both run on x itself with the
    # rates carried over, which saves two passes over the images per iteration: momentum on u
    # with rate r is momentum on x with rate r·σ², Adam on x/P with rate r is Adam on x with
    # rate r·P and ε/P. The IJCV rates are for regularisers averaged over pixels: r·H·W on x.
    unit = objective.rate_unit
    v = variable.detach().clone().requires_grad_(True)
    velocity = torch.zeros_like(v)
    spare = torch.empty_like(v).requires_grad_(True) if state.fused else None  # where the step writes
    adagrad = torch.zeros_like(v) if optimizer == "adagrad" else None
    adam = (torch.optim.Adam([v], lr=schedule.steps[0][0] * param.adam_unit, eps=1e-8 / param.adam_unit)
            if optimizer == "adam" else None)
    previous = None
    for i, rate in enumerate(rate for rate, n in schedule.steps for _ in range(n)):
        it = state.done
        if it == len(state.record):
            grow = state.record[:min(len(state.record), state.iterations - it)]
            state.record = torch.cat([state.record, torch.zeros_like(grow)])
        view = transforms.view(options.seed, i)
        if state.fused:
            if rate != previous:
                velocity.zero_()  # (a no-op at the start) momentum restarts with each rate
                step = torch.full((len(v), 1, 1, 1), rate * unit, device=v.device, dtype=v.dtype)
                step = step if rate_scale is None else step * rate_scale
            loss, grad = objective.loss_and_gradient(v, view)
            with torch.no_grad():  # E is that of x before the step, as below
                tv, alpha = compiled.descent_step(v, spare, grad, velocity, *objective.weights(v), step, bounds,
                                                  objective.alpha, objective.form == "cvpr2015", MOMENTUM)
                total, terms = objective.weigh(v, loss, tv, alpha)
            v, spare = spare, v
        elif pixels:
            total, terms, grad = objective.value_and_gradient(v, view)
        else:
            x = param.image(v, size)
            total, terms, grad_x = objective.value_and_gradient(x, view)
            grad, = torch.autograd.grad(x, v, grad_x)
        state.record[it] = torch.stack([terms["loss"], terms["tv"], terms["alpha"], total]).detach()
        with torch.no_grad():
            if state.fused:  # compiled.descent_step took the step and boxed the pixels
                pass
            elif adam is not None:
                adam.param_groups[0]["lr"] = rate * param.adam_unit
                v.grad = grad
                adam.step()
            else:
                if previous is not None and rate != previous:
                    velocity.zero_()
                if rate_scale is not None:
                    grad.mul_(rate_scale)
                if adagrad is None:
                    velocity.mul_(MOMENTUM).sub_(grad, alpha=rate * unit)
                else:  # AdaGrad's normaliser with momentum, as the IJCV reference code
                    adagrad.mul_(MOMENTUM).addcmul_(grad, grad)
                    velocity.mul_(MOMENTUM).sub_(grad / (1 / (rate * unit) + adagrad.sqrt()))
                v.add_(velocity)
            if bounds is not None and pixels and not state.fused:  # a Fourier image stays within 0..255 by construction
                torch.maximum(v, bounds[0], out=v)
                torch.minimum(v, bounds[1], out=v)
            if options.box is not None:
                norm = v.square().sum(1, keepdim=True).sqrt()
                v.mul_((options.box / norm).clamp(max=1))
        previous = rate
        state.done = it + 1
        bar.update(1)
        if state.done % every == 0 or i + 1 == schedule.iterations:
            state.first = _check(state.record, state.done, state.first, rate, offset)
            if callback is not None:
                current = transforms.centre(param.image(v, size)).detach().clone()
                try:
                    callback(_progress(state.done, state.iterations, current, state.record))
                except StopInversion:
                    state.stopped = True
                    break
    return v.detach()


def _check(record, done, first, rate, offset):
    """Raise DivergenceError on NaN/Inf or a blown-up energy; returns the starting energy."""
    total = record[:done, 3]
    first = total[0].abs().clamp_min(1.0) if first is None else first
    bad_nan = ~torch.isfinite(total).all(0)
    bad_big = (total[done - 1].abs() > BLOW_UP * first) & (total[done - 1].abs() > 1e3)
    bad = (bad_nan | bad_big).nonzero().flatten().tolist()
    if bad:
        what = "became NaN or Inf" if bool(bad_nan.any()) else f"grew more than {BLOW_UP:g} times"
        raise DivergenceError(
            f"the inversion diverged: the energy of batch item(s) {[b + offset for b in bad]} {what} by "
            f"iteration {done} (learning rate {rate:g}). Lower the learning rate (a smaller schedule), "
            f"lower lambda_tv or use beta 2, or try optimizer adam")
    return first


def _progress(done, iterations, x, record) -> Progress:
    rec = record[:done].cpu().numpy()
    return Progress(done, iterations, x, {k: rec[:, i] for i, k in enumerate(TERMS)})


def _bar(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
