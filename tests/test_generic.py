"""Any torchvision or timm model as a representation: layer names, truncation, weights, and
receptive fields from the graph checked against known values and the network's own gradients."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torchvision.models.feature_extraction import get_graph_node_names

import preimage
from preimage import images
from preimage.errors import UnknownNameError, WeightsError
from preimage.paper import recipes
from preimage.representations import alexnet, generic
from preimage.representations.receptive_field import ReceptiveField

IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1)


def _fields(model: str) -> dict[str, ReceptiveField]:
    return {l.name: l.receptive_field for l in generic.layers(model)}


# ----------------------------------------------------------------------------- names


def test_layer_names_are_the_feature_extraction_nodes():
    assert generic.is_generic("torchvision:vgg16") and generic.is_generic("timm:resnet18")
    assert not generic.is_generic("alexnet")
    for name in ("resnet18", "vgg16"):
        with torch.device("meta"):  # names only: no weights needed
            _, nodes = get_graph_node_names(torchvision.models.get_model(name))
        assert [l.name for l in generic.layers(f"torchvision:{name}")] == nodes[1:]  # without the input x
    names = [l.name for l in generic.layers("torchvision:resnet18")]
    assert names[:5] == ["conv1", "bn1", "relu", "maxpool", "layer1.0.conv1"]
    assert names[-3:] == ["avgpool", "flatten", "fc"] and "layer2.1.relu_1" in names
    assert generic.layers("torchvision:resnet18") is generic.layers("torchvision:resnet18")  # cached


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="torchvision:vgg16.*torchvision:vgg19"):
        generic.layers("torchvision:vgg17")
    with pytest.raises(UnknownNameError, match=r"close matches: .*timm:resnet18\b.*timm has \d+ models"):
        generic.layers("timm:resnet181")
    with pytest.raises(UnknownNameError, match="resnet18.a1_in1k"):
        generic.layers("timm:resnet18.no_such_tag")
    with pytest.raises(UnknownNameError, match="torchvision:NAME"):
        generic.build("caffe:vgg16", "conv1")
    with pytest.raises(UnknownNameError, match="features.0, features.1, .*features.29, .*classifier.6") as e:
        generic.build("torchvision:vgg16", "conv5_3", weights="random")
    assert str(e.value).count(", ") == len(generic.layers("torchvision:vgg16")) - 1  # all of them


# ----------------------------------------------------------------------------- receptive fields


def test_known_receptive_fields():
    vgg = _fields("torchvision:vgg16")
    assert (vgg["features.29"].size, vgg["features.29"].stride) == (196, 16)  # conv5_3 + ReLU
    assert (vgg["features.30"].size, vgg["features.30"].stride) == (212, 32)  # pool5
    resnet = _fields("torchvision:resnet18")
    assert resnet["maxpool"] == ReceptiveField(11, 4, 0.0)  # 7x7/2 conv, 3x3/2 pool, both padded
    assert resnet["layer1.1.relu_1"] == ReceptiveField(43, 4, 0.0)  # + four 3x3 convolutions at stride 4
    assert resnet["layer2.1.relu_1"] == ReceptiveField(99, 8, 0.0)
    # Global pooling sees the whole 7x7 grid of layer4 at 224 px: 435 + 6 * 32.
    assert resnet["layer4.1.relu_1"].size == 435 and resnet["avgpool"].size == resnet["fc"].size == 627
    info = {l.name: l for l in generic.layers("torchvision:resnet18")}
    assert (info["layer3.0.conv1"].channels, info["fc"].channels) == (256, 1000)
    assert info["avgpool"].spatial and not info["flatten"].spatial and not info["fc"].spatial


def test_alexnet_agrees_with_the_hand_written_table():
    table = {l.name: l for l in generic.layers("torchvision:alexnet")}
    assert table["features.12"].receptive_field == ReceptiveField(195, 32, 31.0)
    for (name, *_, (part, index)), paper in zip(alexnet._LAYERS, alexnet.LAYERS):
        node = table[f"{part}.{index}"]
        assert (node.receptive_field, node.channels, node.spatial) == \
            (paper.receptive_field, paper.channels, paper.spatial), name


def _support(rep, size: int, unit: int, samples: int = 2) -> tuple[list[int], list[int], tuple]:
    """Rows and columns [first, last + 1) of the input with a non-zero gradient for output unit
    (unit, unit), with positive weights and positive inputs in float64, so that no ReLU blocks a
    gradient and nothing cancels; a few random inputs break max-pooling ties."""
    rep = rep.double()
    with torch.no_grad():
        for p in list(rep.parameters()) + [b for b in rep.buffers() if b.is_floating_point()]:
            p.abs_()
    g = torch.Generator().manual_seed(0)
    x = (100 * torch.rand(samples, 3, size, size, generator=g, dtype=torch.float64) + 50).requires_grad_(True)
    y = rep(x)
    grad, = torch.autograd.grad(y[:, :, unit, unit].sum(), x)
    rows = torch.nonzero(grad.abs().sum((0, 1, 3))).flatten()
    cols = torch.nonzero(grad.abs().sum((0, 1, 2))).flatten()
    return [rows[0].item(), rows[-1].item() + 1], [cols[0].item(), cols[-1].item() + 1], tuple(y.shape)


@pytest.mark.parametrize("model,layer,size", [
    ("torchvision:vgg16", "features.16", 96),  # a plain chain: 7 convolutions, 3 max pools
    ("torchvision:resnet18", "layer2", 128),  # residual blocks, strided shortcuts
    ("timm:tf_mobilenetv3_small_minimal_100", "blocks.1", 48),  # TensorFlow 'SAME' padding (Conv2dSame)
    ("torchvision:googlenet", "inception3b", 128),  # concatenated branches, ceil-mode pools
    ("torchvision:shufflenet_v2_x0_5", "stage2.0", 48),  # channel shuffle (view, transpose)
    ("torchvision:regnet_x_400mf", "trunk_output.block2", 64),  # leaf modules (Conv2dNormActivation)
    ("timm:convnext_atto", "stages.0.blocks.0", 32),  # a 7x7 depthwise conv, channels-last LayerNorm
])
def test_field_is_the_gradient_support(model, layer, size):
    """The field contains the support, and equals it: every path here is convolutional."""
    rep = generic.build(model, layer, weights="random")
    rf = rep.receptive_field
    shape = rep.code_shape(size, size)
    # The unit nearest the centre whose whole box lies inside the image.
    inside = [k for k in range(shape[-1]) if rf.box(k)[0] >= 0 and rf.box(k)[1] <= size]
    assert inside, f"{model} {layer}: no unit's field fits a {size} px image"
    unit = min(inside, key=lambda k: abs(k - shape[-1] // 2))
    rows, cols, _ = _support(rep, size, unit)
    box = list(rf.box(unit))
    assert box[0] <= rows[0] and rows[1] <= box[1] and box[0] <= cols[0] and cols[1] <= box[1], (rows, box)
    assert rows == cols == box


def test_unknown_operations_are_measured():
    """An operation the walk does not know (LP pooling) is measured through the gradient; what
    follows it is computed again."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LPPool2d(2, 3, stride=2), nn.Conv2d(4, 4, 3)).eval()
    gm = fx.symbolic_trace(net)
    ShapeProp(gm).propagate(torch.zeros(1, 3, 32, 32))
    fields = generic._Walk(gm, 32, measure=generic._Measure(gm, lambda: net, 32)).fields
    boxes = [(f.lo, f.hi, f.stride) for n, f in fields.items() if n.op == "call_module"]
    assert boxes == [(-1, 2, 1), (-1, 4, 2), (-1, 8, 2)]  # 3 px; + a 3x3/2 window; + 3x3 at stride 2
    with pytest.raises(generic._Unknown, match="lp_pool2d"):
        generic._Walk(gm, 32)


