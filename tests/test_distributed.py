"""torch.distributed (gloo, 2 CPU processes through torch's launcher) matches a single process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmkit.trainer import train
from mmkit.recipe import load_recipe

pytestmark = pytest.mark.slow

RECIPE = """
[run]
name = "ddp"
output_dir = "{out}"
seed = 1

[data]
dataset = "toy-tabular"
options = {{ n_train = 40, n_val = 13, n_test = 0, p_missing = 0.1 }}

[model.encoders.tabular]
type = "tabular-mlp"
dim = 16
hidden = 32

[model.encoders.text]
type = "text-transformer"
dim = 16
layers = 1
heads = 2
dropout = 0.0

[model.fusion]
type = "concat"
dim = 16
dropout = 0.0

[model.head]
type = "regression"

[train]
max_steps = 4
batch_size = 8
# SGD: AdamW divides by sqrt(v), which turns float-rounding noise on parameters whose true gradient
# is zero (the attention key bias) into lr-sized steps, so it cannot show equality to 1e-5.
optimizer = "sgd"
lr = 0.05
eval_every = 2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    recipe = tmp / "ddp.toml"
    recipe.write_text(RECIPE.format(out=(tmp / "runs").as_posix()), encoding="utf-8")
    single = train(load_recipe(recipe, ["run.output_dir=" + (tmp / "single").as_posix()]), quiet=True)
    cmd = [sys.executable, "-m", "mmkit", "run", str(recipe), "--nproc", "2", "--master-port", str(_free_port()),
           "--set", "train.batch_size=4", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return {"recipe": recipe, "single": single.run_dir, "ddp": tmp / "runs" / "ddp", "root": tmp / "runs"}


def test_two_processes_match_one_process_with_the_same_global_batch(runs: dict[str, Path]) -> None:
    a = load_file(str(runs["single"] / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(runs["ddp"] / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


def test_eval_over_odd_split_matches_single_process(runs: dict[str, Path]) -> None:
    s1 = json.loads((runs["single"] / "summary.json").read_text())
    s2 = json.loads((runs["ddp"] / "summary.json").read_text())
    assert s2["world_size"] == 2
    for key, value in s1["final"]["val"].items():
        assert s2["final"]["val"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_only_rank_zero_writes(runs: dict[str, Path]) -> None:
    assert sorted(p.name for p in runs["root"].iterdir()) == ["ddp"]
    assert sorted(p.name for p in (runs["ddp"] / "checkpoints").iterdir()) == ["best", "last"]
    lines = (runs["ddp"] / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines if json.loads(x)["split"] == "val"]
    assert steps == sorted(set(steps)), "each evaluation is logged once"


def test_resume_two_process_checkpoint_in_one_process(runs: dict[str, Path]) -> None:
    rec = load_recipe(runs["recipe"], ["train.max_steps=6"])
    result = train(rec, mode="resume", quiet=True)
    assert result.run_dir == runs["ddp"]
    assert result.summary["steps"] == 6 and result.summary["world_size"] == 1
