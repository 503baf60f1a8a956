"""A window of training steps: mean loss (and auxiliary losses) per micro-batch, samples per second."""

from __future__ import annotations

from typing import Any


class Window:
    """Accumulates ``trainer.step_metrics`` between resets (a log line, an evaluation)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.loss, self.micro, self.samples = 0.0, 0, 0
        self.aux: dict[str, float] = {}
        self.started = self.clock()

    def restart_clock(self) -> None:
        """Evaluation time is not training time: the rate counts from here."""
        self.started = self.clock()

    def add(self, step: dict[str, Any]) -> None:
        n = int(step.get("micro_batches", 1))
        self.loss += step["loss"] * n
        self.micro += n
        self.samples += int(step.get("samples", 0))
        for key, value in step.get("aux", {}).items():
            self.aux[key] = self.aux.get(key, 0.0) + value * n

    def values(self, lr: float) -> dict[str, float]:
        n = max(self.micro, 1)
        rate = self.samples / max(self.clock() - self.started, 1e-9)
        return {"loss": self.loss / n, "lr": lr, "samples_per_s": rate, **{k: v / n for k, v in self.aux.items()}}
