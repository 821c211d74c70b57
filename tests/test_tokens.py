"""A ViT's patch tokens as a grid: receptive fields of one patch until the first attention and of
the whole image after it, the grid (class token apart) that every token layer reports, and neigh
masks that keep the central patch tokens. timm's ViT-Tiny with random weights: nothing to download."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

import preimage
from preimage import images
from preimage.engine.objective import mask
from preimage.errors import ImageError, SettingsError
from preimage.representations import generic, layer_table
from preimage.representations.receptive_field import ReceptiveField

VIT = "timm:vit_tiny_patch16_224"
PATCH = ReceptiveField(16, 16, 7.5)  # token k sees pixels [16k, 16k + 16)
WHOLE = ReceptiveField(224, 16, 111.5)  # the union of the 14 patches of a row
GRID = (1, 14, 14)  # the class token, then 14x14 patch tokens


@functools.cache
def _vit(layer: str):
    return generic.build(VIT, layer, weights="random")


def _input() -> torch.Tensor:
    return images.to_input(images.fit(images.load("astronaut")[0], 224), _vit("blocks.0.norm1").mean)


# ----------------------------------------------------------------------------- receptive fields


def test_patch_tokens_see_their_patch_until_the_first_attention():
    table = generic.layers(VIT)
    names = [l.name for l in table]
    attention = names.index("blocks.0.attn.scaled_dot_product_attention")
    before, after = table[:attention], table[attention:]
    assert names[0] == "patch_embed.proj" and "blocks.0.norm1.layer_norm" in names[:attention]
    assert {l.receptive_field for l in before} == {PATCH}  # flatten, class token, position embedding, qkv
    assert {l.receptive_field for l in after} == {WHOLE}
    info = {l.name: l for l in table}
    assert info["patch_embed.norm"].tokens == (0, 14, 14) and info["cat"].tokens == GRID
    assert all(info[f"blocks.{b}.add_1"].tokens == GRID for b in range(12))  # every block's output
    assert info["patch_embed.proj"].tokens is None and info["head"].tokens is None  # a map, the logits
    assert info["blocks.0.attn.qkv"].channels == 576 and info["blocks.0.add"].channels == 192  # D
    assert "  1+14x14" in layer_table(VIT) and "blocks.0.attn.qkv " in layer_table(VIT)


def test_torchvision_vit_and_its_multihead_attention():
    info = {l.name: l for l in generic.layers("torchvision:vit_b_16")}
    first = "encoder.layers.encoder_layer_0"
    assert info["conv_proj"].receptive_field == info[f"{first}.ln"].receptive_field == PATCH
    assert info[f"{first}.add"].receptive_field == info["encoder.ln"].receptive_field == WHOLE
    assert info[f"{first}.ln"].tokens == info["encoder.ln"].tokens == GRID


def _gradient_rows_and_columns(rep, token: int) -> tuple[list[int], list[int]]:
    """The input rows and columns where a random projection of ``token``'s features has a
    non-zero gradient (a projection, since the features after a layer norm sum to a constant)."""
    rep = rep.double()
    x = (50 * torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    x.requires_grad_(True)
    y = rep(x)[0, token]
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grad, = torch.autograd.grad((y * weights).sum(), x)
    return (torch.nonzero(grad.abs().sum((0, 1, 3))).flatten().tolist(),
            torch.nonzero(grad.abs().sum((0, 1, 2))).flatten().tolist())


def test_a_token_before_attention_depends_on_its_patch_only():
    rep = _vit("blocks.0.norm1")
    assert rep.layer == "blocks.0.norm1.layer_norm" and rep.tokens == GRID and rep.receptive_field == PATCH
    centre = 1 + 7 * 14 + 7  # after the class token: row 7, column 7
    rows, cols = _gradient_rows_and_columns(rep, centre)
    assert rows == cols == list(range(112, 128)) and rep.receptive_field.box(7) == (112, 128)
    assert _gradient_rows_and_columns(rep, 0) == ([], [])  # the class token: no pixel in it yet


def test_a_token_after_attention_depends_on_the_whole_image():
    rep = _vit("blocks.0")
    assert rep.layer == "blocks.0.add_1" and rep.tokens == GRID and rep.receptive_field == WHOLE
    rows, cols = _gradient_rows_and_columns(rep, 1 + 7 * 14 + 7)
    assert rows == cols == list(range(224))


class _TokensAndBack(nn.Module):
    """Patches to tokens behind a class token, and the patch tokens back to a map for a
    convolution, as CoaT's convolutional position encoding does."""

    def __init__(self):
        super().__init__()
        self.proj, self.conv = nn.Conv2d(3, 8, 4, stride=4), nn.Conv2d(8, 8, 3, padding=1)
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1, 2)
        t = self.norm(torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1))
        cls, patches = t[:, :1], t[:, 1:]
        m = patches.transpose(1, 2).reshape(x.shape[0], 8, 8, 8)
        return torch.cat([cls, self.conv(m).flatten(2).transpose(1, 2)], dim=1)


