"""Table 3 of the paper (§7): the error of the pre-images at every layer, for the three
λ_Vβ rows, as mean ± std over a set of images; resumable, sharded, and multi-process under torchrun.

The work is a list of items (layer, λ_TV, image). All pending images of a (layer, λ) are inverted
as one batch (``batch_size`` at a time), and every item is saved as soon as its batch ends, as a
small JSON under ``out/items/<layer>/lambda_tv_<λ>/<image>.json`` (plus a PNG with ``png``). A
run skips the items already saved, so an interrupted run resumes where it stopped; a shard
``i/n`` takes every n-th item, and ``merge`` builds the table from whatever is saved.

Two errors, labelled everywhere: the shallow protocol's §7 normalisation (``table1.
normalised_errors``: ||Φ(x*) − Φ0||² over the mean squared pairwise distance among the reference
codes of the whole set at that layer, recomputed by forward passes at merge time) and the plain
relative error ||Φ(x*) − Φ0|| / ||Φ0||. The paper does not say which normalisation its Table 3 used.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
import socket
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

import numpy as np
import torch

from .. import images, representations
from ..atomic import write_json
from ..engine import compiled
from ..engine.objective import Setting
from ..engine.optimise import invert, resolve_device
from ..engine.results import record, weights_label
from ..errors import ImageError, PreimageError, SettingsError, UnknownNameError
from . import recipes, table1

LAMBDA_TVS = (1.0, 10.0, 100.0)  # λ_Vβ = λ_TV / 2 = 0.5, 5, 50: Table 3's three rows
PAPER_MODELS = ("alexnet", "caffenet")  # whose layer names are the paper's (CNN-A = CaffeNet)
ITEM_FORMAT = "preimage-table3-item-1"

_PAPER_LAYERS = ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3", "relu3",
                 "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "fc8"]
# Table 3 of the paper (§7), CNN-A: {λ_Vβ: {layer: (mean, std)}}, percent.
PAPER_TABLE3 = {
    0.5: dict(zip(_PAPER_LAYERS, [
        (10.0, 5.0), (11.3, 5.5), (21.9, 9.2), (20.3, 5.0), (12.4, 3.1), (12.9, 5.3), (15.5, 4.7),
        (15.9, 4.6), (14.5, 4.7), (16.5, 5.3), (14.9, 3.8), (13.8, 3.8), (12.6, 2.8), (15.6, 5.1),
        (16.6, 4.6), (12.4, 3.5), (15.8, 4.5), (12.8, 6.4), (10.5, 1.9), (5.3, 1.1)])),
    5.0: dict(zip(_PAPER_LAYERS, [
        (20.2, 9.3), (22.4, 10.3), (30.3, 13.6), (28.2, 7.6), (20.0, 4.9), (17.4, 5.0), (18.2, 5.5),
        (18.4, 5.0), (14.4, 3.6), (15.1, 3.3), (13.3, 2.6), (14.0, 2.8), (15.4, 2.7), (13.9, 3.2),
        (15.5, 3.5), (14.2, 3.7), (13.7, 3.1), (15.4, 10.3), (10.8, 1.6), (5.9, 0.9)])),
    50.0: dict(zip(_PAPER_LAYERS, [
        (40.8, 17.0), (45.2, 18.7), (54.1, 22.7), (48.1, 11.8), (39.7, 9.1), (32.8, 7.7), (32.7, 8.0),
        (32.4, 7.0), (25.6, 5.6), (26.9, 5.2), (23.3, 4.1), (23.9, 4.6), (25.7, 4.3), (20.1, 4.3),
        (19.0, 4.3), (18.6, 4.9), (18.7, 3.8), (17.1, 3.4), (15.5, 2.1), (8.5, 1.1)])),
}
NORMALISED = "§7 norm."  # column labels of the two errors
RELATIVE = "relative"
NOTE = (f"{NORMALISED}: ‖Φ(x*)−Φ0‖² / mean pairwise ‖Φ0_j−Φ0_k‖² over the image set (the shallow protocol, "
        f"experiment_shallow_quantitative.m); {RELATIVE}: ‖Φ(x*)−Φ0‖ / ‖Φ0‖. Both mean ± std over images, "
        f"percent. Paper: CNN-A (CaffeNet), whose normalisation is not published.")


def paper(model: str, layer: str, lambda_tv: float) -> tuple[float, float] | None:
    """The paper's (mean, std) percent for ``layer`` and λ_TV, where ``model`` has its layer names."""
    return PAPER_TABLE3.get(lambda_tv / 2, {}).get(layer) if model in PAPER_MODELS else None


