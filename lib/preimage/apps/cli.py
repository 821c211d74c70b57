"""Command line: ``python -m preimage layers | weights | encode | invert | maximise | caricature | table3``."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import figures, images, representations
from ..atomic import atomic_folder, atomic_path
from ..engine import budget
from ..engine.optimise import OPTIMIZERS, invert, resolve_device
from ..engine.parameterisations import PARAMETERISATIONS
from ..errors import CodeError, PreimageError, SettingsError
from ..paper import natural, recipes, table3
from ..representations.weights import checkpoint_dir

CODE_FORMAT = "preimage-code-1"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except PreimageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {_interrupted(args)}", file=sys.stderr)
        return 130


def _interrupted(args) -> str:
    """What an interrupted command left: nothing, or the Table 3 items saved so far."""
    if args.command == "table3" and (args.out / "items").is_dir():
        saved = sum(1 for _ in (args.out / "items").rglob("*.json"))
        return f"{saved} items saved in {args.out / 'items'}, run again to resume"
    return "nothing written"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m preimage", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    lay = sub.add_parser("layers", help="list a model's layers with channels and receptive field")
    lay.add_argument("--model", default="alexnet", help="a model name, or torchvision:NAME / timm:NAME")
    lay.set_defaults(run=cmd_layers)

    wts = sub.add_parser("weights", help="download (where allowed) and check a network's trained weights, "
                         "or convert a .caffemodel / MatConvNet .mat file for caffenet")
    wts.add_argument("model", help="alexnet, caffenet, efficientnet_lite0, ...")
    wts.add_argument("--from", dest="source", default=None, metavar="FILE",
                     help="a weights file to use instead of the published one (caffenet: .caffemodel or .mat)")
    wts.set_defaults(run=cmd_weights)

    enc = sub.add_parser("encode", help="compute an image's code at a layer")
    enc.add_argument("image", help="image file, or the name of a shipped image (e.g. astronaut)")
    _model_args(enc)
    enc.add_argument("--out", required=True, type=Path, help="code file to write (.npz)")
    enc.set_defaults(run=cmd_encode)

    inv = sub.add_parser("invert", help="reconstruct an image from its code at a layer")
    inv.add_argument("image", nargs="?", help="image file or shipped image name (or give --code)")
    inv.add_argument("--code", type=Path, help="a code file written by `encode`, instead of an image")
    _model_args(inv)
    _recipe_args(inv)
    inv.add_argument("--lambda-tv", type=float, default=None,
                     help="λ_TV (cvpr2015: λ_Vβ = λ_TV/2, default the paper's Fig. 6 value for the layer, 1, 10 or "
                          "100; ijcv2016: default (6.5/80)^β)")
    inv.add_argument("--lambda-l2", type=float, default=None,
                     help="λ_L2 of the α-norm (default: cvpr2015 8e-10, ijcv2016 (1/80)^α)")
    inv.add_argument("--iters", type=int, default=None,
                     help="iterations (default: the reference schedule's: cvpr2015 400 for networks, 800 for "
                          "hog/dsift, ijcv2016 300 + 50; fewer keep half at the first rate, more stretch every "
                          "phase)")
    inv.add_argument("--restarts", type=int, default=1, help="random restarts, optimised as one batch")
    inv.add_argument("--neigh", type=int, default=None, help="use only the central N×N positions of the code")
    inv.add_argument("--group", type=int, choices=(1, 2), default=None, help="use only the first or second half of the channels")
    inv.add_argument("--loss", choices=("l2", "l1", "inner"), default="l2")
    inv.add_argument("--optimizer", choices=OPTIMIZERS, default=None,
                     help="default: the recipe's (cvpr2015 sgd with momentum, ijcv2016 adagrad, fourier adam)")
    inv.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    inv.add_argument("--seed", type=int, default=0, help="seed of the random starts (and of random weights)")
    inv.add_argument("--memory-limit", default=None, metavar="SIZE",
                     help="most memory the run may take, e.g. 8G (default: $PREIMAGE_MEMORY_LIMIT, else 75%% of "
                          "the memory available); larger runs are split into batches or refused")
    _compile_arg(inv)
    inv.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty())
    inv.add_argument("--out", required=True, type=Path, help="folder for the PNGs, result.json and result.npz")
    inv.set_defaults(run=cmd_invert)

    mx = sub.add_parser("maximise", help="an image that excites one unit, or a mosaic of several (IJCV 2016 §4)")
    _network_args(mx)
    mx.add_argument("--channel", default=None, help="the channel to maximise: a number, or a class name at the last "
                    "layer (e.g. 'black swan')")
    mx.add_argument("--channels", default=None, help="several channels, comma-separated (a mosaic)")
    mx.add_argument("--stats-images", default=None, metavar="FOLDER",
                    help="photos whose largest activation per channel scales the target (default: the shipped ones)")
    _run_args(mx, "maximise")
    mx.set_defaults(run=cmd_maximise)

    car = sub.add_parser("caricature", help="exaggerate what a layer sees in a photo (IJCV 2016 §5)")
    car.add_argument("image", help="image file, or the name of a shipped image (e.g. astronaut)")
    _network_args(car)
    car.add_argument("--size", type=int, default=None, help="resize the image to SIZE×SIZE (default: the input size)")
    car.add_argument("--fit", choices=("crop", "warp"), default="crop")
    _run_args(car, "caricature")
    car.set_defaults(run=cmd_caricature)

    tab = sub.add_parser("table3", help="the paper's Table 3: error at every layer for λ_Vβ 0.5, 5, 50 over a "
                         "set of images; resumable, --shard I/N, --merge, or several processes under torchrun")
    tab.add_argument("images", nargs="*", help="image files, folders or shipped image names (default: every shipped image)")
    tab.add_argument("--model", default="alexnet", help=f"one of {', '.join(representations.models())}, or auto")
    tab.add_argument("--weights", default=None, help="networks: imagenet (default), random, auto or a state_dict path")
    tab.add_argument("--layers", nargs="+", default=None,
                     help="default: every layer of a network; hog, hogb and dsift: their default layer")
    tab.add_argument("--lambda-tv", nargs="+", type=float, default=list(table3.LAMBDA_TVS),
                     help="λ_TV of the rows (default 1 10 100, i.e. λ_Vβ 0.5 5 50)")
    tab.add_argument("--size", type=int, default=256,
                     help="hog/hogb/dsift: centre-crop every image to SIZE×SIZE (default 256); networks use their input size")
    tab.add_argument("--profile", choices=tuple(recipes.PROFILES), default="paper",
                     help="paper: the reference schedule (default); quick: 100 iterations")
    tab.add_argument("--iters", type=int, default=None, help="iterations, as for invert (overrides --profile)")
    tab.add_argument("--batch-size", type=int, default=None, help="images inverted at once (default: all pending of a layer and λ)")
    tab.add_argument("--seed", type=int, default=0)
    tab.add_argument("--memory-limit", default=None, metavar="SIZE", help="as for invert")
    tab.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    tab.add_argument("--shard", default=None, metavar="I/N", help="run only the I-th of N shares of the items (0-based)")
    tab.add_argument("--merge", action="store_true", help="only build the table from the saved items, and list missing ones")
    tab.add_argument("--png", action="store_true", help="also save each reconstruction as a PNG beside its item")
    _compile_arg(tab)
    tab.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty())
    tab.add_argument("--out", required=True, type=Path, help="folder for items/ and table3.csv, .md, .png")
    tab.set_defaults(run=cmd_table3)
    return p


def _recipe_args(p, default: str = "cvpr2015"):
    p.add_argument("--recipe", choices=recipes.RECIPES, default=default,
                   help=f"cvpr2015: the CVPR 2015 paper's; ijcv2016: the natural pre-images of its follow-up (C, "
                        f"jitter, box, AdaGrad; networks only) (default {default})")
    p.add_argument("--param", choices=PARAMETERISATIONS, default="pixels",
                   help="what the descent moves: pixels (both papers), or fourier (Lucid's 1/f spectrum with "
                        "decorrelated colours, with Adam)")
    p.add_argument("--weight", type=float, default=None, help="ijcv2016: C, the loss's weight (default 1, 100 for "
                   "caricatures; the paper sweeps 1, 20, 100, 300)")
    p.add_argument("--beta", type=float, default=None, help="exponent β of the V^β regulariser (default 2)")
    p.add_argument("--alpha", type=float, default=None, help="α of the α-norm (default 6)")
    p.add_argument("--transform", action="append", default=[], metavar="T",
                   help="a random transformation drawn every iteration, repeatable, in order: jitter=PIXELS, "
                        "scale=FACTOR, rotate=DEGREES (after the ijcv2016 recipe's own jitter)")


def _compile_arg(p):
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="fuse the regularisers and the descent step with torch.compile (default: where the "
                        "saving is well above the seconds compiling takes; $PREIMAGE_COMPILE=0 or 1 sets that)")


def _network_args(p):
    p.add_argument("--model", default="alexnet", help="a network (see `invert --help`), or auto")
    p.add_argument("--layer", required=True, help="layer name (see `layers`)")
    p.add_argument("--weights", default=None, help="imagenet (default), random, auto or the path of a state_dict")


def _run_args(p, what: str):
    _recipe_args(p, "ijcv2016")
    p.add_argument("--profile", choices=tuple(recipes.PROFILES), default="paper",
                   help="paper: 300 iterations (default); quick: 100")
    p.add_argument("--iters", type=int, default=None, help="iterations (overrides --profile)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0, help="seed of the random start, the jitter and random weights")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty())
    p.add_argument("--out", required=True, type=Path, help=f"folder for the {what} PNG, result.json and result.npz")


def _model_args(p):
    p.add_argument("--model", default="alexnet", help=f"one of {', '.join(representations.models())}, auto "
                   f"(AlexNet with ImageNet weights if they can be had, else the offline efficientnet_lite0), "
                   f"or any torchvision:NAME / timm:NAME classification model, its layers by node name")
    p.add_argument("--layer", default=None, help="layer name (see `layers`); hog, hogb and dsift have a default")
    p.add_argument("--weights", default=None,
                   help="networks: imagenet (default), random, auto or the path of a state_dict; none for hog/dsift")
    p.add_argument("--size", type=int, default=None,
                   help="resize the image to SIZE×SIZE (default: the model's input size; hog/dsift: native size)")
    p.add_argument("--fit", choices=("crop", "warp"), default="crop",
                   help="crop: central square then resize (default); warp: stretch as the reference code")


def cmd_layers(args) -> int:
    print(representations.layer_table(args.model))
    return 0


def cmd_weights(args) -> int:
    first = representations.layers(args.model)[0].name
    rep = representations.get(args.model, first, args.source or "imagenet")
    if not rep.trained:
        raise PreimageError(f"{args.model} has no trained weights to fetch")
    print(f"{args.model}: {rep.weights} ready (cache: {checkpoint_dir()})")
    return 0


def _load_image(args, rep, iterations: int = 1) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """The image fitted to --size (default: the model's input size), and the notes on how; a size
    whose inversion could not fit in memory is refused before the image is resized."""
    if args.size is not None and args.size < 1:
        raise SettingsError(f"--size must be a positive number of pixels, not {args.size}")
    rgb, notes = images.load(args.image)
    size = args.size if args.size is not None else rep.input_size
    side = (size, size) if size is not None else rgb.shape[:2]
    budget.batch_size(rep, (rep.in_channels, *side), 1, iterations, resolve_device(getattr(args, "device", "auto")),
                      memory_limit=getattr(args, "memory_limit", None))
    notes += images.check_scale(rgb.shape[:2], size, rep.label, explicit=args.size is not None)
    if size is not None:
        rgb = images.fit(rgb, size, args.fit)
    rep.check_image_size(*rgb.shape[:2])
    for note in notes:
        print(f"note: {args.image}: {note}", file=sys.stderr)
    return images.to_input(rgb, rep.mean), rgb, notes


def _writable_dir(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise PreimageError(f"cannot write to {folder} ({e.strerror or e}); choose another --out") from None
    return folder


def cmd_encode(args) -> int:
    if args.out.suffix != ".npz":
        raise PreimageError(f"--out must name a .npz file, not {args.out}")
    if args.out.is_dir():
        raise PreimageError(f"--out {args.out} is a folder; name a .npz file to write, e.g. {args.out / 'code.npz'}")
    _writable_dir(args.out.parent if str(args.out.parent) else Path("."))
    rep = representations.get(args.model, args.layer, args.weights, seed=0)
    x, rgb, _ = _load_image(args, rep)
    with torch.no_grad():
        code = rep(x).numpy()
    meta = {"format": CODE_FORMAT, "image": str(args.image), "image_size": list(rgb.shape[:2]),
            "fit": args.fit, **rep.describe()}
    with atomic_path(args.out) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, code=code, meta=json.dumps(meta))
    print(f"wrote {args.out}: {rep.label}, code shape {code.shape[1:]}, image {rgb.shape[0]}x{rgb.shape[1]}")
    return 0


def read_code(path: Path) -> tuple[np.ndarray, dict]:
    """The code array (N, ...) and its metadata from a file written by ``encode``, checked: a
    mapping with this format and an image size of two positive integers, a real floating-point
    code of at least one item."""
    again = "write it again with `python -m preimage encode`"
    try:
        with np.load(path, allow_pickle=False) as z:
            code, meta = z["code"], json.loads(str(z["meta"]))
    except FileNotFoundError:
        raise CodeError(f"code file {path} not found") from None
    except Exception as e:
        raise CodeError(f"cannot read {path} as a code file written by `python -m preimage encode` "
                        f"({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != CODE_FORMAT:
        raise CodeError(f"{path} is not a code file of format {CODE_FORMAT}; {again}")
    size = meta.get("image_size")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise CodeError(f"{path} gives the image size {size!r}, not two positive integers; {again}")
    if code.dtype.kind != "f":
        raise CodeError(f"{path} holds a code of {code.dtype} values, not real floating point; {again}")
    if code.ndim < 2 or code.shape[0] == 0:
        raise CodeError(f"{path} holds a code of shape {code.shape}, not a batch of one or more codes; {again}")
    return code.astype(np.float32), meta  # native byte order and precision, whatever the file's


def cmd_invert(args) -> int:
    if (args.image is None) == (args.code is None):
        raise PreimageError("give either an IMAGE or --code FILE to invert")
    if args.model == "auto":
        args.model, args.weights = representations.resolve_auto()
    rep = representations.get(args.model, args.layer, args.weights, seed=args.seed)
    plan = _plan(args, rep.layer, iterations=args.iters, lambda_tv=args.lambda_tv, optimizer=args.optimizer)
    setting = dataclasses.replace(plan.setting, neigh=args.neigh, group=args.group,
                                  **({} if args.lambda_l2 is None else {"lambda_l2": args.lambda_l2}))
    common = dict(settings=setting, restarts=args.restarts, loss=args.loss, seed=args.seed, device=args.device,
                  progress=args.progress, memory_limit=args.memory_limit, compile=args.compile, **plan.run_options())
    try:
        return _invert(args, rep, common, plan)
    except OSError as e:
        raise PreimageError(f"cannot write the result into {args.out} ({e.strerror or e}); choose another --out "
                            f"(the old result, if any, is unchanged)") from None


def _invert(args, rep, common, plan) -> int:
    if args.code is not None:
        code, meta = read_code(args.code)
        if (meta.get("model"), meta.get("layer")) != (rep.model, rep.layer):
            raise CodeError(f"{args.code} holds a code of {meta.get('model')} {meta.get('layer')}, not "
                            f"{rep.model} {rep.layer}; pass --model {meta.get('model')} --layer {meta.get('layer')}")
        if meta.get("weights") != rep.weights:
            print(f"warning: the code was computed with weights {meta.get('weights')}, the inversion uses "
                  f"{rep.weights}", file=sys.stderr)
        with _output_folder(args.out) as out:
            result = invert(rep, codes=torch.from_numpy(code), image_size=tuple(meta["image_size"]), **common)
            names = _write_result(out, result, {"source": str(args.code), "recipe": plan.describe()})
    else:
        x, _, notes = _load_image(args, rep, plan_iterations(common))
        with _output_folder(args.out) as out:
            result = invert(rep, x, **common)
            names = _write_result(out, result, {"source": str(args.image), "image_notes": notes,
                                                "recipe": plan.describe()})
    errors = ", ".join(f"{e:.4f}" for e in result.error)
    print(f"{rep.label}: relative error {errors} in {result.time_s:.1f} s; wrote {args.out}/" + ", ".join(names)
          + " and result.json")
    return 0


def _plan(args, layer: str, **kw) -> recipes.Recipe:
    """The recipe the command's --recipe, --param, --weight, --beta, --alpha and --transform ask for."""
    return recipes.recipe(args.model, layer, recipe=args.recipe, param=args.param, weight=args.weight,
                          beta=args.beta, alpha=args.alpha, transforms=args.transform, **kw)


def plan_iterations(run_options: dict) -> int:
    stages = run_options.get("stages")
    return sum(st.schedule.iterations for st in stages) if stages else run_options["schedule"].iterations


def _output_folder(folder: Path):
    """``atomic_folder(folder)``, with a folder that cannot be written said in one line."""
    if folder.exists() and not folder.is_dir():
        raise PreimageError(f"--out {folder} is a file; name a folder to write the result into")
    if Path.cwd().resolve().is_relative_to(folder.resolve()):
        raise PreimageError(f"--out {folder} is the current folder or holds it; name a new folder for the result")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "result.json").is_file():
        raise PreimageError(f"--out {folder} holds other files and no earlier result, and the whole folder is "
                            f"replaced by the new one; name a new or empty folder")
    _writable_dir(folder.parent if str(folder.parent) else Path("."))
    return atomic_folder(folder)


