"""Any torchvision classification model (``torchvision:vgg16``) or timm model (``timm:resnet18``),
truncated at any node of its torch.fx graph, so that every network either library ships can be
inverted without a hand-written layer table.

Layer names are the eval-mode node names of torchvision's feature extraction (``features.29``,
``layer2.1.relu_1``, ``flatten``, ``fc``; for timm with timm's leaf modules), in graph order; a
module that is not itself a node (ResNet's ``layer1``) stands for its last node, as in
``create_feature_extractor``, and the representation is named by that node. Inputs are
mean-subtracted pixels (0..255); the division by the weights' std happens inside the module.

Receptive fields come from walking the graph (``_Walk``), along the rows (square kernels and
strides assumed), analytically wherever the operation is known: convolutions and pooling grow
the field (dilation, timm's dynamic "same" padding, ``F.pad`` and crops included); element-wise
operations, normalisation over channels, activations and layout changes (permute, view) keep
it; several inputs (add, cat, mul) take the union of their boxes and the largest stride
(branches share the stride in every network seen). A map whose rows and columns are flattened
into one axis (a ViT's patch embedding) is a grid of tokens, (N, T, D), with the tokens
concatenated in front of it (class, distillation or register tokens) counted apart as its
prefix; linear layers, layer norms and activations over D act on each token alone and keep the
field. Operations that mix all positions (global pooling, flattening into a vector and
space-to-depth, means over space, linear layers over a spatial axis, group norm) see the whole
input: the union of the boxes of every unit of the grid they reduce at the nominal input size,
with that grid's stride. Softmax over a spatial axis and attention (the product of two tensors
computed from the image, q @ kᵀ and its weights @ v, scaled_dot_product_attention,
nn.MultiheadAttention) see the whole input too, but leave every unit in its place: after a
ViT's first attention every token sees the whole image and the tokens are still a grid.
Everything downstream stays whole (so with squeeze-and-excitation, every layer after the first
SE block sees the whole image). A leaf module is traced on its own and walked the same way.
What the walk cannot resolve (LP pooling, Swin's window attention, timm's MobileViT blocks) is
measured: the input rows with a non-zero gradient for the node's centre unit under random
weights and inputs (a lower bound, exact for convolutional paths), the stride from the ratio of
map sizes, at the nominal size and then twice it if the field does not fit; it counts as whole
if it never fits, or if its input is a token sequence.
"""
from __future__ import annotations

import difflib
import functools
import math
import operator

import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torchvision.models import feature_extraction, get_model_weights
from torchvision.ops import stochastic_depth

from ..errors import PreimageError, UnknownNameError, WeightsError, unknown
from .alexnet import Normalise
from .base import LayerInfo, Representation, find_layer
from .receptive_field import Geometry, ReceptiveField
from .weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    OFFLINE_ENV,
    Weights,
    apply,
    checkpoint_dir,
    downloads_allowed,
    random_init,
)

PREFIXES = ("torchvision:", "timm:")


# ----------------------------------------------------------------------------- names, networks


def is_generic(model: str) -> bool:
    return model.startswith(PREFIXES)


def _torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _unknown_timm(name: str) -> UnknownNameError:
    import timm

    arch = name.split(".")[0]
    if "." in name and timm.is_model(arch):
        return unknown("pretrained tag", name, timm.list_pretrained(f"{arch}.*"), of=f"timm model {arch}")
    names = timm.list_models()
    close = ", ".join(f"timm:{n}" for n in difflib.get_close_matches(name, names, n=8, cutoff=0.6))
    return UnknownNameError(
        f"unknown model 'timm:{name}'; close matches: {close or 'none'}; timm has {len(names)} models "
        f"in all: list them with python -c \"import timm; print(timm.list_models('*pattern*'))\"")


@functools.cache
def _split(model: str) -> tuple[str, str]:
    """('torchvision' or 'timm', architecture name) of a valid generic model name."""
    kind, _, name = model.partition(":")
    if kind == "torchvision":
        if name not in _torchvision_names():
            raise unknown("model", model, [f"torchvision:{n}" for n in _torchvision_names()])
    elif kind == "timm":
        import timm

        if not timm.is_model(name) or ("." in name and name not in timm.list_pretrained(name)):
            raise _unknown_timm(name)
    else:
        raise UnknownNameError(f"unknown model {model!r}; generic models are named torchvision:NAME "
                               f"(e.g. torchvision:vgg16) or timm:NAME (e.g. timm:resnet18)")
    return kind, name


def _torchvision_default(name: str):
    return get_model_weights(name).DEFAULT


def _torchvision_kwargs(name: str) -> dict:
    """The arguments torchvision's builder sets when it loads the DEFAULT weights, so that random,
    file and ImageNet weights all go into the same architecture."""
    if name in ("googlenet", "inception_v3"):
        return {"transform_input": True, "aux_logits": True, "init_weights": False}
    if name.startswith("vit_"):
        return {"image_size": _torchvision_default(name).meta["min_size"][0]}
    if name == "maxvit_t":
        return {"input_size": _torchvision_default(name).meta["min_size"]}
    return {}


