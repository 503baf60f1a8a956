"""FSDP2 (`train.strategy = "fsdp"`) on CPU with gloo: 2 processes give the same weights and
validation metrics as 1 process with the same global batch; a 2-process checkpoint (optimizer state
sharded with torch.distributed.checkpoint) resumes in 2 processes and in 1; frozen encoders with the
frozen-encoder cache train; `mmkit check` lists the units."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from mmkit import Callback
from mmkit._internal.cli import cli
from mmkit._internal.distributed import Dist, Strategy, make_strategy
from mmkit._internal.errors import RecipeError
from mmkit._internal.recipe import load_recipe
from mmkit._internal.trainer import train

RECIPE = """
[run]
name = "fsdp"
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
type = "transformer"
dim = 16
layers = 2
heads = 2
dropout = 0.0

[model.head]
type = "regression"

[train]
max_steps = 8
batch_size = 8
# SGD: AdamW divides by sqrt(v), which turns float-rounding noise on parameters whose true gradient is
# zero into lr-sized steps (see tests/test_distributed.py)
optimizer = "sgd"
lr = 0.05
# the transformer fusion reads the tabular encoder's tokens only, so its MLP gets no gradient: one
# process leaves it alone, FSDP2 gives it a zero gradient (it reduce-scatters whole units) which
# weight decay would then shrink (docs/distributed.md)
weight_decay = 0.0
eval_every = 4
"""

# interrupts like Ctrl-C at a step: the 2-process run stops at the end of epoch 0 (40 rows / 8 = 5
# steps), so a resume in 1 process continues the same data order
STOP_PLUGIN = """
import mmkit


class StopAt(mmkit.Callback):
    def __init__(self, step: int = 5) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.step >= self.step:
            trainer.request_stop("test", interrupt=True)


@mmkit.hookimpl
def register_callbacks(register):
    register("stop-at-test", "fsdp_stop_plugin:StopAt", summary="test")
