"""Training callbacks: written in a test, used from a recipe (registered by a plugin) and from Python;
the built-in ones (metrics.jsonl, early stopping, progress lines without a terminal); TrainState."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmkit._internal import checkpoint as ckpt
from mmkit._internal.errors import RecipeError
from mmkit._internal.recipe import load_recipe
from mmkit._internal.registry import Registry
from mmkit._internal.trainer import TrainState, train

COUNTER = '''
import json
import mmkit


class CountSteps(mmkit.Callback):
    """Counts optimizer steps and evaluations into its own log; optionally stops training.

    Args:
        stop_at: request a stop after this step (0 = never).
        log: file name of its log in the run directory.
    """

    rank_zero_only = True

    def __init__(self, stop_at: int = 0, log: str = "counter.jsonl") -> None:
        self.stop_at, self.log = stop_at, log
        self.steps = self.evals = 0

    def on_step_end(self, trainer):
        self.steps += 1
        with open(trainer.run.path / self.log, "a") as fh:
            fh.write(json.dumps({"step": trainer.state.step, "loss": trainer.step_metrics["loss"]}) + "\\n")
        if self.stop_at and trainer.state.step >= self.stop_at:
            trainer.request_stop(f"count-steps: reached step {self.stop_at}")

    def on_eval_end(self, trainer, metrics, improved):
        self.evals += 1

    def on_fit_end(self, trainer, result):
        (trainer.run.path / "counter-end.json").write_text(json.dumps({"steps": self.steps, "evals": self.evals}))
'''


@pytest.fixture
def tiny(tmp_path: Path, write_tiny_recipe) -> Path:
    return write_tiny_recipe(tmp_path / "tiny.toml", "train.max_steps=6", "train.eval_every=2",
                             'model.fusion={ type = "concat", dim = 16 }')


@pytest.fixture
def counter_plugin(write_module, write_plugin) -> Registry:
    """A registry with a plugin that registers the test's callback as ``count-steps``."""
    write_module("tp_cb_counter_impl", COUNTER)
    write_plugin("tp_cb_counter", {"callback": {"count-steps": "tp_cb_counter_impl:CountSteps"}})
    return Registry(["tp_cb_counter"], env=False)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_plugin_callback_named_in_a_recipe_counts_logs_and_stops(tiny: Path, counter_plugin: Registry) -> None:
    rec = load_recipe(tiny, ['train.callbacks=[{ type = "count-steps", stop_at = 3 }]'], registry=counter_plugin)
    result = train(rec, quiet=True, registry=counter_plugin)
    run = result.run_dir
    assert [r["step"] for r in _lines(run / "counter.jsonl")] == [1, 2, 3]
    assert json.loads((run / "counter-end.json").read_text()) == {"steps": 3, "evals": 2}  # step 2, final at 3
    assert result.summary["steps"] == 3 and result.summary["stop_reason"] == "count-steps: reached step 3"
    assert not result.interrupted and set(result.summary["final"]) == {"val", "test"}
    assert ckpt.read_state(run / "checkpoints" / "last")["step"] == 3
    # the built-in callbacks ran alongside: metrics.jsonl has the evaluations and the final record
    splits = [r["split"] for r in _lines(run / "metrics.jsonl")]
    assert splits.count("val") == 2 and splits[-1] == "final"


def test_a_callback_instance_from_python(tiny: Path, counter_plugin: Registry) -> None:
    from tp_cb_counter_impl import CountSteps

    counter = CountSteps(log="mine.jsonl")
    result = train(load_recipe(tiny), quiet=True, callbacks=[counter])
    assert counter.steps == 6 and counter.evals == 3
    assert len(_lines(result.run_dir / "mine.jsonl")) == 6


