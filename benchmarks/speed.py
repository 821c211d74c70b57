"""How fast one reconstruction is: this library against a naive loop and the compute floor.

    python benchmarks/speed.py [--device cpu|cuda] [--seconds 0.8] [--table3-batch 1] [--quick]

For AlexNet (torchvision's architecture, random weights: the time does not depend on them) at
conv1, conv3, pool5 and fc8 on 227×227 images with the paper's 400 iterations, and for HOG with
800, it prints the time per reconstruction of

  (a) ``preimage.invert`` on a batch of B = 1, 8, 32 images,
  (b) a naive loop written the plain PyTorch way: the whole network's forward pass with a hook
      at the layer, the same objective, one image at a time,
  (c) the compute floor: B forward and backward passes through the truncated network alone,

each timed per iteration (runs of about ``--seconds``, after a warm-up) and scaled to the full
count: the printed times are setup + time per iteration × iterations; with the peak memory and
the ratios (a)/(b) and (a)/(c). Then the paper's 20-layer sweep of one image (CaffeNet): one
``invert_at_layers`` run against one run per layer and the naive loop at every layer, and the
Table 3 protocol's time from a shared run of ``--table3-batch`` images (with its FLOPs, counted
by torch, for estimates on other devices). Every measurement runs in a fresh process, so each has its own peak
memory (CPU: the process's peak resident set; CUDA: torch's peak allocation).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time

import torch
from torch import nn

AXES = {"alexnet": (["conv1", "conv3", "pool5", "fc8"], 227, 400), "hog": (["hog"], 227, 800)}
BATCHES = (1, 8, 32)


# ---- one measurement (in a child process) ----------------------------------------------------

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _images(n, size, device, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, channels, size, size, generator=g) * 255 - 120).to(device)


def _seconds(fn, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def per_iteration(run, device, seconds) -> tuple[float, float]:
    """(seconds per iteration, seconds of setup) of ``run(n)``, which does n iterations after
    its setup: from a run of 1 and the faster of two runs of N iterations, N chosen so that a
    run lasts about ``seconds`` (a run of 3 first gives the rough rate)."""
    run(1)  # warm-up
    one = _seconds(lambda: run(1), device)
    rough = max((_seconds(lambda: run(3), device) - one) / 2, 1e-5)
    n = min(max(3, math.ceil(seconds / rough)), 5000)
    many = min(_seconds(lambda: run(n), device) for _ in range(2))
    per = max(many - one, 0.0) / (n - 1)
    return per, max(one - per, 0.0)


def _loop(step):
    def run(n):
        for _ in range(n):
            step()
    return run


def library(model, layer, batch, size, seconds, device):
    """Seconds per iteration per image of ``invert`` on a batch, and its setup per image."""
    from preimage import invert, presets, representations
    from preimage.objective import Setting

    rep = representations.get(model, layer, weights="random") if model != "hog" else representations.get("hog")
    x0 = _images(batch, size, device, rep.in_channels)
    setting = Setting(lambda_tv=presets.lambda_tv_for(model, layer)) if model != "hog" else Setting()
    per, setup = per_iteration(lambda n: invert(rep, x0, settings=setting, schedule=presets.Schedule(((1e-3, n),)),
                                                device=device, progress=False), device, seconds)
    return per / batch, setup / batch


def naive_network(model, layer):
    """The whole network and the module whose output is the code (torchvision's AlexNet, with
    its in-place ReLUs, as a plain script would use it)."""
    if model == "hog":
        from preimage import representations
        body = representations.get("hog").body
        return body, body
    from torchvision.models import alexnet

    from preimage.representations.alexnet import _LAYERS
    net = alexnet(weights=None).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    part, index = next(spec[4] for spec in _LAYERS if spec[0] == layer)
    return net, getattr(net, part)[index]


def naive(model, layer, batch, size, seconds, device, net=None):
    """Seconds per iteration per image of the plain loop: per image, the full forward, the code
    taken by a hook, the paper's objective written out, momentum SGD."""
    net, tap = net or naive_network(model, layer)
    net = net.to(device)
    grabbed = {}
    hook = tap.register_forward_hook(lambda m, i, o: grabbed.__setitem__("code", o.clone()))
    scale = 1 / (255 * torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1))
    forward = (lambda x: net(x * scale)) if model == "alexnet" else net  # noqa: E731
    sigma, lam_tv, lam_l2 = 27098.1157 * (size / 227), 1.0, 8e-10

    def one_image(x0):
        with torch.no_grad():
            forward(x0)
            target = grabbed["code"]
        x = torch.randn_like(x0).requires_grad_(True)
        velocity = torch.zeros_like(x)

        def iteration():
            forward(x)
            code = grabbed["code"]
            loss = ((code - target) ** 2).sum() / (target ** 2).sum()
            dx = x[..., :, 1:] - x[..., :, :-1]
            dy = x[..., 1:, :] - x[..., :-1, :]
            tv = (dx ** 2).sum() + (dy ** 2).sum()
            energy = loss + (lam_tv / 2 * tv + lam_l2 / 2 * (x.abs() ** 6).sum()) / sigma ** 2
            grad, = torch.autograd.grad(energy, x)
            with torch.no_grad():
                velocity.mul_(0.9).sub_(1e-3 * grad)
                x.add_(velocity)
        return iteration

    images = _images(batch, size, device, 1 if model == "hog" else 3)
    steps = [one_image(images[i:i + 1]) for i in range(batch)]
    per, _ = per_iteration(_loop(lambda: [s() for s in steps]), device, seconds)
    hook.remove()
    return per / batch, 0.0


