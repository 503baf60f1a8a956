"""``mmkit check`` refuses what ``mmkit run`` refuses, and ``mmkit run``'s filesystem faults are errors
(issue [D] classes 4 and 5): fp16 on CPU, a device that is not there, an unimplemented strategy, a
bad monitor key or a missing optional extra; an output_dir that is a file, unwritable or too long,
symlinks, a full disk during a checkpoint (safetensors' and torch's own write errors), an
unwritable HOME. A run that fails in setup leaves no run directory; summary.json is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner, Result

from mmkit._internal.cli import cli
from mmkit._internal.rundir import RunDir, RunDirError


def mmkit(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture
def tiny(tmp_path: Path, write_tiny_recipe) -> Path:
    return write_tiny_recipe(tmp_path / "tiny.toml", 'model.fusion={ type = "concat", dim = 16 }',
                             "train.max_steps=2")


def runs_of(recipe: Path) -> list[str]:
    runs = recipe.parent / "runs"
    return sorted(os.listdir(runs)) if runs.is_dir() else []


# ------------------------------------------------------------------------------- class 4: check == run
REFUSED = [
    pytest.param('train.monitor="val.nope"', r"train.monitor 'nope' is not a metric of this head; available: "
                                             r"accuracy, loss, macro_f1", id="monitor"),
    # every strategy the schema accepts (auto, ddp, fsdp) is implemented: an unknown one is a schema error
    pytest.param('train.precision="fp16"', r"train.precision = 'fp16' needs a CUDA device", id="fp16-on-cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
    pytest.param('train.device="cuda"', r"train.device = 'cuda' but no CUDA device is available", id="no-cuda",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
]


@pytest.mark.parametrize("setting, message", REFUSED)
def test_check_refuses_what_run_refuses_and_run_leaves_no_run_dir(tiny: Path, setting: str, message: str) -> None:
    """Before: check said ok to all four; run failed at its first evaluation (monitor) or in setup,
    leaving a run directory with only its recipe behind (the next run became tiny-2)."""
    checked = mmkit("check", str(tiny), "--no-rows", "--set", setting)
    assert checked.exit_code == 2 and "error: " in checked.output
    assert re.search(message, checked.output), checked.output
    ran = mmkit("run", str(tiny), "--quiet", "--set", setting)
    assert ran.exit_code == 2 and re.search(message, ran.output), ran.output
    assert runs_of(tiny) == [], "a run that fails in setup leaves no run directory"


def test_missing_optional_extra_is_refused_by_check_and_run(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """train.tensorboard = true without TensorBoard installed (import blocked here)."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    for cmd in ("check", "run"):
        result = mmkit(cmd, str(tiny), "--set", "train.tensorboard=true", *(["--no-rows"] if cmd == "check" else []))
        assert result.exit_code == 2, result.output
        assert "train.tensorboard = true needs TensorBoard: pip install 'mmkit[tb]'" in result.output
        assert str(tiny) in result.output or tiny.name in result.output
    assert runs_of(tiny) == []


def test_check_passes_a_recipe_run_accepts(tiny: Path) -> None:
    result = mmkit("check", str(tiny), "--no-rows", "--set", 'train.monitor="val.macro_f1"')
    assert result.exit_code == 0 and "ok: the recipe is valid" in result.output, result.output
    assert runs_of(tiny) == []


def test_a_failure_while_loading_data_leaves_no_run_dir_and_resume_keeps_its_own(tiny: Path) -> None:
    manifest = tiny.parent / "train.jsonl"
    manifest.write_text('{"image": "missing.png", "text": "a", "label": 1}\n' * 4)  # one class: fit fails
    result = mmkit("run", str(tiny), "--quiet", "--set", f'data={{ train = "{manifest}" }}')
    assert result.exit_code == 2 and "a classifier needs 2+ classes" in result.output
    assert runs_of(tiny) == []
    assert mmkit("run", str(tiny), "--quiet").exit_code == 0
    result = mmkit("run", str(tiny), "--quiet", "--resume", "--set", 'train.monitor="val.nope"')
    assert result.exit_code == 2 and runs_of(tiny) == ["tiny"], "a resumed run's directory is never removed"
    assert RunDir(tiny.parent / "runs" / "tiny").finished


