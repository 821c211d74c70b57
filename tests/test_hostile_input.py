"""Careless and hostile input: one line naming the problem and the fix, exit code 2, nothing
written; memory estimated and limited before anything large is allocated; output folders replaced
as a unit; images read as their EXIF, frames and value range say."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import preimage
from preimage import images, representations
from preimage.apps.cli import CODE_FORMAT, main
from preimage.atomic import atomic_folder
from preimage.engine import budget
from preimage.errors import CodeError, ImageError, ResourceError, SettingsError, UnknownNameError, WeightsError
from preimage.paper import table3
from preimage.paper.recipes import CNN
from preimage.representations import weights

HOG = ["--model", "hog", "--size", "64", "--iters", "8", "--no-progress"]
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, out_dir, *argv, says=()):
    code, _, err = cli(capsys, *argv)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    for words in says:
        assert words in err, err
    if out_dir is not None:
        assert not Path(out_dir).exists(), "a failed run left its output folder"
    return err


# ----------------------------------------------------------------------------- memory


def test_the_estimate_grows_with_pixels_items_and_iterations():
    rep = representations.get("alexnet", "conv2", weights="random")
    one = budget.per_item(rep, (3, 99, 99), 100)
    assert budget.per_item(rep, (3, 198, 198), 100) > 3.5 * one - 4 * 4 * 100 * 4
    assert budget.per_item(rep, (3, 99, 99), 10 ** 6) - one == 4 * 4 * (10 ** 6 - 100)
    # the activations counted are at least the code's own values
    assert one > 4 * (budget.CODE_COPIES * rep.code_shape(99, 99)[0] * np.prod(rep.code_shape(99, 99)[1:]))


@pytest.mark.parametrize("text, expected", [("512M", 512 * 2 ** 20), ("8G", 8 * 2 ** 30), ("1.5GiB", int(1.5 * 2 ** 30)),
                                            ("1000", 1000), (2048, 2048)])
def test_memory_limits_read_as_sizes(text, expected):
    assert budget.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "0", "8X"])
def test_bad_memory_limits_are_refused(text):
    with pytest.raises(SettingsError, match="memory limit"):
        budget.parse_size(text)


def test_work_that_cannot_fit_is_refused_with_the_estimate_and_the_limit(linear_rep, small_images):
    with pytest.raises(ResourceError, match=r"about .* per image .* more than the memory limit of .*memory_limit"):
        preimage.invert(linear_rep(), small_images, memory_limit="1k", progress=False)


def test_work_that_fits_in_smaller_batches_is_split_into_them(linear_rep, small_images):
    rep = linear_rep()
    short = CNN.shortened(12)
    need = budget.per_item(rep, (3, *small_images.shape[2:]), short.iterations)
    result = preimage.invert(rep, small_images, restarts=3, schedule=short, memory_limit=2 * need + 1, progress=False)
    whole = preimage.invert(rep, small_images, restarts=3, schedule=short, progress=False)
    assert result.provenance["batch_size"] == 2 and whole.provenance["batch_size"] == 3 * len(small_images)
    np.testing.assert_allclose(result.x, whole.x, rtol=1e-5, atol=1e-3)  # the same items, in chunks
    with pytest.raises(ResourceError, match="use a batch size of at most 2"):
        preimage.invert(rep, small_images, restarts=3, schedule=short, batch_size=3, memory_limit=2 * need + 1,
                        progress=False)


def test_the_environment_variable_sets_the_limit(linear_rep, small_images, monkeypatch):
    monkeypatch.setenv(budget.LIMIT_ENV, "1k")
    with pytest.raises(ResourceError, match=budget.LIMIT_ENV):
        preimage.invert(linear_rep(), small_images, progress=False)


def test_absurd_requests_are_refused_before_anything_large_is_allocated(capsys, tmp_path):
    refused(capsys, tmp_path / "a", "invert", "chelsea", *HOG, "--iters", "1000000000", "--memory-limit", "8G",
            "--out", tmp_path / "a",
            says=["about", "more than the memory limit", "fewer iterations"])
    refused(capsys, tmp_path / "b", "invert", "chelsea", "--model", "hog", "--size", "100000", "--no-progress",
            "--out", tmp_path / "b", says=["100000x100000", "more than the memory limit"])
    refused(capsys, tmp_path / "c", "invert", "chelsea", *HOG, "--memory-limit", "100k", "--out", tmp_path / "c",
            says=["more than the memory limit of 0 MiB (memory_limit)"])
    rep = representations.get("hog")
    code = torch.zeros(1, *rep.code_shape(64, 64))
    with pytest.raises(ResourceError):  # a code that claims a huge image: refused before the network runs
        preimage.invert(rep, codes=code, image_size=(100000, 100000), progress=False)


def test_many_restarts_are_split_into_batches_that_fit(linear_rep, small_images):
    rep = linear_rep()
    need = budget.per_item(rep, (3, *small_images.shape[2:]), 4)
    result = preimage.invert(rep, small_images[:1], restarts=40, schedule=preimage.Schedule(((0.004, 4),)),
                             memory_limit=5 * need, progress=False)
    assert result.provenance["batch_size"] == 5 and len(result.error) == 40


def test_the_energy_record_grows_with_the_run_not_before_it(linear_rep, small_images, monkeypatch):
    from preimage.engine import optimise

    schedule = preimage.Schedule(((1e-4, 5), (1e-5, 14)))
    whole = preimage.invert(linear_rep(), small_images[:1], schedule=schedule, progress=False)
    monkeypatch.setattr(optimise, "RECORD_BLOCK", 4)  # grown 4 -> 8 -> 16 -> 19 rows during the run
    grown = preimage.invert(linear_rep(), small_images[:1], schedule=schedule, progress=False)
    assert grown.energies["total"].shape == (19, 1)
    for term, values in whole.energies.items():
        np.testing.assert_array_equal(grown.energies[term], values)


# ----------------------------------------------------------------------------- output folders


def test_a_rerun_with_fewer_restarts_leaves_no_stale_files(capsys, tmp_path):
    out = tmp_path / "out"
    assert cli(capsys, "invert", "chelsea", *HOG, "--restarts", "3", "--out", out)[0] == 0
    assert len(list(out.glob("reconstruction_*.png"))) == 3
    assert cli(capsys, "invert", "chelsea", *HOG, "--out", out)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["reconstruction.png", "result.json", "result.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary sibling left


def test_a_failed_run_keeps_the_old_folder_and_leaves_nothing_else(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert cli(capsys, "invert", "chelsea", *HOG, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(preimage.engine.results.InversionResult, "save", broken)
    refused(capsys, None, "invert", "chelsea", *HOG, "--seed", "3", "--out", out,
            says=["cannot write the result into", "No space left on device", "the old result, if any, is unchanged"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_of_other_files_or_the_current_folder_is_not_replaced(capsys, tmp_path, monkeypatch):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    refused(capsys, None, "invert", "chelsea", *HOG, "--out", tmp_path / "mine", says=["holds other files"])
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    monkeypatch.chdir(tmp_path / "mine")
    refused(capsys, None, "invert", "chelsea", *HOG, "--out", ".", says=["is the current folder"])


def test_concurrent_and_similarly_named_outputs_are_left_alone(tmp_path):
    busy = tmp_path / f".r.v2.preimage-{os.getpid()}-x.partial"  # another output's folder being written
    busy.mkdir()
    dead = tmp_path / ".r.preimage-999999999-y.partial"  # a killed run's leftovers
    dead.mkdir()
    with atomic_folder(tmp_path / "r") as t:
        (t / "a").write_text("1")
    assert busy.is_dir() and not dead.exists()


def test_the_folder_swap_is_old_or_new(tmp_path):
    target = tmp_path / "r"
    with atomic_folder(target) as t:
        (t / "a").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as t:
            (t / "a").write_text("half")
            raise RuntimeError
    assert (target / "a").read_text() == "old"
    with atomic_folder(target) as t:
        (t / "b").write_text("new")
    assert sorted(os.listdir(target)) == ["b"] and sorted(os.listdir(tmp_path)) == ["r"]


_WRITER = r"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("atomic", sys.argv[3])  # the module alone: a fast start
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
atomic_folder = atomic.atomic_folder
n = int(sys.argv[2])
print("ready", flush=True)
with atomic_folder(sys.argv[1]) as t:
    for i in range(20):
        (t / f"part{i}").write_text(str(n))
        time.sleep(0.002)
"""


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_a_complete_old_or_new_folder(tmp_path):
    """A writer killed with SIGKILL at any moment: the folder holds all 20 parts of one run."""
    target = tmp_path / "r"
    rng = np.random.default_rng(0)
    module = Path(preimage.__file__).parent / "atomic.py"
    completed = 0
    for n in range(24):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), str(n), str(module)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"  # after the imports: kill during the writing
        time.sleep(float(rng.uniform(0.0, 0.12)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if target.exists():
            parts = sorted(target.iterdir())
            assert len(parts) == 20 and len({p.read_text() for p in parts}) == 1, [p.name for p in parts]
            completed += 1
    assert completed, "no run ever completed: kill later"


# ----------------------------------------------------------------------------- images


def test_exif_orientation_is_applied_and_noted(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = 255  # white on the left
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise when shown
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    loaded, notes = images.load(tmp_path / "phone.jpg")
    assert loaded.shape[:2] == (40, 20) and loaded[:10].mean() > 200  # the white band is now on top
    assert any("EXIF orientation (6)" in n for n in notes)


def test_a_multi_frame_file_says_which_frame_is_used(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    rgb, notes = images.load(tmp_path / "anim.gif")
    assert rgb[0, 0, 0] > 200 and any("first of its 3 frames" in n for n in notes)


@pytest.mark.parametrize("values, how", [((0.0, 0.5, 1.0), "0..1 values by 255"), ((-3.0, 0.0, 5.0), "range -3..5")])
def test_float_images_are_scaled_by_their_range(tmp_path, values, how):
    a = np.linspace(values[0], values[2], 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(a, "F").save(tmp_path / "f.tif")
    rgb, notes = images.load(tmp_path / "f.tif")
    assert rgb.min() == 0 and rgb.max() == 255 and any(how in n for n in notes)


def test_tiny_sources_are_refused_unless_a_size_is_asked_for(capsys, tmp_path):
    Image.new("RGB", (1, 1), "gray").save(tmp_path / "dot.png")
    refused(capsys, tmp_path / "o", "invert", tmp_path / "dot.png", "--layer", "fc8", "--weights", "random",
            "--out", tmp_path / "o", says=["1x1 image would be enlarged 227x", "--size 227"])
    refused(capsys, tmp_path / "o", "invert", tmp_path / "dot.png", "--model", "hog", "--out", tmp_path / "o",
            says=["1x1 image is smaller than the receptive field"])
    code, _, err = cli(capsys, "invert", tmp_path / "dot.png", *HOG, "--out", tmp_path / "o")
    assert code == 0 and "enlarged 64.0x from 1x1 to 64x64, as asked" in err
    assert "as asked" in " ".join(json.loads((tmp_path / "o" / "result.json").read_text())["image_notes"])


def test_folders_and_symlink_loops_are_not_reported_as_missing(tmp_path):
    with pytest.raises(ImageError, match="is a folder, not an image file"):
        images.load(tmp_path)
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(ImageError, match="symbolic link that leads to no file"):
        images.load(loop)


# ----------------------------------------------------------------------------- one line, exit 2


@pytest.mark.parametrize("seed", ["-1", str(2 ** 70)])
def test_seeds_outside_the_generators_range(capsys, tmp_path, seed):
    refused(capsys, tmp_path / "o", "invert", "chelsea", *HOG, "--seed", seed, "--out", tmp_path / "o",
            says=["seed must be an integer from 0 to 2**63 - 1"])
    refused(capsys, None, "table3", "chelsea", "coffee", "--model", "hog", "--seed", seed, "--out", tmp_path / "t",
            says=["seed must be"])


@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 63), st.booleans(), st.floats()))
@FEW
def test_any_bad_seed_is_a_settings_error(seed):
    with pytest.raises(SettingsError, match="seed must be"):
        preimage.engine.optimise.check_seed(seed)


def test_size_zero_is_refused_like_any_other_non_positive_size(capsys, tmp_path):
    for size in ("0", "-5"):
        refused(capsys, tmp_path / "o", "invert", "chelsea", "--model", "hog", "--size", size, "--out", tmp_path / "o",
                says=["--size must be a positive number of pixels"])


def _code_file(path, code, meta):
    with open(path, "wb") as f:
        np.savez(f, code=code, meta=json.dumps(meta))
    return path


def _meta(**changes):
    rep = representations.get("hog")
    return {"format": CODE_FORMAT, "image_size": [64, 64], **rep.describe(), **changes}


@pytest.mark.parametrize("code, meta, says", [
    (np.array(["a", "b"]), _meta(), "<U1 values, not real floating point"),
    (np.zeros((0, 27, 8, 8), np.float32), _meta(), "not a batch of one or more codes"),
    (np.zeros((1, 27, 8, 8), np.int64), _meta(), "int64 values"),
    (np.zeros((1, 27, 8, 8), bool), _meta(), "bool values"),
    (np.zeros((1, 27, 8, 8), np.complex64), _meta(), "complex64 values"),
    (np.zeros((1, 27, 8, 8), np.float32), [1, 2], "is not a code file"),
    (np.zeros((1, 27, 8, 8), np.float32), {k: v for k, v in _meta().items() if k != "image_size"}, "image size None"),
    (np.zeros((1, 27, 8, 8), np.float32), _meta(image_size="64x64"), "image size '64x64'"),
    (np.zeros((1, 27, 8, 8), np.float32), _meta(image_size=[64, -1]), "two positive integers"),
])
def test_bad_code_files(capsys, tmp_path, code, meta, says):
    path = _code_file(tmp_path / "c.npz", code, meta)
    refused(capsys, tmp_path / "o", "invert", "--code", path, "--model", "hog", "--out", tmp_path / "o", says=[says])


@given(dtype=st.sampled_from(["int8", "int32", "uint8", "bool", "complex64", "complex128"]))
@FEW
def test_codes_that_are_not_real_floats_are_refused_by_the_api(dtype):
    rep = representations.get("hog")
    code = np.zeros((1, *rep.code_shape(64, 64)), dtype=dtype)
    with pytest.raises(CodeError, match="real floating-point"):
        preimage.invert(rep, codes=code, image_size=(64, 64), progress=False)


def test_state_dicts_of_ints_or_nan_are_weights_errors(tmp_path):
    net = torch.nn.Linear(2, 2)
    torch.save({"weight": 3, "bias": 4}, tmp_path / "ints.pth")
    with pytest.raises(WeightsError, match="values that are not tensors"):
        weights.load_state_dict(tmp_path / "ints.pth", net)
    torch.save({"weight": torch.full((2, 2), float("nan")), "bias": torch.zeros(2)}, tmp_path / "nan.pth")
    with pytest.raises(WeightsError, match="NaN or Inf values in weight"):
        weights.load_state_dict(tmp_path / "nan.pth", net)


def test_nan_weights_are_named_not_blamed_on_the_learning_rate(linear_rep, small_images):
    rep = linear_rep()
    with torch.no_grad():
        next(rep.parameters()).fill_(float("nan"))
    with pytest.raises(CodeError, match="weights hold NaN or Inf"):
        preimage.invert(rep, small_images, progress=False)


def test_encode_into_a_folder_named_like_a_file(capsys, tmp_path):
    (tmp_path / "x.npz").mkdir()
    refused(capsys, None, "encode", "chelsea", "--model", "hog", "--out", tmp_path / "x.npz",
            says=["is a folder; name a .npz file"])


def test_layer_typos_get_the_closest_matches(capsys):
    err = refused(capsys, None, "invert", "chelsea", "--layer", "conv55", "--weights", "random", "--out", "unused",
                  says=["did you mean conv5", "valid layers of alexnet:"])
    assert "alexnets" not in err


def test_ctrl_c_ends_in_one_line_and_exit_130(capsys, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("preimage.apps.cli.invert", interrupt)
    code, _, err = cli(capsys, "invert", "chelsea", *HOG, "--out", tmp_path / "o")
    assert code == 130 and err == "interrupted: nothing written\n" and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- Table 3


@pytest.fixture
def hog_plan(tmp_path):
    return table3.plan(["astronaut", "chelsea"], out=tmp_path / "t", model="hog", lambda_tvs=[1.0], size=64,
                       iterations=8)


@given(content=st.one_of(st.binary(max_size=64), st.just(b"[1, 2]"), st.just(b'{"config": 1}'),
                         st.just(b"\xff\xfe\x00garbage"),
                         st.sampled_from([None, "0.1", True, [0.1]]).map(lambda v: json.dumps(
                             {**dict.fromkeys(table3.ITEM_KEYS, 1.0), "relative_error": v}).encode())))
@FEW
def test_unreadable_items_are_named_and_computed_again(hog_plan, content):
    item = hog_plan.items()[0]
    item.path(hog_plan.out).parent.mkdir(parents=True, exist_ok=True)
    item.path(hog_plan.out).write_bytes(content)
    said = []
    assert table3.load_item(hog_plan, item, said.append) is None
    assert said and str(item.path(hog_plan.out)) in said[0] and "computed again" in said[0]


def test_a_folder_in_place_of_an_item_stops_the_run(hog_plan):
    item = hog_plan.items()[0]
    item.path(hog_plan.out).mkdir(parents=True)
    with pytest.raises(preimage.PreimageError, match="is a folder .* delete it"):
        table3.run(hog_plan, log=None)


def test_items_with_nan_errors_are_flagged_in_the_table(hog_plan):
    table3.run(hog_plan, log=None)
    bad = hog_plan.items()[1]
    record = json.loads(bad.path(hog_plan.out).read_text())
    record["relative_error"] = float("nan")
    bad.path(hog_plan.out).write_text(json.dumps(record))
    said = []
    table = table3.merge(hog_plan, said.append)
    assert table.diverged == [bad] and any("NaN or Inf" in line for line in said)
    assert "Not finite: 1 items" in table3.to_markdown(table) and "nan ±" not in table3.to_markdown(table)


def test_a_second_runner_on_the_same_folder_is_stopped(hog_plan):
    with table3.lock(hog_plan.out, (0, 1), log=None):
        with pytest.raises(preimage.PreimageError, match=rf"PID {os.getpid()} on {socket.gethostname()}.*--shard"):
            table3.run(hog_plan, log=None)
        with table3.lock(hog_plan.out, (1, 2), log=None):  # another shard may run beside it
            pass


def test_a_stale_lock_is_taken_over_with_a_note(hog_plan):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = hog_plan.out / ".lock-0-of-1"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "earlier"}))
    said = []
    assert len(table3.run(hog_plan, log=said.append)) == 2
    assert any("taking over the lock" in line for line in said) and lock.read_text() == ""


