"""``progress`` (a bar on a terminal, a plain line every ``log_every`` steps elsewhere) and
``summary-table`` (the final metrics and next steps). Both print to stderr, on rank 0, unless quiet."""

from __future__ import annotations

import datetime
import sys
from typing import Any

import mmkit
from mmkit_callbacks.window import Window


def plain_line(step: int, total: int, values: dict[str, float], eta_seconds: float | None) -> str:
    """``step 40/500 loss 0.6931 lr 3.0e-04 633 samples/s eta 0:00:41``."""
    eta = "?" if eta_seconds is None else str(datetime.timedelta(seconds=round(eta_seconds)))
    return (f"step {step}/{total} loss {values['loss']:.4f} lr {values['lr']:.1e} "
            f"{values['samples_per_s']:.0f} samples/s eta {eta}")


class Progress(mmkit.Callback):
    """Training progress on stderr. On a terminal: a live bar (step, loss, lr, samples/s, elapsed,
    remaining). Without one (CI, SLURM, nohup, a pipe): one plain line every ``train.log_every``
    steps, so batch logs show progress. Evaluations print one line each either way.

    Args:
        tty: force the bar (True) or the plain lines (False); None = decide from stderr.
    """

    rank_zero_only = True

    def __init__(self, tty: bool | None = None) -> None:
        self.tty = tty
        self.bar: Any = None

    def on_fit_start(self, trainer: Any) -> None:
        self.on = not trainer.quiet
        self.every = int(trainer.cfg["log_every"])
        self.window = Window(trainer.clock)
        self.first = trainer.state.step
        self.time0 = trainer.state.train_time
        if self.on and (sys.stderr.isatty() if self.tty is None else self.tty):
            self.bar = _Bar(trainer.total_steps, trainer.state.step)

    def on_step_end(self, trainer: Any) -> None:
        if not self.on:
            return
        self.window.add(trainer.step_metrics)
        step, total = trainer.state.step, trainer.total_steps
        values = self.window.values(trainer.step_metrics["lr"])
        if self.bar is not None:
            self.bar.update(step, loss=values["loss"], lr=values["lr"], rate=values["samples_per_s"])
        elif step % self.every == 0 or step == total:
            print(plain_line(step, total, values, self._eta(trainer)), file=sys.stderr, flush=True)
        if step % self.every == 0:
            self.window.reset()

    def _eta(self, trainer: Any) -> float | None:
        done = trainer.state.step - self.first
        spent = trainer.state.train_time - self.time0
        if done <= 0 or spent <= 0:
            return None
        return (trainer.total_steps - trainer.state.step) * spent / done

    def on_eval_end(self, trainer: Any, metrics: Any, improved: bool) -> None:
        if not self.on:
            return
        s = trainer.state
        line = f"[step {s.step}/{trainer.total_steps} epoch {s.epoch}] val " + ", ".join(
            f"{k}={v:.4f}" for k, v in metrics.items())
        if self.bar is not None:
            self.bar.print(line)
        else:
            print(line, file=sys.stderr, flush=True)
        self.window.restart_clock()

    def teardown(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


class _Bar:
    def __init__(self, total: int, start: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  "
                                            "{task.fields[rate]:.0f} samples/s"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task("train", total=total, completed=start, loss=float("nan"), lr=0.0, rate=0.0)
        self.progress.start()

    def update(self, step: int, **fields: Any) -> None:
        self.progress.update(self.task, completed=step, **fields)

    def print(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False)

    def stop(self) -> None:
        self.progress.stop()


class SummaryTable(mmkit.Callback):
    """When training finishes: the final metrics per split, the best checkpoint, speed, the run
    directory and what to try next (stderr, so ``--json`` output on stdout stays clean)."""

    rank_zero_only = True

    def on_fit_end(self, trainer: Any, result: Any) -> None:
        if trainer.quiet or result.interrupted:
            return
        from rich.console import Console
        from rich.table import Table

        s = result.summary
        console = Console(stderr=True, highlight=False)
        table = Table(title="summary", box=None, header_style="bold")
        table.add_column("split")
        table.add_column("metrics", overflow="fold")
        for split, values in s["final"].items():
            table.add_row(split, "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if s["best"]:
            b = s["best"]
            table.add_row("best", f"{b['metric']} {b['value']:.4f} at step {b['step']} (checkpoints/best)")
        console.print(table)
        console.print(f"{s['steps']} steps, {s['samples_per_s']:.0f} samples/s, {s['wall_seconds']:.0f} s wall"
                      + (f", cache: {s['cache']}" if s["cache"] else "")
                      + (f"; stopped: {s['stop_reason']}" if s.get("stop_reason") else ""))
        if result.renamed:
            console.print("[yellow]the run name was taken; wrote to a new directory[/yellow]")
        run, source = result.run_dir, trainer.recipe.source
        for line in (f"run directory: [bold]{run}[/bold]", "try next:",
                     f"  mmkit ablate {run}                     # which modality does the model rely on?",
                     f"  mmkit register {run} --name my-model   # then: mmkit predict my-model --input rows.jsonl",
                     f"  mmkit run {source} --sweep model.fusion.type=concat,attention,transformer --seeds 2"
                     "   # compare fusions (docs/compare.md)"):
            console.print(line, soft_wrap=True)  # whole lines, to copy and paste