def _network(kind: str, name: str, seed: int = 0, device: str = "cpu") -> nn.Module:
    """The architecture, built under a seeded RNG (parameters that no ``reset_parameters``
    covers, such as position embeddings, are then reproducible too)."""
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        if kind == "torchvision":
            return torchvision.models.get_model(name, weights=None, **_torchvision_kwargs(name)).eval()
        import timm

        return timm.create_model(name, pretrained=False).eval()


def _input_size(kind: str, name: str, net: nn.Module) -> int:
    if kind == "torchvision":
        return _torchvision_default(name).transforms().crop_size[0]
    return net.pretrained_cfg["input_size"][-1]


def _tracer_kwargs(kind: str) -> dict | None:
    if kind == "torchvision":
        return None
    from timm.layers import get_notrace_functions, get_notrace_modules

    return {"leaf_modules": list(get_notrace_modules()), "autowrap_functions": list(get_notrace_functions())}


# ----------------------------------------------------------------------------- weights


def imagenet_weights(model: str) -> Weights | None:
    """The torchvision DEFAULT weights file (hash-checked like AlexNet's); None for timm, whose
    weights come from the Hugging Face hub."""
    kind, name = _split(model)
    return Weights.from_url(_torchvision_default(name).url) if kind == "torchvision" else None


def _timm_cached_file(cfg: dict) -> str | None:
    """The pretrained file of a timm config when it is already in the Hugging Face or torch cache."""
    if cfg.get("hf_hub_id"):
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            path = try_to_load_from_cache(cfg["hf_hub_id"], filename)
            if isinstance(path, str):
                return path
    if cfg.get("url"):
        path = checkpoint_dir() / cfg["url"].rsplit("/", 1)[-1]
        if path.is_file():
            return str(path)
    return None


def _timm_pretrained(name: str, cfg: dict, seed: int) -> tuple[nn.Module, str]:
    """timm's ImageNet weights: from the local cache if there, else downloaded by timm unless
    downloads are switched off."""
    import timm

    source = cfg.get("hf_hub_id") or cfg.get("url")
    if not source:
        raise WeightsError(f"timm has no pretrained weights for {name}; pass a state_dict path or random")
    how = (f"`huggingface-cli download {cfg['hf_hub_id']}` on a machine with internet (set HF_HOME to "
           f"use another cache)" if cfg.get("hf_hub_id") else
           f"download {cfg['url']} into {checkpoint_dir()}")
    local = _timm_cached_file(cfg)
    if local is None and not downloads_allowed():
        raise WeightsError(f"the timm weights {source} are not in the local cache and downloads are switched "
                           f"off ({OFFLINE_ENV}=1). Get them with {how}, or pass --weights PATH "
                           f"to a state_dict file, or --weights random for an untrained network")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = timm.create_model(name, pretrained=True,
                                    **({"pretrained_cfg_overlay": {"file": local}} if local else {}))
    except Exception as e:  # noqa: BLE001 (no network, HTTP error, corrupt file: all end the same way)
        raise WeightsError(f"cannot load the timm weights {source} ({type(e).__name__}: {e}). Get them with "
                           f"{how}, or pass --weights PATH or --weights random") from None
    return net.eval(), f"imagenet ({source})"


def _weighted(kind: str, name: str, weights: str, seed: int) -> tuple[nn.Module, str, bool]:
    net = _network(kind, name, seed)
    if kind == "timm" and weights == "imagenet":
        net, label = _timm_pretrained(name, net.pretrained_cfg, seed)
        return net, label, True
    spec = Weights.from_url(_torchvision_default(name).url) if kind == "torchvision" else None
    label, trained = apply(net, weights, spec, seed)
    return net, label, trained


def _preprocessing(kind: str, name: str, net: nn.Module, weights: str) -> tuple[tuple, tuple]:
    """(mean, std) in 0..1 units of the weights: the weights' own, ImageNet's for others."""
    if kind == "timm":
        return tuple(net.pretrained_cfg["mean"]), tuple(net.pretrained_cfg["std"])
    if weights == "imagenet":
        t = _torchvision_default(name).transforms()
        return tuple(t.mean), tuple(t.std)
    return IMAGENET_MEAN, IMAGENET_STD


# ----------------------------------------------------------------------------- receptive fields


class _Unknown(Exception):
    """An operation whose geometry the walk cannot determine (the message names it)."""