def _write_result(out: Path, result, extra: dict) -> list[str]:
    """The PNGs (one per restart), result.npz and result.json of an inversion, into ``out``."""
    shown = result.display()
    names = ["reconstruction.png"] if len(shown) == 1 else [f"reconstruction_{r}.png" for r in range(len(shown))]
    for name, im in zip(names, shown):
        images.save_png(out / name, im)
    error = result.error.tolist()
    result.save(out / "result", extra={"error": error[0] if len(error) == 1 else error, **extra,
                                       "settings": result.provenance["settings"][0], "files": names + ["result.npz"]})
    return names


def _channels(args) -> list[str]:
    if (args.channel is None) == (args.channels is None):
        raise SettingsError("give --channel K (a number or a class name) or --channels K1,K2,...")
    return [args.channel] if args.channel is not None else [c.strip() for c in args.channels.split(",") if c.strip()]


def cmd_maximise(args) -> int:
    channels = _channels(args)
    if args.model == "auto":
        args.model, args.weights = representations.resolve_auto()
    rep = representations.get(args.model, args.layer, args.weights, seed=args.seed)
    natural.check_unit_code(rep)
    plan = _plan(args, rep.layer)  # the recipe's arguments are checked before anything runs
    with _output_folder(args.out) as out:
        found = natural.maximise(rep, channels, recipe=args.recipe, param=args.param, profile=args.profile,
                                 iterations=args.iters, weight=args.weight, stats_images=args.stats_images,
                                 seed=args.seed, device=args.device, progress=args.progress)
        shown = found.result.display()
        name = "maximised.png"
        images.save_png(out / name, shown[0] if len(shown) == 1 else figures.mosaic(shown))
        found.result.save(out / "result", extra={**found.summary(), "recipe": plan.describe(),
                                                 "files": [name, "result.npz"]})
    for k, label, a, m in zip(found.channels, found.names, found.activation, found.reference):
        print(f"{rep.label} channel {k}{f' ({label})' if label else ''}: activation {a:.4g} on its image, "
              f"largest on the photos {m:.4g}")
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.out}/{name}, result.npz and result.json")
    return 0