# ------------------------------------------------------------------------------- class 8: options, devices
@pytest.mark.parametrize("args, message", [
    (["--nproc", "-1"], "'--nproc': -1 is not in the range 0<=x<=1024"),
    (["--nproc", "100000"], "'--nproc': 100000 is not in the range"),
    (["--master-port", "0"], "'--master-port': 0 is not in the range 1<=x<=65535"),
    (["--nnodes", "0"], "'--nnodes': 0 is not in the range"),
    (["--nnodes", "2", "--node-rank", "2"], "'--node-rank': 2 is not below --nnodes 2"),
])
def test_run_options_are_range_checked(tiny: Path, args: list[str], message: str) -> None:
    result = mmkit("run", str(tiny), *args)
    assert result.exit_code == 2 and f"Error: Invalid value for {message}" in result.output, result.output
    assert runs_of(tiny) == []


@pytest.mark.parametrize("device", ["meta", "bogus", "cuda:x", "", "cuda:99999", "mps:0"])
def test_python_api_devices_are_refused_with_an_mmkit_error(device: str) -> None:
    """Before: mmkit.load(..., device="bogus") was torch's RuntimeError; "meta" was accepted on a GPU.
    ``choose_device`` is the one place every path (``mmkit.load``, ``Predictor``, ``train.device``)
    turns a device name into a device."""
    from mmkit._internal.assembly import choose_device
    from mmkit._internal.errors import MmkitError

    with pytest.raises(MmkitError, match=rf"where = '{device}'"):
        choose_device(device, what="where")
    assert choose_device("cpu:0") == choose_device("cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------- class 5: output_dir
def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        return locked / "runs"
    return Path("/sys/mmkit-test-runs")  # root ignores modes; sysfs refuses new folders


def test_output_dir_faults_are_errors_naming_the_folder(tiny: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("mine")
    cases = {
        "a file": f'run.output_dir="{afile}"',
        "under a file": f'run.output_dir="{afile}/runs"',
        "unwritable": f'run.output_dir="{_unwritable(tmp_path)}"',
        "name too long": f'run.name="{"n" * 300}"',
        "a folder name too long": f'run.output_dir="{tmp_path / ("d" * 300)}"',
    }
    for case, setting in cases.items():
        result = mmkit("run", str(tiny), "--quiet", "--set", setting)
        assert result.exit_code == 2, (case, result.output)
        assert "error: cannot create the run directory" in result.output, (case, result.output)
        assert "Traceback" not in result.output
    assert afile.read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["afile", "tiny.toml"]


def test_overwrite_never_follows_a_link_or_deletes_a_users_folder(tiny: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "tiny").symlink_to(mine, target_is_directory=True)
    result = mmkit("run", str(tiny), "--quiet", "--overwrite")
    assert result.exit_code == 2 and "not a run directory (a link)" in result.output, result.output
    (runs / "tiny").unlink()
    (runs / "tiny").mkdir()
    (runs / "tiny" / "notes.txt").write_text("keep")
    result = mmkit("run", str(tiny), "--quiet", "--overwrite")
    assert result.exit_code == 2 and "not a run directory (none of recipe.resolved.toml" in result.output
    (runs / "tiny" / "notes.txt").unlink()
    (runs / "tiny").rmdir()
    (runs / "tiny").write_text("a file")
    result = mmkit("run", str(tiny), "--quiet", "--overwrite")
    assert result.exit_code == 2 and "not a run directory (a file)" in result.output
    assert (mine / "notes.txt").read_text() == "keep" and (runs / "tiny").read_text() == "a file"
    (runs / "tiny").unlink()
    (runs / "tiny").symlink_to(tmp_path / "nowhere")  # a dangling link: a new run takes the next name
    result = mmkit("run", str(tiny), "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(runs)) == ["tiny", "tiny-2"] and (runs / "tiny").is_symlink()
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("home", ["/sys/mmkit-home", "afile"])
def test_an_unwritable_home_is_an_error_for_the_default_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  home: str) -> None:
    from reliability_kit import make_run

    run = make_run(tmp_path)
    (tmp_path / "afile").write_text("mine")
    monkeypatch.setenv("HOME", str(tmp_path / home) if home == "afile" else home)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("MMKIT_REGISTRY", raising=False)
    result = mmkit("register", str(run), "--name", "m")
    assert result.exit_code == 2 and "error: cannot write to the model registry" in result.output, result.output
    assert mmkit("models").exit_code == 0
    assert (tmp_path / "afile").read_text() == "mine"


# ------------------------------------------------------------------------------- class 5: summary.json
def test_summary_json_is_strict_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = RunDir(tmp_path)
    run.write_summary({"final": {"val": {"accuracy": math.nan, "loss": math.inf}}, "best": {"metric": "loss",
                                                                                         "value": math.nan}})
    text = run.summary_file.read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert data["final"]["val"] == {"accuracy": None, "loss": None} and data["best"]["value"] is None
    assert run.read_summary() == data, "a null metric reads back"
    run.append_metrics({"step": 1, "split": "val", "metrics": {"loss": math.nan}})
    assert json.loads(run.metrics.read_text(), parse_constant=lambda c: pytest.fail(c))["metrics"]["loss"] is None
    import mmkit._internal.safeio as safeio

    def failing_dumps(*args: Any, **kw: Any) -> str:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safeio, "dumps_json", failing_dumps)
    with pytest.raises(OSError):
        run.write_summary({"final": {}, "best": {}, "steps": 9})
    assert json.loads(run.summary_file.read_text()) == data, "the previous summary is untouched"
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []
    run.summary_file.write_text("[" * 100_000)
    with pytest.raises(RunDirError, match=r"summary\.json line 1: nested more than 64 levels"):
        run.read_summary()


# ------------------------------------------------------------------------------- class 5: a full disk
FULL_DISK = """
import json, os, resource, signal, sys
from click.testing import CliRunner
from mmkit._internal.cli import cli
from mmkit._internal.distributed import STRATEGIES
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, like a full disk
out = {}
for name, limit, args in json.loads(sys.argv[1]):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    r = CliRunner().invoke(cli, args)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    out[name] = [r.exit_code, r.output, repr(r.exception)]
print(json.dumps(out))
"""


def test_full_disk_during_checkpoints_and_an_unwritable_home(tiny: Path, tmp_path: Path) -> None:
    """safetensors raises SafetensorError and torch.save a RuntimeError on a full disk: both are a
    CheckpointError (exit 2, one line), no temporary folder stays. HOME is unwritable throughout."""
    weights = 4 * sum(p.numel() for p in _tiny_model_parameters(tiny))
    runs = tmp_path / "runs"
    commands = [
        ["ok with HOME unwritable", 1 << 40, ["run", str(tiny), "--quiet", "--set", "run.name=ok"]],
        ["weights", 20_000, ["run", str(tiny), "--quiet", "--set", "run.name=w"]],
        ["optimizer state", weights + 100_000, ["run", str(tiny), "--quiet", "--set", "run.name=o"]],
        ["models with HOME unwritable", 1 << 40, ["models"]],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOME": "/sys/mmkit-home", "XDG_DATA_HOME": "",
           "MMKIT_REGISTRY": ""}
    done = subprocess.run([sys.executable, "-c", FULL_DISK, json.dumps(commands)], capture_output=True, text=True,
                          timeout=600, check=False, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    assert results["ok with HOME unwritable"][0] == 0, results["ok with HOME unwritable"]
    for name in ("weights", "optimizer state"):
        code, output, exc = results[name]
        assert code == 2 and "error: could not write checkpoint" in output, (name, output, exc)
        assert "(the previous checkpoint is kept)" in output and "Traceback" not in output
    assert "SafetensorError" in results["weights"][1] and "File too large" in results["weights"][1]
    assert "RuntimeError" in results["optimizer state"][1]
    code, output, _ = results["models with HOME unwritable"]
    assert code in (0, 2) and "Traceback" not in output, output
    assert not [str(p) for p in runs.rglob("*") if ".tmp" in p.name or ".old-" in p.name]
    assert RunDir(runs / "ok").finished


def _tiny_model_parameters(recipe: Path) -> list[torch.nn.Parameter]:
    from mmkit._internal.assembly import assemble, load_splits, plan_data
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.registry import get_registry

    rec = load_recipe(recipe)
    return list(assemble(rec, get_registry(), plan_data(rec, load_splits(rec, get_registry()))).parameters())


# ------------------------------------------------------------------------------- class 6: ambiguous data
TABULAR = """
[run]
name = "tab"
output_dir = "{out}"
[data]
train = "{train}"
columns = {{ tabular = ["size"], label = "label" }}
[model.encoders.tabular]
type = "tabular-mlp"
dim = 8
hidden = 8
[model.fusion]
type = "concat"
dim = 8
[model.head]
type = "classification"
[train]
max_steps = 1
batch_size = 4
"""


@pytest.mark.parametrize("labels, message", [
    ([1, 0, "1", 0], r"labels mix types: 1 \(number, training row 1\) and '1' \(str, training row 3\)"),
    ([0, 1, True, 0], r"labels mix types: 0 \(number, training row 1\) and True \(bool, training row 3\)"),
])
def test_labels_whose_types_differ_between_rows_name_file_and_rows(tmp_path: Path, labels: list[Any],
                                                                   message: str) -> None:
    """Before: 1 and "1" became two classes that print alike; true merged into 1."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"size": float(i), "label": v}) + "\n" for i, v in enumerate(labels)))
    recipe = tmp_path / "tab.toml"
    recipe.write_text(TABULAR.format(out=(tmp_path / "runs").as_posix(), train=train.as_posix()))
    for cmd in ("check", "run"):
        result = mmkit(cmd, str(recipe))
        assert result.exit_code == 2, result.output
        assert "train.jsonl (train): target 'label'" in result.output, result.output
        assert re.search(message, result.output), result.output
    assert not (tmp_path / "runs").exists() or os.listdir(tmp_path / "runs") == []


def test_duplicate_csv_headers_are_refused_by_check_and_run(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("size,label,label\n1,0,1\n2,1,0\n")
    recipe = tmp_path / "tab.toml"
    recipe.write_text(TABULAR.format(out=(tmp_path / "runs").as_posix(), train=train.as_posix()))
    for cmd in ("check", "run"):
        result = mmkit(cmd, str(recipe))
        assert result.exit_code == 2 and "train.csv: header names column 'label' twice (columns 2 and 3)" \
            in result.output, result.output


# ------------------------------------------------------------------------------- class 4: component sizes
def test_allocation_budget_counts_before_allocating() -> None:
    from mmkit._internal.errors import ParameterError
    from mmkit._internal.membudget import allocation_budget

    with allocation_budget("small", limit=10 * 2**20):
        torch.nn.Linear(1000, 1000)  # 4 MB
    with pytest.raises(ParameterError, match=r"big: building it needs more than 0.0 GB"):
        with allocation_budget("big", limit=2**20):
            torch.nn.Linear(1000, 1000)
    with allocation_budget("meta", limit=1):
        torch.nn.Linear(10**6, 10**6, device="meta")  # nothing allocated


@pytest.mark.parametrize("setting, where", [
    ("model.fusion.dim=1000000000", "model.fusion: fusion 'concat' of plugin 'fusion': with dim=1000000000"),
    ('model.fusion={ type = "transformer", dim = 60000, layers = 4, heads = 4 }',
     "model.fusion: fusion 'transformer' of plugin 'fusion': with dim=60000"),
    ("model.encoders.text.dim=100000000", "model.encoders.text: encoder 'text-transformer' of plugin 'text'"),
])
def test_component_sizes_beyond_memory_are_refused_before_allocating(tiny: Path, setting: str, where: str) -> None:
    """Before: these passed validation; the allocation failed, or with overcommit the OOM killer
    ended the process."""
    for cmd in ("check", "run"):
        result = mmkit(cmd, str(tiny), "--set", setting)
        assert result.exit_code == 2 and where in result.output, result.output
        assert "building it needs more than" in result.output and "GB is available" in result.output
    assert runs_of(tiny) == []


# ------------------------------------------------------------------------------- class 4: generated data
@pytest.mark.parametrize("options, message", [
    ({"sample_rate": 10**9}, r"sample_rate must be 1000 to 192000 Hz"),
    ({"max_seconds": 1e9}, r"max_seconds <= 60"),
    ({"max_seconds": math.nan}, r"must be finite numbers"),
    ({"noise": -1.0}, r"noise must be at least 0"),
    ({"n_train": 900_000, "max_seconds": 60.0}, r"take up to .* GiB in memory \(at most 4 GiB\)"),
])
def test_audio_dataset_sizes_are_checked_before_anything_is_generated(monkeypatch: pytest.MonkeyPatch,
                                                                      options: dict, message: str) -> None:
    """Before: sample_rate and max_seconds were unbounded (the shapes OOM, for audio)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "plugins" / "mmkit-audio"))
    from mmkit_audio.data import shapes_audio

    from mmkit._internal.errors import ParameterError

    with pytest.raises(ParameterError, match=message):
        shapes_audio(**{"n_train": 4, "n_val": 0, "n_test": 0, **options})


# ------------------------------------------------------------------------------- test hygiene
def test_no_test_module_sets_torch_threads_at_import() -> None:
    """A module-level ``torch.set_num_threads`` leaked into every later test of the session; tests use
    the ``torch_threads`` fixture (restored by tests/conftest.py) instead."""
    import ast

    found = []
    for path in sorted(Path(__file__).parent.rglob("test_*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            call = node.value if isinstance(node, ast.Expr) else None
            if isinstance(call, ast.Call) and ast.unparse(call.func).endswith("set_num_threads"):
                found.append(f"{path.name}:{node.lineno}")
    assert found == []
