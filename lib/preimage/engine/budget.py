"""Memory an inversion will take, estimated before anything large is allocated, against a limit.

Per batch item the run holds the image and what the descent keeps beside it (the iterate, its
gradient, the momentum or Adam's moments, the regularisers' temporaries), the network's
activations and their gradients, the code with its target and mask, and the energy record (four
numbers per iteration). The activations are what autograd saves in one forward pass at a small size,
scaled with the number of pixels, so no estimate ever runs the network at the size asked for.

The limit is ``memory_limit`` where given (bytes, or a size such as "8G"), else the environment
variable ``PREIMAGE_MEMORY_LIMIT``, else ``FRACTION`` of the memory available on the device.
"""
from __future__ import annotations

import math
import os
import re
import weakref

import torch

from ..errors import ResourceError, SettingsError

LIMIT_ENV = "PREIMAGE_MEMORY_LIMIT"
FRACTION = 0.75
IMAGE_COPIES = 12  # iterate, gradient, velocity or Adam's two moments, start, TV and α temporaries
ACTIVATION_COPIES = 2  # the saved activations and their gradients in the backward pass
CODE_COPIES = 4  # code, target, mask, difference
RECORD_TERMS = 4  # loss, tv, alpha, total per iteration
# On the CPU a batch beyond this runs slower per item (its activations outgrow the caches): per item
# and iteration at EfficientNet-Lite0's logits, channels-last, 2 cores: B = 24 90 ms, 48 98, 96 144;
# another time B = 24 62, 32 60, 64 82 (docs/benchmarks/notes.md). Unasked, the CPU runs this many.
CPU_BATCH = 32
_UNITS = {"": 1, "b": 1, "k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}
_probes: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def parse_size(text: str | int | float) -> int:
    """Bytes from 123, "512M", "8G", "1.5GiB", "2TB" (powers of 1024)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
        if not match:
            raise SettingsError(f"a memory limit is a number of bytes or a size such as 512M or 8G, not {text!r}")
        value, unit = float(match.group(1)), match.group(2).lower()
    if not math.isfinite(value) or value <= 0:
        raise SettingsError(f"a memory limit must be positive, not {text!r}")
    return int(value * _UNITS[unit])


def available(device: torch.device) -> int:
    """Bytes free on ``device`` now (the GPU's free memory; MemAvailable of the machine)."""
    if device.type == "cuda":  # free, plus what torch's caching allocator holds but does not use
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(torch.cuda.mem_get_info(device)[0] + cached)
    free = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    if free is None:
        free = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    try:  # a container's own limit (cgroup v2), which the machine's figure does not show
        most = open("/sys/fs/cgroup/memory.max").read().strip()
        if most != "max":
            used = int(open("/sys/fs/cgroup/memory.current").read().strip())
            free = min(free, max(int(most) - used, 0))
    except (OSError, ValueError):
        pass
    return free


def limit(device: torch.device, memory_limit: str | int | None = None) -> tuple[int, str]:
    """The limit in bytes and where it comes from, in words."""
    if memory_limit is not None:
        return parse_size(memory_limit), "memory_limit"
    if os.environ.get(LIMIT_ENV):
        return parse_size(os.environ[LIMIT_ENV]), LIMIT_ENV
    free = available(device)
    return int(FRACTION * free), f"{FRACTION:.0%} of the {gib(free)} available"


def gib(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GiB" if n >= 2 ** 28 else f"{n / 2 ** 20:.0f} MiB"


def value_type(rep) -> torch.dtype:
    """The type a run computes in: float32, or the representation's own floating type
    (``rep.double()`` makes a whole run float64: for checks against another implementation,
    where float32's rounding would flip a ReLU somewhere along 400 iterations)."""
    tensor = next((t for t in (*rep.parameters(), *rep.buffers()) if t.is_floating_point()), None)
    return torch.float32 if tensor is None else tensor.dtype


def _per_pixel(rep) -> tuple[float, float]:
    """(values autograd saves for the backward pass, values of the code), per input pixel, from
    one forward pass with gradients at the layer's smallest accepted size: every saved tensor is
    counted, in modules and custom functions alike, but the weights, which are held once."""
    if rep in _probes:
        return _probes[rep]
    side = max(rep.min_image_size(), 16)
    fixed = {t.data_ptr() for t in (*rep.parameters(), *rep.buffers())}  # held once, not per item
    saved = 0

    def pack(t):
        nonlocal saved
        if t.data_ptr() not in fixed:
            saved += t.numel()
        return t

    p = next(rep.parameters(), next(rep.buffers(), None))
    x = torch.zeros(1, rep.in_channels, side, side, device=p.device if p is not None else "cpu",
                    dtype=value_type(rep), requires_grad=True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        code = rep(x)
    _probes[rep] = (saved / side ** 2, code.numel() / side ** 2)
    return _probes[rep]


def per_item(rep, shape: tuple[int, int, int], iterations: int) -> int:
    """Bytes one batch item of a (C, H, W) image needs over a run of ``iterations``."""
    c, h, w = shape
    saved, code = _per_pixel(rep)
    values = (IMAGE_COPIES * c + ACTIVATION_COPIES * saved + CODE_COPIES * code) * float(h) * float(w)
    return int(value_type(rep).itemsize * values + 4 * RECORD_TERMS * iterations)


def batch_size(rep, shape: tuple[int, int, int], items: int, iterations: int, device: torch.device,
               asked: int | None = None, memory_limit: str | int | None = None) -> int:
    """How many of ``items`` to run at once: ``asked`` when it fits, else as many as fit (at most
    ``CPU_BATCH`` on the CPU); a ResourceError when not even one does, or when ``asked`` does not."""
    need = per_item(rep, shape, iterations)
    most, source = limit(device, memory_limit)
    fits = most // max(need, 1)
    c, h, w = shape
    about = (f"{rep.label} at {h}x{w}, {iterations} iterations: about {gib(need)} per image × "
             f"restart × setting")
    if fits < 1:
        raise ResourceError(f"{about}, more than the memory limit of {gib(most)} ({source}); use a smaller image "
                            f"(--size), fewer iterations or an earlier layer, or raise the limit with "
                            f"--memory-limit or {LIMIT_ENV}")
    if asked is not None and min(asked, items) > fits:
        raise ResourceError(f"{about}: a batch of {asked} needs {gib(asked * need)}, more than the memory limit "
                            f"of {gib(most)} ({source}); use a batch size of at most {fits}")
    if asked is None and device.type == "cpu":
        fits = min(fits, CPU_BATCH)
    return min(items, asked or items, fits)