def cmd_caricature(args) -> int:
    if args.model == "auto":
        args.model, args.weights = representations.resolve_auto()
    rep = representations.get(args.model, args.layer, args.weights, seed=args.seed)
    natural.check_unit_code(rep)
    plan = _plan(args, rep.layer)
    x, _, notes = _load_image(args, rep)
    with _output_folder(args.out) as out:
        result = natural.caricature(rep, x, recipe=args.recipe, param=args.param, profile=args.profile,
                                    iterations=args.iters, weight=args.weight, seed=args.seed, device=args.device,
                                    progress=args.progress)
        images.save_png(out / "caricature.png", result.display()[0])
        result.save(out / "result", extra={"source": str(args.image), "image_notes": notes,
                                           "recipe": plan.describe(), "files": ["caricature.png", "result.npz"]})
    print(f"{rep.label}: caricature of {args.image} in {result.time_s:.1f} s; wrote {args.out}/caricature.png, "
          f"result.npz and result.json")
    return 0


def cmd_table3(args) -> int:
    part = table3.parse_shard(args.shard) if args.shard is not None else None
    if part is not None and args.merge:
        raise PreimageError("--merge builds the table from every shard's items; drop --shard")
    plan = table3.plan(args.images or None, out=_writable_dir(args.out), model=args.model, weights=args.weights,
                       layers=args.layers, lambda_tvs=args.lambda_tv, size=args.size, profile=args.profile,
                       iterations=args.iters, seed=args.seed, device=args.device, batch_size=args.batch_size,
                       png=args.png, progress=args.progress, memory_limit=args.memory_limit, compile=args.compile)
    table = table3.launch(plan, part, merge_only=args.merge, log=lambda m: print(m, file=sys.stderr, flush=True))
    if table is not None:
        paths = table3.write(table, args.out, profile=args.profile)
        print(table3.to_markdown(table))
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    return 0
