"""``best-checkpoint`` and ``early-stopping``: what a run does with the monitored validation metric."""

from __future__ import annotations

from typing import Any

import mmkit


class BestCheckpoint(mmkit.Callback):
    """Save checkpoints/best whenever the monitored validation metric (``train.monitor``) improves."""

    def on_eval_end(self, trainer: Any, metrics: Any, improved: bool) -> None:
        if improved:
            trainer.save_checkpoint("best")


class EarlyStopping(mmkit.Callback):
    """Stop training after ``train.early_stopping`` evaluations in a row without improvement of the
    monitored metric (0 = never). The run then ends normally: final evaluation, summary."""

    def on_eval_end(self, trainer: Any, metrics: Any, improved: bool) -> None:
        patience = int(trainer.cfg["early_stopping"])
        if patience and trainer.state.bad_evals >= patience:
            trainer.request_stop(f"early stopping: val.{trainer.monitor.metric} did not improve in "
                                 f"{patience} evaluations")
