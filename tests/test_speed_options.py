"""What the engine does for speed changes the order of float32 sums, never the method: runs in
either memory layout give the same reconstruction within a stated tolerance, and a run does
not depend on the layout an earlier run left the network in."""
import numpy as np
import pytest
import torch

import preimage
from preimage import images, representations
from preimage.engine import Setting, compiled, invert
from preimage.engine.layout import choose_layout
from preimage.errors import SettingsError


@pytest.fixture(scope="module")
def stage2():
    rep = representations.get("efficientnet_lite0", "stage2", weights="imagenet")
    x0 = torch.cat([images.to_input(images.fit(images.load(n)[0], 96), rep.mean) for n in ("chelsea", "coffee")])
    return rep, x0


def _run(rep, x0, layout, iterations=40):
    plan = preimage.recipe(rep.model, rep.layer, iterations=iterations)
    return invert(rep, x0, settings=plan.setting, schedule=plan.schedule, device="cpu", progress=False,
                  memory_format=layout, seed=3)


def test_auto_lays_out_depthwise_networks_channels_last_for_batches():
    efficient = representations.get("efficientnet_lite0", "stage2", weights="imagenet")
    alexnet = representations.get("alexnet", "conv3", weights="random")
    cpu = torch.device("cpu")
    assert choose_layout(efficient, 2, cpu) == "channels_last"
    assert choose_layout(efficient, 1, cpu) == "contiguous"  # slower channels-last for one image (measured)
    assert choose_layout(alexnet, 8, cpu) == "contiguous"  # no depthwise convolution: nothing to gain
    assert choose_layout(alexnet, 8, cpu, "channels_last") == "channels_last"


def test_both_layouts_give_the_same_reconstruction(stage2):
    rep, x0 = stage2
    plain, nhwc = _run(rep, x0, "contiguous"), _run(rep, x0, "channels_last")
    assert plain.provenance["memory_format"] == "contiguous"
    assert nhwc.provenance["memory_format"] == "channels_last"
    # 40 iterations amplify float32 reordering to well below a grey level, and the error agrees
    # to 1e-5 of itself; a wrong layout (a transposed image) would differ by tens of grey levels
    assert np.abs(plain.x - nhwc.x).max() < 0.05
    np.testing.assert_allclose(plain.error, nhwc.error, rtol=1e-5)
    assert not np.array_equal(plain.x, nhwc.x)  # the two did run differently


def test_a_run_does_not_depend_on_the_layout_an_earlier_run_left(stage2):
    rep, x0 = stage2
    first = _run(rep, x0, "contiguous", iterations=5)
    _run(rep, x0, "channels_last", iterations=5)
    again = _run(rep, x0, "contiguous", iterations=5)
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.error, again.error)


def test_unknown_memory_format_is_refused(stage2):
    rep, x0 = stage2
    with pytest.raises(SettingsError, match="unknown memory_format 'nhwc'; valid ones: auto, channels_last"):
        _run(rep, x0, "nhwc", iterations=3)


def _conv1(compile, iterations=30, pixel_range=False, **options):
    rep = representations.get("alexnet", "conv1", weights="random", seed=0)
    x0 = torch.cat([images.to_input(images.fit(images.load(n)[0], 67), rep.mean) for n in ("chelsea", "coffee")])
    plan = preimage.recipe("alexnet", "conv1", iterations=iterations)
    return invert(rep, x0, settings=[plan.setting, Setting(lambda_tv=10.0)], schedule=plan.schedule, device="cpu",
                  progress=False, seed=1, compile=compile, pixel_range=pixel_range, **options)


@pytest.mark.parametrize("pixel_range", [False, True])
def test_compiled_and_eager_runs_give_the_same_reconstruction(pixel_range):
    eager, fused = _conv1(False, pixel_range=pixel_range), _conv1(True, pixel_range=pixel_range)
    assert not eager.provenance["compiled"] and fused.provenance["compiled"]
    # float32 reordering over 30 iterations of three rates (the velocity reset at each change):
    # within a hundredth of a grey level, where leaving TV's gradient out of the compiled step
    # moves pixels by 177 (measured). conv1 is linear: deeper layers amplify reordering (test_reuse)
    assert np.abs(eager.x - fused.x).max() < 0.01
    np.testing.assert_allclose(fused.energies["total"], eager.energies["total"], rtol=1e-4)
    np.testing.assert_allclose(fused.error, eager.error, rtol=1e-5)
    if pixel_range:
        low, high = -np.array(eager.mean).reshape(1, 3, 1, 1), 255 - np.array(eager.mean).reshape(1, 3, 1, 1)
        assert (fused.x >= low - 1e-4).all() and (fused.x <= high + 1e-4).all()


def test_compile_switch(monkeypatch):
    monkeypatch.setenv(compiled.ENV, "0")
    assert not _conv1(None, iterations=3).provenance["compiled"]
    monkeypatch.setenv(compiled.ENV, "yes")
    with pytest.raises(SettingsError, match=r"\$PREIMAGE_COMPILE must be 0 .never compile. or 1"):
        _conv1(None, iterations=3)
    with pytest.raises(SettingsError, match="compile must be True, False or None"):
        _conv1("on", iterations=3)


def test_auto_compiles_where_the_saving_is_well_above_the_cost():
    cpu = torch.device("cpu")
    table3_batch = (32, 3, 227, 227)
    assert not compiled.worth_compiling(table3_batch, 400, cpu)  # one run saves less than compiling costs
    assert compiled.worth_compiling(table3_batch, 400, cpu, runs=100)  # Table 3's runs of that shape
    assert not compiled.worth_compiling(table3_batch, 400, torch.device("cuda"), runs=100)  # not measured there


def test_the_cpu_runs_at_most_cpu_batch_items_at_once_unless_asked():
    from preimage.engine import budget
    rep = representations.get("alexnet", "conv1", weights="random")
    cpu = torch.device("cpu")
    assert budget.batch_size(rep, (3, 67, 67), 100, 10, cpu, memory_limit="8G") == budget.CPU_BATCH
    assert budget.batch_size(rep, (3, 67, 67), 100, 10, cpu, asked=60, memory_limit="8G") == 60
    assert budget.batch_size(rep, (3, 67, 67), 10, 10, cpu, memory_limit="8G") == 10