@dataclass(frozen=True)
class Item:
    layer: str
    lambda_tv: float
    image: str

    def path(self, out: Path) -> Path:
        return Path(out) / "items" / self.layer / f"lambda_tv_{self.lambda_tv:g}" / f"{self.image}.json"


@dataclass
class Plan:
    """What to compute and where; build it with ``plan(...)``, which checks every field."""

    model: str
    weights: str | None  # as asked (None: the model's default)
    weights_name: str  # what the representation reports, recorded in every item
    trained: bool
    layers: list[str]
    lambda_tvs: tuple[float, ...]
    names: list[str]
    rgb: torch.Tensor = field(repr=False)  # (N, 3, S, S), 0..255
    out: Path = Path("table3")
    profile: str = "paper"
    iterations: int | None = None  # as everywhere (recipes.recipe); None: the profile's
    seed: int = 0
    device: str = "auto"
    batch_size: int | None = None
    png: bool = False
    progress: bool = False
    memory_limit: int | str | None = None  # see engine.budget
    compile: bool | None = None  # None: where it pays over the whole protocol (engine.compiled)

    @property
    def weights_label(self) -> str:
        return weights_label(self.weights_name, self.trained)

    def items(self) -> list[Item]:
        """Every item, in a fixed order: layer, then λ, then image."""
        return [Item(layer, v, name) for layer in self.layers for v in self.lambda_tvs for name in self.names]

    def recipe(self, layer: str, lambda_tv: float | None = None) -> recipes.Recipe:
        return recipes.recipe(self.model, layer, profile=self.profile, iterations=self.iterations, lambda_tv=lambda_tv)

    def config(self, layer: str) -> dict:
        """What an item's numbers depend on; a saved item is reused only when its config matches."""
        r = self.recipe(layer)
        return {"model": self.model, "weights": self.weights_name, "image_size": list(self.rgb.shape[2:]),
                "schedule": r.schedule.describe(), "pixel_range": r.pixel_range, "seed": self.seed}

    def representation(self, layer: str):
        return representations.get(self.model, layer, self.weights, seed=self.seed)

    def inputs(self, rep, names: list[str]) -> torch.Tensor:
        """Mean-subtracted inputs of the named images (grayscale for HOG/DSIFT)."""
        return torch.cat([images.to_input(self.rgb[self.names.index(n)].permute(1, 2, 0).numpy(), rep.mean)
                          for n in names])


def plan(sources=None, *, out: str | Path, model: str = "auto", weights: str | None = None,
         layers: list[str] | None = None, lambda_tvs=LAMBDA_TVS, size: int = 256, profile: str = "paper",
         iterations: int | None = None, seed: int = 0, device: str = "auto", batch_size: int | None = None,
         png: bool = False, progress: bool = False, memory_limit: int | str | None = None,
         compile: bool | None = None) -> Plan:
    """Check the request and load the images. ``sources``: shipped names, files or folders (default:
    every shipped image); networks take them centre-cropped to their input size, HOG/DSIFT to
    ``size``. ``layers``: default every layer of a network, the default layer of HOG/DSIFT."""
    if model == "auto":
        model, weights = representations.resolve_auto()
    valid = [l.name for l in representations.layers(model)]
    if layers is None:
        layers = [representations.get(model).layer] if model in recipes.SHALLOW_MODELS else valid
    for layer in layers:
        if layer not in valid:
            raise UnknownNameError(f"{model} has no layer {layer!r}; valid layers: {', '.join(valid)}")
    if not layers:
        raise SettingsError("give at least one layer")
    lambda_tvs = tuple(float(Setting(lambda_tv=v).lambda_tv) for v in lambda_tvs)
    recipes.recipe(model, layers[0], profile=profile)  # checks the profile's name
    for name, v in (("batch_size", batch_size), ("iterations", iterations), ("size", size)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise SettingsError(f"{name} must be a positive integer, not {v!r}")
    rep = representations.get(model, layers[0], weights, seed=seed)
    sources = list(images.shipped()) if sources is None else [sources] if isinstance(sources, (str, Path)) else sources
    for s in sources:
        if Path(s).is_dir() and not any(p.suffix.lower() in images.SUFFIXES for p in Path(s).iterdir()):
            raise ImageError(f"the folder {s} holds no images ({', '.join(images.SUFFIXES)})")
    names, rgb = table1.load_set(sources, rep.input_size or size)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ImageError(f"two images share the name {', '.join(twice)}; items are saved by name, so rename one")
    return Plan(model, weights, rep.weights, rep.trained, list(layers), lambda_tvs, names, rgb, Path(out),
                profile, iterations, seed, device, batch_size, png, progress, memory_limit, compile)


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) as (i, n)."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise SettingsError(f"a shard is I/N with 0 <= I < N (e.g. 0/4 ... 3/4), not {text!r}")
    return i, n


