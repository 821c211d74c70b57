"""Every way weights arrive: the torch hub cache, a download, a local file, or a seeded random
initialisation. Files are loaded with ``weights_only=True`` and checked against their hash."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import WeightsError

OFFLINE_ENV = "PREIMAGE_OFFLINE"  # set to 1 to never attempt a download (tests set it)


# torchvision's ImageNet preprocessing (0..1 units), which AlexNet and most torchvision/timm models use
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Weights:
    """One published weights file and what using it needs, as torchvision's weights enums carry
    it: where it comes from, the hash it must have (the sha256 prefix in its name, the torch hub
    convention, or a full SHA-1 where the publisher gives one), the input it expects (pixel
    ``mean`` on the 0..255 scale, ``std`` on the 0..1 scale, ``input_size``) and its categories."""

    url: str
    sha256_prefix: str = ""
    origin: str = ""  # what provenance names as the source; the file name when empty
    sha1: str = ""
    mean: tuple[float, ...] = tuple(255 * m for m in IMAGENET_MEAN)
    std: tuple[float, ...] | None = IMAGENET_STD  # None: the network takes the pixels unscaled
    input_size: int | None = 224
    categories: str | None = "imagenet-1k"  # the label set of the last layer, where it is known

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def downloadable(self) -> bool:
        return self.url.startswith(("http://", "https://"))

    @classmethod
    def from_url(cls, url: str, **meta) -> "Weights":
        """A torch hub file, whose name ends in the first digits of its sha256."""
        stem = url.rsplit("/", 1)[-1].split(".")[0]
        return cls(url, stem.rsplit("-", 1)[-1], **meta)

    def category_names(self) -> list[str]:
        """The names of the last layer's units (ImageNet's 1000 classes), or an empty list."""
        if self.categories != "imagenet-1k":
            return []
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return list(_IMAGENET_CATEGORIES)


def checkpoint_dir() -> Path:
    """Where torch hub caches checkpoints ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (read in blocks)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_hash(path: Path, spec: Weights) -> None:
    algorithm, expected = ("sha1", spec.sha1) if spec.sha1 else ("sha256", spec.sha256_prefix)
    digest = file_digest(path, algorithm)
    if not digest.startswith(expected):
        raise WeightsError(
            f"{path} has {algorithm} {digest[:12]}…, expected a hash starting {expected[:12]}: the file "
            f"is corrupt, truncated or a different model. Delete it and download {spec.url} again "
            f"into {path.parent}")


def downloads_allowed() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("1", "true", "yes")


def fetch(spec: Weights, download: bool | None = None) -> Path:
    """The checked local path of ``spec``: the cached file, else a download into the cache,
    else an error that says where to put the file."""
    path = checkpoint_dir() / spec.filename
    if not path.exists():
        if download is None:
            download = downloads_allowed()
        reason = f"downloads are switched off ({OFFLINE_ENV}=1)"
        if download:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(spec.url, str(path), hash_prefix=spec.sha256_prefix or None,
                                               progress=False)
            except Exception as e:  # no network, HTTP error, hash mismatch: all end the same way
                reason = f"the download failed ({type(e).__name__}: {e})"
        if not path.exists():
            raise WeightsError(
                f"weights file {spec.filename} not found in {path.parent} and {reason}. Get it on a "
                f"machine with internet (e.g. `curl -L -o {spec.filename} {spec.url}`) and copy it "
                f"to {path} (set TORCH_HOME to use another cache), or pass --weights PATH to a "
                f"state_dict file, or --weights random for an untrained network")
    check_hash(path, spec)
    return path


def load_state_dict(path: str | os.PathLike, module: nn.Module) -> dict[str, torch.Tensor]:
    """A state_dict read safely from ``path`` and checked to fit ``module`` key by key."""
    path = _existing(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"cannot read {path} as a PyTorch state_dict ({type(e).__name__}: {e}); "
                           f"save one with torch.save(model.state_dict(), PATH)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} holds a {type(state).__name__}, not a state_dict")
    odd = [f"{k} ({type(v).__name__})" for k, v in state.items() if not torch.is_tensor(v)]
    if odd:
        raise WeightsError(f"{path} holds values that are not tensors ({', '.join(odd[:5])}); save a state_dict "
                           f"with torch.save(model.state_dict(), PATH)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"{path} holds NaN or Inf values in {', '.join(bad[:5])}: the file is corrupt or the "
                           f"training diverged; use other weights")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = [f"missing keys: {', '.join(missing[:5])}" if missing else "",
                 f"unexpected keys: {', '.join(unexpected[:5])}" if unexpected else "",
                 f"wrong shapes: {', '.join(wrong[:5])}" if wrong else ""]
        raise WeightsError(f"{path} does not fit {type(module).__name__}: "
                           + "; ".join(p for p in parts if p))
    return state


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; pass imagenet, random or the path "
                           f"of a state_dict saved with torch.save(model.state_dict(), PATH)")
    return path


def random_init(module: nn.Module, seed: int) -> None:
    """Re-initialise ``module`` reproducibly, whatever the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()


def _load_checked(module: nn.Module, path: Path) -> None:
    module.load_state_dict(load_state_dict(path, module))


def apply(module: nn.Module, weights: str, spec: Weights | None, seed: int = 0,
          locate: Callable[[Weights], Path] = None, load: Callable[[nn.Module, Path], None] = None
          ) -> tuple[str, bool]:
    """Load ``weights`` ('imagenet', 'random' or a path) into ``module``. ``locate`` finds the
    checked file of ``spec`` (default: the torch hub cache or a download); ``load`` puts a file
    into the module (default: a key-by-key checked state_dict). Returns the label that provenance
    records and whether the weights are trained."""
    if weights == "random":
        random_init(module, seed)
        return f"random(seed={seed})", False
    if weights == "imagenet":
        if spec is None:
            raise WeightsError("this model has no published ImageNet weights; pass a path or random")
        path = (locate or fetch)(spec)
        label = f"imagenet ({spec.origin or spec.filename})"
    else:
        path = _existing(weights)
        label = f"file {path.name} (sha256 {file_digest(path)[:12]})"
    (load or _load_checked)(module, path)
    return label, True