def test_global_pooling_sees_everything():
    rep = generic.build("torchvision:resnet18", "avgpool", weights="random")
    assert rep.receptive_field.size == 627 and rep.min_image_size() == 224
    rows, cols, shape = _support(rep, 64, 0)
    assert shape == (1 + 1, 512, 1, 1) and rows == cols == [0, 64]


# ----------------------------------------------------------------------------- representations


def test_build_truncates_and_normalises():
    rep = generic.build("torchvision:resnet18", "layer1", weights="random")
    assert (rep.model, rep.layer, rep.input_size) == ("torchvision:resnet18", "layer1.1.relu_1", 224)
    assert rep.mean == pytest.approx((123.675, 116.28, 103.53))
    assert rep.label == "torchvision:resnet18 layer1.1.relu_1 (random(seed=0) weights, untrained)"
    assert rep.code_shape(64, 64) == (64, 16, 16)
    assert not any(name.startswith(("layer2", "fc")) for name, _ in rep.named_parameters())
    assert rep.describe()["receptive_field"] == {"size": 43, "stride": 4, "offset": 0.0}


def test_random_weights_are_reproducible_by_seed():
    x = 50 * torch.randn(1, 3, 40, 40)
    a, b, c = (generic.build("torchvision:resnet18", "layer1.0.relu", weights="random", seed=s) for s in (0, 0, 1))
    assert torch.equal(a(x), b(x)) and not torch.allclose(a(x), c(x))
    assert (a.weights, a.trained) == ("random(seed=0)", False)


