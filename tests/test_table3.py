"""Table 3's runner (method.md §7): items saved as they finish, resumption, shards, merge, the
command line and a two-process torchrun."""
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from preimage import check_record, representations
from preimage.apps.cli import main
from preimage.engine.objective import Setting
from preimage.engine.optimise import invert
from preimage.errors import ImageError, PreimageError, SettingsError, UnknownNameError
from preimage.paper import table1, table3

NAMES = ["astronaut", "chelsea", "coffee"]
METHOD_MD = Path(__file__).resolve().parents[2] / "shared" / "paper" / "method.md"


def tiny(out, **kw):
    """HOG at 48×48, two λ rows, three images, four iterations: 6 items in about a second."""
    return table3.plan(NAMES, out=out, model="hog", size=48, lambda_tvs=(1.0, 10.0), iterations=4,
                       device="cpu", **kw)


def test_paper_numbers_are_caffenets_layers_and_method_md():
    assert list(table3.PAPER_TABLE3) == [0.5, 5.0, 50.0]
    assert all(list(row) == [l.name for l in representations.layers("caffenet")] for row in table3.PAPER_TABLE3.values())
    assert table3.paper("caffenet", "conv1", 1.0) == (10.0, 5.0) and table3.paper("alexnet", "fc8", 100.0) == (8.5, 1.1)
    assert table3.paper("efficientnet_lite0", "conv1", 1.0) is None and table3.paper("hog", "hog", 1.0) is None
    if not METHOD_MD.is_file():
        pytest.skip("method.md is not beside the repository")
    rows = re.findall(r"^\| (0\.5|5|50) \|(.*)\|$", METHOD_MD.read_text(), re.MULTILINE)
    assert len(rows) == 3
    for vbeta, cells in rows:
        ours = [f"{m:.1f}±{s:.1f}" for m, s in table3.PAPER_TABLE3[float(vbeta)].values()]
        assert ours == [c.strip() for c in cells.split("|")]


def test_shards_split_every_item_once_and_evenly():
    items = [table3.Item(layer, v, n) for layer in ("a", "b") for v in (1.0, 10.0, 100.0) for n in "pqrst"]
    for count in (1, 2, 3, 4):
        parts = [table3.shard(items, i, count) for i in range(count)]
        assert sorted((it for part in parts for it in part), key=items.index) == items
        for layer in ("a", "b"):  # every shard gets its share of each (layer, λ) batch
            sizes = [sum(it.layer == layer and it.lambda_tv == 1.0 for it in part) for part in parts]
            assert max(sizes) - min(sizes) <= 1
    assert table3.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/2/3", "0/0"):
        with pytest.raises(SettingsError, match="I/N"):
            table3.parse_shard(bad)


def test_interrupted_run_resumes_without_recomputing(tmp_path, monkeypatch):
    p = tiny(tmp_path, batch_size=2)  # per λ: a batch of astronaut+chelsea, then coffee
    calls = []

    def interrupt_second_batch(rep, x0, **kw):
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(len(x0))
        return invert(rep, x0, **kw)

    monkeypatch.setattr(table3, "invert", interrupt_second_batch)
    with pytest.raises(KeyboardInterrupt):
        table3.run(p, log=None)
    first = {it: it.path(tmp_path) for it in p.items() if it.path(tmp_path).is_file()}
    assert set(first) == {table3.Item("hog", 1.0, "astronaut"), table3.Item("hog", 1.0, "chelsea")}
    before = {it: (path.read_bytes(), path.stat().st_mtime_ns) for it, path in first.items()}

    def counting(rep, x0, **kw):
        calls.append(len(x0))
        return invert(rep, x0, **kw)

    monkeypatch.setattr(table3, "invert", counting)
    calls.clear()
    done = table3.run(p, log=None)
    assert set(done) == set(p.items()) - set(first) and calls == [1, 2, 1]  # coffee at λ 1, then λ 10
    assert {it: (path.read_bytes(), path.stat().st_mtime_ns) for it, path in first.items()} == before
    calls.clear()
    assert table3.run(p, log=None) == [] and calls == []  # nothing left to do

    # the resumed table is what one uninterrupted batch of all images gives
    table = table3.merge(p, log=None)
    assert not table.missing
    rep = representations.get("hog")
    x0 = p.inputs(rep, NAMES)
    for v in p.lambda_tvs:
        result = invert(rep, x0, settings=Setting(lambda_tv=v), schedule=p.recipe("hog").schedule, seed=0,
                        device="cpu", progress=False)
        with torch.no_grad():
            phi0, phi = rep(x0), rep(torch.as_tensor(result.x))
        row = table.rows[("hog", v)]
        np.testing.assert_allclose(row.errors, table1.normalised_errors(phi, phi0), rtol=1e-4)
        np.testing.assert_allclose(row.relative, result.error, rtol=1e-4)
        assert row.time_s > 0


