"""Never lose a user's file; check every registered byte; validate options (issue [D], classes 1, 2, 8),
and the filesystem faults of those commands: a full disk, an unwritable folder, a name too long.

Each test pins a defect found in round two (listed in docs/reliability.md): ``predict``/``embed``
replaced a user's file with an empty one or NaNs, ``data export`` mixed into a folder of the user's
files, a changed label map or recipe of a registered model went unnoticed, a same-named folder in
the working directory took a registered model's place, a malformed card broke ``mmkit models``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from reliability_kit import RESOLVED, fitted_predictor, make_run, shapes_pngs

from mmkit._internal import models
from mmkit._internal.cli import cli


def mmkit(*args: str, cwd: Path | None = None) -> Result:
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, list(args))
    finally:
        os.chdir(old)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def no_temp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, write_tiny_recipe) -> dict[str, Any]:
    """The tiny recipe's model (fitted, not trained) saved as a model folder, and rows to predict."""
    root = tmp_path_factory.mktemp("outputs")
    predictor = fitted_predictor(write_tiny_recipe(root / "tiny.toml"), card={"name": "tiny"})
    folder = predictor.save(root / "model")
    rows = shapes_pngs(root, 4)
    (root / "rows.jsonl").write_text("".join(json.dumps({k: r[k] for k in ("image", "claim", "label")}) + "\n"
                                             for r in rows))
    (root / "bad.jsonl").write_text('{"image": null, "claim": null}\n{"image": "missing.png", "claim": null}\n')
    return {"root": root, "model": folder, "predictor": predictor}


# ------------------------------------------------------------------------------- class 1: predict / embed
def test_predict_and_embed_refuse_an_existing_out_without_overwrite(saved: dict, tmp_path: Path) -> None:
    root = saved["root"]
    for cmd, out, old in (("predict", tmp_path / "p.jsonl", b"mine\n"), ("embed", tmp_path / "e.npy", b"mine")):
        out.write_bytes(old)
        result = mmkit(cmd, str(saved["model"]), "--input", str(root / "rows.jsonl"), "--out", str(out))
        assert result.exit_code == 2 and "already exists; pass --overwrite" in result.output
        assert out.read_bytes() == old
        result = mmkit(cmd, str(saved["model"]), "--input", str(root / "rows.jsonl"), "--out", str(out),
                       "--overwrite")
        assert result.exit_code == 0, result.output
        assert out.read_bytes() != old and not no_temp_files(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rows] == [1, 2, 3, 4]
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), saved["predictor"].embed(root / "rows.jsonl"))


def test_a_command_with_no_usable_row_leaves_the_previous_output(saved: dict, tmp_path: Path) -> None:
    """Before: predict replaced the user's file with an empty one, embed with an all-NaN array."""
    root = saved["root"]
    for cmd, out in (("predict", tmp_path / "p.jsonl"), ("embed", tmp_path / "e.npy")):
        out.write_bytes(b"previous output")
        result = mmkit(cmd, str(saved["model"]), "--input", str(root / "bad.jsonl"), "--out", str(out),
                       "--overwrite", "--skip-bad-rows")
        assert result.exit_code == 2 and "no row could be" in result.output and "was not written" in result.output
        assert out.read_bytes() == b"previous output"
    assert not no_temp_files(tmp_path)


def test_embed_rows_line_up_with_input_rows(saved: dict, tmp_path: Path) -> None:
    """Skipped rows are NaN rows in place; the file is written without a memory map."""
    root = saved["root"]
    rows = (root / "rows.jsonl").read_text().splitlines()
    (root / "mixed.jsonl").write_text("\r".join([rows[0], '{"image": "missing.png", "claim": null}', rows[1]]) + "\r")
    out = tmp_path / "e.npy"
    result = mmkit("embed", str(saved["model"]), "--input", str(root / "mixed.jsonl"), "--out", str(out),
                   "--skip-bad-rows")
    assert result.exit_code == 0, result.output
    arr = np.load(out)
    expected = saved["predictor"].embed(root / "rows.jsonl")
    assert arr.shape == (3, expected.shape[1]) and np.isnan(arr[1]).all()
    np.testing.assert_allclose(arr[[0, 2]], expected[:2], rtol=1e-5, atol=1e-6)  # other batch, other BLAS sums


