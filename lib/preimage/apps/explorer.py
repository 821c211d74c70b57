"""An interactive explorer for Jupyter: pick an image, a model, a layer and the regulariser, press
Run and watch the pre-image and its energy take shape; Stop ends the run, Save writes it.

``explore(**defaults).widget`` is what a notebook displays (notebooks/09_explorer.ipynb). The same
object is driven without a browser by setting its widgets' values and calling ``run(wait=True)``,
``stop()`` and ``save()``; ``result`` and ``message`` say what happened.

The Run button starts the inversion in a background thread: a kernel busy in its main thread
cannot handle the Stop click, so a run on the main thread could not be stopped. Everything that
can fail on bad input (the image, the model's weights, the image size, the settings) is checked
on the calling thread before the thread starts, so the message appears at once; every
``PreimageError`` and every warning ends up in the message area, never as a traceback.
"""
from __future__ import annotations

import functools
import html
import io
import re
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import images, representations
from ..engine import budget
from ..engine.objective import mask
from ..engine.optimise import Progress, invert, resolve_device
from ..engine.parameterisations import PARAMETERISATIONS
from ..engine.results import InversionResult, record, weights_label
from ..errors import ImageError, PreimageError, SettingsError, StopInversion
from ..paper import recipes

GROUPS = (("all channels", 0), ("first half", 1), ("second half", 2))
UPLOAD = "upload: "  # prefix of uploaded images in the image menu


def explore(**defaults) -> Explorer:
    """An ``Explorer``; display its ``.widget``. ``defaults`` are ``Explorer``'s arguments."""
    return Explorer(**defaults)