def test_tokens_become_a_map_again():
    gm = fx.symbolic_trace(_TokensAndBack())
    ShapeProp(gm).propagate(torch.zeros(1, 3, 32, 32))
    fields = {n.name: f for n, f in generic._Walk(gm, 32).fields.items()}
    layout = {name: (f.lo, f.hi, f.stride, f.axes, f.tokens) for name, f in fields.items() if f is not None}
    assert layout["norm"] == (0, 4, 4, (1, 1), (1, 8, 8))
    assert fields["getitem_1"] is None  # the class token: a constant until something mixes the tokens
    assert layout["getitem_2"] == (0, 4, 4, (1, 1), (0, 8, 8))
    assert layout["reshape"] == (0, 4, 4, (2, 3), None)
    assert layout["conv"] == (-4, 8, 4, (2, 3), None)  # a 3x3 convolution at stride 4
    assert layout["cat_1"] == (-4, 8, 4, (1, 1), (1, 8, 8))


# ----------------------------------------------------------------------------- masks


@pytest.mark.parametrize("n", [1, 3, 4, 14])
def test_neigh_keeps_the_central_patch_tokens_and_drops_the_class_token(n):
    m = mask((197, 192), preimage.Setting(neigh=n), "blocks.3", tokens=GRID)
    top = (14 - n) // 2  # as for maps
    kept = [1 + (top + r) * 14 + top + c for r in range(n) for c in range(n)]
    assert torch.nonzero(m[:, 0]).flatten().tolist() == kept
    assert torch.equal(m, m[:, :1].expand_as(m))  # every feature of a kept token


def test_group_and_channels_select_the_features_of_every_token():
    m = mask((197, 192), preimage.Setting(group=2), "blocks.3", tokens=GRID)
    assert not m[:, :96].any() and m[:, 96:].all()
    both = mask((197, 192), preimage.Setting(channels=(5,), neigh=1), "blocks.3", tokens=GRID)
    assert torch.nonzero(both).tolist() == [[1 + 6 * 14 + 6, 5]]  # (14 - 1) // 2 = 6


def test_mask_errors_speak_of_tokens():
    with pytest.raises(SettingsError, match="neigh 20 is larger than the 14x14 grid of patch tokens of blocks.3; "
                                            "use neigh <= 14"):
        mask((197, 192), preimage.Setting(neigh=20), "blocks.3", tokens=GRID)
    with pytest.raises(SettingsError, match=r"channel indices \[192\] out of range for the tokens of blocks.3 "
                                            r"\(192 features each\)"):
        mask((197, 192), preimage.Setting(channels=(0, 192)), "blocks.3", tokens=GRID)
    with pytest.raises(SettingsError, match=r"shape \(50, 192\), not the 1 \+ 14x14 tokens"):
        mask((50, 192), preimage.Setting(neigh=3), "blocks.3", tokens=GRID)
    with pytest.raises(SettingsError, match="flat vector of 100 values"):  # a genuinely flat code
        mask((100,), preimage.Setting(neigh=3), "fc")
    with pytest.raises(SettingsError, match=r"shape \(197, 192\), neither a map nor known tokens"):
        mask((197, 192), preimage.Setting(neigh=3), "blocks.3")


# ----------------------------------------------------------------------------- inversion


def test_inverts_the_central_tokens():
    rep = _vit("blocks.0.norm1")
    result = preimage.invert(rep, _input(), settings=preimage.Setting(neigh=3),
                             schedule=preimage.Schedule(((0.004, 3),)), device="cpu", progress=False)
    assert result.x.shape == (1, 3, 224, 224) and result.energies["total"].shape == (3, 1)
    assert 0 < result.error[0] < 2
    with pytest.raises(ImageError, match="smaller than the 224x224 input .* 14x14 grid of patch"):
        rep.check_image_size(64, 64)  # the position embeddings are those of 14x14 patches
    with pytest.raises(SettingsError, match="14x14 grid of patch tokens of blocks.3.add_1"):
        preimage.invert(_vit("blocks.3"), _input(), settings=preimage.Setting(neigh=20),
                        schedule=preimage.Schedule(((0.004, 3),)), device="cpu", progress=False)