def test_state_dict_files(tmp_path):
    net = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    rep = generic.build("torchvision:resnet18", "layer1.1.relu_1", weights=str(path))
    assert rep.trained and rep.weights.startswith("file resnet18.pth (sha256 ")
    x = 50 * torch.randn(1, 3, 48, 48)
    expected = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x / (255 * IMAGENET_STD))))))
    torch.testing.assert_close(rep(x), expected)
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="does not fit"):
        generic.build("torchvision:resnet18", "layer1", weights=str(bad))
    with pytest.raises(WeightsError, match="does not exist"):
        generic.build("torchvision:resnet18", "layer1", weights=str(tmp_path / "none.pth"))


def test_imagenet_weights_offline_say_how_to_get_them(tmp_path, monkeypatch):
    spec = generic.imagenet_weights("torchvision:vgg16")
    assert spec.filename == "vgg16-397923af.pth" and spec.sha256_prefix == "397923af"
    assert generic.imagenet_weights("timm:resnet18") is None
    with pytest.raises(WeightsError, match="downloads are switched off.*curl -L -o resnet18-f37072fd.pth"):
        generic.build("torchvision:resnet18", "layer1")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(WeightsError, match="switched off.*huggingface-cli download timm/resnet18.a1_in1k"):
        generic.build("timm:resnet18", "layer1")


def test_timm_model_at_a_middle_node(tmp_path, monkeypatch):
    """timm's ResNet-18 truncated at layer2 gives what the full network computes there, with
    ImageNet weights taken from the local Hugging Face cache while offline."""
    import timm
    from safetensors.torch import save_file

    net = timm.create_model("resnet18").eval()
    snapshot = tmp_path / "models--timm--resnet18.a1_in1k" / "snapshots" / "0123"
    snapshot.mkdir(parents=True)
    save_file(net.state_dict(), str(snapshot / "model.safetensors"))
    (tmp_path / "models--timm--resnet18.a1_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--resnet18.a1_in1k" / "refs" / "main").write_text("0123")
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    rep = generic.build("timm:resnet18", "layer2")
    assert rep.trained and rep.weights == "imagenet (timm/resnet18.a1_in1k)" and rep.layer == "layer2.1.act2"
    seen = []
    net.layer2.register_forward_hook(lambda m, i, o: seen.append(o))
    x = 50 * torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        net(x / (255 * IMAGENET_STD))
        torch.testing.assert_close(rep(x), seen[0])
    # The same geometry as torchvision's ResNet-18.
    assert rep.receptive_field == _fields("torchvision:resnet18")["layer2.1.relu_1"] == ReceptiveField(99, 8, 0.0)
    # A network with squeeze-and-excitation: after the first SE block every unit sees everything.
    small = {l.name: l for l in generic.layers("timm:mobilenetv3_small_100")}
    assert small["conv_stem"].receptive_field == ReceptiveField(3, 2, 0.0)
    assert small["blocks.0.0.conv_dw"].receptive_field.size == 7
    assert small["blocks.1.0.conv_pw"].receptive_field.size >= 224 and small["blocks.1.0.conv_pw"].spatial


def test_inverts():
    rep = generic.build("torchvision:resnet18", "layer1", weights="random")
    x0 = images.to_input(images.fit(images.load("astronaut")[0], 64), rep.mean)
    result = preimage.invert(rep, x0, schedule=recipes.CNN.shortened(5), device="cpu", progress=False)
    assert result.x.shape == (1, 3, 64, 64) and result.energies["total"].shape == (5, 1)
    assert 0 < result.error[0] < 2
