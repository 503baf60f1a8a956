"""Fuzz ``mmkit check`` against ``mmkit run`` (finding #34): for random ``[train]`` settings (device,
precision, strategy, monitor, TensorBoard with or without its package, callbacks) ``check`` refuses
exactly when ``run`` refuses, with the same error line, and a refused run leaves no run directory.

The data are valid, so a one-step run can only fail in its setup: what ``check`` must also catch.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import OUTCOMES, invoke, run_property
from hypothesis import strategies as st

from mmkit._internal.cli import cli

SAMPLE, NIGHTLY = 6, 300

RECIPE = """
[run]
name = "chk"
output_dir = "{out}"
[data]
train = "{train}"
val = "{train}"
columns = {{ tabular = ["x"] }}
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

SETTINGS = st.fixed_dictionaries({}, optional={
    "train.device": st.sampled_from(['"auto"', '"cpu"', '"cuda"', '"cuda:1"']),
    "train.precision": st.sampled_from(['"auto"', '"fp32"', '"bf16"', '"fp16"']),
    "train.strategy": st.sampled_from(['"auto"', '"ddp"', '"fsdp"']),
    "train.monitor": st.sampled_from(['"auto"', '"val.loss"', '"val.accuracy"', '"val.macro_f1"', '"accuracy"',
                                      '"val.nope"', '"nope"', '"val.auroc"']),
    "train.monitor_mode": st.sampled_from(['"auto"', '"min"', '"max"']),
    "train.tensorboard": st.sampled_from(["true", "false"]),
    "train.callbacks": st.sampled_from(['[]', '["early-stopping"]', '[{ type = "early-stopping", patience = 1 }]',
                                        '["progress"]']),
})


def _error_line(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith(("error:", "Error:"))), "")


def check_equals_run(work: Path, settings: dict[str, str], no_tensorboard: bool) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    train = work / "train.jsonl"
    train.write_text("".join(json.dumps({"x": float(i), "label": i % 2}) + "\n" for i in range(8)))
    recipe = work / "r.toml"
    recipe.write_text(RECIPE.format(out=(work / "runs").as_posix(), train=train.as_posix()))
    sets = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    saved = sys.modules.get("torch.utils.tensorboard", ...)
    if no_tensorboard:
        sys.modules["torch.utils.tensorboard"] = None  # type: ignore[assignment]  # as if not installed
    try:
        checked = invoke(cli, ["check", str(recipe), *sets], work)
        ran = invoke(cli, ["run", str(recipe), "--quiet", *sets], work)
    finally:
        if saved is ...:
            sys.modules.pop("torch.utils.tensorboard", None)
        else:
            sys.modules["torch.utils.tensorboard"] = saved  # type: ignore[assignment]
    OUTCOMES[f"check/run exit {checked.exit_code}/{ran.exit_code}"] = (
        OUTCOMES.get(f"check/run exit {checked.exit_code}/{ran.exit_code}", 0) + 1)
    assert (checked.exit_code == 0) == (ran.exit_code == 0), (settings, checked.output[-600:], ran.output[-600:])
    if ran.exit_code:
        assert _error_line(checked.output) == _error_line(ran.output), (settings, checked.output, ran.output)
        runs = work / "runs"
        assert not runs.exists() or list(runs.iterdir()) == [], f"a refused run left {list(runs.iterdir())}"


STRATEGY: Any = st.tuples(SETTINGS, st.booleans())


def test_check_equals_run_sample(tmp_path: Path) -> None:
    run_property("check vs run ([train] settings)", STRATEGY, lambda v: check_equals_run(tmp_path / "w", *v),
                 SAMPLE, nightly=False)


@pytest.mark.fuzz
def test_check_equals_run_nightly(tmp_path: Path) -> None:
    run_property("check vs run ([train] settings)", STRATEGY, lambda v: check_equals_run(tmp_path / "w", *v),
                 NIGHTLY, nightly=True)