def floor(model, layer, batch, size, seconds, device):
    """Seconds per iteration per image of forward+backward through the truncated network."""
    from preimage import representations
    rep = representations.get(model, layer, weights="random") if model != "hog" else representations.get("hog")
    body = rep.body.to(device)
    x = _images(batch, size, device, rep.in_channels).requires_grad_(True)

    def step():
        code = body(x)
        torch.autograd.grad(code, x, grad_outputs=torch.ones_like(code))
    return per_iteration(_loop(step), device, seconds)[0] / batch, 0.0


def sweep(kind, size, seconds, device, images=1):
    """Seconds per iteration per image of the 20-layer CaffeNet sweep of ``images`` images:
    ``shared`` (one invert_at_layers run), ``separate`` (invert per layer) or ``naive`` (the
    plain loop, image by image)."""
    from preimage import presets, representations
    from preimage.objective import Setting
    from preimage.optimise import invert, invert_at_layers
    from preimage.representations import caffenet

    layers = [layer.name for layer in representations.layers("caffenet")]
    x0 = _images(images, size, device)
    if kind == "naive":
        net = caffenet.network().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return sum(naive("caffenet", layer, 1, size, seconds, device, (net, getattr(net, layer)))[0]
                   for layer in layers), 0.0
    reps = [representations.get("caffenet", layer, weights="random") for layer in layers]
    settings = [Setting(lambda_tv=presets.lambda_tv_for("caffenet", layer)) for layer in layers]
    schedule = lambda n: presets.Schedule(((1e-3, n),))  # noqa: E731
    if kind == "shared":
        run = lambda n: invert_at_layers(reps, x0, settings=settings, schedules=schedule(n),  # noqa: E731
                                         device=device, progress=False)
    else:
        run = lambda n: [invert(r, x0, settings=s, schedule=schedule(n), device=device, progress=False)  # noqa: E731
                         for r, s in zip(reps, settings)]
    per, setup = per_iteration(run, device, seconds)
    return per / images, setup / images