def shard(items: list[Item], index: int, count: int) -> list[Item]:
    """Every ``count``-th item from ``index``: deterministic, and each (layer, λ) spread evenly."""
    return items[index::count]


ITEM_KEYS = ("config", "runs", "relative_error", "distance2", "reference_norm", "time_s", "lambda_tv")


def load_item(p: Plan, item: Item, log: Callable[[str], None] | None = print) -> dict | None:
    """The saved record of ``item``, or None when there is none. A file that cannot be read as an
    item is named and computed again (a folder in its place stops the run); an item saved under
    other settings is an error."""
    path = item.path(p.out)
    if path.is_dir():
        raise PreimageError(f"{path} is a folder where Table 3 keeps an item file; delete it and run again")
    try:
        saved = json.loads(path.read_bytes().decode("utf-8"))
        why = None if isinstance(saved, dict) else f"it holds a JSON {type(saved).__name__}, not an item"
        if why is None and any(k not in saved for k in ITEM_KEYS):
            why = f"it lacks {', '.join(k for k in ITEM_KEYS if k not in saved)}"
        numbers = ("relative_error", "distance2", "reference_norm", "time_s")
        odd = [k for k in numbers if why is None and (isinstance(saved[k], bool) or not isinstance(saved[k], (int, float)))]
        if odd:
            why = f"{', '.join(odd)} not a number"
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = f"{type(e).__name__}: {e}"
    if why is not None:
        if log:
            log(f"warning: cannot read the item file {path} ({why}); it is computed again")
        return None
    expected = p.config(item.layer)
    if saved.get("config") != expected:
        diff = [k for k in expected if saved.get("config", {}).get(k) != expected[k]]
        raise PreimageError(f"{path} was made with another {', '.join(diff)} ({saved.get('config')}) than this "
                            f"run asks for ({expected}); use another --out, or delete {p.out} to start afresh")
    return saved


@contextmanager
def lock(out: Path, part: tuple[int, int], log: Callable[[str], None] | None = print):
    """Hold ``out``'s lock for shard ``part`` (an advisory lock on a file that names the owner's PID,
    host and start), so that a second runner on the same folder and shard stops with a message.
    The system drops the lock when its process ends; a file still naming a process that is gone
    is taken over, with a note."""
    path = Path(out) / f".lock-{part[0]}-of-{part[1]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            try:
                owner = json.loads(f.read())
            except ValueError:
                owner = {}  # being written by the runner that just took it
            raise PreimageError(
                f"{out} is being computed by PID {owner.get('pid', '?')} on {owner.get('host', '?')} (since "
                f"{owner.get('started', '?')}); wait for it, use another --out, or share the work between runners "
                f"with --shard I/N (or torchrun)") from None
        f.seek(0)
        left = f.read().strip()
        if left and log:
            try:
                pid = json.loads(left).get("pid", "?")
            except (ValueError, AttributeError):
                pid = "?"
            log(f"note: taking over the lock {path} of PID {pid}, which is no longer running")
        f.seek(0)
        f.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, f)
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()  # released: an empty file names no owner
            f.flush()
            fcntl.flock(f, fcntl.LOCK_UN)


