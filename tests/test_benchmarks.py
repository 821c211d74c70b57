"""The speed benchmark's measurements run (their numbers are for benchmarks/speed.py to print,
not for tests to time)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.fixture
def speed(monkeypatch):
    monkeypatch.syspath_prepend(str(SPEED.parent))
    import speed
    return speed


def _one(spec):
    out = subprocess.run([sys.executable, str(SPEED), "--one", json.dumps(spec)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model, layer, size", [("alexnet", "conv3", 99), ("hog", "hog", 64)])
def test_a_layer_measurement_reports_rates_rounds_and_memory(model, layer, size):
    result = _one(dict(what="layer", model=model, layer=layer, batches=[1, 2], size=size, seconds=0.02,
                       rounds_=2, device="cpu"))
    assert set(result) == {"1", "2"}
    assert set(result["1"]) == {"library", "floor", "naive"} and set(result["2"]) == {"library", "floor"}
    for entry in [*result["1"].values(), *result["2"].values()]:
        assert len(entry["samples"]) == 2
        assert all(per > 0 and setup >= 0 for per, setup in entry["samples"])
        assert entry["peak_mib"] >= 0
    # the whole network is built for the naive loop, only the truncated one for the floor
    if model == "alexnet":
        assert result["1"]["naive"]["peak_mib"] > result["1"]["floor"]["peak_mib"]


def test_a_sweep_measurement_times_every_kind_it_is_given(speed, monkeypatch):
    monkeypatch.setattr(speed, "sweep", lambda kind, size, device, images=1, compile=False: lambda n: sum(range(1000 * n)))
    result = speed.measure_sweep(size=227, seconds=0.001, rounds_=3, device="cpu", kinds=("shared", "naive"))
    assert set(result) == {"shared", "naive"} and all(len(r["samples"]) == 3 for r in result.values())


def test_rounds_separate_setup_from_iterations_and_take_turns(speed, monkeypatch):
    work, order = [], []

    def run_of(name, setup, each):
        def run(n):  # a setup of `setup` units of work, then `each` per iteration
            order.append(name)
            work.append(setup + each * n)
        return run

    def seconds(fn, device):  # a clock that counts units of work
        before = len(work)
        fn()
        return float(sum(work[before:]))
    monkeypatch.setattr(speed, "_seconds", seconds)
    samples = speed.rounds({"a": run_of("a", 20, 2), "b": run_of("b", 0, 5)}, "cpu", seconds=50, count=3)
    assert samples["a"] == [pytest.approx((2, 20))] * 3 and samples["b"] == [pytest.approx((5, 0))] * 3
    timed = order[6:]  # after each run's warm-up (3 runs each): a, a, b, b, a, a, ...
    assert timed == ["a", "a", "b", "b"] * 3


def test_ratios_pair_rounds(speed):
    assert speed.ratio([2.0, 4.0, 9.0], [1.0, 4.0, 3.0]) == (2.0, 1.0, 3.0)
    assert speed.ratio([2.0, 4.0], [2.0]) == (1.5, 1.0, 2.0)  # one value stands for every round


def test_peak_memory_sees_an_allocation_and_reports_a_failure(speed):
    base = speed.baseline_memory("cpu")

    def allocate():  # numpy: a torch op in a fork of this process, whose OpenMP threads have run, hangs
        import numpy as np
        x = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        return lambda n: x.sum()
    assert speed.peak_memory(allocate, "cpu") - base >= 60

    def broken():
        raise ValueError("no such layer")
    with pytest.raises(RuntimeError, match="no such layer"):
        speed.peak_memory(broken, "cpu")


def test_convergence_study_writes_its_figure_and_table(tmp_path):
    script = SPEED.parent / "convergence.py"
    out = subprocess.run([sys.executable, str(script), "--layers", "stem", "--iterations", "6", "--adam", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "convergence.png").stat().st_size > 0
    rows = [line for line in out.stdout.splitlines() if line.startswith("| astronaut")]
    assert len(rows) == 2 and "stem" in rows[0] and "hog" in rows[1]


def test_the_import_cost_benchmark_measures_both_imports():
    script = SPEED.parent / "import_cost.py"
    out = subprocess.run([sys.executable, str(script), "--runs", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "import torch, torchvision" in out.stdout and "import preimage (after them)" in out.stdout
    assert "heavy libraries imported by preimage: none" in out.stdout


def test_layer_rows_show_the_compiled_step_where_it_was_timed(speed):
    entry = lambda per, setup=1.0: {"samples": [[per, setup]] * 2, "peak_mib": 10.0}  # noqa: E731
    result = {"1": {"library": entry(0.02), "floor": entry(0.01), "naive": entry(0.05)},
              "8": {"library": entry(0.012), "floor": entry(0.01), "compiled": entry(0.0105)}}
    rows = speed.layer_rows("alexnet", "conv1", 400, result)
    one, eight = (row.split(" | ") for row in rows)
    assert one[4] == "–" and one[-2] == "–"  # not timed compiled at B = 1
    assert eight[4] == f"{1 + 0.0105 * 400:.2f}" and eight[-2].startswith(f"{(1 + 4.2) / 5:.2f}")
    assert len(eight) == speed.HEADER.splitlines()[0].count("|") - 1


def test_the_table3_line_takes_the_fastest_batch_that_fits_and_stops_when_larger_ones_stop_paying(speed,
                                                                                                   monkeypatch):
    per_image = {1: 160.0, 2: 120.0, 4: 100.0, 8: 110.0, 16: 90.0}  # 16 is never tried: 8 stopped paying
    asked = []

    def child(what, images, compile, **spec):
        asked.append((images, compile))
        return {"shared": {"samples": [[per_image[images] / 400, 0.0]] * 3}}
    monkeypatch.setattr(speed, "child", child)
    monkeypatch.setattr(speed, "fits", lambda images, size, iterations, device: images <= 16)
    monkeypatch.setattr(speed, "sweep_flops", lambda: 10 ** 9)
    args = type("Args", (), {"table3_batch": None, "device": "cpu"})()
    line = speed.table3_line(args, {})
    assert [b for b, _ in asked] == [1, 2, 4, 8]
    assert "4 images per shared run (the fastest of 1, 2, 4, 8 that fit)" in line
    assert f"{300 * 100 / 60:.0f} min on this device" in line and "one image per run: 160.0 s, 800 min" in line
    # compiling pays over the protocol's 300 / B sweeps (measured constants: engine.compiled)
    assert dict(asked)[4] is True
    args.table3_batch = 2
    asked.clear()
    line = speed.table3_line(args, {})
    assert "2 images per shared run" in line and "one image per run" not in line and len(asked) == 1


def test_fits_asks_the_engine_memory_budget(speed, monkeypatch):
    monkeypatch.setenv("PREIMAGE_MEMORY_LIMIT", "4G")
    assert speed.fits(1, 227, 400, "cpu") and not speed.fits(128, 227, 400, "cpu")
