"""The run directory value object (torch-free), and the boundaries the engine split promises: one
module spells the run directory's file names; inference, ablation and the CLI never import the loop."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmkit._internal import rundir
from mmkit._internal.rundir import RunDir, RunDirError

ROOT = Path(__file__).resolve().parent.parent
FILES = (rundir.RECIPE, rundir.SUMMARY, rundir.METRICS, rundir.WEIGHTS, rundir.STATE, rundir.TRAINING_STATE)


def _checkpoint(folder: Path, step: int) -> None:
    folder.mkdir(parents=True)
    (folder / rundir.WEIGHTS).write_bytes(b"w")
    (folder / rundir.STATE).write_text(json.dumps({"step": step}))


def test_best_falls_back_to_last_and_a_crashed_save_is_found(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    assert run.checkpoint() is None and not run.resumable
    _checkpoint(run.checkpoints / ".old-last-1a2b", 4)  # killed between the two renames of a save
    assert run.checkpoint("last").name == ".old-last-1a2b"  # read-only lookup leaves it in place
    assert run.checkpoint("best").name == ".old-last-1a2b"  # no best: the last one
    assert run.checkpoint("best", fallback=None) is None
    assert run.checkpoint("last", recover=True) == run.checkpoints / "last"  # a writer puts it back
    assert run.resumable and not run.finished
    _checkpoint(run.checkpoints / "best", 2)
    assert run.checkpoint() == run.checkpoints / "best"
    (run.checkpoints / "best" / rundir.STATE).unlink()  # incomplete: not a checkpoint
    assert run.checkpoint() == run.checkpoints / "last"


def test_summary_is_written_atomically_and_its_shape_checked(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.read_summary() is None
    run.write_summary({"final": {"val": {"accuracy": 0.5}}, "best": {}, "steps": 3})
    assert run.finished and run.read_summary()["steps"] == 3
    assert not list(tmp_path.glob(".*.tmp"))
    bad = {"final": {"val": {"accuracy": "high"}}}
    run.summary_file.write_text(json.dumps(bad))
    with pytest.raises(RunDirError, match=r"summary\.json: final\.val: expected an object of metric -> number"):
        run.read_summary()
    run.summary_file.write_text(json.dumps({"best": {"metric": "accuracy"}}))
    with pytest.raises(RunDirError, match=r"best: expected 'metric' \(a name\) and 'value' \(a number\)"):
        run.read_summary()
    run.summary_file.write_text("{not json")
    with pytest.raises(RunDirError, match="summary.json line 1: invalid JSON"):
        run.read_summary()


def _path_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants used as (parts of) paths: a run-directory file name alone or with a '/', or
    the checkpoints folder's name alone."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.strip("/")
            if text == rundir.CHECKPOINTS or any(text == n or text.startswith(n + "/") or text.endswith("/" + n)
                                                 for n in FILES):
                out.append((node.lineno, node.value))
    return out


#: Other formats' file names that coincide with a run-directory name: a Hugging Face model folder's
#: weights are model.safetensors too, and mmkit/_internal/offline.py checks such folders.
OTHER_FORMATS = {"mmkit/_internal/offline.py": ("model.safetensors",)}


def test_only_rundir_spells_run_directory_file_names() -> None:
    found = {}
    for path in [*(ROOT / "mmkit").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]:
        rel = str(path.relative_to(ROOT))
        hits = [(line, text) for line, text in _path_literals(ast.parse(path.read_text(encoding="utf-8")))
                if text not in OTHER_FORMATS.get(rel, ())]
        if hits:
            found[rel] = hits
    assert list(found) == ["mmkit/_internal/rundir.py"], found


def test_inference_ablation_and_the_cli_do_not_import_the_training_loop() -> None:
    code = ("import sys, mmkit._internal.predictor, mmkit._internal.ablation, mmkit._internal.cli, "
            "mmkit._internal.trained; print(sorted(m for m in ('mmkit._internal.trainer', "
            "'mmkit._internal.loaders', 'mmkit._internal.optim') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
