"""--resume refuses silent changes: the whole resolved recipe and the data manifests are compared
with the run's; safe keys (train longer, log differently) are allowed and recorded in history.jsonl;
the resume hint repeats the command's --set overrides."""

from __future__ import annotations

import random
import shlex
from pathlib import Path

import pytest

from mmkit import Callback
from mmkit._internal.errors import RecipeError
from mmkit._internal.recipe import load_recipe
from mmkit._internal.resume import Change, resume_command, split_changes
from mmkit._internal.rundir import RunDir
from mmkit._internal.trainer import train

RECIPE = """
[run]
name = "tab"
output_dir = "{out}"
seed = 1

[data]
train = "train.csv"
columns = {{ tabular = ["x1", "x2"] }}

[model.encoders.tabular]
type = "tabular-mlp"
dim = 8
hidden = 16

[model.fusion]
type = "concat"
dim = 8

[model.head]
type = "classification"

[train]
max_steps = 3
batch_size = 8
"""


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.step >= self.step:
            trainer.request_stop("test interrupt", interrupt=True)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    rng = random.Random(0)
    lines = ["x1,x2,label"]
    for _ in range(24):
        a, b = rng.random(), rng.random()
        lines.append(f"{a:.3f},{b:.3f},{'yes' if a > b else 'no'}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(out=(tmp_path / "runs").as_posix()), encoding="utf-8")
    return path


def test_changed_lr_is_refused_with_the_diff_and_nothing_is_rewritten(recipe: Path) -> None:
    first = train(load_recipe(recipe, ["train.lr=0.01"]), quiet=True, overrides=["train.lr=0.01"])
    resolved = (first.run_dir / "recipe.resolved.toml").read_text()
    with pytest.raises(RecipeError) as err:
        train(load_recipe(recipe, ["train.lr=0.02", "train.weight_decay=0.0"]), mode="resume", quiet=True)
    message = str(err.value)
    assert "cannot resume: the recipe or data differs from the run's" in message
    assert "train.lr: 0.01 -> 0.02" in message and "train.weight_decay: 0.01 -> 0.0" in message
    assert "max_steps" not in message.split("keys a resume may change")[0]
    assert (first.run_dir / "recipe.resolved.toml").read_text() == resolved
    assert [r["event"] for r in RunDir(first.run_dir).read_history()] == ["start"]


def test_raised_max_steps_continues_and_is_recorded(recipe: Path) -> None:
    first = train(load_recipe(recipe), quiet=True)
    assert first.summary["steps"] == 3
    more = train(load_recipe(recipe, ["train.max_steps=6", "train.log_every=1"]), mode="resume", quiet=True,
                 overrides=["train.max_steps=6", "train.log_every=1"])
    assert more.run_dir == first.run_dir and more.summary["steps"] == 6
    history = RunDir(first.run_dir).read_history()
    assert [r["event"] for r in history] == ["start", "resume"]
    assert history[1]["step"] == 3 and history[1]["overrides"] == ["train.max_steps=6", "train.log_every=1"]
    assert {c["key"]: (c["old"], c["new"]) for c in history[1]["changes"]} == {
        "train.max_steps": (3, 6), "train.log_every": (10, 1)}
    assert load_recipe(first.run_dir / "recipe.resolved.toml").train["max_steps"] == 6


def test_a_run_recorded_before_lr_mult_auto_resumes_with_its_recorded_number(recipe: Path) -> None:
    """A run made before ``lr_mult = "auto"`` recorded 1.0; the same recipe (now "auto") still resumes it,
    with 1.0, and a sweep point recorded that way counts as the same run."""
    from mmkit._internal.sweep import _check_same_recipe

    first = train(load_recipe(recipe), quiet=True)
    resolved = first.run_dir / "recipe.resolved.toml"
    text = resolved.read_text()
    assert "lr_mult = \"auto\"" in text
    resolved.write_text(text.replace("lr_mult = \"auto\"", "lr_mult = 1.0"))  # as the older version wrote it
    for state in (first.run_dir / "checkpoints").glob("*/state.json"):  # and the checkpoints' model signature
        state.write_text(state.read_text().replace('"lr_mult": "auto"', '"lr_mult": 1.0'))
    _check_same_recipe(first.run_dir, load_recipe(recipe))  # no SweepError
    more = train(load_recipe(recipe, ["train.max_steps=5"]), mode="resume", quiet=True)
    assert more.summary["steps"] == 5
    assert load_recipe(resolved).encoders["tabular"].lr_mult == 1.0
    # an explicit, different number is still a refused change
    with pytest.raises(RecipeError, match=r"model\.encoders\.tabular\.lr_mult: 1\.0 -> 0\.5"):
        train(load_recipe(recipe, ["train.max_steps=6", "model.encoders.tabular.lr_mult=0.5"]), mode="resume",
              quiet=True)


def test_changed_manifest_content_is_a_difference(recipe: Path) -> None:
    train(load_recipe(recipe), quiet=True)
    csv = recipe.parent / "train.csv"
    csv.write_text(csv.read_text().replace("yes", "no", 1), encoding="utf-8")  # same size, other content
    with pytest.raises(RecipeError, match=r"data manifest train \(.*train\.csv\) sha256: '[0-9a-f]{64}' -> "):
        train(load_recipe(recipe, ["train.max_steps=6"]), mode="resume", quiet=True)


def test_interrupted_run_prints_a_hint_with_the_commands_overrides(recipe: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    overrides = ["train.lr=0.01", "model.fusion.dim=8", "train.callbacks=[]"]
    cut = train(load_recipe(recipe, overrides), callbacks=[InterruptAt(2)], overrides=overrides)
    assert cut.interrupted
    err = " ".join(capsys.readouterr().err.split())
    hint = err.split("Resume with: ")[1].split(" --set run.name=tab")[0] + " --set run.name=tab"
    args = shlex.split(hint)
    assert args[:4] == ["mmkit", "run", str(recipe), "--resume"]
    assert args[4:] == ["--set", "train.lr=0.01", "--set", "model.fusion.dim=8", "--set", "train.callbacks=[]",
                        "--set", "run.name=tab"]
    assert RunDir(cut.run_dir).read_history()[0]["overrides"] == overrides
    resumed = train(load_recipe(recipe, overrides), mode="resume", quiet=True)  # the hint's settings resume
    assert resumed.summary["steps"] == 3


def test_resume_command_quotes_and_replaces_the_run_name() -> None:
    cmd = resume_command("my recipes/r.toml", "run-2", ["run.name=run", "data.columns.text=caption text"])
    assert shlex.split(cmd) == ["mmkit", "run", "my recipes/r.toml", "--resume", "--set",
                                "data.columns.text=caption text", "--set", "run.name=run-2"]


def test_batch_size_may_change_only_with_the_same_global_batch() -> None:
    change = [Change("train.batch_size", 4, 8)]
    assert split_changes(change, old_world=2, new_world=1) == ([], change)  # 2 x 4 == 1 x 8
    assert split_changes(change, old_world=1, new_world=1) == (change, [])


def test_a_key_the_run_predates_counts_as_its_default() -> None:
    from mmkit._internal.resume import diff_recipes

    old = {"train": {"lr": 0.01}}
    assert diff_recipes(old, {"train": {"lr": 0.01, "compile": False}}) == []  # added later, at its default
    assert [str(c) for c in diff_recipes(old, {"train": {"lr": 0.01, "compile": True}})] == [
        "train.compile: (absent) -> True"]
