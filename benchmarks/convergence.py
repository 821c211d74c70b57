"""Iterations to quality: relative feature error ||Φ(x)−Φ0||/||Φ0|| against the number of
forward+backward passes (the fair cost unit: L-BFGS makes several per step) for three optimisers.

    python benchmarks/convergence.py [--images astronaut] [--iterations N] [--out docs/benchmarks]

- reference: ``invert(optimizer="sgd")`` with ``preimage.recipe(model, layer)``'s schedule (CNN, 400
  iterations, for the network; SHALLOW, 800, for HOG) and pixel range; one pass per iteration.
- adam: ``invert(optimizer="adam")`` with ``recipes.ADAM`` stretched to the same budget, for each
  ``--adam SCALE[:PASSES]`` with its rates × SCALE and, given PASSES, shortened to PASSES as the
  quick profile shortens (``Schedule.shortened``).
- lbfgs: ``torch.optim.LBFGS(line_search_fn="strong_wolfe")`` on the same objective, the same
  variable u = x/σ and the same start noise as the reference; every closure call is one pass.
  Where the reference projects onto the valid pixels, L-BFGS minimises E(clamp(σu)) instead
  (a reparametrisation, not a projection: clamped pixels get zero gradient).
- each ``--recipes NAME[:C]``: ``preimage.recipe(model, layer, recipe=..., param=...)`` stretched
  to the reference's passes: ``ijcv2016`` (the IJCV 2016 recipe, C as given, default 1; networks
  only) and ``fourier`` (the CVPR energy on Lucid's Fourier image, Adam on the spectrum).

The error is read off the normalised L2 loss term (error = sqrt(loss / C)), so recording it costs no
extra pass: ``InversionResult.energies["loss"][n]`` is the loss of the iterate after n updates (for
the IJCV recipe's jittered first stage, the loss of the window the network saw; the last point of
every curve is the error of the result itself).
Every optimiser runs the reference's number of passes (L-BFGS at most: a line search that would
overrun the budget is not counted). Wall times are on ``--threads`` torch threads. Writes ``OUT/convergence.png`` and prints
a markdown table: the reference's final error and passes, the passes each other optimiser takes to
first reach that error (or "not reached" and its final error), and wall times.
"""
import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

import preimage
from preimage import images, representations
from preimage.engine.objective import Objective, mask
from preimage.engine.optimise import pixel_bounds, start_noise
from preimage.paper import recipes

MODEL = "efficientnet_lite0"


def panels(args):
    """(model, layer, image size) for every panel."""
    return [(MODEL, layer, None) for layer in args.layers] + [("hog", "hog", args.hog_size)]


def run_invert(rep, x0, setting, schedule, optimizer, pixel_range):
    """Error of the iterate after 0..N passes (N + 1 values), and wall time."""
    r = preimage.invert(rep, x0, settings=setting, schedule=schedule, optimizer=optimizer,
                        pixel_range=pixel_range, device="cpu", progress=False)
    err = np.sqrt(r.energies["loss"][:, 0])  # the iterate after n updates, n = 0..N-1
    return np.append(err, r.error[0]), r.time_s


def run_recipe(rep, x0, spec, model, layer, n):
    """(error after 0..n passes, wall time) for ``--recipes`` entry ``spec`` (NAME[:C]), or None
    where the recipe does not apply (ijcv2016 on HOG)."""
    name, _, weight = spec.partition(":")
    kw = {"param": "fourier"} if name == "fourier" else {"recipe": name, "weight": float(weight or 1)}
    if name == "ijcv2016" and model in recipes.SHALLOW_MODELS:
        return None
    plan = preimage.recipe(model, layer, iterations=n, **kw)
    r = preimage.invert(rep, x0, settings=plan.setting, device="cpu", progress=False, **plan.run_options())
    err = np.sqrt(r.energies["loss"][:, 0] / plan.setting.weight)
    return np.append(err, r.error[0]), r.time_s


def recipe_label(spec: str) -> str:
    name, _, weight = spec.partition(":")
    return name + (f" C={weight}" if weight else "")