def run(p: Plan, part: tuple[int, int] = (0, 1), log: Callable[[str], None] | None = print) -> list[Item]:
    """``compute`` under the folder's lock for shard ``part``."""
    with lock(p.out, part, log):
        return compute(p, part, log)


def compute(p: Plan, part: tuple[int, int] = (0, 1), log: Callable[[str], None] | None = print) -> list[Item]:
    """Invert the items of shard ``part`` that are not saved yet; returns those it saved. The pending
    images of a (layer, λ) are one batch (``batch_size`` at a time), whose items are saved when it ends."""
    todo = [it for it in shard(p.items(), *part) if load_item(p, it, log) is None]
    device = resolve_device(p.device)
    fuse = _compile(p, todo, device)
    saved, rep = [], None
    for (layer, lambda_tv), group in groupby(todo, key=lambda it: (it.layer, it.lambda_tv)):
        group = list(group)
        rep = rep if rep is not None and rep.layer == layer else p.representation(layer)
        for lo in range(0, len(group), p.batch_size or len(group)):
            batch = group[lo:lo + (p.batch_size or len(group))]
            x0 = p.inputs(rep, [it.image for it in batch])
            r = p.recipe(layer, lambda_tv)
            result = invert(rep, x0, settings=r.setting, schedule=r.schedule, pixel_range=r.pixel_range,
                            seed=p.seed, device=device, progress=p.progress, memory_limit=p.memory_limit,
                            compile=fuse)
            save_items(p, rep, batch, x0.to(device), result, part)
            saved += batch
            if log:
                log(f"{rep.label} λ_Vβ={lambda_tv / 2:g}: {len(batch)} image(s), {result.provenance['iterations']} "
                    f"iterations, relative error {np.mean(result.error):.3f} (mean), {result.time_s:.1f} s "
                    f"[{len(saved)}/{len(todo)} of shard {part[0]}/{part[1]}]")
    return saved


def _compile(p: Plan, todo: list[Item], device) -> bool | None:
    """Whether to compile the descent step: as asked, else where it pays over all the batches
    still to run (one run of one shape would not pay for compiling; the protocol's hundreds do)."""
    choice = compiled.resolve(p.compile)
    if choice is not None or not todo:
        return choice
    batch = min(p.batch_size or len(p.names), len(p.names))
    runs = math.ceil(len(todo) / batch)
    iterations = p.recipe(todo[0].layer).schedule.iterations
    channels = p.representation(todo[0].layer).in_channels
    return compiled.worth_compiling((batch, channels, *p.rgb.shape[2:]), iterations, device, runs=runs) or None


def save_items(p: Plan, rep, batch: list[Item], x0: torch.Tensor, result, part: tuple[int, int]) -> None:
    """One JSON per item (and its PNG with ``p.png``): the squared code distance and reference norm
    the merge needs, the relative error, the time and the inversion's provenance."""
    with torch.no_grad():
        phi0 = rep(x0).flatten(1).double()
        phi = rep(torch.as_tensor(result.x, device=x0.device)).flatten(1).double()
    distance2 = (phi - phi0).pow(2).sum(1).cpu().numpy()
    norm0 = phi0.norm(dim=1).cpu().numpy()
    shown = result.display() if p.png else None
    for b, item in enumerate(batch):
        path = item.path(p.out)
        if shown is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            images.save_png(path.with_suffix(".png"), shown[b])
        relative = float(np.sqrt(distance2[b]) / norm0[b])
        run = {**result.provenance, "time_s": result.time_s / len(batch), "error": [relative], "items": [[0, 0, 0]]}
        write_json(path, record(
            {item.layer: run}, kind="item", image_names=[item.image], profile=p.profile, format=ITEM_FORMAT,
            image=item.image, layer=item.layer, lambda_tv=item.lambda_tv, lambda_vbeta=item.lambda_tv / 2,
            relative_error=relative, distance2=float(distance2[b]), reference_norm=float(norm0[b]),
            time_s=result.time_s / len(batch), shard=list(part), config=p.config(item.layer),
            png=path.with_suffix(".png").name if shown is not None else None))


