"""The training engine end to end on tiny models: run dirs, metrics, checkpoints, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmkit import Callback
from mmkit._internal import checkpoint as ckpt
from mmkit._internal.errors import RecipeError
from mmkit._internal.optim import lr_factor
from mmkit._internal.recipe import load_recipe
from mmkit._internal.trainer import train


class InterruptAt(Callback):
    """What Ctrl-C does, at an exact optimizer step: checkpoint, no summary, resumable."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.state.step >= self.step:
            trainer.request_stop(f"test interrupt at step {self.step}", interrupt=True)


@pytest.fixture
def tiny_recipe(tmp_path: Path, write_tiny_recipe) -> Path:
    return write_tiny_recipe(tmp_path / "tiny.toml", "data.options.n_train=48", "data.options.n_val=20",
                             "data.options.n_test=12", "train.max_steps=8", "train.checkpoint_every=2")


def _weights(run_dir: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / name / ckpt.WEIGHTS))


def test_run_writes_the_run_directory(tiny_recipe: Path) -> None:
    result = train(load_recipe(tiny_recipe), quiet=True)
    run = result.run_dir
    assert run.name == "tiny"
    for name in ("recipe.resolved.toml", "metrics.jsonl", "summary.json"):
        assert (run / name).is_file(), name
    for name in ("last", "best"):
        assert (run / "checkpoints" / name / ckpt.WEIGHTS).is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 8
    assert set(summary["final"]) == {"val", "test"}
    assert 0.0 <= summary["final"]["val"]["accuracy"] <= 1.0
    assert summary["samples_per_s"] > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in records} >= {"val", "final"}
    epochs = [r for r in records if r["split"] == "epoch"]  # 8 steps of 6 per epoch: one whole epoch
    assert len(epochs) == 1 and epochs[0]["epoch"] == 0 and epochs[0]["metrics"]["seconds"] > 0
    # every default is filled in the resolved recipe
    resolved = load_recipe(run / "recipe.resolved.toml")
    assert resolved.train["weight_decay"] == 0.01
    assert resolved.fusion.params["dim"] == 16 and "dropout" in resolved.fusion.params
    assert resolved.encoders["image"].params["model"] == "test_resnet"


def test_existing_run_dir_is_never_overwritten(tiny_recipe: Path) -> None:
    rec = load_recipe(tiny_recipe, ["train.max_steps=1"])
    first = train(rec, quiet=True)
    second = train(rec, quiet=True)
    assert second.renamed and second.run_dir.name == "tiny-2"
    assert (first.run_dir / "summary.json").exists()
    third = train(rec, mode="overwrite", quiet=True)
    assert third.run_dir == first.run_dir and not third.renamed


