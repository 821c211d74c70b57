"""The regularisers and the momentum step fused by ``torch.compile``, for long runs.

Each iteration passes over the image about a dozen times besides the network: TV_2 and the
α-norm with their gradients, adding them into the loss's, the velocity, the step and the pixel
box. Compiled, they are a couple of fused loops. Compiling costs seconds per new batch shape,
so ``worth_compiling`` turns it on only where the estimated saving is well above that cost
(the constants are measured; docs/benchmarks/notes.md); ``compile=False`` on ``invert`` or
$PREIMAGE_COMPILE=0 turns it off, ``compile=True`` or $PREIMAGE_COMPILE=1 on. Compiled and eager
runs agree to float32 reordering (tests/test_speed_options.py)."""
from __future__ import annotations

import os

import torch

from ..errors import SettingsError
from .objective import regularise

# CPU, the 2-core build machine (docs/benchmarks/notes.md): compiling the step cold takes 8 s (a
# new batch size 2 s more; inductor's cache on disk spares later processes most of it), and it
# saves 1.0e-9 s per pixel value and iteration (AlexNet conv1, B = 32, 227x227, 400 iterations:
# 78.2 s eager, 76.2 s compiled)
COMPILE_S = 10.0
SAVED_S = 1.0e-9
PAYBACK = 3  # compile where the saving is this many times the cost
ENV = "PREIMAGE_COMPILE"

_compiled = None


def _step(x, out, grad, velocity, tv_weight, l2_weight, step, low, high, alpha: float, cvpr: bool, momentum: float):
    tv, value, grad = regularise(x, grad, tv_weight, l2_weight, alpha, cvpr)
    velocity.mul_(momentum).sub_(grad * step)
    new = x + velocity
    out.copy_(new if low is None else torch.maximum(torch.minimum(new, high), low))
    return tv, value


def descent_step(x, out, grad, velocity, tv_weight, l2_weight, step, bounds, alpha: float, cvpr: bool,
                 momentum: float):
    """One momentum step from ``x`` into ``out`` (a second buffer: a step in place would read the
    neighbours TV_2 needs while writing them, so the compiled loop would write a temporary and copy
    it), the regularisers' gradients added to ``grad`` (``objective.regularise``), the velocity
    ``velocity`` updated in place, the step ``step`` ((B, 1, 1, 1), the rate in pixels), then the
    box ``bounds`` (low, high; None: none); returns TV_2 and the α-norm of ``x``."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_step)
    low, high = bounds if bounds is not None else (None, None)
    return _compiled(x, out, grad, velocity, tv_weight, l2_weight, step, low, high, alpha, cvpr, momentum)


def resolve(choice: bool | None) -> bool | None:
    """``choice``, or for None (auto) $PREIMAGE_COMPILE's 0/1 when it is set."""
    if choice is not None or not os.environ.get(ENV):
        return choice
    value = os.environ[ENV].strip()
    if value not in ("0", "1"):
        raise SettingsError(f"${ENV} must be 0 (never compile) or 1 (always), not {value!r}; unset it for auto")
    return value == "1"


def worth_compiling(shape: tuple[int, ...], iterations: int, device: torch.device, runs: int = 1) -> bool:
    """Auto: whether ``runs`` runs of ``iterations`` iterations on batches of ``shape`` (B, C, H, W)
    save ``PAYBACK`` times what compiling costs. It depends on the request alone, not on what this
    process compiled before, so that a run's arithmetic does not depend on what ran before it. On
    the CPU only: on a GPU neither number is measured yet."""
    if device.type != "cpu":
        return False
    values = 1
    for n in shape:
        values *= n
    return values * iterations * runs * SAVED_S > PAYBACK * COMPILE_S