class _Field:
    """Unit 0's box [lo, hi) in input pixels along the rows, the stride between units, and the
    layout of the units in the tensor: ``axes`` (row, column) of a map, or (t, t) for a token
    axis t that holds ``tokens`` = (prefix, h, w): ``prefix`` tokens of no position (a class
    token), then an h x w grid row by row; ``rows``: the grid's rows at the nominal input size.
    ``mixed``: every unit may depend on the whole grid upstream, the box being that union (see
    ``spread``); ``axes`` None: mixed, and the positions are gone (global pooling, a flat vector)."""

    __slots__ = ("axes", "hi", "lo", "mixed", "rows", "stride", "tokens")

    def __init__(self, lo: int, hi: int, stride: int, axes: tuple[int, int] | None, rows: int = 1,
                 tokens: tuple[int, int, int] | None = None, mixed: bool = False):
        self.lo, self.hi, self.stride, self.axes, self.rows = lo, hi, stride, axes, rows
        self.tokens, self.mixed = tokens, mixed or axes is None

    def spread(self) -> _Field:
        """Every unit sees the union of the boxes of every unit of the grid; the layout is kept
        (attention: each token still stands at its place)."""
        if self.mixed:
            return self
        return _Field(self.lo, self.hi + (self.rows - 1) * self.stride, self.stride, self.axes, self.rows,
                      self.tokens, True)

    def whole(self) -> _Field:
        """``spread``, with the positions reduced away."""
        f = self.spread()
        return _Field(f.lo, f.hi, f.stride, None)

    def window(self, kernel: int, stride: int, before: int, rows: int) -> _Field:
        """After a ``kernel``-wide window moved by ``stride`` over a map padded by ``before``."""
        return _Field(self.lo - before * self.stride, self.hi + (kernel - 1 - before) * self.stride,
                      self.stride * stride, self.axes, rows)

    def moved(self, axes: tuple[int, int], rows: int | None = None) -> _Field:
        """The same units on ``axes``, a map's with ``rows`` rows (a token grid keeps its rows,
        which the length of its axis does not give)."""
        rows = self.rows if rows is None or self.tokens else rows
        return _Field(self.lo, self.hi, self.stride, axes, rows, self.tokens, self.mixed)

    def regrid(self, axes: tuple[int, int], tokens: tuple[int, int, int] | None) -> _Field:
        """The same units on ``axes``, as the token grid ``tokens`` (None: as a map)."""
        return _Field(self.lo, self.hi, self.stride, axes, self.rows, tokens, self.mixed)

    def seeing(self, fields: list[_Field]) -> _Field:
        """These units, each seeing all that ``fields`` see: the union of their whole grids."""
        seen = _merge(fields)
        return _Field(seen.lo, seen.hi, self.stride, self.axes, self.rows, self.tokens, True)


def _merge(fields: list[_Field], axes=None, rows: int = 1, tokens=None) -> _Field:
    """The union of the fields' boxes on a common layout (``axes`` with ``rows`` rows, or the
    token grid ``tokens``), with the largest stride; without axes, of their whole boxes."""
    if axes is None:
        fields = [f.whole() for f in fields]
    return _Field(min(f.lo for f in fields), max(f.hi for f in fields), max(f.stride for f in fields), axes,
                  tokens[1] if tokens else rows, tokens, any(f.mixed for f in fields))


def _meta(node):
    return node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None


def _shape(node) -> tuple[int, ...]:
    """Shape of a tensor node, or of the first tensor of a tuple-valued one."""
    meta = _meta(node)
    while meta is not None and not isinstance(meta, TensorMetadata):
        meta = meta[0] if len(meta) else None
    if meta is None:
        raise _Unknown(f"{node.format_node()} (no tensor shape)")
    return tuple(meta.shape)


def _arg(node: fx.Node, index: int, name: str, default=None):
    value = node.args[index] if len(node.args) > index else node.kwargs.get(name, default)
    if isinstance(value, fx.Node):
        raise _Unknown(f"{node.format_node()} (argument {name} is computed)")
    return value


def _first(value):
    return value[0] if isinstance(value, (tuple, list)) else value


def _dims(value, ndim: int) -> list[int]:
    dims = value if isinstance(value, (tuple, list)) else [value]
    return [d % ndim for d in dims]


def _same_start(old: tuple[int, ...], new: tuple[int, ...], axis: int, size: int) -> int | None:
    """The axis of ``new`` of ``size`` that starts where ``axis`` of ``old`` does (the sizes
    before them multiply to the same number), if any."""
    before = math.prod(old[:axis])
    return next((b for b in range(len(new)) if new[b] == size and math.prod(new[:b]) == before), None)


def _prefix_only(index, prefix: int) -> bool:
    """Whether ``index`` on a token axis keeps nothing but some of its first ``prefix`` tokens."""
    if isinstance(index, slice):
        return isinstance(index.start, (int, type(None))) and isinstance(index.stop, int) \
            and 0 <= (index.start or 0) and 0 < index.stop <= prefix
    return isinstance(index, int) and 0 <= index < prefix


def _padding_before(padding, kernel: int) -> int:
    if padding == "same":  # PyTorch puts the odd pixel after
        return (kernel - 1) // 2
    return 0 if padding == "valid" else _first(padding)


def _same_before(rows: int, kernel: int, stride: int) -> int:
    """Top padding of TensorFlow's (and timm's dynamic) 'SAME'."""
    return max((math.ceil(rows / stride) - 1) * stride + kernel - rows, 0) // 2


def _dynamic_same(m: nn.Module) -> bool:
    """timm's 'SAME' layers, which pad by the size of their input when they run."""
    if not type(m).__module__.startswith("timm."):
        return False
    from timm.layers import AvgPool2dSame, Conv2dSame, MaxPool2dSame

    return isinstance(m, (Conv2dSame, MaxPool2dSame, AvgPool2dSame)) or getattr(m, "same_pad", False) is True


_ACTIVATIONS = tuple(getattr(nn, n) for n in (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Hardswish",
    "Hardsigmoid", "Hardtanh", "Hardshrink", "Softshrink", "Sigmoid", "LogSigmoid", "Tanh", "Tanhshrink",
    "Softplus", "Softsign", "Threshold", "Softmax2d"))
