"""The speed benchmark's measurements run (their numbers are for benchmarks/speed.py to print,
not for tests to time)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


@pytest.mark.parametrize("what, model, layer, size", [("library", "alexnet", "conv1", 67),
                                                      ("naive", "alexnet", "conv3", 67),
                                                      ("floor", "alexnet", "fc8", 227),
                                                      ("naive", "hog", "hog", 64)])
def test_one_measurement_reports_a_rate_and_memory(what, model, layer, size):
    spec = dict(what=what, model=model, layer=layer, batch=2, size=size, seconds=0.05, device="cpu")
    out = subprocess.run([sys.executable, str(SPEED), "--one", json.dumps(spec)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["per_iteration"] > 0 and result["setup"] >= 0 and result["peak_mib"] > 100


def test_per_iteration_separates_setup_from_iterations(monkeypatch):
    monkeypatch.syspath_prepend(str(SPEED.parent))
    import speed
    work = []

    def run(n):  # a setup of 20 units of work, then 2 per iteration
        work.append(20 + 2 * n)

    def seconds(fn, device):  # a clock that counts units of work
        before = len(work)
        fn()
        return float(sum(work[before:]))
    monkeypatch.setattr(speed, "_seconds", seconds)
    per, setup = speed.per_iteration(run, "cpu", seconds=50)
    assert per == pytest.approx(2) and setup == pytest.approx(20)


def test_convergence_study_writes_its_figure_and_table(tmp_path):
    script = SPEED.parent / "convergence.py"
    out = subprocess.run([sys.executable, str(script), "--layers", "stem", "--iterations", "6", "--adam", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "convergence.png").stat().st_size > 0
    rows = [line for line in out.stdout.splitlines() if line.startswith("| astronaut")]
    assert len(rows) == 2 and "stem" in rows[0] and "hog" in rows[1]
