"""Faults during training: non-finite losses, Ctrl-C, SIGKILL during a checkpoint write, a full
disk, resuming a different model, and concurrent runs. Nothing already saved may be lost.

Already covered elsewhere (not repeated): NaN loss from a huge lr (tests/test_engine.py::
test_nan_loss_is_reported_with_the_step), SIGKILL mid-training then resume equals an uninterrupted
run (test_resume_after_sigkill_matches_uninterrupted_run), torch.save raising ENOSPC
(test_crash_during_checkpoint_save_keeps_previous), a crash between the two renames
(test_crash_between_renames_recovers_previous), resume refusing a changed fusion dim
(test_resume_refuses_a_different_model), concurrent `mmkit register` (tests/test_models_registry.py::
test_concurrent_registers_in_two_processes_get_distinct_versions).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mmkit._internal import checkpoint as ckpt
from mmkit._internal.trainer import TrainingError, train
from mmkit._internal.errors import RecipeError
from mmkit._internal.recipe import load_recipe
from mmkit._internal.registry import Registry
from mmkit._internal.rundir import RunDirError, RunLock, prepare_run_dir



@pytest.fixture
def tiny(tmp_path: Path, write_tiny_recipe) -> Path:
    return write_tiny_recipe(tmp_path / "tiny.toml", "data.options.n_train=48", "data.options.n_test=0",
                             'model.fusion={ type = "concat", dim = 16 }', "train.checkpoint_every=1")


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


# ------------------------------------------------------------------------------------- non-finite
def test_inf_loss_is_caught_at_the_step_with_advice(tmp_path: Path) -> None:
    """Targets near float32's maximum make the squared error overflow to +inf at the first step."""
    rows = "".join(f"{i},{i % 3},{3e38 if i % 2 else -3e38}\n" for i in range(16))
    (tmp_path / "train.csv").write_text("a,b,y\n" + rows, encoding="utf-8")
    (tmp_path / "r.toml").write_text(f"""
[run]
output_dir = "{(tmp_path / 'runs').as_posix()}"
[data]
train = "train.csv"
columns = {{ tabular = ["a", "b"], target = "y" }}
[model.encoders.tabular]
type = "tabular-mlp"
dim = 8
hidden = 8
[model.fusion]
type = "concat"
dim = 8
[model.head]
type = "regression"
standardize = false
[train]
max_steps = 3
batch_size = 8
checkpoint_every = 1
""", encoding="utf-8")
    with pytest.raises(TrainingError, match=r"non-finite loss \(inf\) at step 1 \(epoch 0\); try a lower train\.lr "
                                            r"\(now 0\.0003\), train\.precision = 'fp32'"):
        train(load_recipe(tmp_path / "r.toml"), quiet=True)
    assert not list((tmp_path / "runs").glob("*/checkpoints/last")), "no checkpoint of a diverged model"


NAN_ENCODER = '''
import torch
from torch import nn
from mmkit._internal.interfaces import Embedding, Encoder


class PoisonEncoder(Encoder):
    """Encodes a text as its length; the text "poison" becomes NaN (a fault injected into the inputs).

    Args:
        dim: output width.
    """

    modality = "text"

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(1, dim)

    def preprocess(self, raw, train=False):
        return float("nan") if raw == "poison" else float(len(raw))

    def collate(self, items):
        return torch.tensor(items, dtype=torch.float32)[:, None]

    def forward(self, inputs):
        pooled = self.proj(inputs)
        return Embedding(pooled, torch.ones(len(pooled), dtype=torch.bool))
'''