_POINTWISE_MODULES = (nn.modules.batchnorm._BatchNorm, nn.Identity, nn.modules.dropout._DropoutNd,
                      nn.LocalResponseNorm, nn.ChannelShuffle) + _ACTIVATIONS  # batch norm: eval mode
_POINTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.pow, operator.iadd,
    operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.neg, torch.abs, torch.exp, torch.sqrt,
    torch.rsqrt, torch.sigmoid, torch.tanh, torch.relu, torch.clamp, torch.clip, torch.maximum, torch.minimum,
    torch.where, torch.erf, F.relu, F.relu6, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.leaky_relu, F.sigmoid, F.tanh, F.softplus, F.prelu, F.dropout, F.dropout2d,
    F.alpha_dropout, F.batch_norm, F.local_response_norm, F.channel_shuffle,
    stochastic_depth}  # drops whole samples, and nothing in eval mode
_POINTWISE_METHODS = {
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "abs", "exp", "pow", "sqrt", "rsqrt",
    "sigmoid", "sigmoid_", "tanh", "tanh_", "relu", "relu_", "clamp", "clamp_", "clamp_min", "clip", "erf",
    "contiguous", "float", "half", "to", "type", "type_as", "clone", "expand", "expand_as"}
_WHOLE_FUNCTIONS = {F.group_norm, F.instance_norm}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "logsumexp"}
_RESHAPES = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_NORMS = {F.layer_norm, F.rms_norm}  # over the last len(normalized_shape) dimensions
_SOFTMAX = {F.softmax, F.log_softmax, torch.softmax, torch.log_softmax}
_SPLITS = {"chunk", "split", "unbind"}
_MATMULS = {operator.matmul, torch.matmul, torch.bmm}
_ADAPTIVE = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_PADS = (nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.CircularPad2d)


def _function_name(node: fx.Node) -> str | None:
    """The name of a call to a reduction, reshape or split of torch (function or method)."""
    if node.op == "call_method":
        return node.target
    if node.target in (torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var, torch.logsumexp,
                       torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split,
                       torch.unbind, torch.permute, torch.transpose, torch.swapaxes, torch.swapdims):
        return node.target.__name__
    return None


