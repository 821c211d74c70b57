"""Weights from the torch hub cache, a local file or a seeded initialisation, on files the tests
write themselves (nothing is ever downloaded)."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from preimage import representations
from preimage.errors import UnknownNameError, WeightsError
from preimage.representations import alexnet as alexnet_mod
from preimage.representations import weights

REAL_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    """A fresh, empty TORCH_HOME per test, and any download attempt is a test failure."""
    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("PREIMAGE_OFFLINE", "1")

    def no_download(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return home


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)


def _tiny_state(seed=0):
    torch.manual_seed(seed)
    return Tiny().state_dict()


def _cache(home: Path) -> Path:
    d = home / "hub" / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    return d


# ----------------------------------------------------------------------------- fetch and hashes


def test_checkpoint_dir_follows_torch_home(torch_home):
    assert weights.checkpoint_dir() == torch_home / "hub" / "checkpoints"


def test_fetch_returns_cached_file_with_matching_hash(torch_home):
    path = _cache(torch_home) / "tiny-0000.pth"
    torch.save(_tiny_state(), path)
    digest = _sha256(path)
    spec = weights.Weights("https://example.invalid/models/tiny-0000.pth", digest[:10])
    assert spec.filename == "tiny-0000.pth"
    assert weights.fetch(spec) == path
    assert weights.file_digest(path) == digest
    state = weights.load_state_dict(weights.fetch(spec), Tiny())
    assert torch.equal(state["conv.weight"], _tiny_state()["conv.weight"])


def test_from_url_takes_hash_prefix_from_file_name():
    spec = weights.Weights.from_url(REAL_URL)
    assert spec.sha256_prefix == "7be5be79" and spec.filename == "alexnet-owt-7be5be79.pth"
    assert (alexnet_mod.IMAGENET.url, alexnet_mod.IMAGENET.sha256_prefix) == (spec.url, spec.sha256_prefix)
    assert alexnet_mod.IMAGENET.input_size == 227 and len(alexnet_mod.IMAGENET.category_names()) == 1000


def test_fetch_hash_mismatch(torch_home):
    path = _cache(torch_home) / "tiny-0000.pth"
    torch.save(_tiny_state(), path)
    wrong = "0123abcd" if not _sha256(path).startswith("0123abcd") else "fedc9876"
    spec = weights.Weights("https://example.invalid/models/tiny-0000.pth", wrong)
    with pytest.raises(WeightsError) as e:
        weights.fetch(spec)
    msg = str(e.value)
    assert wrong in msg  # the expected hash
    assert _sha256(path)[:12] in msg  # the hash it has
    assert "Delete it" in msg and spec.url in msg and str(path.parent) in msg


@pytest.mark.parametrize("download", [None, False])
def test_fetch_missing_file_offline_says_where_to_put_it(torch_home, download):
    spec = weights.Weights("https://example.invalid/models/tiny-abcdef.pth", "abcdef")
    with pytest.raises(WeightsError) as e:
        weights.fetch(spec, download=download)
    msg = str(e.value)
    assert str(_cache(torch_home) / "tiny-abcdef.pth") in msg  # where to put it
    assert spec.url in msg
    assert "PREIMAGE_OFFLINE=1" in msg
    assert not (_cache(torch_home) / "tiny-abcdef.pth").exists()


def test_downloads_allowed_reads_environment(monkeypatch):
    for value, allowed in (("1", False), ("true", False), ("yes", False), ("0", True), ("", True)):
        monkeypatch.setenv("PREIMAGE_OFFLINE", value)
        assert weights.downloads_allowed() is allowed


def test_failed_download_reports_reason(torch_home, monkeypatch):
    # With downloads allowed, a failing download (stubbed: no network is used) ends in the same
    # error as a missing file, with the reason.
    def failing(url, dst, **kw):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing)
    spec = weights.Weights("https://example.invalid/models/tiny-abcdef.pth", "abcdef")
    with pytest.raises(WeightsError, match="the download failed .ConnectionError: no route to host"):
        weights.fetch(spec, download=True)


# ----------------------------------------------------------------------------- load_state_dict


def test_load_state_dict_missing_path(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        weights.load_state_dict(tmp_path / "nope.pth", Tiny())


def test_load_state_dict_non_torch_file(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights\n")
    with pytest.raises(WeightsError) as e:
        weights.load_state_dict(path, Tiny())
    assert f"cannot read {path} as a PyTorch state_dict" in str(e.value)
    assert "torch.save(model.state_dict(), PATH)" in str(e.value)


def test_load_state_dict_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(WeightsError, match="holds a Tensor, not a state_dict"):
        weights.load_state_dict(path, Tiny())


def test_load_state_dict_wrong_keys(tmp_path):
    state = _tiny_state()
    state["extra.weight"] = state.pop("fc.weight")
    path = tmp_path / "keys.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as e:
        weights.load_state_dict(path, Tiny())
    msg = str(e.value)
    assert "does not fit Tiny" in msg
    assert "missing keys: fc.weight" in msg and "unexpected keys: extra.weight" in msg


def test_load_state_dict_wrong_shapes(tmp_path):
    state = _tiny_state()
    state["conv.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "shapes.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"wrong shapes: conv.weight \(8, 3, 3, 3\) \(expected \(4, 3, 3, 3\)\)"):
        weights.load_state_dict(path, Tiny())


def test_load_state_dict_accepts_checkpoint_wrapper(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": _tiny_state(3), "epoch": 7}, path)
    state = weights.load_state_dict(path, Tiny())
    assert torch.equal(state["fc.bias"], _tiny_state(3)["fc.bias"])


def test_load_state_dict_refuses_pickled_code(tmp_path):
    # weights_only=True: a pickled module (arbitrary code) is not loaded.
    path = tmp_path / "module.pth"
    torch.save(Tiny(), path)
    with pytest.raises(WeightsError, match="cannot read"):
        weights.load_state_dict(path, Tiny())


# ----------------------------------------------------------------------------- AlexNet


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory):
    """A complete torchvision AlexNet state_dict (seeded random values), written once."""
    torch.manual_seed(123)
    net = torchvision.models.alexnet(weights=None)
    path = tmp_path_factory.mktemp("alexnet") / "alexnet-test.pth"
    torch.save(net.state_dict(), path)
    return path, _sha256(path)


def test_imagenet_weights_from_cache(torch_home, alexnet_file, monkeypatch, photo227):
    src, digest = alexnet_file
    cached = _cache(torch_home) / "alexnet-owt-7be5be79.pth"
    cached.symlink_to(src)
    monkeypatch.setattr(alexnet_mod, "IMAGENET", dataclasses.replace(alexnet_mod.IMAGENET, sha256_prefix=digest[:8]))
    rep = representations.get("alexnet", "conv1", weights="imagenet")
    assert rep.trained and "imagenet" in rep.weights and "alexnet-owt-7be5be79.pth" in rep.weights
    assert "untrained" not in rep.label

    # Independent reference: torchvision's own AlexNet with the same state_dict, on its own
    # input convention ((pixels/255 − mean)/std).
    ref = torchvision.models.alexnet(weights=None)
    ref.load_state_dict(torch.load(src, weights_only=True))
    ref.eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = torch.as_tensor(photo227.copy()).permute(2, 0, 1)[None].float() - torch.tensor(rep.mean).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = rep(x)
        theirs = ref.features[0](((x + torch.tensor(rep.mean).view(1, 3, 1, 1)) / 255 - mean) / std)
    assert ours.shape == (1, 64, 56, 56)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())

    # A deeper layer too (through the adaptive pool and the classifier), from the same cache.
    fc7 = representations.get("alexnet", "relu7", weights="imagenet")
    with torch.no_grad():
        r = ((x + torch.tensor(rep.mean).view(1, 3, 1, 1)) / 255 - mean) / std
        expected = ref.classifier[:6](torch.flatten(ref.avgpool(ref.features(r)), 1))
        got = fc7(x)
    assert got.shape == (1, 4096)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_imagenet_weights_missing_offline(torch_home):
    with pytest.raises(WeightsError) as e:
        representations.get("alexnet", "conv1", weights="imagenet")
    msg = str(e.value)
    assert str(_cache(torch_home) / "alexnet-owt-7be5be79.pth") in msg and REAL_URL in msg
    assert "--weights random" in msg


def test_imagenet_weights_wrong_hash(torch_home, alexnet_file):
    src, _ = alexnet_file
    (_cache(torch_home) / "alexnet-owt-7be5be79.pth").symlink_to(src)
    # The real IMAGENET spec: the test file cannot have the real hash prefix 7be5be79.
    with pytest.raises(WeightsError, match="expected a hash starting 7be5be79"):
        representations.get("alexnet", "conv1", weights="imagenet")


def test_weights_from_path(alexnet_file):
    src, digest = alexnet_file
    rep = representations.get("alexnet", "conv2", weights=str(src))
    assert rep.trained
    assert rep.weights == f"file {src.name} (sha256 {digest[:12]})"
    state = torch.load(src, weights_only=True)
    conv2 = [m for m in rep.body.modules() if isinstance(m, nn.Conv2d)][1]
    assert torch.equal(conv2.weight, state["features.3.weight"])


def test_weights_from_path_that_does_not_fit(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(_tiny_state(), path)
    with pytest.raises(WeightsError, match="does not fit AlexNet: missing keys: features.0.weight"):
        representations.get("alexnet", "conv1", weights=str(path))
    with pytest.raises(WeightsError, match="does not exist"):
        representations.get("alexnet", "conv1", weights=str(tmp_path / "missing.pth"))


def _params(rep):
    return [p.detach().clone() for p in rep.parameters()]


def test_random_weights_are_seeded():
    a = representations.get("alexnet", "conv2", weights="random", seed=5)
    torch.manual_seed(999)  # the global RNG state must not matter
    b = representations.get("alexnet", "conv2", weights="random", seed=5)
    c = representations.get("alexnet", "conv2", weights="random", seed=6)
    pa, pb, pc = _params(a), _params(b), _params(c)
    assert len(pa) == 4  # conv1 and conv2, weight and bias
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    assert not torch.equal(pa[0], pc[0]) and not torch.equal(pa[2], pc[2])
    assert not a.trained and a.weights == "random(seed=5)"
    assert "untrained" in a.label and "alexnet conv2" in a.label
    assert a.describe()["trained"] is False
    # Frozen: the inversion only differentiates the input.
    assert not any(p.requires_grad for p in a.parameters())


def test_representation_stays_in_eval_mode():
    rep = representations.get("alexnet", "relu6", weights="random")
    rep.train()
    assert not rep.training and not any(m.training for m in rep.modules())
    x = torch.randn(2, 3, 227, 227) * 60
    with torch.no_grad():
        assert torch.equal(rep(x), rep(x))  # dropout off


# ----------------------------------------------------------------------------- names


def test_norm1_does_not_exist_in_torchvision_alexnet():
    with pytest.raises(UnknownNameError) as e:
        representations.get("alexnet", "norm1", weights="random")
    msg = str(e.value)
    assert "'norm1' does not exist in alexnet" in msg
    assert "valid layers: conv1, relu1, pool1, conv2" in msg and "fc8" in msg


def test_unknown_layer_lists_valid_layers():
    with pytest.raises(UnknownNameError) as e:
        representations.get("alexnet", "conv9", weights="random")
    msg = str(e.value)
    assert "conv9" in msg
    for name in ("conv1", "pool5", "fc6", "relu7", "fc8"):
        assert name in msg


def test_unknown_names_suggest_the_closest_matches():
    with pytest.raises(UnknownNameError) as e:
        representations.get("alexnet", "conv6", weights="random")
    assert "unknown layer 'conv6' of alexnet; did you mean conv5, conv4, conv3?" in str(e.value)
    assert "valid layers of alexnet: conv1, relu1" in str(e.value)
    with pytest.raises(UnknownNameError, match="unknown model 'alexnt'; did you mean alexnet\\?"):
        representations.layers("alexnt")


def test_unknown_model_lists_valid_models():
    with pytest.raises(UnknownNameError, match="unknown model 'vgg99'; valid models: alexnet"):
        representations.get("vgg99", "conv1", weights="random")
    with pytest.raises(UnknownNameError, match="valid models: alexnet"):
        representations.layers("resnet")
    assert representations.models() == ["alexnet", "caffenet", "dsift", "efficientnet_lite0", "hog", "hogb"]
    with pytest.raises(UnknownNameError, match="torchvision:NAME, timm:NAME"):
        representations.layers("vgg16")


# ----------------------------------------------------------------------------- truncation


def _count(rep, kind):
    return sum(isinstance(m, kind) for m in rep.body.modules())


@pytest.mark.parametrize("layer,convs,linears,relus,pools", [
    ("conv1", 1, 0, 0, 0),
    ("relu1", 1, 0, 1, 0),
    ("pool1", 1, 0, 1, 1),
    ("conv2", 2, 0, 1, 1),
    ("pool5", 5, 0, 5, 3),
    ("fc6", 5, 1, 5, 3),
    ("fc8", 5, 3, 7, 3),
])
def test_truncation_contains_nothing_after_the_layer(layer, convs, linears, relus, pools):
    rep = representations.get("alexnet", layer, weights="random")
    assert _count(rep, nn.Conv2d) == convs
    assert _count(rep, nn.Linear) == linears
    assert _count(rep, nn.ReLU) == relus
    assert _count(rep, nn.MaxPool2d) == pools
    channels = {l.name: l.channels for l in representations.layers("alexnet")}[layer]
    assert rep.code_shape(227, 227)[0] == channels


def test_conv1_forward_calls_no_later_module():
    rep = representations.get("alexnet", "conv1", weights="random")
    called = []
    for m in rep.body.modules():
        if not list(m.children()):
            m.register_forward_hook(lambda mod, inp, out: called.append(type(mod).__name__))
    out = rep(torch.zeros(1, 3, 227, 227))
    assert called == ["Normalise", "Conv2d"]
    assert out.shape == (1, 64, 56, 56)
    # conv1's output is signed: no ReLU was applied after it.
    x = 60 * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert (rep(x) < 0).any()
