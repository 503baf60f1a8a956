"""``metrics-log`` (metrics.jsonl) and ``tensorboard`` (the same records as TensorBoard scalars)."""

from __future__ import annotations

from typing import Any

import mmkit
from mmkit_callbacks.window import Window


class MetricsLog(mmkit.Callback):
    """Append one JSON record per event to the run's metrics.jsonl: the training loss, lr and
    samples/s every ``train.log_every`` steps (split ``train``), each evaluation (``val``), each
    finished epoch's training seconds (``epoch``) and the final metrics (``final``)."""

    rank_zero_only = True

    def on_fit_start(self, trainer: Any) -> None:
        self.every = int(trainer.cfg["log_every"])
        self.window = Window(trainer.clock)

    def write(self, trainer: Any, record: dict[str, Any]) -> None:
        trainer.run.append_metrics(record)

    def _record(self, trainer: Any, split: str, metrics: dict[str, Any]) -> None:
        state = trainer.state
        self.write(trainer, {"step": state.step, "epoch": state.epoch, "split": split, "metrics": metrics})

    def on_step_end(self, trainer: Any) -> None:
        self.window.add(trainer.step_metrics)
        if trainer.state.step % self.every == 0:
            self._record(trainer, "train", self.window.values(trainer.step_metrics["lr"]))
            self.window.reset()

    def on_eval_end(self, trainer: Any, metrics: Any, improved: bool) -> None:
        self._record(trainer, "val", dict(metrics))
        self.window.restart_clock()

    def on_epoch_end(self, trainer: Any, stats: Any) -> None:
        self._record(trainer, "epoch", dict(stats))

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        if result.interrupted:
            return
        final = result.summary["final"]
        self._record(trainer, "final", {f"{split}.{k}": v for split, vals in final.items() for k, v in vals.items()})


class TensorBoard(MetricsLog):
    """With ``train.tensorboard = true``: every metrics.jsonl record as scalars ``SPLIT/METRIC`` in
    the run's tensorboard/ folder (``pip install 'mmkit[tb]'``)."""

    def check(self, recipe: Any) -> None:
        if recipe.train["tensorboard"]:
            _summary_writer(recipe.source)

    def on_fit_start(self, trainer: Any) -> None:
        super().on_fit_start(trainer)
        self.writer = None
        if trainer.cfg["tensorboard"]:
            self.writer = _summary_writer(trainer.recipe.source)(str(trainer.run.tensorboard))

    def write(self, trainer: Any, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in record["metrics"].items():
            self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def teardown(self, trainer: Any) -> None:
        if getattr(self, "writer", None) is not None:
            self.writer.close()


def _summary_writer(source: str) -> Any:
    """TensorBoard's ``SummaryWriter``, or a RecipeError saying which extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise mmkit.RecipeError(f"{source}: train.tensorboard = true needs TensorBoard: "
                                "pip install 'mmkit[tb]'") from exc
    return SummaryWriter