def test_out_cannot_be_the_input(saved: dict, tmp_path: Path) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_bytes((saved["root"] / "rows.jsonl").read_bytes())
    result = mmkit("predict", str(saved["model"]), "--input", str(data), "--out", str(data), "--overwrite")
    assert result.exit_code == 2 and "is the input file" in result.output
    assert data.read_bytes() == (saved["root"] / "rows.jsonl").read_bytes()


# ------------------------------------------------------------------------------- class 1: data export
def test_export_never_mixes_with_or_replaces_a_users_folder(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "train.jsonl").write_text("my own rows\n")
    result = mmkit("data", "export", "shapes", "--n", "10", "-o", "image_size=16", "--out", str(mine))
    assert result.exit_code == 2 and "is not empty (train.jsonl); pass --overwrite" in result.output
    (mine / "notes.txt").write_text("notes")
    result = mmkit("data", "export", "shapes", "--n", "10", "--out", str(mine), "--overwrite")
    assert result.exit_code == 2 and "not an mmkit export (notes.txt)" in result.output
    assert (mine / "train.jsonl").read_text() == "my own rows\n" and sorted(os.listdir(mine)) == ["notes.txt",
                                                                                                   "train.jsonl"]
    assert not no_temp_files(tmp_path)


def test_export_overwrite_replaces_an_earlier_export_entirely(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert mmkit("data", "export", "shapes", "--n", "20", "-o", "image_size=16", "--out", str(out)).exit_code == 0
    assert sorted(os.listdir(out)) == ["images", "test.jsonl", "train.jsonl", "val.jsonl"]
    result = mmkit("data", "export", "shapes", "--split-sizes", "4,0,0", "-o", "image_size=16", "--out", str(out),
                   "--overwrite")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ["images", "train.jsonl"], "the earlier val/test must not stay behind"
    assert len(list((out / "images" / "train").glob("*.png"))) == 4
    assert not no_temp_files(tmp_path)


def test_export_that_fails_midway_leaves_nothing(tmp_path: Path, write_plugin, clean_registry) -> None:
    """A dataset whose 3rd row cannot be written: before, train.jsonl was left half-written."""
    write_plugin("tp_badrows", {"dataset": {"badrows": "tp_badrows:rows"}}, extra="""
        from mmkit._internal.datasets import DataSplits
        def rows(n_train: int = 5, seed: int = 0):
            return DataSplits({"train": [{"x": 1}, {"x": 2}, {"x": object()}]}, name="badrows")
    """)
    out = tmp_path / "out"
    result = mmkit("-p", "tp_badrows", "data", "export", "badrows", "--out", str(out))
    assert result.exit_code == 2 and "train row 3 column x: cannot write a object" in result.output
    assert not out.exists() and not no_temp_files(tmp_path)
    assert not [p for p in os.listdir(tmp_path) if p.startswith((".out", "out"))]


# ------------------------------------------------------------------------------- class 2: the registry
@pytest.fixture
def reg(tmp_path: Path) -> Path:
    models.register(make_run(tmp_path), "m", registry=tmp_path / "registry")
    models.register(make_run(tmp_path, "other"), "other", registry=tmp_path / "registry")
    return tmp_path / "registry"


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2) + "\n")


@pytest.mark.parametrize("change, named", [
    (lambda v: _edit_json(v / "fit_state.json", head={"labels": [1, 0]}), "fit_state.json: checksum mismatch"),
    (lambda v: (v / "recipe.resolved.toml").write_text(RESOLVED.replace("dim = 8", "dim = 9")),
     "recipe.resolved.toml: checksum mismatch"),
    (lambda v: _edit_json(v / "summary.json", final={}), "summary.json: checksum mismatch"),
    (lambda v: _edit_json(v / "card.json", columns={"text": "claim"}), "card.json: the card was modified"),
    (lambda v: (v / "card.json").write_text((v / "card.json").read_text() + " "), "card.json: the card was modified"),
    (lambda v: (v / "fit_state.json").unlink(), "fit_state.json: file missing"),
    (lambda v: (v / "extra.bin").write_bytes(b"x"), "extra.bin: not part of model m@1"),
])
def test_every_file_of_a_registered_model_is_checked(reg: Path, change: Any, named: str) -> None:
    """Before: only model.safetensors was hashed; a swapped label map changed every prediction."""
    change(reg / "m" / "1")
    with pytest.raises(models.ChecksumError, match=named):
        models.resolve("m", reg).verify()
    result = mmkit("models", "show", "m", "--registry", str(reg))
    assert result.exit_code == 2 and named.split(":")[0] in result.output