def test_unknown_names_of_every_kind(capsys):
    with pytest.raises(UnknownNameError, match="did you mean quick"):
        preimage.recipe("alexnet", "fc8", profile="quik")


def test_ctrl_c_in_table3_says_how_many_items_are_saved(capsys, tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        (tmp_path / "t" / "items" / "hog").mkdir(parents=True)
        (tmp_path / "t" / "items" / "hog" / "chelsea.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr("preimage.apps.cli.table3.launch", interrupt)
    code, _, err = cli(capsys, "table3", "chelsea", "coffee", "--model", "hog", "--out", tmp_path / "t")
    assert code == 130 and err == f"interrupted: 1 items saved in {tmp_path / 't' / 'items'}, run again to resume\n"


@pytest.mark.slow
def test_sigkill_of_invert_leaves_the_old_result_or_the_new_one(tmp_path):
    """``python -m preimage invert`` killed at random moments of its run, over several rounds: its
    folder always holds one complete result (PNG, npz and a JSON that parses), old or new."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "preimage", "invert", "chelsea", *HOG, "--out", str(out)]
    t0 = time.monotonic()
    subprocess.run(argv + ["--seed", "0"], check=True, capture_output=True)
    full = time.monotonic() - t0
    rng = np.random.default_rng(1)
    for seed in range(1, 7):
        proc = subprocess.Popen(argv + ["--seed", str(seed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(0.5, 1.1) * full))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert sorted(p.name for p in out.iterdir()) == ["reconstruction.png", "result.json", "result.npz"]
        (run,) = json.loads((out / "result.json").read_text())["runs"].values()
        assert 0 <= run["seed"] <= seed
        with np.load(out / "result.npz") as z:  # the arrays and the record of one and the same run
            assert z["x"].shape == (1, 1, 64, 64) and np.allclose(z["error"], run["error"])
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["out"]


@given(data=st.binary(min_size=0, max_size=256))
@FEW
def test_any_bytes_are_an_image_or_an_image_error(data):
    try:
        rgb, notes = images.decode(data)
    except ImageError as e:
        assert "cannot read the upload as an image" in str(e)
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@given(mode=st.sampled_from(["L", "LA", "P", "RGBA", "I;16", "I", "F", "1", "CMYK"]),
       side=st.integers(1, 12), seed=st.integers(0, 2 ** 16))
@FEW
def test_every_mode_reads_as_rgb_with_its_conversion_said(tmp_path_factory, mode, side, seed):
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    im = base.convert(mode) if mode not in ("I;16", "I", "F") else Image.fromarray(
        rng.integers(0, 2 ** 16, (side, side)).astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    path = tmp_path_factory.mktemp("modes") / ("x.tif" if mode in ("I;16", "I", "F", "CMYK") else "x.png")
    im.save(path)
    rgb, notes = images.load(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (side, side, 3)
    assert notes, f"{mode}: the conversion to 8-bit RGB was not said"