def test_merge_names_missing_items_and_keeps_the_whole_sets_scale(tmp_path):
    p = tiny(tmp_path)
    with pytest.raises(PreimageError, match="nothing is saved"):
        table3.merge(p, log=None)
    assert table3.launch(p, (1, 2), log=None) is None  # one shard of two: no table yet
    lines = []
    partial = table3.merge(p, log=lines.append)
    assert set(partial.missing) == set(table3.shard(p.items(), 0, 2)) and "3 of 6 items missing" in lines[0]
    assert "Missing: 3 of 6 items" in table3.to_markdown(partial)
    table3.launch(p, (0, 2), log=None)
    full = table3.launch(p, merge_only=True, log=None)
    assert not full.missing
    for v in p.lambda_tvs:
        have = partial.images("hog", v)
        assert 0 < len(have) < 3 and full.images("hog", v) == NAMES
        keep = [NAMES.index(n) for n in have]  # normalised by all three images' codes either way
        np.testing.assert_allclose(partial.rows[("hog", v)].errors, full.rows[("hog", v)].errors[keep])


def test_a_folder_made_with_other_settings_or_images_is_not_reused(tmp_path):
    p = tiny(tmp_path)
    table3.run(p, log=None)
    other = table3.plan(NAMES, out=tmp_path, model="hog", size=48, lambda_tvs=(1.0,), iterations=5, device="cpu")
    for step in (table3.run, table3.merge):
        with pytest.raises(PreimageError, match="another schedule"):
            step(other, log=None)
    path = table3.Item("hog", 10.0, "chelsea").path(tmp_path)  # as if chelsea had changed since
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "reference_norm": 2 * record["reference_norm"]}))
    with pytest.raises(PreimageError, match="chelsea at hog is not the one"):
        table3.merge(p, log=None)


def test_bad_requests_say_what_is_valid(tmp_path):
    with pytest.raises(UnknownNameError, match="valid layers: hog, hog31"):
        table3.plan(NAMES, out=tmp_path, model="hog", layers=["conv9"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="holds no images"):
        table3.plan([tmp_path / "empty"], out=tmp_path, model="hog")
    (tmp_path / "astronaut.png").write_bytes(Path(table3.images.resolve("astronaut")).read_bytes())
    with pytest.raises(ImageError, match="share the name astronaut"):
        table3.plan(["astronaut", tmp_path / "astronaut.png"], out=tmp_path, model="hog")
    with pytest.raises(SettingsError, match="batch_size"):
        table3.plan(NAMES, out=tmp_path, model="hog", batch_size=0)


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_the_table_with_the_papers_column(tmp_path, capsys):
    code, out, _ = cli(capsys, "table3", "astronaut", "chelsea", "--model", "caffenet", "--weights", "random",
                       "--layers", "conv1", "--lambda-tv", "1", "--iters", "3", "--device", "cpu", "--out", tmp_path)
    assert code == 0
    assert "| conv1 |" in out and "| 10.0 ± 5.0 |" in out and "§7 norm." in out
    (row,) = csv.DictReader(io.StringIO((tmp_path / "table3.csv").read_text()))
    assert row["layer"] == "conv1" and row["lambda_vbeta"] == "0.5" and row["images"] == "2"
    assert (row["paper_mean_percent"], row["paper_std_percent"]) == ("10.0", "5.0")
    assert float(row["relative_mean_percent"]) > 0 and row["normalised_chelsea"]
    record = json.loads((tmp_path / "table3.json").read_text())
    assert record["model"] == "caffenet" and "untrained" in record["weights"] and record["profile"] == "paper"
    assert check_record(record) == [] and record["runs"]["conv1"]["iterations"] == 3
    assert (tmp_path / "table3.png").stat().st_size > 0

    code, _, err = cli(capsys, "table3", "--model", "hog", "--shard", "2of3", "--out", tmp_path / "x")
    assert code == 2 and err.startswith("error: a shard is I/N")
    code, _, err = cli(capsys, "table3", "--model", "hog", "--merge", "--out", tmp_path / "y")
    assert code == 2 and "nothing is saved" in err


@pytest.mark.slow
def test_torchrun_two_processes_split_the_items_and_rank_0_merges(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "preimage", "table3", *NAMES, "--model", "hog", "--size", "48", "--iters", "4",
           "--lambda-tv", "1", "10", "--device", "cpu", "--no-progress", "--out", str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("Table 3 · hog") == 1  # only rank 0 merged
    records = [json.loads(f.read_text()) for f in (out / "items").rglob("*.json")]
    assert len(records) == 6 and {tuple(r["shard"]) for r in records} == {(0, 2), (1, 2)}
    rows = list(csv.DictReader(io.StringIO((out / "table3.csv").read_text())))
    assert [r["lambda_tv"] for r in rows] == ["1", "10"] and all(r["images"] == "3" for r in rows)