def sweep_flops(size=227) -> int:
    """FLOPs of one iteration of the 20-layer CaffeNet sweep of one image (forward to each layer
    and back to the pixels), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from preimage import representations
    from preimage.representations.shared import SharedTrunk
    reps = [representations.get("caffenet", layer.name, weights="random")
            for layer in representations.layers("caffenet")]
    x = torch.zeros(len(reps), 3, size, size, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        codes = SharedTrunk(reps)(x, [1] * len(reps))
        sum(c.sum() for c in codes).backward()  # autograd.grad trips the counter's hooks
    return counter.get_total_flops()


def measure(spec: dict) -> dict:
    """Run one measurement: seconds per iteration and of setup (per image), peak memory in MiB."""
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    what = spec.pop("what")
    fn = {"library": library, "naive": naive, "floor": floor, "sweep": sweep}[what]
    per_iteration, setup = fn(**{k: (device if k == "device" else v) for k, v in spec.items()})
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"per_iteration": per_iteration, "setup": setup, "peak_mib": peak}


# ---- the table (parent process) --------------------------------------------------------------

def child(**spec) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"measurement {spec} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine(device: str) -> str:
    name = (torch.cuda.get_device_name() if device == "cuda"
            else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads")
    return f"{platform.node()}: {device} ({name}), torch {torch.__version__}, Python {platform.python_version()}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=0.8, help="about how long each timed run lasts")
    p.add_argument("--quick", action="store_true", help="B = 1 and 8 only, no sweep (a smoke test)")
    p.add_argument("--table3-batch", type=int, default=1,
                   help="images per shared run for the Table 3 line (a GPU wants 32 or more)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return
    t_start = time.perf_counter()
    print(f"machine: {machine(args.device)}\n")
    print("| representation | layer | B | (a) library s/recon. | (b) naive s/recon. | (c) floor s/recon. "
          "| (a)/(b) | (a)/(c) | peak MiB (a) / (b) / (c) |")
    print("|---|---|---|---|---|---|---|---|---|")
    batches = BATCHES[:2] if args.quick else BATCHES
    for model, (layers, size, iterations) in AXES.items():
        for layer in layers:
            common = dict(model=model, layer=layer, size=size, seconds=args.seconds, device=args.device)
            b = child(what="naive", batch=1, **common)
            for batch in batches:
                a = child(what="library", batch=batch, **common)
                c = child(what="floor", batch=batch, **common)
                ta, tb, tc = (r["setup"] + r["per_iteration"] * iterations for r in (a, b, c))
                print(f"| {model} | {layer} | {batch} | {ta:.2f} | {tb:.2f} | {tc:.2f} | {ta / tb:.2f} | "
                      f"{ta / tc:.2f} | {a['peak_mib']:.0f} / {b['peak_mib']:.0f} / {c['peak_mib']:.0f} |",
                      flush=True)
    if not args.quick:
        common = dict(size=227, seconds=args.seconds, device=args.device)
        runs = {kind: child(what="sweep", kind=kind, **common) for kind in ("shared", "separate", "naive")}
        per = {kind: r["setup"] + r["per_iteration"] * 400 for kind, r in runs.items()}
        print(f"\n20-layer CaffeNet sweep of one image, 400 iterations: shared run {per['shared']:.1f} s, "
              f"one run per layer {per['separate']:.1f} s, naive loop {per['naive']:.1f} s: "
              f"{per['naive'] / per['shared']:.2f}x faster than naive (peak MiB "
              f"{runs['shared']['peak_mib']:.0f} / {runs['separate']['peak_mib']:.0f} / "
              f"{runs['naive']['peak_mib']:.0f})")
        # Table 3: 100 images x 3 λ, every image at 20 layers: 300 sweeps, run B images at a time
        batch = (runs["shared"] if args.table3_batch == 1 else
                 child(what="sweep", kind="shared", images=args.table3_batch, **common))
        one = batch["setup"] + batch["per_iteration"] * 400
        flops = sweep_flops() * 400 * 300
        print(f"Table 3 protocol (100 images x 20 layers x 3 λ, 400 iterations), {args.table3_batch} images "
              f"per shared run: {one:.1f} s per image and 20 layers, {300 * one / 60:.0f} min on this device "
              f"({flops / 1e15:.2f} PFLOP in all, {flops / (300 * one) / 1e9:.0f} GFLOP/s sustained)")
    print(f"\nbenchmark time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
