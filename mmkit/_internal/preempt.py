"""Preemption: SIGTERM and SIGUSR1 end a run at an optimizer-step boundary with a resumable checkpoint.

SLURM (``--signal``, ``scancel``), Kubernetes and spot instances send SIGTERM (or a chosen signal,
SIGUSR1 by convention) some time before they kill a job. While a run trains, these signals only set
a flag; after each optimizer step every rank takes the maximum of the flags (one all-reduce of one
integer, so all ranks stop after the same step even when only one was signalled) and the run stops
as on Ctrl-C: ``checkpoints/last`` written atomically, no final evaluation, a resume hint, and
``mmkit run`` exits with :data:`EXIT_PREEMPTED`. ``--resume`` continues bitwise-equal on CPU.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from mmkit._internal.callbacks import Callback

#: the signals that request a preemption stop
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
#: exit code of ``mmkit run`` after a preemption stop (sysexits EX_TEMPFAIL: "try again later";
#: the checkpoint is written, requeue the job with ``--resume``)
EXIT_PREEMPTED = 75
#: exit code after Ctrl-C (128 + SIGINT), also resumable
EXIT_INTERRUPTED = 130


class Preemption(Callback):
    """Turns SIGTERM/SIGUSR1 into a stop request at the next optimizer step boundary, agreed by all
    ranks. Used as a context manager around training: the previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Preemption:  # noqa: PYI034 - a final class
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in PREEMPT_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum  # the first signal names the stop; training goes on to the step's end

    def on_step_end(self, trainer: Any) -> None:
        signum = trainer.dist.max_int(self.signum, trainer.device) if trainer.dist.enabled else self.signum
        if signum:
            name = signal.Signals(signum).name
            trainer.preempted = name
            trainer.request_stop(f"preempted by {name}", interrupt=True)


__all__ = ["EXIT_INTERRUPTED", "EXIT_PREEMPTED", "PREEMPT_SIGNALS", "Preemption"]