def test_a_moved_version_is_refused(reg: Path) -> None:
    (reg / "m" / "1").rename(reg / "m" / "2")
    with pytest.raises(models.ChecksumError, match=r"describes m@1 but is stored as m@2"):
        models.resolve("m", reg)


def test_round_one_cards_are_refused_with_the_command_to_register_again(reg: Path) -> None:
    card = reg / "m" / "1" / "card.json"
    data = json.loads(card.read_text())
    card.write_text(json.dumps({"format": 1, "name": "m", "version": 1, "source": data["source"],
                                "sha256": {"model.safetensors": data["sha256"]["model.safetensors"]}}))
    with pytest.raises(models.ChecksumError, match=rf"covers only the weights.*mmkit register {data['source']} "
                                                   r"--name m"):
        models.resolve("m", reg)


def test_a_bare_name_means_the_registry(reg: Path, tmp_path: Path) -> None:
    """Before: a folder ./m (a run directory) silently took the registered model m's place."""
    work = tmp_path / "work"
    make_run(work, "m")
    (work / "m" / "recipe.resolved.toml").write_text(RESOLVED.replace("dim = 8", "dim = 4"))
    old = os.getcwd()
    os.chdir(work)
    try:
        assert models.resolve("m", reg).kind == "registered"
        assert models.resolve("./m", reg).kind == "run"
        with pytest.raises(models.ModelNotFoundError, match=r"for the folder 'fake2' write \./fake2"):
            make_run(work, "fake2")
            models.resolve("fake2", reg)
        assert models.show("m", reg)["kind"] == "registered"
    finally:
        os.chdir(old)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "[" * 100_000, '{"version": 1' + "0" * 5000 + "}",
                                     '{"name": 5, "version": "x", "metrics": [1]}'])
def test_one_malformed_card_does_not_break_the_listing(reg: Path, content: str) -> None:
    (reg / "m" / "1" / "card.json").write_text(content)
    result = mmkit("models", "--registry", str(reg))
    assert result.exit_code == 0, result.output
    assert "warning: skipped m@1:" in result.output and "card.json" in result.output and "other" in result.output
    listed = json.loads(mmkit("models", "--json", "--registry", str(reg)).stdout)
    assert [r["name"] for r in listed if r["kind"] == "registered"] == ["other"]


def test_odd_card_values_are_shown_not_a_traceback(tmp_path: Path) -> None:
    """A card written with non-numeric metrics (e.g. by another tool) prints as text."""
    folder = tmp_path / "odd"
    folder.mkdir()
    for name in (models.WEIGHTS, models.RECIPE, models.FIT_STATE):
        (folder / name).write_text("{}" if name.endswith(".json") else RESOLVED)
    models.write_card(folder, {"name": "odd", "task": "classification",
                               "metrics": {"final": {"test": {"acc": "n/a"}}, "best": {"metric": "acc", "value": "v"}}})
    result = mmkit("models", "show", str(folder))
    assert result.exit_code == 0, result.output
    assert "final test: acc n/a" in result.output and "best: acc v" in result.output


