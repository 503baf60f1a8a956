"""SIGTERM/SIGUSR1 stop a real `mmkit run` after the current optimizer step with a resumable
checkpoint and exit code 75; --resume ends bitwise-equal to an uninterrupted run; with 2 processes a
signal to one rank stops both after the same step."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmkit._internal import checkpoint as ckpt
from mmkit._internal.preempt import EXIT_PREEMPTED, Preemption
from mmkit._internal.recipe import load_recipe
from mmkit._internal.trainer import train

RECIPE = """
[run]
name = "ref"
output_dir = "{out}"
seed = 2

[data]
dataset = "toy-tabular"
options = {{ n_train = 40, n_val = 0, n_test = 0 }}

[model.encoders.tabular]
type = "tabular-mlp"
dim = 16
hidden = 32

[model.fusion]
type = "concat"
dim = 16
dropout = 0.1

[model.head]
type = "regression"

[train]
max_steps = 150
batch_size = 8
lr = 0.01
threads = 1  # not "auto", which backs off under load: the runs compared bitwise must use the same count
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(RECIPE.format(out=(tmp_path / "runs").as_posix()), encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    # the recipe sets one intra-op thread; the environment agrees (no larger OpenMP pool is started)
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _wait_for_step(last: Path, proc: subprocess.Popen, step: int) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            if ckpt.read_state(last)["step"] >= step:
                return
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.02)
    raise AssertionError(f"the run never reached step {step}: {proc.poll()}")


def _run_args(recipe: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmkit", "run", str(recipe), "--quiet", "--set", f"run.name={name}",
            "--set", "train.checkpoint_every=1", *extra]


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)])
def test_signal_stops_after_the_step_exits_75_and_resume_is_bitwise_equal(recipe: Path, sig: int) -> None:
    ref = train(load_recipe(recipe), quiet=True)
    args = _run_args(recipe, "cut")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    last = recipe.parent / "runs" / "cut" / "checkpoints" / "last"
    _wait_for_step(last, proc, 3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    stopped = ckpt.read_state(last)["step"]
    assert 3 <= stopped < 150, "the signal did not land mid-training"
    assert not (last.parent.parent / "summary.json").exists()
    assert not list(last.parent.glob(".tmp-*")), "a temp checkpoint folder was left behind"
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=_env(), timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ckpt.read_state(last)["step"] == 150
    a = (ref.run_dir / "checkpoints" / "last" / ckpt.WEIGHTS).read_bytes()
    assert a == (last / ckpt.WEIGHTS).read_bytes(), "weights after preemption + resume differ"


def test_handlers_are_restored_after_training(recipe: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)
    with Preemption() as p:
        assert signal.getsignal(signal.SIGTERM) == p._handle
        os.kill(os.getpid(), signal.SIGUSR1)  # only sets the flag
        assert p.signum == signal.SIGUSR1
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGUSR1)) == before


@pytest.mark.slow
def test_two_processes_stop_after_the_same_step_when_one_rank_is_signalled(recipe: Path) -> None:
    no_dropout = "model.fusion.dropout=0.0"  # each rank draws its own masks: no match with 1 process
    ref = train(load_recipe(recipe, [no_dropout]), quiet=True)  # 1 process x 8 == 2 processes x 4
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = _run_args(recipe, "cut2", "--nproc", "2", "--master-port", str(port), "--set", "train.batch_size=4",
                     "--set", no_dropout)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    last = recipe.parent / "runs" / "cut2" / "checkpoints" / "last"
    _wait_for_step(last, proc, 3)
    workers = [w for t in _children(proc.pid) for w in _children(t)]
    rank1 = [w for w in workers if b"\0RANK=1\0" in b"\0" + Path(f"/proc/{w}/environ").read_bytes()]
    assert len(rank1) == 1, workers
    os.kill(rank1[0], signal.SIGTERM)  # rank 0 is not signalled: it learns through the all-reduce
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "Traceback" not in err
    stopped = ckpt.read_state(last)["step"]
    assert 3 <= stopped < 150
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_file(str(ref.run_dir / "checkpoints" / "last" / ckpt.WEIGHTS)), load_file(str(last / ckpt.WEIGHTS))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key