def test_recipe_callbacks_are_validated_before_anything_is_built(tiny: Path, counter_plugin: Registry) -> None:
    with pytest.raises(RecipeError, match=r"train\.callbacks\[0\]: unknown callback 'count-stepz'; did you mean "
                                          r"'count-steps'"):
        load_recipe(tiny, ['train.callbacks=["count-stepz"]'], registry=counter_plugin)
    with pytest.raises(RecipeError, match=r"train\.callbacks\[1\]\.stop_after: unknown key; did you mean stop_at"):
        load_recipe(tiny, ['train.callbacks=["progress", { type = "count-steps", stop_after = 2 }]'],
                    registry=counter_plugin)
    with pytest.raises(RecipeError, match=r"train\.callbacks\[0\]: a callback table needs type"):
        load_recipe(tiny, ["train.callbacks=[{ stop_at = 2 }]"], registry=counter_plugin)


def test_list_callback_shows_the_builtins_and_a_plugins(counter_plugin: Registry, clean_registry) -> None:
    from mmkit._internal.cli import cli

    result = CliRunner().invoke(cli, ["-p", "tp_cb_counter", "list", "callback", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r["plugin"] for r in json.loads(result.output)}
    assert rows == {"best-checkpoint": "callbacks", "early-stopping": "callbacks", "metrics-log": "callbacks",
                    "progress": "callbacks", "summary-table": "callbacks", "tensorboard": "callbacks",
                    "mlflow": "callbacks", "count-steps": "tp_cb_counter"}


def test_blocking_the_builtin_callbacks_trains_without_them(tiny: Path) -> None:
    registry = Registry(["no:callbacks"], env=False)
    result = train(load_recipe(tiny, registry=registry), quiet=True, registry=registry)
    assert result.summary["steps"] == 6
    assert not (result.run_dir / "metrics.jsonl").exists()  # metrics-log is a plugin's, and it is blocked
    assert not (result.run_dir / "checkpoints" / "best").exists()
    assert (result.run_dir / "summary.json").is_file()  # the run itself: the loop's


def test_early_stopping_ends_the_run_normally(tiny: Path) -> None:
    # lr 0: the monitored metric never improves after the first evaluation
    rec = load_recipe(tiny, ["train.max_steps=20", "train.eval_every=1", "train.lr=0.0", "train.early_stopping=2",
                             "train.monitor=loss"])
    result = train(rec, quiet=True)
    s = result.summary
    assert s["steps"] == 3 and s["stopped_early"] and s["stop_reason"].startswith("early stopping: val.loss")
    assert s["best"]["step"] == 1 and "test" in s["final"]


def test_without_a_terminal_progress_is_a_plain_line_every_log_every_steps(tiny: Path, capsys) -> None:
    train(load_recipe(tiny, ["train.log_every=2", "train.eval_every=0"]))  # pytest's stderr is no terminal
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert len(lines) == 3, err
    pattern = r"step (\d+)/6 loss \d+\.\d{4} lr \d\.\de[-+]\d\d \d+ samples/s eta (\d+:\d\d:\d\d|\?)"
    assert [int(re.fullmatch(pattern, line).group(1)) for line in lines] == [2, 4, 6]
    assert "summary" in err and "run directory:" in err  # the summary table: stderr too


@pytest.mark.slow
def test_mmkit_run_piped_prints_progress_lines(tiny: Path) -> None:
    """`mmkit run ... | cat`: stderr is a pipe, so progress is one line per log_every steps."""
    done = subprocess.run([sys.executable, "-m", "mmkit", "run", str(tiny), "--set", "train.log_every=3", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = re.findall(r"^step (\d+)/6 loss [\d.]+ lr \S+ \d+ samples/s eta \S+$", done.stderr, re.M)
    assert steps == ["3", "6"], done.stderr
    assert json.loads(done.stdout)["steps"] == 6  # stdout holds the JSON only


def test_train_state_is_what_the_checkpoint_stores(tiny: Path) -> None:
    result = train(load_recipe(tiny, ["train.max_steps=3"]), quiet=True)
    saved = ckpt.read_state(result.run_dir / "checkpoints" / "last")
    state = TrainState()
    state.load_state_dict(saved)
    assert state.state_dict() == {k: saved[k] for k in TrainState.SAVED}
    assert state.step == 3 and state.batch_in_epoch == 3 and state.samples_seen == 24
    assert set(state.rng) >= {"torch", "python", "numpy"}
    assert set(saved) - set(TrainState.SAVED) == {"fit_state", "model", "columns", "seed"}