@dataclass
class Table:
    """Per (layer, λ_TV) a ``table1.Row`` over the images whose items are saved (errors: §7
    normalisation, relative: plain relative error, both fractions), and the items still missing."""

    plan: Plan
    rows: dict[tuple[str, float], table1.Row]
    missing: list[Item]
    records: dict[Item, dict] = field(repr=False)
    diverged: list[Item] = field(default_factory=list)  # saved with NaN or Inf errors, left out

    def images(self, layer: str, lambda_tv: float) -> list[str]:
        return [n for n in self.plan.names if Item(layer, lambda_tv, n) in self.records]

    def provenance(self, profile: str | None = None, **extra) -> dict:
        """The record of a figure or table built from this: per layer one run holding every λ's
        setting, the items' summed time and their relative errors, and the devices they ran on."""
        p, runs = self.plan, {}
        for layer in p.layers:
            recs = [r for it, r in self.records.items() if it.layer == layer]
            if recs:
                first = recs[0]["runs"][layer]
                runs[layer] = {**first, "settings": [r["runs"][layer]["settings"][0] for r in
                                                     {r["lambda_tv"]: r for r in recs}.values()],
                               "time_s": round(sum(r["time_s"] for r in recs), 2),
                               "error": [r["relative_error"] for r in recs], "items": None,
                               "device": ", ".join(sorted({r["runs"][layer]["device"] for r in recs}))}
        return record(runs, kind="table", image_names=p.names, profile=profile or p.profile, **extra,
                      image_size=list(p.rgb.shape[2:]), lambda_tvs=list(p.lambda_tvs), normalisation=NOTE,
                      missing=[f"{it.layer} λ_TV={it.lambda_tv:g} {it.image}" for it in self.missing],
                      table={f"{layer} λ_Vβ={v / 2:g}": {NORMALISED: [round(r.mean, 2), round(r.std, 2)],
                                                         RELATIVE: [round(100 * r.relative.mean(), 2),
                                                                    round(100 * r.relative.std(), 2)]}
                             for (layer, v), r in self.rows.items() if len(r.errors)})


def merge(p: Plan, log: Callable[[str], None] | None = print) -> Table:
    """The table from the saved items; the reference codes of all images are recomputed per layer."""
    records = {it: r for it in p.items() if (r := load_item(p, it, log)) is not None}
    diverged = [it for it, r in records.items() if not all(map(math.isfinite, (r["relative_error"], r["distance2"])))]
    for it in diverged:  # kept out of the cells, and named under the table
        del records[it]
    if not records:
        raise PreimageError(f"nothing is saved in {p.out / 'items'} for these settings; run `python -m preimage "
                            f"table3` without --merge first (same images, model, layers and schedule)")
    device = resolve_device(p.device)
    rows = {}
    for layer in p.layers:
        if not any(it.layer == layer for it in records):
            continue
        rep = p.representation(layer).to(device)
        with torch.no_grad():
            phi0 = torch.cat([rep(p.inputs(rep, p.names[lo:lo + 16]).to(device)).flatten(1).double()
                              for lo in range(0, len(p.names), 16)])
        for v in p.lambda_tvs:
            rows[(layer, v)] = _row(layer, v, phi0, [records.get(Item(layer, v, n)) for n in p.names], p.out)
    missing = [it for it in p.items() if it not in records and it not in diverged]
    if diverged and log:
        log(f"warning: {len(diverged)} items hold NaN or Inf errors and are left out of the table: "
            + ", ".join(f"{it.layer} λ_TV={it.lambda_tv:g} {it.image}" for it in diverged[:20])
            + "; delete their files and run again")
    if missing and log:
        log(f"{len(missing)} of {len(p.items())} items missing: " + ", ".join(
            f"{it.layer} λ_TV={it.lambda_tv:g} {it.image}" for it in missing[:20]) + (" ..." if len(missing) > 20 else ""))
    return Table(p, rows, missing, records, diverged)