def test_resume_after_interruption_matches_uninterrupted_run(tiny_recipe: Path) -> None:
    full = train(load_recipe(tiny_recipe, ["run.name=full"]), quiet=True)
    rec = load_recipe(tiny_recipe, ["run.name=cut"])
    cut = train(rec, quiet=True, callbacks=[InterruptAt(5)])
    assert cut.interrupted
    assert ckpt.read_state(cut.run_dir / "checkpoints" / "last")["step"] == 5
    resumed = train(rec, mode="resume", quiet=True)
    assert resumed.summary["steps"] == 8
    a, b = _weights(full.run_dir), _weights(resumed.run_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_recipe: Path) -> None:
    """Kill a real `mmkit run` process mid-training, resume it, compare with an uninterrupted run."""
    # one intra-op thread in both runs, set in the recipe: float reductions (a batch-norm bias gradient) differ
    # in their last bit between 1 and 2 threads, and `threads = "auto"` backs off to 1 when a probe finds the
    # cores busy, so on a loaded machine the reference and the killed run could choose differently
    full = train(load_recipe(tiny_recipe, ["run.name=ref", "train.max_steps=20", "train.checkpoint_every=1",
                                           "train.threads=1"]), quiet=True)
    args = [sys.executable, "-m", "mmkit", "run", str(tiny_recipe), "--quiet", "--set", "run.name=killed",
            "--set", "train.max_steps=20", "--set", "train.checkpoint_every=1", "--set", "train.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    last = tiny_recipe.parent / "runs" / "killed" / "checkpoints" / "last"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        try:
            if ckpt.read_state(last)["step"] >= 4:
                break
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step_at_kill = ckpt.read_state(ckpt.find_checkpoint(last.parent, "last"))["step"]
    assert 4 <= step_at_kill < 20, "the run was not interrupted mid-training"
    done = subprocess.run(args + ["--resume"], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    a, b = _weights(full.run_dir), _weights(last.parent.parent)
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill + resume"


def test_resume_refuses_a_different_model(tiny_recipe: Path) -> None:
    rec = load_recipe(tiny_recipe, ["train.max_steps=2"])
    train(rec, quiet=True)
    other = load_recipe(tiny_recipe, ["train.max_steps=2", "model.fusion.dim=32"])
    with pytest.raises(RecipeError, match=r"model\.fusion\.dim: 16 -> 32"):
        train(other, mode="resume", quiet=True)


def test_crash_during_checkpoint_save_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(3, 2)
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, "last", model, {"step": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", boom)
    with pytest.raises(ckpt.CheckpointError, match="No space left"):
        ckpt.save_checkpoint(folder, "last", model, {"step": 2}, training_state={"x": torch.ones(1)})
    found = ckpt.find_checkpoint(folder, "last")
    assert found is not None and ckpt.read_state(found)["step"] == 1
    loaded = torch.nn.Linear(3, 2)
    ckpt.load_weights(loaded, found / ckpt.WEIGHTS)
    assert torch.equal(loaded.weight, before["weight"])
    assert not list(folder.glob(".tmp-*")), "a failed save must clean its temp folder"


def test_crash_between_renames_recovers_previous(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, "last", model, {"step": 7})
    os.rename(folder / "last", folder / ".old-last-deadbeef")  # the state right after the first rename
    found = ckpt.find_checkpoint(folder, "last")
    assert found == folder / "last" and ckpt.read_state(found)["step"] == 7


def test_nan_loss_is_reported_with_the_step(tiny_recipe: Path) -> None:
    rec = load_recipe(tiny_recipe, ["train.lr=1e30", "train.grad_clip=0.0", "train.warmup_steps=0",
                                    "train.max_steps=20"])
    from mmkit._internal.trainer import TrainingError

    with pytest.raises(TrainingError, match=r"non-finite loss .* at step \d+.*lower train\.lr"):
        train(rec, quiet=True)


def test_frozen_encoder_is_cached_and_unchanged(tiny_recipe: Path) -> None:
    rec = load_recipe(tiny_recipe, ["model.encoders.image.freeze=true", "train.max_steps=4"])
    result = train(rec, quiet=True)
    assert "image" in result.summary["cache"]
    assert result.summary["params"]["frozen"] > 0
    # the frozen encoder's weights equal a fresh build with the same seed
    start = train(load_recipe(tiny_recipe, ["model.encoders.image.freeze=true", "train.max_steps=0",
                                            "train.epochs=0", "run.name=start"]), quiet=True)
    a, b = _weights(result.run_dir), _weights(start.run_dir)
    image_keys = [k for k in a if k.startswith("encoders.image.")]
    assert image_keys
    for key in image_keys:
        assert torch.equal(a[key], b[key]), key
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("fusion."))


def test_lr_schedule_warmup_then_cosine() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 10, "linear") == pytest.approx(1 / 90, abs=1e-6)
    assert lr_factor(50, 100, 0, "constant") == 1.0


def test_check_command_prints_tree(tiny_recipe: Path) -> None:
    from click.testing import CliRunner

    from mmkit._internal.cli import cli

    result = CliRunner().invoke(cli, ["check", str(tiny_recipe)])
    assert result.exit_code == 0, result.output
    assert "trainable" in result.output and "image: timm" in result.output
    assert "label <- column 'label'" in result.output


def test_check_loads_every_split_and_names_the_bad_rows(tmp_path: Path) -> None:
    """A val label the head never saw and a missing file in test: found before any training."""
    from click.testing import CliRunner

    from mmkit._internal.cli import cli

    rows = [{"text": f"word {i}", "x": i, "label": i % 2} for i in range(8)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "val.jsonl").write_text(json.dumps({"text": "a", "x": 1, "label": 7}) + "\n")
    (tmp_path / "test.jsonl").write_text(json.dumps({"text": "b", "x": 1, "label": 1}) + "\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text("""
[data]
train = "train.jsonl"
val = "val.jsonl"
test = "test.jsonl"
columns = { tabular = ["x"] }
[model.encoders.text]
type = "text-transformer"
dim = 8
layers = 1
heads = 2
[model.encoders.tabular]
type = "tabular-mlp"
dim = 8
[model.fusion]
type = "concat"
dim = 8
[model.head]
type = "classification"
""")
    ok = CliRunner().invoke(cli, ["check", str(recipe), "--set", 'data.val="train.jsonl"'])
    assert ok.exit_code == 0, ok.output
    assert "rows: every row loads (train 8, val 8, test 1)" in ok.output
    bad = CliRunner().invoke(cli, ["check", str(recipe)])
    assert bad.exit_code == 2, bad.output
    assert "1 row(s) cannot be used" in bad.output and "val.jsonl (val) row 1" in bad.output
    assert "7" in bad.output  # the unknown label
    skipped = CliRunner().invoke(cli, ["check", str(recipe), "--no-rows"])
    assert skipped.exit_code == 0, skipped.output