class Explorer:
    """The widgets, the current run and its result.

    ``size`` is the side the image is centre-cropped and resized to (0: the image as it is;
    default: the model's input size, 0 for HOG/DSIFT); ``iterations`` defaults to what
    ``profile`` runs; ``every``: iterations between live updates."""

    def __init__(self, image: str = "astronaut", model: str = "efficientnet_lite0", layer: str | None = None,
                 weights: str | None = None, lambda_tv: float | None = None, beta: float = 2.0,
                 iterations: int | None = None, restarts: int = 1, neigh: int = 0, group: int = 0,
                 size: int | None = None, profile: str = "quick", seed: int = 0, device: str = "auto",
                 every: int = 5, output_dir: str | Path = "explorer", progress: bool = False,
                 recipe: str = "cvpr2015", param: str = "pixels", weight: float = 1.0):
        import ipywidgets as w

        self.profile, self.device, self.every, self.progress = profile, device, every, progress
        self.result: InversionResult | None = None
        self.running = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._uploads: dict[str, np.ndarray] = {}
        self._rep_cache: tuple[tuple, representations.Representation, list[str]] | None = None
        notes = []
        if model == "auto":  # AlexNet when its weights can be had, else the offline network, said aloud
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model, weights = representations.resolve_auto()
            notes += [str(c.message) for c in caught]

        style, wide = {"description_width": "110px"}, w.Layout(width="340px")
        models = representations.models() + ([model] if model not in representations.models() else [])
        self.image = w.Dropdown(options=list(images.shipped()), description="image", style=style, layout=wide)
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload image")
        self.model = w.Dropdown(options=models, value=model, description="model", style=style, layout=wide)
        self.weights = w.Dropdown(options=["auto", "imagenet", "random"], description="weights",
                                  style=style, layout=wide)
        self.layer = w.Dropdown(description="layer", style=style, layout=wide)
        self.lambda_tv = w.FloatLogSlider(base=10, min=-2, max=3, step=0.1, description="λ_TV",
                                          readout_format=".3g", style=style, layout=wide)
        self.lambda_note = w.HTML()
        self.recipe = w.Dropdown(options=list(recipes.RECIPES), value=recipe, description="recipe", style=style,
                                 layout=wide)
        self.param = w.Dropdown(options=list(PARAMETERISATIONS), value=param, description="image as",
                                style=style, layout=wide)
        self.weight = w.FloatLogSlider(value=weight, base=10, min=0, max=3, step=0.1, description="C (ijcv2016)",
                                       readout_format=".3g", style=style, layout=wide)
        self.beta = w.FloatSlider(value=beta, min=1.0, max=3.0, step=0.5, description="β", style=style,
                                  layout=wide)
        self.iterations = w.IntSlider(min=5, max=2000, step=5, description="iterations", style=style,
                                      layout=wide)
        self.restarts = w.IntSlider(value=restarts, min=1, max=8, description="restarts", style=style,
                                    layout=wide)
        self.neigh = w.BoundedIntText(value=neigh, min=0, max=99, description="neigh (0: all)",
                                      style=style, layout=wide)
        self.group = w.Dropdown(options=GROUPS, value=group, description="channels", style=style, layout=wide)
        self.size = w.BoundedIntText(min=0, max=2048, description="size (0: as is)", style=style, layout=wide)
        self.seed = w.IntText(value=seed, description="seed", style=style, layout=wide)
        self.output = w.Text(value=str(output_dir), description="output folder", style=style, layout=wide)
        self.run_button = w.Button(description="Run", icon="play", button_style="success")
        self.stop_button = w.Button(description="Stop", icon="stop", button_style="danger", disabled=True)
        self.save_button = w.Button(description="Save", icon="save", disabled=True)
        self.bar = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="340px"))
        self.live = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.live.add_class("preimage-live")
        self.plot = w.Image(format="png", layout=w.Layout(max_width="480px"))
        self.plot.add_class("preimage-plot")
        self.error_label = w.HTML()
        self.message_area = w.HTML()

        self.model.observe(self._model_changed, "value")
        self.layer.observe(self._layer_changed, "value")
        self.lambda_tv.observe(self._show_lambda, "value")
        self.recipe.observe(self._recipe_changed, "value")
        self.upload.observe(self._uploaded, "value")
        self.run_button.on_click(lambda _: self.run(wait=False))
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self.save())
        self._model_changed({"new": model})
        if image in self.image.options:
            self.image.value = image
        else:  # a path: read now, so that a bad one fails here with ImageError
            rgb, found = images.load(image)
            notes += found
            self._uploads[UPLOAD + Path(image).name] = rgb
            self.image.options = [*self.image.options, UPLOAD + Path(image).name]
            self.image.value = UPLOAD + Path(image).name
        # then the caller's choices over the model's defaults
        if weights is not None:
            self.weights.value = weights
        if layer is not None:
            self.layer.value = layer
        for widget, value in ((self.lambda_tv, lambda_tv), (self.iterations, iterations), (self.size, size)):
            if value is not None:
                widget.value = value
        self._say("info", notes or ["Choose an image, a model and a layer, then press Run."])

        self.lambda_tv.disabled, self.weight.disabled = recipe == "ijcv2016", recipe != "ijcv2016"
        controls = w.VBox([self.image, self.upload, self.model, self.weights, self.layer, self.recipe, self.param,
                           self.weight, w.HBox([self.lambda_tv, self.lambda_note]), self.beta, self.iterations,
                           self.restarts,
                           self.neigh, self.group, self.size, self.seed, self.output,
                           w.HBox([self.run_button, self.stop_button, self.save_button]), self.bar])
        self.widget = w.VBox([w.HBox([controls, w.VBox([self.live, self.plot])]), self.error_label,
                              self.message_area])
        self.widget.add_class("preimage-explorer")

    # ---- widget callbacks -------------------------------------------------------------------
    def _model_changed(self, change):
        """New layer list and the model's defaults (weights, image size, iterations)."""
        model = change["new"]
        try:
            names = [info.name for info in representations.layers(model)]
        except PreimageError as e:
            self._say("error", [str(e)])
            return
        hand_designed = model in recipes.SHALLOW_MODELS
        self.weights.disabled = hand_designed  # HOG and DSIFT have nothing to load
        self.weights.value = "auto"
        overview = recipes.OVERVIEW_LAYERS.get(model, names[:1])  # early-middle layer, else the first
        self.layer.options = names
        self.layer.value = overview[1] if len(overview) > 1 else overview[0]
        self.size.value = 0 if hand_designed else _input_size(model)
        self.iterations.value = recipes.recipe(model, None, profile=self.profile).schedule.iterations

    def _recipe_changed(self, change):
        # the IJCV energy takes λ_TV from β and weighs the loss by C; the CVPR one the reverse
        ijcv = change["new"] == "ijcv2016"
        self.lambda_tv.disabled, self.weight.disabled = ijcv, not ijcv
        try:  # the recipe's own length (ijcv2016: 300 + 50 in the paper profile)
            self.iterations.value = self._plan(self.model.value, self.layer.value, None).schedule.iterations
        except PreimageError as e:  # e.g. ijcv2016 on HOG: said now, and again by Run
            self._say("error", [str(e)])

    def _plan(self, model: str, layer: str, iterations: int | None) -> recipes.Recipe:
        ijcv = self.recipe.value == "ijcv2016"
        return recipes.recipe(model, layer, profile=self.profile, iterations=iterations, recipe=self.recipe.value,
                              param=self.param.value, beta=float(self.beta.value),
                              lambda_tv=None if ijcv else float(self.lambda_tv.value),
                              weight=float(self.weight.value) if ijcv else None)

    def _layer_changed(self, change):
        if change["new"] is not None:  # the paper's λ for the layer's block (Fig. 6)
            self.lambda_tv.value = recipes.recipe(self.model.value, change["new"]).setting.lambda_tv
            self._show_lambda(None)

    def _show_lambda(self, _):
        self.lambda_note.value = f"λ_Vβ = λ_TV/2 = {self.lambda_tv.value / 2:.3g}"

    def _uploaded(self, change):
        files = change["new"]
        if not files:
            return
        f = files[0]
        self.upload.value = ()  # so that the same file can be chosen again
        self.add_image(f["name"], f["content"])

    def add_image(self, name: str, data: bytes) -> bool:
        """Read an uploaded file and select it; a file that is not an image only gives a message."""
        try:
            rgb, notes = images.decode(data, repr(name))
        except ImageError as e:
            self._say("error", [str(e)])
            return False
        key = UPLOAD + name
        self._uploads[key] = rgb
        if key not in self.image.options:
            self.image.options = list(self.image.options) + [key]
        self.image.value = key
        self._say("info", [f"uploaded {name} ({rgb.shape[1]}x{rgb.shape[0]})"] + notes)
        return True

    # ---- running ----------------------------------------------------------------------------
    def run(self, wait: bool = True) -> InversionResult | None:
        """Invert with the widgets' settings. ``wait=False`` (the Run button) returns at once and
        runs in a background thread; either way bad input ends as a message, and ``result``."""
        if self.running:
            self._say("warning", ["a run is in progress: press Stop first"])
            return None
        try:
            job = self._prepare()
        except PreimageError as e:
            self._say("error", [str(e)])
            return None
        self._stop.clear()
        self._busy(True)
        if wait:
            self._work(*job)
            return self.result
        self._thread = threading.Thread(target=self._work, args=job, daemon=True, name="preimage-explorer")
        self._thread.start()
        return None

    def stop(self) -> None:
        """End the run after the next live update; what was done is kept as the result."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> InversionResult | None:
        """Block until a background run ends (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.result

    def _prepare(self):
        """Everything that can fail on bad input, on the caller's thread."""
        model, layer = self.model.value, self.layer.value
        if layer is None:
            raise SettingsError(f"{model} has no layer selected")  # only after a failed model change
        key = (model, layer, None if self.weights.disabled else self.weights.value, self.seed.value)
        if self._rep_cache is None or self._rep_cache[0] != key:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rep = representations.get(model, layer, weights=key[2], seed=key[3])
            self._rep_cache = (key, rep, [str(c.message) for c in caught])
        rep, warned = self._rep_cache[1], self._rep_cache[2]  # e.g. RANDOM weights: said on every run
        name = self.image.value
        rgb, notes = (self._uploads[name], []) if name in self._uploads else images.load(name)
        size = self.size.value or None
        plan = self._plan(model, layer, self.iterations.value)
        side = (size, size) if size is not None else rgb.shape[:2]
        budget.batch_size(rep, (rep.in_channels, *side), 1, plan.schedule.iterations, resolve_device(self.device))
        if size is not None and rgb.shape[:2] != (size, size):
            notes.append(f"image {rgb.shape[1]}x{rgb.shape[0]} centre-cropped and resized to {size}x{size}")
            notes += images.check_scale(rgb.shape[:2], size, rep.label, explicit=True)
        rgb = images.fit(rgb, size)
        rep.check_image_size(*rgb.shape[:2])
        setting = replace(plan.setting, neigh=self.neigh.value or None, group=self.group.value or None)
        schedule = plan.schedule
        x0 = images.to_input(rgb, rep.mean)
        mask(rep.code_shape(*rgb.shape[:2]), setting, rep.layer, tokens=rep.tokens)  # e.g. neigh too large
        kwargs = {"settings": setting, "restarts": self.restarts.value, "seed": self.seed.value,
                  "device": self.device, "progress": self.progress, "callback": self._on_progress,
                  "every": self.every, **plan.run_options()}
        self._original, self._rep, self._notes, self._warned = rgb, rep, warned + notes, bool(warned)
        self._plotted = -np.inf  # the first live update draws the plot
        self.bar.max, self.bar.value = schedule.iterations, 0
        self.error_label.value = ""
        self._say("warning" if warned else "info",
                  self._notes + [f"running {rep.label}, {schedule.iterations} iterations…"])
        return rep, x0, kwargs, name, rgb

    def _work(self, rep, x0, kwargs, name, rgb):
        """The inversion itself (on the background thread for the Run button)."""
        try:
            result = invert(rep, x0, **kwargs)
        except PreimageError as e:  # e.g. DivergenceError: a message, and no result
            self._busy(False)
            self._say("error", self._notes + [str(e)])
            return
        except Exception as e:  # a bug: on the background thread nobody would see it otherwise
            self._busy(False)
            self._say("error", self._notes + [f"unexpected {type(e).__name__}: {e} (please report this)"])
            if threading.current_thread() is not threading.main_thread():
                return
            raise
        result.provenance["images"] = [name]
        self.result, self._result_rgb = result, rgb  # Save shows this original, whatever runs next
        self._show(result.x, result.energies)
        errors = ", ".join(f"{e:.3f}" for e in result.error)
        p = result.provenance
        done = f"{p['iterations_run']} of {p['iterations']} iterations"
        self.error_label.value = (f"<b>relative error ‖Φ(x*)−Φ0‖/‖Φ0‖: {errors}</b> ({done}, "
                                  f"{result.time_s:.1f} s{', stopped early' if p['stopped_early'] else ''})")
        state = "stopped" if p["stopped_early"] else "done"
        self._say("warning" if self._warned else "info",
                  self._notes + [f"{state}: {rep.label}, {done}, error {errors}; Save writes it"])
        self.save_button.disabled = False
        self._busy(False)

    def _on_progress(self, progress: Progress) -> None:
        self.bar.value = progress.iteration
        self._show(progress.x, progress.energies, final=False)
        if self._stop.is_set():
            raise StopInversion

    def _busy(self, busy: bool) -> None:
        self.running = busy
        self.run_button.disabled = busy
        self.stop_button.disabled = not busy

    # ---- display ----------------------------------------------------------------------------
    def _show(self, x, energies, final: bool = True) -> None:
        """The original beside the reconstruction(s), and the energy curves, as PNGs. Drawing the
        plot costs more than a few iterations, so during a run it is redrawn once a second at most."""
        shown = images.stretch(images.to_pixels(x, self._rep.mean))
        gap = np.ones((shown.shape[1], 4, 3))
        strip = np.concatenate(sum(([gap, im] for im in shown), [self._original / 255.0]), axis=1)
        self.live.value = _png(strip)
        if final or time.monotonic() - self._plotted > 1.0:
            self.plot.value = _energy_png(energies, self._rep.label)
            self._plotted = time.monotonic()

    def _say(self, level: str, lines: list[str]) -> None:
        colour = {"info": "inherit", "warning": "#a15c00", "error": "#c00000"}[level]
        body = "<br>".join(html.escape(line) for line in lines)
        self.message_area.value = f'<div style="color:{colour}">{body}</div>'

    @property
    def message(self) -> str:
        """The message area's text, without markup."""
        return html.unescape(re.sub(r"<br>", "\n", re.sub(r"<(?!br>)[^>]*>", "", self.message_area.value)))

    # ---- saving -----------------------------------------------------------------------------
    def save(self, folder: str | Path | None = None, stem: str | None = None) -> list[Path]:
        """Write the last result: ``stem``.png/.pdf/.json (the figure, with provenance) and
        ``stem``-result.npz/.json (``InversionResult.save``) into ``folder`` (the output field)."""
        from .. import figures

        if self.result is None:
            self._say("warning", ["nothing to save yet: press Run first"])
            return []
        r, p = self.result, self.result.provenance
        s = p["settings"][0]
        rep = p["representation"]
        image = p["images"][0].removeprefix(UPLOAD)
        # no dots in the stem: with_suffix would cut it there (λ_TV 0.5 reads tv0p5)
        stem = stem or re.sub(r"[^A-Za-z0-9_=-]+", "_", f"{rep['model']}-{rep['layer']}-{Path(image).stem}-"
                              f"tv{s['lambda_tv']:g}-b{s['beta']:g}-{p['iterations_run']}it".replace(".", "p"))
        folder = Path(folder if folder is not None else self.output.value)
        weights = weights_label(rep["weights"], rep["trained"])
        panels = [[self._result_rgb / 255.0] + list(r.display())]
        titles = [[image] + [f"restart {i + 1}\nerror {e:.3f}" for i, e in enumerate(r.error)]]
        fig = figures.grid(panels, titles, suptitle=f"{rep['model']} {rep['layer']} ({weights}): "
                           f"{figures.setting_title(s)}, {p['iterations_run']} iterations")
        provenance = record({rep["layer"]: r}, kind="figure", image_names=[image], profile=self.profile)
        try:
            paths = figures.save(fig, folder / stem, provenance)
            paths += list(r.save(folder / f"{stem}-result", {"image": image, "profile": self.profile}))
        except OSError as e:
            self._say("error", [f"cannot write into {folder}: {e}"])
            return []
        finally:
            import matplotlib.pyplot as plt
            plt.close(fig)
        self._say("info", [f"saved {', '.join(str(q) for q in paths)}"])
        return paths


@functools.cache
def _input_size(model: str) -> int:
    """The model's nominal input side (224 or 227), from a representation at its first layer."""
    first = representations.layers(model)[0].name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # only the size is wanted; weights do not matter
        return representations.get(model, first, weights="random").input_size or 0


def _png(image01: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(image01, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _energy_png(energies: dict[str, np.ndarray], title: str) -> bytes:
    """Total energy and feature loss against iteration, one line per restart (log scale). A bare
    Figure, not pyplot, because this runs on the background thread."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 2.6), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = np.arange(1, len(energies["total"]) + 1)
    for b in range(energies["total"].shape[1]):
        ax.semilogy(steps, energies["total"][:, b], color=f"C{b}", label="total" if b == 0 else None)
        ax.semilogy(steps, energies["loss"][:, b], color=f"C{b}", ls="--", label="feature loss" if b == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