def _row(layer: str, lambda_tv: float, phi0: torch.Tensor, recs: list[dict | None], out: Path) -> table1.Row:
    """One cell: normalised_errors depends on Φ(x*) only through ||Φ(x*) − Φ0||, so Φ0 displaced by
    the saved distance along one axis stands in for Φ(x*); the scale uses every image of the set."""
    norms = phi0.norm(dim=1).cpu().numpy()
    present = [i for i, r in enumerate(recs) if r is not None]
    for i in present:
        if not np.isclose(recs[i]["reference_norm"], norms[i], rtol=1e-3):
            raise PreimageError(f"the code of image {recs[i]['image']} at {layer} is not the one its saved item "
                                f"was made from (norm {norms[i]:.6g}, saved {recs[i]['reference_norm']:.6g}): the "
                                f"image or the weights changed; use another --out or delete {out}")
    shift = torch.zeros_like(phi0)
    shift[present, 0] = torch.tensor([recs[i]["distance2"] for i in present], dtype=phi0.dtype,
                                     device=phi0.device).sqrt()
    errors = table1.normalised_errors(phi0 + shift, phi0)[present]
    relative = np.array([recs[i]["relative_error"] for i in present])
    return table1.Row(f"{layer} λ_Vβ={lambda_tv / 2:g}", errors, relative,
                        sum(recs[i]["time_s"] for i in present), np.empty(0))


def launch(p: Plan, part: tuple[int, int] | None = None, merge_only: bool = False,
           log: Callable[[str], None] | None = print) -> Table | None:
    """Run (the shard ``part`` of) the plan and merge. Under torchrun (WORLD_SIZE > 1) each rank
    runs shard rank/world on its own device and rank 0 merges after a barrier. Returns the table
    where this process merged it, else None (another rank's turn, or one shard of several)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if part is not None:
            raise SettingsError("under torchrun every rank takes its own shard; drop --shard")
        return _launch_distributed(p, world, merge_only, log)
    if not merge_only:
        run(p, part or (0, 1), log)
        if part is not None and part[1] > 1:
            if log:
                log(f"shard {part[0]}/{part[1]} done; run with --merge once every shard is")
            return None
    return merge(p, log)


def _launch_distributed(p: Plan, world: int, merge_only: bool, log) -> Table | None:
    import torch.distributed as dist

    cuda = resolve_device(p.device).type == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        p = replace(p, device=f"cuda:{local}")
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        rank = dist.get_rank()
        say = (lambda m: log(f"[rank {rank}/{world}] {m}")) if log else None
        if not merge_only:
            run(p, (rank, world), say)
        dist.barrier()
        return merge(p, say) if rank == 0 else None
    finally:
        dist.destroy_process_group()


def to_csv(table: Table) -> str:
    """One line per (layer, λ): both errors (mean, std, per image) in percent, the paper's, the time."""
    names = table.plan.names
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["layer", "lambda_tv", "lambda_vbeta", "images", "normalised_mean_percent", "normalised_std_percent",
                "relative_mean_percent", "relative_std_percent", "paper_mean_percent", "paper_std_percent",
                "time_s"] + [f"normalised_{n}" for n in names] + [f"relative_{n}" for n in names])
    for (layer, v), r in table.rows.items():
        ref = paper(table.plan.model, layer, v) or ("", "")
        have = dict(zip(table.images(layer, v), zip(r.errors, r.relative)))
        per_image = [[f"{100 * have[n][k]:.2f}" if n in have else "" for n in names] for k in (0, 1)]
        stats = [f"{r.mean:.2f}", f"{r.std:.2f}", f"{100 * r.relative.mean():.2f}", f"{100 * r.relative.std():.2f}"] \
            if len(r.errors) else [""] * 4
        w.writerow([layer, f"{v:g}", f"{v / 2:g}", len(r.errors), *stats, *ref, f"{r.time_s:.1f}",
                    *per_image[0], *per_image[1]])
    return buf.getvalue()