def test_register_is_all_or_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path)
    reg = tmp_path / "registry"
    calls = []

    def failing_copy(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        Path(dst).write_bytes(Path(src).read_bytes())

    monkeypatch.setattr(models.shutil, "copyfile", failing_copy)
    with pytest.raises(models.MmkitError, match=r"cannot register m in .*: No space left on device"):
        models.register(run, "m", registry=reg)
    assert os.listdir(reg / "m") == [], "no version, no staging folder"
    monkeypatch.undo()
    (reg / "m" / ".tmp-999999999-deadbeef").mkdir()  # left by a killed registration
    assert models.register(run, "m", registry=reg)["version"] == 1
    assert sorted(os.listdir(reg / "m")) == ["1"]


# ------------------------------------------------------------------------------- class 8: options
@pytest.mark.parametrize("device", ["bogus", "meta", "cuda:99", "cpu:0", ""])
def test_device_is_validated_before_loading(saved: dict, device: str) -> None:
    result = mmkit("predict", str(saved["model"]), "--input", str(saved["root"] / "rows.jsonl"), "--device", device)
    assert result.exit_code == 2 and "Error: Invalid value for '--device'" in result.output


# ------------------------------------------------------------------------------- filesystem faults
FAULTS = """
import json, os, resource, signal, sys
from click.testing import CliRunner
from mmkit._internal.cli import cli
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
out = {}
for name, args in json.loads(sys.argv[1]).items():
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))
    r = CliRunner().invoke(cli, args)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    out[name] = [r.exit_code, r.output, repr(r.exception)]
print(json.dumps(out))
"""


def _full_disk(commands: dict[str, list[str]], limit: int = 2000) -> dict[str, list[Any]]:
    """Run mmkit commands in a fresh process whose writes fail once a file reaches ``limit`` bytes."""
    done = subprocess.run([sys.executable, "-c", FAULTS, json.dumps(commands), str(limit)], capture_output=True,
                          text=True, timeout=600, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    for name, (code, output, exc) in results.items():
        assert code == 2 and "File too large" in output, (name, code, output, exc)
    return results


def test_full_disk_during_export_and_register_leaves_nothing(tmp_path: Path) -> None:
    """No torch in this process: export (PNG + JSONL writes) and register (copies) hit the limit."""
    run = make_run(tmp_path / "runs")
    (run / "checkpoints" / "best" / "model.safetensors").write_bytes(b"w" * 5000)
    (tmp_path / "earlier").mkdir()
    (tmp_path / "earlier" / "train.jsonl").write_text('{"old": 1}\n')
    _full_disk({"export": ["data", "export", "shapes", "--n", "40", "--out", str(tmp_path / "export")],
                "export over an earlier one": ["data", "export", "shapes", "--n", "40", "--out",
                                               str(tmp_path / "earlier"), "--overwrite"],
                "register": ["register", str(run), "--name", "m", "--registry", str(tmp_path / "registry")]})
    assert not (tmp_path / "export").exists() and not no_temp_files(tmp_path)
    assert os.listdir(tmp_path / "earlier") == ["train.jsonl"]
    assert (tmp_path / "earlier" / "train.jsonl").read_text() == '{"old": 1}\n'
    assert os.listdir(tmp_path / "registry" / "m") == []


@pytest.mark.slow  # a fresh process imports torch and loads the model
def test_full_disk_during_predict_and_embed_keeps_the_previous_output(saved: dict, tmp_path: Path) -> None:
    root = saved["root"]
    (tmp_path / "p.jsonl").write_text("previous\n")
    np.save(tmp_path / "e.npy", np.zeros((2, 2), np.float32))
    row = json.loads((root / "rows.jsonl").read_text().splitlines()[0])
    row["image"] = str(root / row["image"])
    (tmp_path / "big.jsonl").write_text((json.dumps(row) + "\n") * 40)
    previous = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _full_disk({"predict": ["predict", str(saved["model"]), "--input", str(tmp_path / "big.jsonl"), "--out",
                            str(tmp_path / "p.jsonl"), "--overwrite"],
                "embed": ["embed", str(saved["model"]), "--input", str(tmp_path / "big.jsonl"), "--out",
                          str(tmp_path / "e.npy"), "--overwrite"]})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == previous and not no_temp_files(tmp_path)


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: chmod 555, or /sys for root (which ignores modes)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        return locked / "sub"
    return Path("/sys/mmkit-test")


def test_unwritable_folders_are_errors(saved: dict, tmp_path: Path) -> None:
    target = _unwritable(tmp_path)
    run = make_run(tmp_path)
    for args in (["predict", str(saved["model"]), "--input", str(saved["root"] / "rows.jsonl"), "--out",
                  str(target / "p.jsonl")],
                 ["data", "export", "shapes", "--n", "4", "--out", str(target / "export")],
                 ["register", str(run), "--name", "m", "--registry", str(target / "registry")]):
        result = mmkit(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "error: cannot" in result.output and str(target) in result.output, result.output


def test_names_too_long_for_the_filesystem_are_errors(saved: dict, tmp_path: Path) -> None:
    long = "x" * 300
    run = make_run(tmp_path)
    for args in (["predict", str(saved["model"]), "--input", str(saved["root"] / "rows.jsonl"), "--out",
                  str(tmp_path / f"{long}.jsonl")],
                 ["embed", str(saved["model"]), "--input", str(saved["root"] / "rows.jsonl"), "--out",
                  str(tmp_path / long / "e.npy")],
                 ["data", "export", "shapes", "--n", "4", "--out", str(tmp_path / long)],
                 ["register", str(run), "--name", long, "--registry", str(tmp_path / "registry")],
                 ["models", "show", long]):
        result = mmkit(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "longer than this filesystem allows" in result.output or "invalid model name" in result.output
    assert sorted(os.listdir(tmp_path)) == ["fake"]