def test_nan_in_inputs_stops_at_that_step_and_keeps_the_last_finite_checkpoint(
        tmp_path: Path, write_module, write_plugin) -> None:
    """A NaN reaching the model at optimizer step k is reported as step k; checkpoints/last holds the
    finite weights of step k-1 (the NaN update is never saved)."""
    from mmkit._internal.data import EpochSampler

    write_module("tp_rel_poison_impl", NAN_ENCODER)
    write_plugin("tp_rel_poison", {"encoder": {"tp-poison": "tp_rel_poison_impl:PoisonEncoder"}})
    registry = Registry(["tp_rel_poison"], env=False)
    n, batch, seed = 24, 8, 5
    order = EpochSampler(n, shuffle=True, seed=seed)._indices()
    poisoned = order[2 * batch + 3]  # met in the third batch: optimizer step 3
    rows = [{"text": "poison" if i == poisoned else "word " * (i % 4 + 1), "label": i % 2} for i in range(n)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (tmp_path / "r.toml").write_text(f"""
[run]
output_dir = "{(tmp_path / 'runs').as_posix()}"
seed = {seed}
[data]
train = "train.jsonl"
[model.encoders.text]
type = "tp-poison"
[model.fusion]
type = "concat"
dim = 8
[model.head]
type = "classification"
[train]
max_steps = 6
batch_size = {batch}
checkpoint_every = 1
""", encoding="utf-8")
    recipe = load_recipe(tmp_path / "r.toml", registry=registry)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 3 "):
        train(recipe, quiet=True, registry=registry)
    last = ckpt.find_checkpoint(tmp_path / "runs" / "run" / "checkpoints", "last")
    assert last is not None and ckpt.read_state(last)["step"] == 2
    assert all(torch.isfinite(t).all() for t in load_file(str(last / ckpt.WEIGHTS)).values())


# ------------------------------------------------------------------------------------- Ctrl-C
@pytest.mark.slow
def test_sigint_writes_a_final_checkpoint_exits_130_and_resume_finishes(tiny: Path) -> None:
    args = [sys.executable, "-m", "mmkit", "run", str(tiny), "--set", "run.name=int", "--set", "train.max_steps=60"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    folder = tiny.parent / "runs" / "int" / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if ckpt.read_state(folder / "last")["step"] >= 2:
                break
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    last = ckpt.find_checkpoint(folder, "last")
    step = ckpt.read_state(last)["step"]
    assert 2 <= step < 60, "the run was not interrupted mid-training"
    assert f"interrupted at step {step}; checkpoint written" in err and "--resume" in err
    assert ckpt.read_training_state(last)["optimizer"]["state"], "optimizer state saved with the checkpoint"
    # (a Ctrl-C landing inside a save may leave a temp folder: see test_ctrl_c_inside_a_save_*)
    done = subprocess.run(args + ["--resume", "--quiet"], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _strict_json((tiny.parent / "runs" / "int" / "summary.json").read_text())
    assert summary["steps"] == 60 and ckpt.read_state(folder / "last")["step"] == 60


# ------------------------------------------------------------------------------------- SIGKILL during saves
KILL_HELPER = r'''
import json, os, random, select, signal, sys, time
import torch
from torch import nn
from safetensors.torch import load_file
from mmkit._internal import checkpoint as ckpt

torch.set_num_threads(1)  # no OpenMP pool before fork()
folder, kills, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from pathlib import Path
folder = Path(folder)
model = nn.Sequential(nn.Linear(1024, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 1024))
big = torch.zeros(2 * 1024 * 1024)  # optimizer-like state in training_state.pt
rng = random.Random(seed)
report = []


def check(found):
    step = ckpt.read_state(found)["step"]
    weights = load_file(str(found / ckpt.WEIGHTS))
    values = {float(t.min()) for t in weights.values()} | {float(t.max()) for t in weights.values()}
    ts = ckpt.read_training_state(found)
    return step, sorted(values), float(ts["v"].min()), float(ts["v"].max())


for k in range(kills):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: saves versions v, v+1, ... until it is killed
        try:
            os.close(r)
            found = ckpt.find_checkpoint(folder, "last")
            v = ckpt.read_state(found)["step"] if found else 0
            while True:
                v += 1
                with torch.no_grad():
                    for p in model.parameters():
                        p.fill_(float(v))
                    big.fill_(float(v))
                ckpt.save_checkpoint(folder, "last", model, {"step": v}, {"v": big})
                os.write(w, f"{v}\n".encode())
        finally:
            os._exit(1)
    os.close(w)
    buf = b""
    deadline = time.time() + 120
    while b"\n" not in buf and time.time() < deadline:  # at least one complete save of this writer
        if select.select([r], [], [], 1.0)[0]:
            buf += os.read(r, 4096)
    time.sleep(rng.uniform(0.0, 0.4))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        buf += chunk
    os.close(r)
    reported = [int(x) for x in buf.split()]
    found = ckpt.find_checkpoint(folder, "last")
    entry = {"kill": k, "last_reported": reported[-1] if reported else None,
             "tmp_left": len(list(folder.glob(".tmp-*"))), "old_left": len(list(folder.glob(".old-*")))}
    entry["found"] = None if found is None else check(found)
    report.append(entry)
print(json.dumps(report))
'''


def _kill_during_saves(tmp_path: Path, kills: int) -> list[dict[str, Any]]:
    helper = tmp_path / "kill_helper.py"
    helper.write_text(KILL_HELPER, encoding="utf-8")
    done = subprocess.run([sys.executable, str(helper), str(tmp_path / "ck"), str(kills), "7"],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kills", [pytest.param(5, id="5-kills"), pytest.param(30, id="30-kills",
                                                                                 marks=pytest.mark.slow)])
def test_sigkill_during_checkpoint_writes_never_loses_the_previous_one(tmp_path: Path, kills: int) -> None:
    """A writer saving ~24 MB checkpoints (weights all = v, state step = v, training_state all = v) in a
    loop is SIGKILLed at random moments; after each kill find_checkpoint gives a complete checkpoint
    whose three files agree on one version, at least the last version reported saved."""
    report = _kill_during_saves(tmp_path, kills)
    assert len(report) == kills
    for entry in report:
        assert entry["found"] is not None, entry
        step, weight_values, ts_min, ts_max = entry["found"]
        assert weight_values == [float(step)] and ts_min == ts_max == float(step), entry
        assert entry["last_reported"] <= step <= entry["last_reported"] + 1, entry
    versions = [e["found"][0] for e in report]
    assert versions == sorted(versions), "a later kill never goes back to an older version"


def test_stale_temp_folders_of_killed_saves_are_cleaned_by_the_next_save(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 4)
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, "last", model, {"step": 1})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a PID that no longer runs
    stale = folder / f".tmp-last-{dead}-deadbeef"  # killed before its renames
    stale.mkdir()
    (stale / ckpt.WEIGHTS).write_bytes(b"\0" * 1024)
    old = folder / ".old-last-cafebabe"  # killed after its renames, before rmtree(old)
    old.mkdir()
    (old / ckpt.STATE).write_text('{"step": 0}')
    ckpt.save_checkpoint(folder, "last", model, {"step": 2})
    assert not stale.exists() and not old.exists()
    assert ckpt.read_state(ckpt.find_checkpoint(folder, "last"))["step"] == 2