class _Walk:
    """Fields of every node of a traced, shape-propagated graph, in graph order. ``inputs``: the
    fields of the placeholders (the image by default); ``measure(node, sources)`` resolves what
    the walk cannot, given the (input node, field) pairs (the default raises)."""

    def __init__(self, gm: fx.GraphModule, input_size: int, inputs=None, measure=None, device="cpu"):
        self.gm, self.input_size, self.device = gm, input_size, device
        self.inputs = list(inputs) if inputs is not None else None
        self.measure = measure
        self.fields: dict[fx.Node, _Field | None] = {}
        for node in gm.graph.nodes:
            self.fields[node] = self.field(node)

    def field(self, node: fx.Node) -> _Field | None:
        if node.op == "placeholder":
            if self.inputs is None:  # the image; other arguments (timm's attn_mask) keep their defaults
                return _Field(0, 1, 1, (2, 3), self.input_size) if _meta(node) is not None else None
            return self.inputs.pop(0) if self.inputs else None
        sources = [(n, self.fields[n]) for n in node.all_input_nodes if self.fields.get(n) is not None]
        ins = [f for _, f in sources]
        if node.op in ("get_attr", "output") or not ins or _meta(node) is None:
            return None  # constants, sizes, shapes: not a function of the image
        if any(f.axes is None for f in ins):
            return _merge(ins)
        mixed = any(f.mixed for f in ins)
        try:
            out = self.rule(node, ins)
        except Exception as e:  # noqa: BLE001 (_Unknown, or arguments no rule expects)
            if mixed:  # the whole grid is seen already: only where the positions went is unknown
                return _merge(ins)
            if self.measure is None:
                raise _Unknown(str(e) if isinstance(e, _Unknown) else node.format_node()) from None
            return self.measure(node, sources)
        # What has seen everything still does, on the rule's layout.
        return out.seeing(ins) if mixed else out

    # -- the rules

    def rule(self, node: fx.Node, ins: list[_Field]) -> _Field:
        if node.op == "call_module":
            return self.module(node, self.gm.get_submodule(node.target), ins)
        target, name = node.target, _function_name(node)
        if target in _POINTWISE_FUNCTIONS or (node.op == "call_method" and target in _POINTWISE_METHODS):
            return self.union(node, ins)
        if target in _WHOLE_FUNCTIONS:
            return _merge(ins)
        if target is operator.getitem:
            return self.getitem(node)
        if target in (torch.cat, torch.concat, torch.concatenate, torch.stack):
            return self.concat(node, ins)
        if target is F.linear:
            return self.last_dims(node, 1)
        if target in _MATMULS or (node.op == "call_method" and target in ("matmul", "bmm")):
            return self.matmul(node, ins)
        if target is F.scaled_dot_product_attention:
            return self.attention(node, ins)
        if target in _NORMS:
            shape = _arg(node, 1, "normalized_shape")
            return self.last_dims(node, len(shape) if isinstance(shape, (tuple, list)) else 1)
        if target in _SOFTMAX or (node.op == "call_method" and target in ("softmax", "log_softmax")):
            return self.along(node, _arg(node, 1, "dim"))
        if target is F.normalize:
            return self.along(node, _arg(node, 2, "dim", 1))
        if target in (torch.conv2d, F.max_pool2d, F.avg_pool2d):
            return self.window_function(node)
        if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            return self.resample(node)
        if target is F.pad:
            return self.pad(node, _arg(node, 1, "pad"))
        if name in _REDUCTIONS:
            return self.reduce(node)
        if name in _RESHAPES:
            return self.reshape(node)
        if name in ("permute", "transpose", "swapaxes", "swapdims"):
            return self.permute(node, name)
        if name in _SPLITS:
            return self.split(node, name)
        raise _Unknown(node.format_node())

    def module(self, node: fx.Node, m: nn.Module, ins: list[_Field]) -> _Field:
        if isinstance(m, _POINTWISE_MODULES):
            return self.union(node, ins)
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            f, rows = self.spatial_input(node)
            kernel, stride = _first(m.kernel_size), _first(m.stride)
            dilation = _first(getattr(m, "dilation", 1))
            size = dilation * (kernel - 1) + 1
            before = _same_before(f.rows, size, stride) if _dynamic_same(m) else _padding_before(m.padding, size)
            return f.window(size, stride, before, rows)
        if isinstance(m, _ADAPTIVE):
            return self.resample(node)
        if isinstance(m, _PADS):
            return self.pad(node, m.padding)
        if isinstance(m, nn.Linear):
            return self.last_dims(node, 1)
        if isinstance(m, nn.LayerNorm):
            return self.last_dims(node, len(m.normalized_shape))
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            return self.along(node, m.dim)
        if isinstance(m, nn.MultiheadAttention):
            return self.attention(node, ins)
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            return self.reshape(node)
        return self.submodule(node, m)

    def submodule(self, node: fx.Node, m: nn.Module) -> _Field:
        """A leaf module, traced on its own and walked with the same rules."""
        if node.kwargs or not all(isinstance(a, fx.Node) and isinstance(_meta(a), TensorMetadata)
                                  for a in node.args):
            raise _Unknown(f"{type(m).__name__} (arguments other than tensors)")
        try:
            gm = fx.GraphModule(m, fx.Tracer().trace(m))
            ShapeProp(gm).propagate(*(torch.zeros(_meta(a).shape, dtype=_meta(a).dtype, device=self.device)
                                      for a in node.args))
        except Exception as e:  # noqa: BLE001 (whatever stops the trace)
            raise _Unknown(f"{type(m).__name__} (not traceable: {type(e).__name__})") from None
        try:
            inner = _Walk(gm, self.input_size, [self.fields[a] for a in node.args], device=self.device)
        except _Unknown as e:
            raise _Unknown(f"{type(m).__name__}: {e}") from None
        out = next(n for n in gm.graph.nodes if n.op == "output").args[0]
        if not isinstance(out, fx.Node) or inner.fields.get(out) is None:
            raise _Unknown(f"{type(m).__name__} (output)")
        return inner.fields[out]

    def spatial_input(self, node: fx.Node) -> tuple[_Field, int]:
        """The field of a 2-D operation's input, which must have the spatial axes last, and the
        number of rows of its output."""
        source = node.args[0]
        f = self.fields[source]
        ndim = len(_shape(source))
        if f.axes != (ndim - 2, ndim - 1):
            raise _Unknown(f"{node.format_node()} (spatial axes {f.axes} of a {ndim}-D tensor)")
        return f, _shape(node)[-2]

    def union(self, node: fx.Node, ins: list[_Field]) -> _Field:
        """Position by position (broadcasting): the union of the inputs' boxes."""
        out = _shape(node)
        axes = None
        for source in node.all_input_nodes:
            f = self.fields.get(source)
            if f is None:
                continue
            shape = _shape(source)
            shift = len(out) - len(shape)
            moved = (f.axes[0] + shift, f.axes[1] + shift)
            if (out[moved[0]], out[moved[1]]) != (shape[f.axes[0]], shape[f.axes[1]]) or axes not in (None, moved):
                raise _Unknown(f"{node.format_node()} (broadcasts over space)")
            axes = moved
        grids = {f.tokens for f in ins}
        if len(grids) > 1:
            raise _Unknown(f"{node.format_node()} (different token grids)")
        return _merge(ins, axes, out[axes[0]], grids.pop())

    def concat(self, node: fx.Node, ins: list[_Field]) -> _Field:
        out = _shape(node)
        dim = _arg(node, 1, "dim", 0) % len(out)
        first = self.fields[next(n for n in node.all_input_nodes if self.fields.get(n) is not None)]
        if node.target is torch.stack:
            axes = tuple(a + (a >= dim) for a in first.axes)
        elif first.tokens and dim == first.axes[0]:
            return self.prefixed(node, dim)
        else:
            axes = first.axes
        if dim in axes or any(f.axes != first.axes or f.tokens != first.tokens for f in ins):
            raise _Unknown(f"{node.format_node()} (joins along space)")
        return _merge(ins, axes, out[axes[0]], first.tokens)

    def prefixed(self, node: fx.Node, dim: int) -> _Field:
        """Tokens joined in front of a token grid (a class token): more prefix tokens."""
        *before, grid = _arg(node, 0, "tensors")
        f = self.fields.get(grid)
        if f is None or any(self.fields.get(t) is not None for t in before):
            raise _Unknown(f"{node.format_node()} (joins tokens computed from the image)")
        prefix, h, w = f.tokens
        return f.regrid(f.axes, (prefix + sum(_shape(t)[dim] for t in before), h, w))

    def getitem(self, node: fx.Node) -> _Field | None:
        source, index = node.args
        f = self.fields[source]
        if not isinstance(_meta(source), TensorMetadata):  # one tensor of a tuple (chunk, split)
            return f.moved(f.axes, _shape(node)[f.axes[0]])
        ndim = len(_shape(source))
        index = list(index) if isinstance(index, tuple) else [index]
        if any(isinstance(i, fx.Node) for i in index):
            raise _Unknown(f"{node.format_node()} (indexing by a tensor)")
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index[at:at + 1] = [slice(None)] * (ndim - sum(i is not None for i in index) + 1)
        index += [slice(None)] * (ndim - sum(i is not None for i in index))
        axes, position, dim, crop = {}, 0, 0, None
        for i in index:
            if i is None:
                position += 1
                continue
            if dim in f.axes:
                if f.tokens and not f.mixed and _prefix_only(i, f.tokens[0]):
                    return None  # per-token operations never brought the image into a class token
                if not isinstance(i, slice) or any(isinstance(v, fx.Node) for v in (i.start, i.step)) \
                        or (i.start or 0) < 0 or (i.step or 1) < 1:
                    raise _Unknown(f"{node.format_node()} (indexes space)")
                crop = (i.step or 1, i.start or 0) if dim == f.axes[0] else crop
            if isinstance(i, slice):
                axes[dim] = position
                position += 1
            dim += 1
        out = _shape(node)
        moved = (axes[f.axes[0]], axes[f.axes[1]])
        step, start = crop or (1, 0)
        if f.tokens:  # prefix tokens may go, the grid must stay whole
            prefix, h, w = f.tokens
            if step != 1 or start > prefix or out[moved[0]] != prefix - start + h * w:
                raise _Unknown(f"{node.format_node()} (indexes the token grid)")
            return f.regrid(moved, (prefix - start, h, w))
        return f.window(1, step, -start, out[moved[0]]).moved(moved)

    def last_dims(self, node: fx.Node, count: int) -> _Field:
        f = self.fields[node.args[0]]
        ndim = len(_shape(node.args[0]))
        if max(f.axes) >= ndim - count:
            return f.whole()
        return f.moved(f.axes, _shape(node)[f.axes[0]])

    def along(self, node: fx.Node, dim) -> _Field:
        """Softmax or normalisation along ``dim``: along space, every unit sees the whole grid
        and stays in its place."""
        f = self.fields[node.args[0]]
        if dim is None or dim % len(_shape(node.args[0])) in f.axes:
            return f.spread()
        return f

    def matmul(self, node: fx.Node, ins: list[_Field]) -> _Field:
        """a @ b sums over a's last axis and b's second last. With one side constant (a weight),
        the positions stay where they are unless they are summed over. With both computed from
        the image, as in attention (q @ kᵀ, then the weights @ v), every row of a meets all of
        b's positions: it sees the whole grid (an upper bound should b's positions be batch
        axes), in a's layout."""
        a, b = node.args[:2]
        fa = self.fields.get(a)
        f, x, summed = (fa, a, -1) if fa is not None else (self.fields[b], b, -2)
        ndim = len(_shape(x))
        if min(len(_shape(a)), len(_shape(b))) < 2 or summed % ndim in f.axes:
            return _merge(ins)
        shift = len(_shape(node)) - ndim
        axes = (f.axes[0] + shift, f.axes[1] + shift)
        return f.moved(axes) if len(ins) == 1 else f.moved(axes).seeing(ins)

    def attention(self, node: fx.Node, ins: list[_Field]) -> _Field:
        """Scaled dot-product attention (a function or nn.MultiheadAttention): every query meets
        every key, so every output unit sees the whole grid, in the queries' layout."""
        q = node.args[0] if node.args else node.kwargs["query"]
        f = self.fields.get(q)
        ndim = len(_shape(q))
        if f is None or ndim - 1 in f.axes:
            return _merge(ins)
        shift = len(_shape(node)) - ndim
        return f.moved((f.axes[0] + shift, f.axes[1] + shift)).seeing(ins)

    def window_function(self, node: fx.Node) -> _Field:
        f, rows = self.spatial_input(node)
        if node.target is torch.conv2d:
            kernel = _shape(node.args[1])[-2]
            stride, padding, dilation = (_arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                                         _arg(node, 5, "dilation", 1))
        else:
            kernel = _first(_arg(node, 1, "kernel_size"))
            stride = _arg(node, 2, "stride") or kernel
            padding = _arg(node, 3, "padding", 0)
            dilation = _arg(node, 4, "dilation", 1) if node.target is F.max_pool2d else 1
        size = _first(dilation) * (kernel - 1) + 1
        return f.window(size, _first(stride), _padding_before(padding, size), rows)

    def resample(self, node: fx.Node) -> _Field:
        """Adaptive pooling: nothing when the size is kept, a plain window when the map divides
        evenly into several units, else everything (global pooling; an upper bound otherwise)."""
        f, rows = self.spatial_input(node)
        if rows == f.rows:
            return f
        if rows > 1 and f.rows % rows == 0:
            return f.window(f.rows // rows, f.rows // rows, 0, rows)
        return f.whole()

    def pad(self, node: fx.Node, pad) -> _Field:
        f = self.fields[node.args[0]]
        ndim = len(_shape(node.args[0]))
        at = 2 * (ndim - 1 - f.axes[0])
        before = pad[at] if len(pad) > at else 0
        if f.tokens:  # features padded, tokens untouched
            if any(pad[at:at + 2]):
                raise _Unknown(f"{node.format_node()} (pads the tokens)")
            return f
        return f.window(1, 1, before, _shape(node)[f.axes[0]])

    def reduce(self, node: fx.Node) -> _Field:
        f = self.fields[node.args[0]]
        ndim = len(_shape(node.args[0]))
        dim = _arg(node, 1, "dim")
        if dim is None:
            return f.whole()
        dims = _dims(dim, ndim)
        if set(dims) & set(f.axes):
            return f.whole()
        if not _arg(node, 2, "keepdim", False):
            return f.moved(tuple(a - sum(d < a for d in dims) for a in f.axes))
        return f

    def reshape(self, node: fx.Node) -> _Field:
        """A view keeps an axis where the sizes before it multiply to the same number and the
        axis has the same size. A map's rows and columns merged into one axis become a grid of
        tokens (a ViT's patches), and a grid without prefix tokens split into rows and columns
        a map again; if a spatial axis is otherwise merged away, the positions are gone."""
        f = self.fields[node.args[0]]
        old, new = _shape(node.args[0]), _shape(node)
        kept = [_same_start(old, new, a, old[a]) for a in f.axes]
        if None not in kept:
            return f.moved(tuple(kept))
        row, column = f.axes
        if f.tokens is None and column == row + 1:
            t = _same_start(old, new, row, old[row] * old[column])
            if t is not None:
                return f.regrid((t, t), (0, old[row], old[column]))
        elif f.tokens and f.tokens[0] == 0:
            r = _same_start(old, new, row, f.tokens[1])
            if r is not None and new[r + 1:r + 2] == (f.tokens[2],):
                return f.regrid((r, r + 1), None)
        return f.whole()

    def permute(self, node: fx.Node, name: str) -> _Field:
        f = self.fields[node.args[0]]
        ndim = len(_shape(node.args[0]))
        if name == "permute":
            dims = node.args[1] if len(node.args) == 2 and not isinstance(node.args[1], int) else node.args[1:]
            order = _dims(list(dims) or _arg(node, 1, "dims"), ndim)
        else:
            a, b = _dims([_arg(node, 1, "dim0"), _arg(node, 2, "dim1")], ndim)
            order = list(range(ndim))
            order[a], order[b] = b, a
        return f.moved((order.index(f.axes[0]), order.index(f.axes[1])))

    def split(self, node: fx.Node, name: str) -> _Field:
        f = self.fields[node.args[0]]
        ndim = len(_shape(node.args[0]))
        dim = _arg(node, 1 if name == "unbind" else 2, "dim", 0) % ndim
        if dim in f.axes:
            raise _Unknown(f"{node.format_node()} (splits space)")
        if name == "unbind":
            return f.moved(tuple(a - (a > dim) for a in f.axes))
        return f


class _Measure:
    """The empirical fallback: the field of one node from the gradient support of its centre
    unit, in a copy of the network with random weights. One forward pass per input size keeps
    every node's value, so each measurement costs one backward pass."""

    def __init__(self, gm: fx.GraphModule, network, input_size: int):
        self.gm, self.network, self.input_size = gm, network, input_size
        self.net = None
        self.runs = {}

    def __call__(self, node: fx.Node, sources: list[tuple[fx.Node, _Field]]) -> _Field | None:
        ins = [f for _, f in sources]
        source, f = sources[0]
        out = _shape(node)
        if len(out) != len(_shape(source)) or f.tokens:  # no centre unit to measure: counted whole
            return _merge(ins)
        rows = out[f.axes[0]]
        if rows > f.rows or (rows == 1 < f.rows):  # upsampling, or global at the nominal size
            return _merge(ins)
        stride = f.stride * round(f.rows / rows)
        for size in (self.input_size, 2 * self.input_size):
            try:
                support, centre = self.support(node, size, f.axes)
            except Exception:  # noqa: BLE001 (a size the network does not accept, a tuple value)
                break
            if support is None:
                return None
            first, last = support
            if first > 0 and last < size - 1:
                return _Field(first - centre * stride, last + 1 - centre * stride, stride, f.axes, rows)
        return _merge(ins)

    def run(self, size: int):
        """(input, value of every node) for a random ``size`` x ``size`` batch of two."""
        if size not in self.runs:
            if self.net is None:
                self.net = self.network()
                random_init(self.net, 0)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(2, 3, size, size, generator=g).requires_grad_(True)
            interpreter = fx.Interpreter(fx.GraphModule(self.net, self.gm.graph), garbage_collect_values=False)
            interpreter.run(x)
            self.runs[size] = x, interpreter.env
        return self.runs[size]

    def support(self, node: fx.Node, size: int, axes):
        """(first, last) input row with a non-zero gradient for the centre unit of ``node`` at a
        ``size`` x ``size`` input (None if there is none), and the centre unit's row index."""
        x, values = self.run(size)
        y = values[node]
        index = [slice(None)] * y.dim()
        index[axes[0]], index[axes[1]] = y.shape[axes[0]] // 2, y.shape[axes[1]] // 2
        grad, = torch.autograd.grad(y[tuple(index)].sum(), x, retain_graph=True)
        rows = torch.nonzero(grad.abs().sum((0, 1, 3))).flatten().tolist()
        return ((rows[0], rows[-1]) if rows else None), y.shape[axes[0]] // 2


def _meta_network(kind: str, name: str) -> nn.Module:
    try:
        return _network(kind, name, device="meta")
    except Exception:  # noqa: BLE001 (builders that compute with tensors, e.g. RegNet's widths)
        return _network(kind, name).to("meta")


def _traced(kind: str, name: str, device: str):
    """(graph module, node names, nominal input size), shapes propagated at that size."""
    net = _meta_network(kind, name) if device == "meta" else _network(kind, name)
    # The tracer and arguments of get_graph_node_names: the names are create_feature_extractor's.
    tracer = feature_extraction.NodePathTracer(**feature_extraction._set_default_tracer_kwargs(_tracer_kwargs(kind)))
    graph = tracer.trace(net)
    gm = fx.GraphModule(tracer.root, graph)
    size = _input_size(kind, name, net)
    ShapeProp(gm).propagate(torch.zeros(1, 3, size, size, device=device))
    return gm, tracer.node_to_qualname, size


@functools.cache
def layers(model: str) -> list[LayerInfo]:
    """Every node of ``model`` whose value is a tensor computed from the image, in graph order,
    with its channels (dimension 1, or the last of a token sequence; both non-spatial dimensions
    for a channels-last map), receptive field, whether it is a 4-D map, and the grid of a token
    sequence (N, T, D). ``geometry`` is the node's field as one window on the image (kernel =
    size, padding = −start), since a graph has no single previous layer."""
    kind, name = _split(model)
    try:  # shapes only: without allocating or initialising the weights
        gm, names, size = _traced(kind, name, "meta")
        device = "meta"
    except Exception:  # noqa: BLE001 (meta tensors unsupported somewhere: do it for real)
        try:
            gm, names, size = _traced(kind, name, "cpu")
        except Exception as e:  # noqa: BLE001
            raise PreimageError(f"{model} cannot be traced by torch.fx ({type(e).__name__}: {e}), so it "
                                f"cannot be truncated at a node") from None
        device = "cpu"
    try:
        walk = _Walk(gm, size, measure=_Measure(gm, lambda: _network(kind, name), size), device=device)
    except _Unknown as e:
        raise PreimageError(f"cannot determine the receptive fields of {model}: {e}") from None
    table = []
    for node, f in walk.fields.items():
        meta = _meta(node)
        if f is None or node.op == "placeholder" or not isinstance(meta, TensorMetadata):
            continue
        shape = tuple(meta.shape)
        if f.axes is not None:
            channels = math.prod(s for i, s in enumerate(shape[1:], 1) if i not in f.axes)
        else:
            channels = shape[-1] if len(shape) == 3 else (shape[1] if len(shape) > 1 else 1)
        rf = ReceptiveField(f.hi - f.lo, f.stride, (f.lo + f.hi - 1) / 2)
        tokens = f.tokens if len(shape) == 3 and f.axes == (1, 1) else None  # a code (T, D)
        table.append(LayerInfo(names[node], channels, Geometry(rf.size, rf.stride, -f.lo), rf, len(shape) == 4,
                               tokens))
    return table


# ----------------------------------------------------------------------------- representations


class _Node(nn.Module):
    """The value of one node of a feature extractor, as a tensor."""

    def __init__(self, extractor: nn.Module, node: str):
        super().__init__()
        self.extractor = extractor
        self.node = node

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extractor(x)[self.node]


def _resolve(table: list[LayerInfo], layer: str, model: str) -> str:
    """The node ``layer`` names: itself, or the last node of the module ``layer``."""
    names = [l.name for l in table]
    inside = [n for n in names if n.startswith(layer + ".")]
    if layer in names or not inside:
        return names[find_layer(table, layer, model)]
    return inside[-1]


def build(model: str, layer: str, weights: str = "imagenet", seed: int = 0) -> Representation:
    """``model`` ('torchvision:NAME' or 'timm:NAME') truncated at node ``layer``, with ``weights``
    'imagenet', 'random' (reset with ``seed``) or a state_dict path."""
    kind, name = _split(model)
    table = layers(model)
    node = _resolve(table, layer, model)
    net, label, trained = _weighted(kind, name, weights, seed)
    mean, std = _preprocessing(kind, name, net, weights)
    extractor = feature_extraction.create_feature_extractor(
        net, return_nodes=[node], tracer_kwargs=_tracer_kwargs(kind), suppress_diff_warning=True)
    return Representation(nn.Sequential(Normalise(std), _Node(extractor, node)), model=model, layer=node,
                          layers=table, weights=label, trained=trained, mean=tuple(255 * m for m in mean),
                          input_size=_input_size(kind, name, net))
