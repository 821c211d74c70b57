"""What ``import preimage`` costs over ``import torch, torchvision``, and which heavy libraries it
pulls in (it should pull in none of timm, scikit-learn, scikit-image, matplotlib, scipy).

    python benchmarks/import_cost.py [--runs 7]

Each run is a fresh interpreter that times ``import torch, torchvision`` and then ``import
preimage``; the table gives the median and the range over the runs.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys

HEAVY = ("timm", "sklearn", "skimage", "matplotlib", "scipy", "huggingface_hub", "papermill", "ipywidgets")
PROBE = f"""
import json, sys, time
t0 = time.perf_counter(); import torch, torchvision; t1 = time.perf_counter()
import preimage; t2 = time.perf_counter()
print(json.dumps({{"torch": t1 - t0, "preimage": t2 - t1, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def measure(runs: int) -> list[dict]:
    out = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    args = p.parse_args(argv)
    rows = measure(args.runs)
    print(f"machine: {platform.platform()}, {platform.machine()}, Python {platform.python_version()}, "
          f"{args.runs} fresh interpreters")
    for key, what in (("torch", "import torch, torchvision"), ("preimage", "import preimage (after them)")):
        values = [r[key] for r in rows]
        print(f"{what:32} median {statistics.median(values):.3f} s (range {min(values):.3f}-{max(values):.3f})")
    heavy = sorted({m for r in rows for m in r["heavy"]})
    print(f"heavy libraries imported by preimage: {', '.join(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
