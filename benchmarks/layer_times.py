"""Time one inversion per layer (B = 1) on this machine and print a markdown table.

    python benchmarks/layer_times.py [--layers conv1 relu3 pool5 fc8] [--device cpu] [--weights random]

Prints wall time and final relative error for the quick profile and the paper's schedule, with
the λ_TV of the paper's Fig. 6, on the shipped astronaut photo at 227×227.
"""
import argparse
import platform

import torch

import preimage
from preimage import images, representations


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", nargs="+", default=["conv1", "relu3", "pool5", "fc8"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default="random")
    p.add_argument("--profiles", nargs="+", default=["quick", "paper"])
    args = p.parse_args()
    rgb = images.fit(images.load("astronaut")[0], 227)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {args.device}, weights {args.weights}\n")
    print("| layer | λ_TV | " + " | ".join(f"{p} ({preimage.recipe('alexnet', 'conv1', profile=p).schedule.iterations} "
                                         f"it.): time, error"
                                         for p in args.profiles) + " |")
    print("|---|---|" + "---|" * len(args.profiles))
    for layer in args.layers:
        rep = representations.get("alexnet", layer, weights=args.weights)
        x0 = images.to_input(rgb, rep.mean)
        cells = []
        for profile in args.profiles:
            recipe = preimage.recipe("alexnet", layer, profile=profile)
            setting = recipe.setting
            r = preimage.invert(rep, x0, settings=setting, schedule=recipe.schedule,
                                device=args.device, progress=False)
            cells.append(f"{r.time_s:.1f} s, {r.error[0]:.3f}")
        print(f"| {layer} | {setting.lambda_tv:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