def run_lbfgs(rep, x0, setting, passes, pixel_range, history=100):
    """L-BFGS on u = x/σ from the reference's start; error after each step against passes used."""
    with torch.no_grad():
        target = rep(x0)
    shape = tuple(x0.shape[1:])
    objective = Objective(rep, target, mask(tuple(target.shape[1:]), setting, rep.layer)[None], [setting], shape)
    s = objective.sigma
    lo, hi = pixel_bounds(rep.mean, "cpu") if pixel_range else (None, None)
    u = start_noise(shape, 0, 0)[None].requires_grad_(True)  # invert's seed 0, restart 0
    opt = torch.optim.LBFGS([u], lr=1, max_iter=1, max_eval=30, history_size=history,
                            tolerance_grad=1e-12, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    seen = []  # (u, total, grad, error) of the points evaluated in the current step
    count = [0]

    def closure():
        # each step() starts by evaluating the current iterate, which its line search has just
        # evaluated: answer from the cache so that no pass is counted twice
        for v, total, grad, _ in seen:
            if torch.equal(v, u.detach()):
                u.grad = grad.clone()
                return total
        x = s * u
        if pixel_range:
            x = torch.maximum(torch.minimum(x, hi), lo)
        total, terms = objective(x)
        grad, = torch.autograd.grad(total.sum(), u)
        count[0] += 1
        u.grad = grad.clone()
        seen.append((u.detach().clone(), total.sum().detach(), grad, float(terms["loss"].detach().sqrt())))
        return total.sum().detach()

    t0 = time.perf_counter()
    closure()
    curve = [(0, seen[-1][3])]  # the start, as the reference's curve has it at pass 0
    while count[0] < passes:
        before = count[0]
        opt.step(closure)
        now = [e for v, _, _, e in seen if torch.equal(v, u.detach())]
        seen[:] = [t for t in seen if torch.equal(t[0], u.detach())]
        if count[0] == before or not now:
            break  # converged or stuck: no new pass
        if count[0] <= passes:  # the last line search may overrun the budget: not counted
            curve.append((count[0], now[0]))
    return np.array(curve), time.perf_counter() - t0


def adam_spec(spec, n):
    """(rate scale, passes) from 'SCALE[:PASSES]'; passes default to the reference's ``n``."""
    scale, _, passes = spec.partition(":")
    return float(scale), min(int(passes or n), n)


def first_reach(curve, goal):
    """Passes at which (passes, error) ``curve`` first reaches ``goal``, or None."""
    hit = np.nonzero(curve[:, 1] <= goal)[0]
    return int(curve[hit[0], 0]) if len(hit) else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", nargs="+", default=["astronaut"])
    p.add_argument("--layers", nargs="+", default=recipes.OVERVIEW_LAYERS[MODEL], help=f"{MODEL} layers")
    p.add_argument("--iterations", type=int, default=None,
                   help="passes per optimiser (default: the reference schedule's, 400 CNN / 800 HOG); "
                        "fewer shorten the schedules as the quick profile does")
    p.add_argument("--adam", nargs="+", default=["1", "4", "4:200"], metavar="SCALE[:PASSES]",
                   help="Adam runs: ADAM's rates × SCALE, its schedule shortened to PASSES (default: the reference's)")
    p.add_argument("--recipes", nargs="*", default=["ijcv2016", "ijcv2016:100", "fourier"], metavar="NAME[:C]",
                   help="other recipes at the reference's passes: ijcv2016 (C default 1) and fourier")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared CPU, 2 threads ran up to 10x slower than 1)")
    p.add_argument("--hog-size", type=int, default=256, help="HOG image side (the paper profile's 256)")
    p.add_argument("--out", default="docs/benchmarks")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.platform()}, {platform.machine()} {platform.processor() or ''}, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device cpu\n", flush=True)

    t_start = time.perf_counter()
    rows, plots = [], []
    for name in args.images:
        rgb = images.load(name)[0]
        for model, layer, size in panels(args):
            rep = representations.get(model, layer)
            x0 = images.to_input(images.fit(rgb, size or rep.input_size), rep.mean)
            recipe = preimage.recipe(model, layer)
            setting, ref, clamp = recipe.setting, recipe.schedule, recipe.pixel_range
            adam = recipes.ADAM.scaled(ref.iterations)
            if args.iterations:
                ref, adam = ref.shortened(args.iterations), adam.shortened(args.iterations)
            n = ref.iterations
            curves, times = {}, {}
            err, times["reference sgd"] = run_invert(rep, x0, setting, ref, "sgd", clamp)
            curves["reference sgd"] = np.stack([np.arange(n + 1), err], 1)
            for spec in args.adam:
                k, m = adam_spec(spec, n)
                sched = preimage.Schedule(tuple((r * k, i) for r, i in (adam.shortened(m) if m < n else adam).steps))
                label = "adam" + (f" ×{k:g}" if k != 1 else "") + (f", {m} it." if m != n else "")
                err, times[label] = run_invert(rep, x0, setting, sched, "adam", clamp)
                curves[label] = np.stack([np.arange(m + 1), err], 1)
            curves["lbfgs"], times["lbfgs"] = run_lbfgs(rep, x0, setting, n, clamp)
            for spec in args.recipes:
                done = run_recipe(rep, x0, spec, model, layer, n)
                if done is not None:
                    curves[recipe_label(spec)] = np.stack([np.arange(n + 1), done[0]], 1)
                    times[recipe_label(spec)] = done[1]
            goal = curves["reference sgd"][-1, 1]
            title = f"{model} {layer} · {name} {x0.shape[2]}×{x0.shape[3]}" + (" · pixel range" if clamp else "")
            plots.append((title, curves, goal))
            cells = {}
            for label, c in curves.items():
                if label == "reference sgd":
                    continue
                hit = first_reach(c, goal)
                cells[label] = (f"{hit} ({hit / n:.0%})" if hit is not None else "not reached") + f", final {c[-1, 1]:.3f}"
            rows.append((f"| {name} | {model} {layer} | {goal:.3f} @ {n} | ", cells,
                         ", ".join(f"{t:.1f}" for t in times.values())))
            print(f"{title}: " + ", ".join(f"{k} {c[-1, 1]:.3f} @ {int(c[-1, 0])} in {times[k]:.1f} s"
                                           for k, c in curves.items()), flush=True)
    methods = list(dict.fromkeys(k for _, cells, _ in rows for k in cells))
    print("\n| image | layer | reference: final error @ passes | "
          + " | ".join(f"{m}: passes to reach it, final error" for m in methods)
          + " | wall s (reference, then each in this order) |")
    print("|---|---|---|" + "---|" * len(methods) + "---|")
    for head, cells, walls in rows:
        print(head + " | ".join(cells.get(m, "n/a") for m in methods) + f" | {walls} |")
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    plot(plots, Path(args.out) / "convergence.png")


def plot(plots, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cols = min(3, len(plots))
    rows = -(-len(plots) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (title, curves, goal) in zip(axes.flat, plots):
        for label, c in curves.items():
            ax.plot(c[:, 0], c[:, 1], label=label, lw=1.3)
        ax.axhline(goal, ls="--", c="k", lw=0.8, label=f"reference final {goal:.3f}")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("forward+backward passes")
        ax.set_ylabel("||Φ(x)−Φ0|| / ||Φ0||")
        ax.legend(fontsize=7)
    for ax in axes.flat[len(plots):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