"""

# 2 processes sum the per-rank gradients in another order than 1 process does over 8 samples: the
# weights agree to float32 rounding (observed ~1e-8 after 8 SGD steps); 1e-5 leaves room for it.
ATOL, RTOL = 1e-5, 1e-4


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=ATOL, rtol=RTOL), (key, float((a[key] - b[key]).abs().max()))


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "f.toml"
    path.write_text(RECIPE.format(out=(tmp_path / "runs").as_posix()), encoding="utf-8")
    return path


def _model_and_plan(recipe: Path, *overrides: str):
    from mmkit._internal.assembly import assemble, load_splits, plan_data
    from mmkit._internal.registry import get_registry

    rec = load_recipe(recipe, overrides)
    registry = get_registry()
    plan = plan_data(rec, load_splits(rec, registry))
    return assemble(rec, registry, plan), plan, registry


def test_units_are_each_encoder_each_fusion_block_the_fusion_the_head_then_the_root(recipe: Path) -> None:
    from mmkit._internal.fsdp import fsdp_unit_sizes, fsdp_units

    model, _, _ = _model_and_plan(recipe)
    units = fsdp_units(model)
    assert units == ["encoders.tabular", "encoders.text", "fusion.layers.0", "fusion.layers.1", "fusion", "head", ""]
    sizes = fsdp_unit_sizes(model, units)
    assert sum(n for n, _ in sizes.values()) == sum(p.numel() for p in model.parameters())
    assert sizes["fusion"][0] < sum(p.numel() for p in model.fusion.parameters())  # its blocks are units of their own


def test_fsdp_refuses_absent_modalities_and_one_process_trains_the_whole_model(recipe: Path) -> None:
    from mmkit._internal.fsdp import FSDPStrategy

    model, plan, registry = _model_and_plan(recipe, "data.options.p_missing=0.3")
    with pytest.raises(RecipeError, match=r"needs every rank to run every encoder.*field 'text' is absent from"):
        FSDPStrategy(Dist(), torch.device("cpu")).prepare(model, plan, registry)
    assert type(make_strategy("fsdp", Dist(), torch.device("cpu"))) is Strategy


def test_check_reports_what_will_be_sharded(recipe: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(recipe), "--no-rows", "--set", "train.strategy=fsdp",
                                      "--set", "model.encoders.text.freeze=true"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "fsdp (with --nproc > 1; one process trains the whole model): 6 units sharded" in result.output
    assert "encoders.text: " in result.output and "(frozen)" in result.output
    assert "fusion.layers.1: " in result.output and "root (the rest): 0 parameters" in result.output


def _launch(recipe: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mmkit", "run", str(recipe), "--nproc", "2", "--master-port", str(_port()),
           "--quiet", "--set", "train.strategy=fsdp", "--set", "train.batch_size=4", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)


@pytest.mark.slow
def test_two_process_fsdp_matches_one_process_and_resumes_in_two_and_in_one(recipe: Path, tmp_path: Path) -> None:
    (tmp_path / "fsdp_stop_plugin.py").write_text(textwrap.dedent(STOP_PLUGIN), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
           "MMKIT_PLUGINS": "fsdp_stop_plugin", "OMP_NUM_THREADS": "1"}
    single = train(load_recipe(recipe, ["run.name=single"]), quiet=True)
    cut = _launch(recipe, env, "--set", 'train.callbacks=["stop-at-test"]')
    assert cut.returncode == 130, cut.stderr[-3000:]  # interrupted (resumable), reported by rank 0
    run = recipe.parent / "runs" / "fsdp"
    shards = run / "checkpoints" / "last" / "optimizer"
    assert (shards / ".metadata").is_file() and len(list(shards.glob("*.distcp"))) == 2
    assert json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"] == 5
    copy = recipe.parent / "runs" / "fsdp-copy"
    shutil.copytree(run, copy)
    done = _launch(recipe, env, "--resume", "--set", "train.callbacks=[]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "find_unused_parameters" not in done.stderr and done.stderr.count("returned a view tensor") <= 2
    _assert_close(_weights(single.run_dir), _weights(run))
    s1 = json.loads((single.run_dir / "summary.json").read_text())
    s2 = json.loads((run / "summary.json").read_text())
    assert s2["world_size"] == 2 and s2["steps"] == 8
    for key, value in s1["final"]["val"].items():
        assert s2["final"]["val"][key] == pytest.approx(value, rel=RTOL, abs=ATOL), key
    # the 2-process checkpoint in 1 process: batch 8 keeps the global batch; DCP loads the sharded state
    one = train(load_recipe(recipe, ["run.name=fsdp-copy", "train.strategy=fsdp"]), mode="resume", quiet=True)
    assert one.summary["steps"] == 8 and one.summary["world_size"] == 1
    _assert_close(_weights(single.run_dir), _weights(copy))


@pytest.mark.slow
def test_frozen_encoder_with_the_cache_and_accumulation_under_fsdp(recipe: Path) -> None:
    """Also 2 x 2 micro-batches of 2 per step (no reduce-scatter on the first) and uneven evaluation
    shards (13 rows in batches of 2: 4 on rank 0, 3 on rank 1; the ranks must not hang)."""
    frozen = ["--set", "model.encoders.text.freeze=true", "--set", "train.max_steps=4", "--set", "train.batch_size=2",
              "--set", "train.grad_accum=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = _launch(recipe, env, *frozen)
    assert done.returncode == 0, done.stderr[-3000:]
    single = train(load_recipe(recipe, ["run.name=single", "model.encoders.text.freeze=true", "train.max_steps=4"]),
                   quiet=True)
    summary = json.loads((recipe.parent / "runs" / "fsdp" / "summary.json").read_text())
    assert summary["cache"], "the frozen text encoder's outputs were cached"
    a, b = _weights(single.run_dir), _weights(recipe.parent / "runs" / "fsdp")
    _assert_close(a, b)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoders.text."))  # frozen: untouched


class _StopAt(Callback):
    def on_step_end(self, trainer) -> None:
        if trainer.state.step >= 5:
            trainer.request_stop("test", interrupt=True)


@pytest.mark.slow
def test_one_process_checkpoint_resumes_under_fsdp(recipe: Path) -> None:
    """The plain optimizer state of a 1-process run is named and sharded on load (a parameter that
    never had a gradient has no state yet)."""
    single = train(load_recipe(recipe, ["run.name=single"]), quiet=True)
    cut = train(load_recipe(recipe, ["train.strategy=fsdp"]), quiet=True, callbacks=[_StopAt()])
    assert cut.interrupted
    done = _launch(recipe, {**os.environ, "OMP_NUM_THREADS": "1"}, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_close(_weights(single.run_dir), _weights(cut.run_dir))


def test_check_says_fsdp_would_refuse_absent_modalities(recipe: Path) -> None:
    result = CliRunner().invoke(cli, ["check", str(recipe), "--no-rows", "--set", "train.strategy=fsdp",
                                      "--set", "data.options.p_missing=0.3"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "refused with several processes: field 'text' is absent from" in result.output