def test_recovery_picks_a_complete_old_checkpoint(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 4)
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, "last", model, {"step": 5})
    os.rename(folder / "last", folder / ".old-last-aaaaaaaa")  # complete: killed between the two renames
    partial = folder / ".old-last-bbbbbbbb"  # an older one whose deletion (rmtree) was killed half-way
    partial.mkdir()
    (partial / ckpt.STATE).write_text('{"step": 4}')
    now = time.time()
    os.utime(folder / ".old-last-aaaaaaaa", (now - 60, now - 60))
    os.utime(partial, (now, now))  # rmtree touched it last
    found = ckpt.find_checkpoint(folder, "last")
    assert found is not None and ckpt.read_state(found)["step"] == 5


@pytest.mark.parametrize("where", ["writing", "between_renames"])
def test_ctrl_c_inside_a_save_leaves_the_previous_checkpoint_in_place(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Seen for real with SIGINT to `mmkit run` and checkpoint_every = 1 (the interrupt lands in a save)."""
    model = torch.nn.Linear(3, 2)
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, "last", model, {"step": 1})

    def interrupt(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    if where == "writing":
        monkeypatch.setattr(ckpt, "_write_json", interrupt)
    else:
        real_rename, calls = os.rename, []

        def rename(src: Any, dst: Any) -> None:
            calls.append(dst)
            if len(calls) == 2:
                interrupt()
            real_rename(src, dst)

        monkeypatch.setattr(ckpt.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(folder, "last", model, {"step": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["last"]
    assert ckpt.read_state(folder / "last")["step"] == 1


# ------------------------------------------------------------------------------------- disk full
def _enospc(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("target", ["weights", "second_rename"])
def test_disk_full_during_a_save_is_reported_and_keeps_the_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     target: str) -> None:
    import safetensors.torch

    model = torch.nn.Linear(3, 2)
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, "last", model, {"step": 1})
    with torch.no_grad():
        model.weight.add_(1.0)
    if target == "weights":
        monkeypatch.setattr(safetensors.torch, "save_model", _enospc)
    else:
        real_rename, calls = os.rename, []

        def rename(src: Any, dst: Any) -> None:
            calls.append(dst)
            if len(calls) == 2:  # final -> .old-* worked; .tmp-* -> final hits the full disk
                _enospc()
            real_rename(src, dst)

        monkeypatch.setattr(ckpt.os, "rename", rename)
    with pytest.raises(ckpt.CheckpointError, match=r"could not write checkpoint .*last: No space left on device "
                                                   r"\(the previous checkpoint is kept\)"):
        ckpt.save_checkpoint(folder, "last", model, {"step": 2})
    monkeypatch.undo()
    found = ckpt.find_checkpoint(folder, "last")
    assert found is not None and ckpt.read_state(found)["step"] == 1
    restored = torch.nn.Linear(3, 2)
    ckpt.load_weights(restored, found / ckpt.WEIGHTS)
    assert not torch.equal(restored.weight, model.weight)  # the old weights, not the unsaved new ones
    assert not list(folder.glob(".tmp-*"))


def test_disk_full_during_training_stops_the_run_with_exit_2_and_resume_recovers(
        tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from mmkit._internal.cli import cli

    real_save, calls = ckpt.save_weights, []

    def save_weights(model: Any, path: Path) -> None:
        calls.append(path)
        if len(calls) == 3:  # steps 1 and 2 are saved, step 3's save hits a full disk
            _enospc()
        real_save(model, path)

    monkeypatch.setattr(ckpt, "save_weights", save_weights)
    result = CliRunner().invoke(cli, ["run", str(tiny), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "error: could not write checkpoint" in result.output and "No space left on device" in result.output
    monkeypatch.undo()
    folder = tiny.parent / "runs" / "tiny" / "checkpoints"
    assert ckpt.read_state(ckpt.find_checkpoint(folder, "last"))["step"] == 2
    resumed = train(load_recipe(tiny), mode="resume", quiet=True)
    assert resumed.summary["steps"] == 4


# ------------------------------------------------------------------------------------- resume
def test_resume_refuses_a_changed_encoder_type_with_a_diff(tiny: Path) -> None:
    train(load_recipe(tiny, ["train.max_steps=1"]), quiet=True)
    changed = tiny.with_name("changed.toml")  # same run, but a sentence-transformer reads the text
    changed.write_text(tiny.read_text().replace('type = "text-transformer"\ndim = 16\nlayers = 1\nheads = 2',
                                                'type = "sentence-transformer"'), encoding="utf-8")
    with pytest.raises(RecipeError) as err:
        train(load_recipe(changed, ["train.max_steps=1", "run.name=tiny"]), mode="resume", quiet=True)
    message = str(err.value)
    assert "cannot resume: the recipe's model differs from the checkpoint's" in message
    assert "model.encoders.text.type: 'text-transformer' -> 'sentence-transformer'" in message
    assert "model.encoders.text.layers: removed (was 1)" in message
    assert "model.encoders.text.normalize: added (False)" in message


# ------------------------------------------------------------------------------------- concurrency
@pytest.mark.slow
def test_two_runs_started_at_once_with_one_name_get_their_own_directories(tiny: Path) -> None:
    args = [sys.executable, "-m", "mmkit", "run", str(tiny), "--quiet", "--json", "--set", "run.name=same",
            "--set", "train.max_steps=3"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-3000:]
    dirs = sorted(Path(_strict_json(out)["run_dir"]).name for out, _ in outs)
    assert dirs == ["same", "same-2"]
    for name in dirs:
        run = tiny.parent / "runs" / name
        summary = _strict_json((run / "summary.json").read_text())
        assert summary["steps"] == 3 and summary["run_dir"] == str(run)
        assert ckpt.read_state(run / "checkpoints" / "last")["step"] == 3
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in records if r["split"] == "final"] == [3]  # one writer per metrics file


def test_overwrite_refuses_a_run_directory_in_use(tmp_path: Path) -> None:
    run_dir, _ = prepare_run_dir(tmp_path / "runs", "busy")
    (run_dir / "metrics.jsonl").write_text("{}\n")
    with RunLock(run_dir):  # another process training here (flock conflicts across open files)
        with pytest.raises(RunDirError, match="another mmkit process is using this run directory"):
            prepare_run_dir(tmp_path / "runs", "busy", mode="overwrite")
        assert (run_dir / "metrics.jsonl").exists()


def test_resume_refuses_a_run_directory_in_use(tiny: Path) -> None:
    first = train(load_recipe(tiny, ["train.max_steps=1"]), quiet=True)
    with RunLock(first.run_dir):
        with pytest.raises(RunDirError, match="another mmkit process is using this run directory"):
            train(load_recipe(tiny, ["train.max_steps=2"]), mode="resume", quiet=True)
    assert ckpt.read_state(first.run_dir / "checkpoints" / "last")["step"] == 1
