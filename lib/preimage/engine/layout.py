"""Which memory layout the network runs in: channels-last (NHWC) or PyTorch's default (NCHW).

Depthwise convolutions (EfficientNet, MobileNet) run about 1.7 times faster channels-last on the
CPU once a batch holds several images, and slower for a single image; AlexNet and CaffeNet gain
nothing (measured, docs/benchmarks/notes.md). The layout changes the order of floating-point
sums, not the method: the result agrees with the default layout's to float32 rounding amplified
by the descent (tests/test_speed_options.py)."""
from __future__ import annotations

import torch
from torch import nn

MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def has_depthwise(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels for m in net.modules())


def choose_layout(net: nn.Module, batch: int, device: torch.device, choice: str = "auto") -> str:
    """``choice`` itself, or for "auto": channels_last for a CPU batch of two or more images
    through a network with depthwise convolutions, contiguous otherwise (on a GPU the gain is
    not measured yet, so the default layout stays)."""
    if choice != "auto":
        return choice
    return "channels_last" if device.type == "cpu" and batch > 1 and has_depthwise(net) else "contiguous"


def set_layout(net: nn.Module, layout: str) -> torch.memory_format:
    """Put ``net``'s 4-D weights in ``layout`` (in place; a later run in the other layout puts
    them back) and return its memory format, for the images."""
    fmt = FORMATS[layout]
    for t in [*net.parameters(), *net.buffers()]:
        # by the strides, not is_contiguous(): a 1x1 kernel counts as contiguous in either layout,
        # and the layout its strides say is the one the convolution then runs in
        if t.dim() == 4 and t.stride() != torch.empty(t.shape, memory_format=fmt, device="meta").stride():
            t.data = t.data.clone(memory_format=fmt)
    return fmt
