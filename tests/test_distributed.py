"""torch.distributed (gloo, 2 CPU processes through torch's launcher) matches a single process; DDP
looks for unused parameters only when the model or the data can leave some without gradients."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmkit._internal.trainer import train
from mmkit._internal.recipe import load_recipe

RECIPE = """
[run]
name = "ddp"
output_dir = "{out}"
seed = 1

[data]
dataset = "toy-tabular"
options = {{ n_train = 40, n_val = 13, n_test = 0, p_missing = 0.0 }}

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
def ddp_stderr() -> dict[str, str]:
    return {}


@pytest.fixture(scope="module")
def runs(ddp_stderr: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("ddp")
    recipe = tmp / "ddp.toml"
    recipe.write_text(RECIPE.format(out=(tmp / "runs").as_posix()), encoding="utf-8")
    single = train(load_recipe(recipe, ["run.output_dir=" + (tmp / "single").as_posix()]), quiet=True)
    cmd = [sys.executable, "-m", "mmkit", "run", str(recipe), "--nproc", "2", "--master-port", str(_free_port()),
           "--set", "train.batch_size=4", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ddp_stderr["text"] = done.stderr
    return {"recipe": recipe, "single": single.run_dir, "ddp": tmp / "runs" / "ddp", "root": tmp / "runs"}


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(runs: dict[str, Path]) -> None:
    a = load_file(str(runs["single"] / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(runs["ddp"] / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


@pytest.mark.slow
def test_eval_over_odd_split_matches_single_process(runs: dict[str, Path]) -> None:
    s1 = json.loads((runs["single"] / "summary.json").read_text())
    s2 = json.loads((runs["ddp"] / "summary.json").read_text())
    assert s2["world_size"] == 2
    for key, value in s1["final"]["val"].items():
        assert s2["final"]["val"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


@pytest.mark.slow
def test_only_rank_zero_writes(runs: dict[str, Path]) -> None:
    assert sorted(p.name for p in runs["root"].iterdir()) == ["ddp"]
    assert sorted(p.name for p in (runs["ddp"] / "checkpoints").iterdir()) == ["best", "last"]
    lines = (runs["ddp"] / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines if json.loads(x)["split"] == "val"]
    assert steps == sorted(set(steps)), "each evaluation is logged once"


@pytest.mark.slow
def test_resume_two_process_checkpoint_in_one_process(runs: dict[str, Path]) -> None:
    rec = load_recipe(runs["recipe"], ["train.max_steps=6"])
    result = train(rec, mode="resume", quiet=True)
    assert result.run_dir == runs["ddp"]
    assert result.summary["steps"] == 6 and result.summary["world_size"] == 1


@pytest.mark.slow
def test_no_unused_parameter_search_and_no_warning_when_nothing_can_be_unused(
        runs: dict[str, Path], ddp_stderr: dict[str, str]) -> None:
    assert "find_unused_parameters" not in ddp_stderr["text"]


def _model_and_plan(tmp_path: Path, *overrides: str):
    from mmkit._internal.assembly import assemble, load_splits, plan_data
    from mmkit._internal.registry import get_registry

    path = tmp_path / "u.toml"
    path.write_text(RECIPE.format(out=tmp_path.as_posix()), encoding="utf-8")
    rec = load_recipe(path, overrides)
    registry = get_registry()
    plan = plan_data(rec, load_splits(rec, registry))
    return assemble(rec, registry, plan), plan, registry


@pytest.mark.parametrize(("overrides", "expected"), [
    ((), []),
    (("data.options.p_missing=0.3",), ["field 'text' is absent from"]),
    (("model.fusion.modality_dropout=0.2",), ["fusion drops modalities in training (modality_dropout = 0.2)"]),
    (("data.options.p_missing=0.3", "model.encoders.text.freeze=true"), []),  # frozen: nothing to reduce
])
def test_find_unused_parameters_is_decided_from_the_model_and_its_rows(
        tmp_path: Path, overrides: tuple[str, ...], expected: list[str]) -> None:
    from mmkit._internal.distributed import DDPStrategy, Dist, unused_parameter_reasons

    model, plan, registry = _model_and_plan(tmp_path, *overrides)
    reasons = unused_parameter_reasons(model, plan, registry)
    assert len(reasons) == len(expected) and all(r.startswith(e) for r, e in zip(reasons, expected)), reasons
    said: list[str] = []
    strategy = DDPStrategy(Dist(), torch.device("cpu"))
    strategy.prepare(model, plan, registry, said.append)
    assert strategy.find_unused is bool(expected)
    assert len(said) == (1 if expected else 0)  # one line on rank 0, nothing when off


def test_a_module_can_declare_parameters_it_may_leave_unused(tmp_path: Path) -> None:
    from mmkit._internal.distributed import unused_parameter_reasons

    model, plan, registry = _model_and_plan(tmp_path)
    model.head.may_leave_parameters_unused = True
    assert unused_parameter_reasons(model, plan, registry) == [
        "head may leave parameters unused (may_leave_parameters_unused)"]
