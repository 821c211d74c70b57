"""How fast one reconstruction is: this library against a naive loop and the compute floor.

    python benchmarks/speed.py [--device cpu|cuda] [--seconds 0.4] [--rounds 4] [--table3-batch B] [--quick]

For AlexNet (torchvision's architecture, random weights: the time does not depend on them) at
conv1, conv3, pool5 and fc8 on 227×227 images with the paper's 400 iterations, and for HOG with
800, it prints the time per reconstruction of

  (a) ``preimage.invert`` on a batch of B = 1, 8, 32 images, and (a') at B = 8 with its descent
      step compiled (``engine.compiled``; the one-off compile is not in the time per iteration),
  (b) a naive loop written the plain PyTorch way: the whole network's forward pass with a hook
      at the layer, the same objective, one image at a time,
  (c) the compute floor: B forward and backward passes through the truncated network alone,

with the peak memory and the ratios (a)/(b), (a)/(c) and (a')/(c). Then the paper's 20-layer
sweep of one image (CaffeNet): one ``invert_at_layers`` run against one run per layer and the
naive loop at every layer; whole runs of a Table-3-sized batch (AlexNet conv1, B = 32, 400
iterations) eager and compiled, compiling included and not; and the Table 3 protocol's time at
the fastest number of images per shared run that fits in memory (``--table3-batch``: that one
alone), with its FLOPs, counted by torch, for estimates on other devices.

Timing: a reconstruction's time is its setup plus the time per iteration × iterations, each read
off a run of 1 iteration and a run of about ``--seconds``. The runs being compared take turns, in
``--rounds`` rounds, and the printed times and ratios are medians over the rounds (with the
ratios' range): a slow spell of a shared machine then slows all of them alike, where separate
measurements minutes apart differ by a third (measured on the build VM).

Memory: each measurement is built and run for two iterations in a process of its own, forked
from one that has imported the libraries and done nothing else (CPU: its peak resident set,
minus that process's; CUDA: torch's peak allocation).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

AXES = {"alexnet": (["conv1", "conv3", "pool5", "fc8"], 227, 400), "hog": (["hog"], 227, 800)}
BATCHES = (1, 8, 32)
COMPILED_BATCH = 8  # the batch whose rows also time the compiled descent step
TABLE3_CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128)  # images per shared run, tried while they fit and pay
LONG_RUN = ("alexnet", "conv1", 32, 227, 400)  # a Table-3-sized batch, with and without compiling
SWEEP_KINDS = ("shared", "separate", "naive")


# ---- timing ----------------------------------------------------------------------------------

def _sync(device):
    if torch.device(device).type == "cuda":
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


def rounds(runs: dict, device, seconds: float, count: int) -> dict[str, list[tuple[float, float]]]:
    """(seconds per iteration, seconds of setup) of each ``runs[name](n)`` (a setup, then n
    iterations), once per round, the runs taking turns in each of ``count`` rounds. Each is
    read off a run of 1 iteration and one of n + 1, n chosen so that a run lasts about
    ``seconds`` (from a warm-up run of 1 and one of 2)."""
    length = {}
    for name, run in runs.items():
        run(1)  # warm-up
        one = _seconds(lambda: run(1), device)
        rough = max(_seconds(lambda: run(2), device) - one, 1e-5)
        length[name] = min(max(2, math.ceil(seconds / rough)), 5000)
    samples = {name: [] for name in runs}
    for _ in range(count):
        for name, run in runs.items():
            n = length[name]
            one = _seconds(lambda: run(1), device)
            per = max(_seconds(lambda: run(n + 1), device) - one, 0.0) / n
            samples[name].append((per, max(one - per, 0.0)))
    return samples


def _loop(step):
    def run(n):
        for _ in range(n):
            step()
    return run


# ---- what is timed: each builder returns run(n) ----------------------------------------------

def _representation(model, layer):
    from preimage import representations
    return representations.get(model, layer, weights="random") if model != "hog" else representations.get("hog")


def library(model, layer, batch, size, device, compile=False):
    """``invert`` on a batch, the paper's λ for the layer, a constant rate; ``compile``: the
    descent step compiled (``engine.compiled``)."""
    from preimage import Schedule, invert, recipe
    from preimage.engine.objective import Setting

    rep = _representation(model, layer)
    x0 = _images(batch, size, device, rep.in_channels)
    setting = recipe(model, layer).setting if model != "hog" else Setting()
    return lambda n: invert(rep, x0, settings=setting, schedule=Schedule(((1e-3, n),)), device=device,
                            progress=False, compile=compile)


def naive_network(model, layer):
    """The whole network and the module whose output is the code (torchvision's AlexNet, with
    its in-place ReLUs, as a plain script would use it)."""
    if model == "hog":
        body = _representation("hog", "hog").body
        return body, body
    from torchvision.models import alexnet

    from preimage.representations.alexnet import _LAYERS
    net = alexnet(weights=None).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    part, index = next(spec[4] for spec in _LAYERS if spec[0] == layer)
    return net, getattr(net, part)[index]


def naive(model, layer, batch, size, device, net=None):
    """The plain loop: per image, the full forward, the code taken by a hook, the paper's
    objective written out, momentum SGD. The hook is on only while ``run`` runs."""
    net, tap = net or naive_network(model, layer)
    net = net.to(device)
    grabbed = {}
    scale = 1 / (255 * torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1))
    forward = (lambda x: net(x * scale)) if model == "alexnet" else net  # noqa: E731
    sigma, lam_tv, lam_l2 = 27098.1157 * (size / 227), 1.0, 8e-10
    images = _images(batch, size, device, 1 if model == "hog" else 3)

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

    def run(n):
        hook = tap.register_forward_hook(lambda m, i, o: grabbed.__setitem__("code", o.clone()))
        try:
            steps = [one_image(images[i:i + 1]) for i in range(batch)]
            for _ in range(n):
                for step in steps:
                    step()
        finally:
            hook.remove()
    return run


def floor(model, layer, batch, size, device):
    """Forward+backward through the truncated network."""
    rep = _representation(model, layer)
    body = rep.body.to(device)
    x = _images(batch, size, device, rep.in_channels).requires_grad_(True)

    def step():
        code = body(x)
        torch.autograd.grad(code, x, grad_outputs=torch.ones_like(code))
    return _loop(step)


def sweep(kind, size, device, images=1, compile=False):
    """The 20-layer CaffeNet sweep of ``images`` images: ``shared`` (one invert_at_layers run),
    ``separate`` (invert per layer) or ``naive`` (the plain loop at each layer, image by image);
    ``compile``: the descent step compiled."""
    from preimage import Schedule, recipe, representations
    from preimage.engine.optimise import invert, invert_at_layers
    from preimage.representations import caffenet

    layers = [layer.name for layer in representations.layers("caffenet")]
    if kind == "naive":
        net = caffenet.network().eval()
        for p in net.parameters():
            p.requires_grad_(False)
        loops = [naive("caffenet", layer, images, size, device, (net, getattr(net, layer))) for layer in layers]
        return lambda n: [run(n) for run in loops]
    x0 = _images(images, size, device)
    reps = [representations.get("caffenet", layer, weights="random") for layer in layers]
    settings = [recipe("caffenet", layer).setting for layer in layers]
    schedule = lambda n: Schedule(((1e-3, n),))  # noqa: E731
    if kind == "shared":
        # one batch of every layer and image, as the Table 3 line says (unasked, the CPU would split it)
        return lambda n: invert_at_layers(reps, x0, settings=settings, schedules=schedule(n), device=device,
                                          progress=False, compile=compile, batch_size=len(reps) * images)
    return lambda n: [invert(r, x0, settings=s, schedule=schedule(n), device=device, progress=False, compile=compile)
                      for r, s in zip(reps, settings)]


def sweep_flops(size=227) -> int:
    """FLOPs of one iteration of the 20-layer CaffeNet sweep of one image (forward to each layer
    and back to the pixels), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from preimage import representations
    from preimage.engine.shared import SharedTrunk
    reps = [representations.get("caffenet", layer.name, weights="random")
            for layer in representations.layers("caffenet")]
    x = torch.zeros(len(reps), 3, size, size, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        codes = SharedTrunk(reps)(x, [1] * len(reps))
        sum(c.sum() for c in codes).backward()  # autograd.grad trips the counter's hooks
    return counter.get_total_flops()


BUILDERS = {"library": library, "naive": naive, "floor": floor, "sweep": sweep}


# ---- memory ----------------------------------------------------------------------------------

def peak_memory(build, device) -> float:
    """Peak MiB of building ``build()`` and running it for two iterations. CPU: in a forked
    process, its peak resident set (a fork starts from this process's resident set, which the
    caller subtracts); so call it before this process computes anything (a torch op in a fork
    of a process whose OpenMP threads have run hangs: measured). CUDA: torch's peak allocation, in this process."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        build()(2)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            build()(2)
            message = str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        except BaseException as e:  # report anything, then leave without running the parent's code
            message, code = f"error: {type(e).__name__}: {e}", 1
        os.write(write, message.encode())
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    os.waitpid(pid, 0)
    if message.startswith("error") or not message:
        raise RuntimeError(f"memory measurement failed: {message or 'the process died'}")
    return float(message)


def baseline_memory(device) -> float:
    """What ``peak_memory`` starts from: on the CPU, the peak MiB of a fork that does nothing
    once the libraries the measurements use are imported (the imports are not theirs)."""
    if torch.device(device).type == "cuda":
        return 0.0
    import torchvision.models  # noqa: F401

    import preimage.representations  # noqa: F401
    return peak_memory(lambda: (lambda n: None), "cpu")


# ---- one child process per row group ---------------------------------------------------------

def _measure(groups: dict, seconds, rounds_, device) -> dict:
    """``groups``: {key: (images, {name: build})}, each ``build()`` giving the ``run(n)`` of
    that many images. Per key and name: the rounds' samples per image and the peak memory, every
    memory fork taken before anything is timed (``peak_memory`` says why)."""
    base = baseline_memory(device)
    # a compiled build is not forked (inductor's compile workers in a fork); its memory is the library's or less
    memory = {key: {name: None if name == "compiled" else peak_memory(build, device) - base
                    for name, build in builds.items()}
              for key, (_, builds) in groups.items()}
    out = {}
    for key, (images, builds) in groups.items():
        samples = rounds({name: build() for name, build in builds.items()}, device, seconds, rounds_)
        out[key] = {name: {"samples": [[per / images, setup / images] for per, setup in s],
                           "peak_mib": memory[key][name]} for name, s in samples.items()}
    return out


def measure_layer(model, layer, batches, size, seconds, rounds_, device, compiled=(COMPILED_BATCH,)) -> dict:
    """For every batch: library, floor and (B = 1) naive samples per image, and their memory;
    for the batches in ``compiled``, the library with its descent step compiled too."""
    spec = dict(model=model, layer=layer, size=size, device=device)
    groups = {str(b): (b, {"library": functools.partial(library, batch=b, **spec),
                           "floor": functools.partial(floor, batch=b, **spec)}) for b in batches}
    groups["1"][1]["naive"] = functools.partial(naive, batch=1, **spec)
    for b in set(compiled) & set(batches):
        groups[str(b)][1]["compiled"] = functools.partial(library, batch=b, compile=True, **spec)
    return _measure(groups, seconds, rounds_, device)


def measure_sweep(size, seconds, rounds_, device, images=1, kinds=SWEEP_KINDS, compile=False) -> dict:
    builds = {k: functools.partial(sweep, k, size, device, images, compile) for k in kinds}
    return _measure({"sweep": (images, builds)}, seconds, rounds_, device)["sweep"]


def measure_long(model, layer, batch, size, iterations, device) -> dict:
    """Wall seconds of whole runs of ``iterations`` on a batch: eager, then compiled twice in
    this process (the first pays for compiling, the second reuses it)."""
    walls = {}
    for name, compile in (("eager", False), ("compiled_first", True), ("compiled_again", True)):
        run = library(model, layer, batch, size, device, compile=compile)
        walls[name] = _seconds(lambda: run(iterations), device)
    return walls


def fits(images, size, iterations, device) -> bool:
    """Whether a shared 20-layer CaffeNet sweep of ``images`` images runs in one batch under the
    engine's memory limit (``engine.budget``, as ``invert`` splits runs)."""
    from preimage import representations
    from preimage.engine import budget
    from preimage.errors import ResourceError
    deepest = representations.get("caffenet", representations.layers("caffenet")[-1].name, weights="random")
    items = 20 * images
    try:
        return budget.batch_size(deepest, (3, size, size), items, iterations, torch.device(device), asked=items) >= items
    except ResourceError:  # a batch that large does not fit
        return False


def child(**spec) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"measurement {spec} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_one(spec: dict) -> dict:
    what = spec.pop("what")
    return {"layer": measure_layer, "sweep": measure_sweep, "long": measure_long}[what](**spec)


# ---- the tables (parent process) -------------------------------------------------------------

def reconstruction_times(entry: dict, iterations: int) -> list[float]:
    """Seconds per reconstruction in each round: setup + per iteration × iterations."""
    return [setup + per * iterations for per, setup in entry["samples"]]


def ratio(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Median, least and greatest of the round-by-round ratios a/b (rounds paired by index; a
    single b stands for every round)."""
    b = b if len(b) == len(a) else [statistics.median(b)] * len(a)
    r = [x / y for x, y in zip(a, b)]
    return statistics.median(r), min(r), max(r)


def machine(device: str) -> str:
    name = (torch.cuda.get_device_name() if device == "cuda"
            else f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} "
                 f"torch threads")
    return f"{platform.node()}: {device} ({name}), torch {torch.__version__}, Python {platform.python_version()}"


HEADER = ("| representation | layer | B | (a) library s/recon. | (a') compiled s/recon. | (b) naive s/recon. "
          "| (c) floor s/recon. | (a)/(b) | (a)/(c) | (a')/(c) | peak MiB (a) / (b) / (c) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def layer_rows(model, layer, iterations, result) -> list[str]:
    naive_t = reconstruction_times(result["1"]["naive"], iterations)
    rows = []
    for batch, r in result.items():
        a, c = (reconstruction_times(r[w], iterations) for w in ("library", "floor"))
        ab, ac = ratio(a, naive_t), ratio(a, c)
        fused, fc = "–", "–"
        if "compiled" in r:
            f = reconstruction_times(r["compiled"], iterations)
            fused, fc = f"{statistics.median(f):.2f}", "{:.2f} ({:.2f}–{:.2f})".format(*ratio(f, c))
        mem = " / ".join(f"{m:.0f}" for m in (r["library"]["peak_mib"], result["1"]["naive"]["peak_mib"],
                                              r["floor"]["peak_mib"]))
        rows.append(f"| {model} | {layer} | {batch} | {statistics.median(a):.2f} | {fused} | "
                    f"{statistics.median(naive_t):.2f} | {statistics.median(c):.2f} | {ab[0]:.2f} | "
                    f"{ac[0]:.2f} ({ac[1]:.2f}–{ac[2]:.2f}) | {fc} | {mem} |")
    return rows


def table3_line(args, common) -> str:
    """The Table 3 protocol's projected time at the best number of images per shared run: each
    candidate that fits in memory is timed, in increasing order, until a larger one stops paying
    (``--table3-batch`` times that one alone). The descent step is compiled where it pays over
    the protocol's 300 sweeps (``engine.compiled``)."""
    from preimage.engine import compiled
    device = torch.device(args.device)
    chosen = [args.table3_batch] if args.table3_batch else [b for b in TABLE3_CANDIDATES if fits(b, 227, 400, device)]
    times = {}
    for b in chosen:
        fuse = compiled.resolve(None)
        fuse = compiled.worth_compiling((20 * b, 3, 227, 227), 400, device, runs=300 // b) if fuse is None else fuse
        runs = child(what="sweep", size=227, images=b, kinds=["shared"], compile=fuse, **common)["shared"]
        times[b] = (statistics.median(reconstruction_times(runs, 400)), fuse)
        print(f"  Table 3 sweep of {b} image(s) per shared run{' (compiled step)' if fuse else ''}: "
              f"{times[b][0]:.1f} s per image and 20 layers", flush=True)
        if min(t for t, _ in times.values()) < 0.95 * times[b][0]:
            break  # larger batches stopped paying
    best = min(times, key=lambda b: times[b][0])
    one, fuse = times[best]
    single = f"; one image per run: {times[1][0]:.1f} s, {300 * times[1][0] / 60:.0f} min" if 1 in times else ""
    flops = sweep_flops() * 400 * 300
    return (f"Table 3 protocol (100 images x 20 layers x 3 λ, 400 iterations), {best} images per shared run "
            f"(the fastest of {', '.join(map(str, times))} that fit){', descent step compiled' if fuse else ''}: "
            f"{one:.1f} s per image and 20 layers, {300 * one / 60:.0f} min on this device ({flops / 1e15:.2f} PFLOP "
            f"in all, {flops / (300 * one) / 1e9:.0f} GFLOP/s sustained{single})")


def long_run_line(device) -> str:
    model, layer, batch, size, iterations = LONG_RUN
    w = child(what="long", model=model, layer=layer, batch=batch, size=size, iterations=iterations, device=device)
    return (f"A Table-3-sized batch ({model} {layer}, B = {batch}, {size}x{size}, {iterations} iterations), wall "
            f"seconds of one run: eager {w['eager']:.1f}, compiled {w['compiled_first']:.1f} (compiling included), "
            f"{w['compiled_again']:.1f} (compiled already): {w['eager'] / w['compiled_again']:.2f}x once compiled, "
            f"{w['eager'] / w['compiled_first']:.2f}x for a single run")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seconds", type=float, default=0.4, help="about how long each timed run lasts")
    p.add_argument("--rounds", type=int, default=4, help="rounds in which the compared runs take turns")
    p.add_argument("--quick", action="store_true", help="B = 1 and 8 only, no sweep (a smoke test)")
    p.add_argument("--table3-batch", type=int, default=None,
                   help="images per shared run for the Table 3 line (default: the fastest that fits in memory)")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    t_start = time.perf_counter()
    print(f"machine: {machine(args.device)}")
    print(f"medians of {args.rounds} rounds; (a)/(c): median (least–greatest) of the rounds' ratios; "
          f"peak MiB: above a process that has imported torch, torchvision and preimage (CPU resident set; CUDA allocated)\n")
    print(HEADER)
    batches = list(BATCHES[:2] if args.quick else BATCHES)
    common = dict(seconds=args.seconds, rounds_=args.rounds, device=args.device)
    for model, (layers, size, iterations) in AXES.items():
        for layer in layers:
            result = child(what="layer", model=model, layer=layer, batches=batches, size=size, **common)
            print("\n".join(layer_rows(model, layer, iterations, result)), flush=True)
    if not args.quick:
        runs = child(what="sweep", size=227, **common)
        per = {k: statistics.median(reconstruction_times(r, 400)) for k, r in runs.items()}
        fast = ratio(reconstruction_times(runs["naive"], 400), reconstruction_times(runs["shared"], 400))
        print(f"\n20-layer CaffeNet sweep of one image, 400 iterations: shared run {per['shared']:.1f} s, "
              f"one run per layer {per['separate']:.1f} s, naive loop {per['naive']:.1f} s: "
              f"{fast[0]:.2f}x ({fast[1]:.2f}–{fast[2]:.2f}) faster than naive (peak MiB "
              f"{runs['shared']['peak_mib']:.0f} / {runs['separate']['peak_mib']:.0f} / "
              f"{runs['naive']['peak_mib']:.0f})")
        print("\n" + long_run_line(args.device), flush=True)
        # Table 3: 100 images x 3 λ, every image at 20 layers: 300 sweeps, run B images at a time
        print(table3_line(args, common))
    print(f"\nbenchmark time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