def to_markdown(table: Table) -> str:
    """Layers down, for each λ_Vβ our two errors and the paper's (n/a where the model is not CNN-A's)."""
    p = table.plan
    head = ["layer"] + [f"λ_Vβ={v / 2:g}: {c}" for v in p.lambda_tvs for c in (NORMALISED, RELATIVE, "paper")]
    lines = [(f"Table 3 · {p.model} ({p.weights_label}), {len(p.names)} images "
              f"{'×'.join(map(str, p.rgb.shape[2:]))}, seed {p.seed}"), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for layer in p.layers:
        cells = [layer]
        for v in p.lambda_tvs:
            r = table.rows.get((layer, v))
            ref = paper(p.model, layer, v)
            ours = [f"{r.mean:.1f} ± {r.std:.1f}", f"{100 * r.relative.mean():.1f} ± {100 * r.relative.std():.1f}"] \
                if r is not None and len(r.errors) else ["–", "–"]
            cells += ours + [f"{ref[0]:.1f} ± {ref[1]:.1f}" if ref else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", NOTE]
    if table.missing:
        lines.append(f"Missing: {len(table.missing)} of {len(p.items())} items (the cells cover the saved ones).")
    if table.diverged:
        lines.append(f"Not finite: {len(table.diverged)} items hold NaN or Inf errors and are left out: "
                     + ", ".join(f"{it.layer} λ_Vβ={it.lambda_tv / 2:g} {it.image}" for it in table.diverged) + ".")
    return "\n".join(lines)


def plot(table: Table):
    """Error against layer, one curve per λ_Vβ (ours solid with ± std bars, the paper's dashed), for
    the §7 normalisation (left) and the relative error (right)."""
    import matplotlib.pyplot as plt

    p = table.plan
    x = np.arange(len(p.layers))
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 0.7 * len(p.layers) + 4), 3.6), sharex=True)
    for k, v in enumerate(p.lambda_tvs):
        ref = np.array([paper(p.model, layer, v) or (np.nan, np.nan) for layer in p.layers])
        for ax, stat in zip(axes, (lambda r: r.errors, lambda r: r.relative)):
            ours = np.array([(100 * stat(r).mean(), 100 * stat(r).std()) if r is not None and len(r.errors)
                             else (np.nan, np.nan) for r in (table.rows.get((layer, v)) for layer in p.layers)])
            dodge = 0.08 * (k - (len(p.lambda_tvs) - 1) / 2)  # keeps the bars of the rows apart
            ax.errorbar(x + dodge, ours[:, 0], yerr=ours[:, 1], color=f"C{k}", marker="o", ms=3, capsize=2,
                        label=f"λ_Vβ = {v / 2:g}")
            if np.isfinite(ref[:, 0]).any():
                ax.plot(x, ref[:, 0], "--", color=f"C{k}", label=f"paper, λ_Vβ = {v / 2:g}")
    for ax, title in zip(axes, (f"{NORMALISED}: ‖Φ(x*)−Φ0‖² / mean pairwise ‖Φ0_j−Φ0_k‖²",
                                f"{RELATIVE}: ‖Φ(x*)−Φ0‖ / ‖Φ0‖")):
        ax.set_title(title, fontsize=8)
        ax.set_ylabel("error (%), mean ± std over images", fontsize=8)
        ax.set_xticks(x, p.layers, rotation=60, fontsize=7)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"Table 3 · {p.model} ({p.weights_label}), {len(p.names)} images", fontsize=9)
    fig.tight_layout()
    return fig


def reconstructions(table: Table, image: str):
    """A grid of one image's saved PNGs: a row per λ_Vβ, a column per layer (needs ``png``)."""
    from PIL import Image

    from ..figures import grid

    p = table.plan
    panels, titles = [], []
    for v in p.lambda_tvs:
        row, row_titles = [], []
        for layer in p.layers:
            png = Item(layer, v, image).path(p.out).with_suffix(".png")
            row.append(np.asarray(Image.open(png)) / 255.0 if png.is_file() else None)
            r = table.records.get(Item(layer, v, image))
            row_titles.append(f"{layer} λ_Vβ={v / 2:g}" + (f"\nrelative {r['relative_error']:.3f}" if r else ""))
        panels.append(row)
        titles.append(row_titles)
    return grid(panels, titles, cell=1.8, suptitle=f"{image} · {p.model} ({p.weights_label})")


def write(table: Table, folder: str | Path, **extra) -> list[Path]:
    """``table3.csv``, ``table3.md`` and the plot (``table3.png/.pdf/.json`` with provenance), atomically."""
    import matplotlib.pyplot as plt

    from ..atomic import write_text
    from ..figures import save

    folder = Path(folder)
    paths = [write_text(folder / "table3.csv", to_csv(table)), write_text(folder / "table3.md", to_markdown(table) + "\n")]
    fig = plot(table)
    paths += save(fig, folder / "table3", table.provenance(**extra))
    plt.close(fig)
    return paths
