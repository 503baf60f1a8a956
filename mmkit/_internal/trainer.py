"""The training loop: :class:`Trainer`, :class:`TrainState` and :func:`train`.

The shape is Lightning's fit loop and torchtune's recipes: every number that must survive an
interruption lives in one dataclass (:class:`TrainState`, whose ``state_dict()`` is what a
checkpoint's ``state.json`` holds); :meth:`Trainer.setup` builds the pieces in order, each a method
that can be replaced; :meth:`Trainer.train_step` is one micro-batch; :meth:`Trainer.fit` is a short
loop with one :meth:`Trainer.done` predicate holding every stop condition. Everything else
(metrics.jsonl, TensorBoard, best checkpoint, early stopping, progress, summary table) is a
callback (:mod:`mmkit._internal.callbacks`). Only rank 0 writes files and prints.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmkit._internal import checkpoint as ckpt
from mmkit._internal import preflight
from mmkit._internal.assembly import (
    assemble,
    build_caches,
    cache_info,
    choose_device,
    load_splits,
    make_fields,
    plan_data,
)
from mmkit._internal.callbacks import Callback, CallbackList, build_callbacks
from mmkit._internal.distributed import Dist, init_distributed, make_strategy
from mmkit._internal.errors import MmkitError, RecipeError
from mmkit._internal.evaluation import autocast, evaluate
from mmkit._internal.interfaces import Batch
from mmkit._internal.loaders import TrainData, num_workers
from mmkit._internal.model import count_parameters
from mmkit._internal.optim import Schedule, make_optimizer, param_groups
from mmkit._internal.preempt import Preemption
from mmkit._internal.recipe import Recipe, dump_toml
from mmkit._internal.registry import Registry, get_registry
from mmkit._internal.rng import RngSnapshot, restore_rng, seed_everything
from mmkit._internal.rundir import LAST, OPTIMIZER_SHARDS, RunDir, RunLock, prepare_run_dir
from mmkit._internal.threads import apply_threads, choose_threads
from mmkit._internal.trained import load_trained


class TrainingError(MmkitError):
    """Training cannot go on (e.g. a non-finite loss)."""


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    renamed: bool = False
    interrupted: bool = False


@dataclass
class TrainState:
    """Where training stands; ``state_dict()`` is what a checkpoint stores (JSON), so a resumed run
    continues bitwise where the interrupted one stopped.

    ``batch_in_epoch`` counts this rank's micro-batches of the current epoch already trained (the
    position a map-style dataset resumes from); ``data`` holds a data source's own position (a
    streaming source's), ``rng`` every generator's state after the last optimizer step. ``stop`` (a
    reason) and ``interrupt`` are requests for the next step boundary and are not saved.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    bad_evals: int = 0
    samples_seen: int = 0
    train_time: float = 0.0
    world: int = 1
    rng: Any = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    stop: str | None = None
    interrupt: bool = False

    SAVED = ("step", "epoch", "batch_in_epoch", "best", "bad_evals", "samples_seen", "train_time", "world", "rng",
             "data")

    def state_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.SAVED}
        out["rng"] = self.rng.to_dict() if isinstance(self.rng, RngSnapshot) else dict(self.rng)
        out["best"], out["data"] = dict(self.best), dict(self.data)
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in self.SAVED:
            if key in state:
                setattr(self, key, state[key])


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and a grad scaler that is enabled only for fp16."""

    dtype: torch.dtype | None
    scaler: Any

    @classmethod
    def choose(cls, setting: str, device: torch.device) -> Precision:
        dtype, scale = cls._dtype(setting, device)
        return cls(dtype, torch.amp.GradScaler(device.type, enabled=scale))

    @staticmethod
    def _dtype(setting: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
        if setting == "fp32" or (setting == "auto" and device.type != "cuda"):
            return None, False
        if setting in ("auto", "bf16"):
            if device.type == "cuda" and not torch.cuda.is_bf16_supported():
                if setting == "bf16":
                    raise RecipeError("train.precision = 'bf16' but this GPU does not support bf16; use fp16 or fp32")
                return torch.float16, True
            return torch.bfloat16, False
        if device.type != "cuda":
            raise RecipeError("train.precision = 'fp16' needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.float16, True

    @property
    def name(self) -> str:
        return str(self.dtype).replace("torch.", "") if self.dtype else "fp32"


@dataclass
class Monitor:
    """The validation metric that picks the best checkpoint (and drives early stopping)."""

    metric: str
    mode: str  # "min" | "max"

    @classmethod
    def from_recipe(cls, train: Mapping[str, Any], head: Any) -> Monitor:
        metric = (train["monitor"] if train["monitor"] != "auto" else head.monitor).removeprefix("val.")
        if train["monitor_mode"] != "auto":
            return cls(metric, train["monitor_mode"])
        return cls(metric, head.monitor_mode if metric == head.monitor else ("min" if "loss" in metric else "max"))

    def check(self, values: Mapping[str, float], source: str) -> None:
        """Refuse a monitored metric that the evaluation ``values`` do not hold."""
        if self.metric not in values:
            raise RecipeError(f"{source}: train.monitor {self.metric!r} is not a metric of this head; "
                              f"available: {', '.join(sorted(values))}")

    def update(self, state: TrainState, values: Mapping[str, float], source: str) -> bool:
        """Record ``values`` in ``state.best``/``bad_evals``; True when the monitored metric improved."""
        self.check(values, source)
        current, prev = values[self.metric], state.best.get("value")
        if prev is not None and not (current < prev if self.mode == "min" else current > prev):
            state.bad_evals += 1
            return False
        state.best = {"value": current, "metric": self.metric, "step": state.step, "epoch": state.epoch,
                      "val": dict(values)}
        state.bad_evals = 0
        return True


class _Printer:
    """Messages for humans on stderr: rank 0 only, silent with ``quiet``."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.console: Any = None
        if on:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False)

    def __call__(self, message: str, soft_wrap: bool = False) -> None:
        if self.on:  # soft_wrap: one line however long (a command to copy)
            self.console.print(message, markup=False, soft_wrap=soft_wrap)


class Trainer:
    """Trains what a recipe names on CPU, one GPU or many processes (torchrun).

    ``mode``: new | resume | overwrite (:func:`mmkit._internal.rundir.prepare_run_dir`). ``callbacks`` are
    instances added after the built-in ones and the recipe's ``[train] callbacks``.
    """

    #: the clock of ``train_time`` (a benchmark may swap in ``time.process_time``)
    clock = staticmethod(time.perf_counter)
    #: builds the DataLoaders from the plan (another data source supplies its own, same interface)
    data_class: type[TrainData] = TrainData

    def __init__(self, recipe: Recipe, *, mode: str = "new", quiet: bool = False, registry: Registry | None = None,
                 callbacks: Iterable[Callback] = (), overrides: Sequence[str] = ()) -> None:
        self.recipe, self.mode, self.quiet = recipe, mode, quiet
        self.overrides = list(overrides)  # the command's --set items: recorded, repeated by the resume hint
        self.cfg = recipe.train
        self.registry = registry or get_registry()
        self.seed = int(recipe.run["seed"])
        self.state = TrainState()
        self.preemption = Preemption()  # SIGTERM/SIGUSR1 -> stop after the step, agreed by all ranks
        self.preempted: str | None = None  # the signal's name once a preemption stop is decided
        self.extra_callbacks = [*callbacks, self.preemption]
        self.callbacks = CallbackList([])  # built at the end of setup()
        self.step_metrics: dict[str, Any] = {}
        self.last_eval: tuple[int, dict[str, float]] | None = None
        self._micro: list[float] = []  # losses of the current step's micro-batches
        self._aux: dict[str, float] = {}
        self._samples = 0
        self._resume: dict[str, Any] | None = None
        self._resume_from = Path()
        self._last_tick, self._epoch_mark = 0.0, (0.0, 0)

    # ------------------------------------------------------------------------------------ the loop
    def fit(self) -> RunResult:
        """Set up, train until :meth:`done`, evaluate, write the summary; Ctrl-C (or a stop request
        with ``interrupt``) writes checkpoints/last and returns ``interrupted``."""
        self.t0 = self.clock()
        self.setup_process()
        self.setup_run_dir()
        with RunLock(self.run.path) if self.dist.main else nullcontext(), self.preemption:
            try:
                try:
                    self.setup()
                except BaseException:
                    self.discard_run_dir()
                    raise
                self.callbacks.fire("on_fit_start", self)
                self._start_clock()
                batches = self.data.batches(self.state)
                try:
                    while not self.done():
                        if self.train_step(next(batches)):
                            self.end_step()
                except KeyboardInterrupt:
                    self.request_stop("interrupted", interrupt=True)
                return self.finish()
            finally:
                if hasattr(getattr(self, "data", None), "close"):
                    self.data.close()  # the decoded-sample cache's memory and spill files
                self.callbacks.fire("teardown", self)

    def done(self) -> bool:
        """Every stop condition: the step budget is spent, or a stop was requested (early stopping,
        a callback, an interruption)."""
        return self.state.step >= self.total_steps or self.state.stop is not None

    def request_stop(self, reason: str, *, interrupt: bool = False) -> None:
        """Stop at the next step boundary. ``interrupt``: like Ctrl-C (checkpoint, no final
        evaluation, resumable); otherwise training ends normally (final evaluation, summary)."""
        if self.state.stop is None:
            self.state.stop = reason
        self.state.interrupt = self.state.interrupt or interrupt

    # ------------------------------------------------------------------------------------ setup
    def setup_process(self) -> None:
        """Process group, device, precision, seeds."""
        t = self.cfg
        kind = "cuda" if t["device"] == "cuda" or (t["device"] == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist: Dist = init_distributed(kind)
        self.state.world = self.dist.world  # a resumed state replaces it (restore compares the two)
        self.device = choose_device(t["device"], self.dist.local_rank, what="train.device")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.precision = preflight.choose_precision(t, self.device, self.recipe.source)
        self.say = _Printer(self.dist.main and not self.quiet)
        self.setup_threads()
        seed_everything(self.seed)

    def setup_threads(self) -> None:
        """torch's intra-op threads from ``train.threads`` (:mod:`mmkit._internal.threads`), said in the header."""
        workers = num_workers(self.cfg["num_workers"], self.device)
        self.threads = choose_threads(self.cfg["threads"], workers=workers)  # local ranks: LOCAL_WORLD_SIZE
        apply_threads(self.threads)
        self.say(self.threads.describe())

    def setup_run_dir(self) -> None:
        """The run directory: rank 0 creates (or finds) it, the other ranks follow."""
        made: tuple[str, bool] = ("", False)
        if self.dist.main:
            path, renamed = prepare_run_dir(self.recipe.run["output_dir"], self.recipe.run["name"], self.mode)
            made = (str(path), renamed)
        path_text, self.renamed = self.dist.broadcast(made)
        self.run = RunDir(Path(path_text))

    def discard_run_dir(self) -> None:
        """A run that failed during setup leaves no run directory (a resumed one is kept): it holds
        nothing but the resolved recipe, and would push the next run to a ``-2`` name."""
        if self.mode != "resume" and self.dist.main and not self.run.checkpoints.exists():
            shutil.rmtree(self.run.path, ignore_errors=True)

    def setup(self) -> None:
        """Model, data, strategy, optimizer, resumed state, callbacks (in this order)."""
        self.setup_model()
        self.setup_data()
        self.monitor = Monitor.from_recipe(self.cfg, self.model.head)
        preflight.check_monitor(self.monitor, self.model, self.data.val, self.device, self.precision.dtype,
                                self.recipe.source)  # on the bare model: no collective of a strategy yet
        self.strategy = make_strategy(self.cfg["strategy"], self.dist, self.device, self.recipe.source,
                                      self.precision.dtype)
        self.strategy.prepare(self.model, self.plan, self.registry, self.say)
        self.net: nn.Module = self.strategy.wrap(self.model)
        if self.cfg["compile"]:
            self.net = torch.compile(self.net)  # type: ignore[assignment]
        self.optimizer = make_optimizer(param_groups(self.model, self.recipe), self.recipe)
        self.schedule = Schedule.from_recipe(self.cfg, self.total_steps)
        if self._resume is not None:
            self.restore(self._resume)
            if self.dist.main:  # restored: the run's recipe and history now say what it continues with
                self.run.write_recipe(dump_toml(self.recipe.to_dict()))
                self.record_history(self._changes)
        self.state.rng = RngSnapshot()
        self.callbacks = CallbackList(build_callbacks(self.cfg["callbacks"], self.registry, self.recipe.source,
                                                      self.extra_callbacks, self.say), self.dist.main)
        preflight.check_callbacks(self.callbacks, self.recipe)
        self.net.train()

    def setup_model(self) -> None:
        """Data plan and model: fitted on the training split, or restored from checkpoints/last."""
        self.plan = plan_data(self.recipe, load_splits(self.recipe, self.registry))
        last = self.run.checkpoint(LAST, fallback=None, recover=True) if self.mode == "resume" else None
        if last is not None:
            from mmkit._internal.resume import adopt_recorded_lr_mults

            adopt_recorded_lr_mults(self.recipe, self.run.read_recipe())
            trained = load_trained(self.run.path, checkpoint=LAST, recipe=self.recipe, plan=self.plan,
                                   registry=self.registry)
            self.model, self._resume = trained.model, trained.state
            self._resume_from = last
            changes = self.check_resume(trained.state or {})
        else:
            if self.mode == "resume":
                self.say(f"resume: {self.run.path} has no checkpoint yet; training from the start")
            self.model = assemble(self.recipe, self.registry, self.plan)
            changes = None
        self._changes = changes
        if self.dist.main and changes is None:  # a resume writes its recipe once it has restored (setup)
            self.run.write_recipe(dump_toml(self.recipe.to_dict()))
            self.record_history(changes)
        self.model.to(self.device)
        trainable, frozen = count_parameters(self.model)
        self.params = {"trainable": trainable, "frozen": frozen}
        self.say(f"model: {trainable:,} trainable + {frozen:,} frozen parameters on {self.device}"
                 + (f" with {self.precision.name} autocast" if self.precision.dtype else ""))

    def check_resume(self, saved: Mapping[str, Any]) -> list[Any]:
        """Refuse a resume whose recipe or data differs from the run's (:mod:`mmkit._internal.resume`); rank 0
        decides and every rank raises the same error. Returns the safe changes."""
        from mmkit._internal.resume import check_resume, manifest_fingerprints

        verdict: tuple[str, list[Any]] = ("", [])
        if self.dist.main:
            self._manifests = manifest_fingerprints(self.recipe.data, self.recipe.base_dir)
            try:
                verdict = ("", check_resume(self.run, self.recipe.to_dict(), self._manifests,
                                            old_world=int(saved.get("world", 1)), new_world=self.dist.world))
            except RecipeError as exc:
                verdict = (str(exc), [])
        error, changes = self.dist.broadcast(verdict)
        if error:
            raise RecipeError(error)
        for change in changes:
            self.say(f"resume: {change} (allowed, recorded in the run's history)")
        return list(changes)

    def record_history(self, changes: list[Any] | None) -> None:
        """Rank 0: one history record, a start (``changes`` None) or a resume with its safe changes."""
        from mmkit._internal.resume import history_record, manifest_fingerprints

        manifests = getattr(self, "_manifests", None)
        if manifests is None:
            manifests = manifest_fingerprints(self.recipe.data, self.recipe.base_dir)
        step = int((self._resume or {}).get("step", 0))
        self.run.append_history(history_record("start" if changes is None else "resume", step, self.overrides,
                                               manifests, changes or (), self.dist.world))

    def setup_data(self) -> None:
        """Frozen-encoder caches and the DataLoaders; the step budget follows from the epoch length."""
        t = self.cfg
        fields = make_fields(self.model, self.plan, self.registry)
        started = time.perf_counter()
        caches = build_caches(self.model, fields, self.plan, self.device, max(64, t["batch_size"]), t["cache"],
                              self.say)
        self.cache_info = cache_info(caches, self.plan)
        if self.cache_info:
            self.cache_info["seconds"] = round(time.perf_counter() - started, 2)
            self.say(f"cache: frozen encoder outputs computed once for {', '.join(sorted(caches.get('train', {})))}")
        self.data = self.data_class(self.plan, fields, self.model.head, caches, batch_size=t["batch_size"],
                                    workers=t["num_workers"], seed=self.seed, dist=self.dist, device=self.device,
                                    log=self.say, data_cache=t["data_cache"], run=self.run)
        if hasattr(self.data, "describe_cache"):
            self.say(self.data.describe_cache())
        steps_per_epoch = max(1, math.ceil(self.data.batches_per_epoch / t["grad_accum"]))
        self.total_steps = t["max_steps"] if t["max_steps"] > 0 else t["epochs"] * steps_per_epoch

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from a checkpoint: optimizer, grad scaler, TrainState and every RNG."""
        training = ckpt.read_training_state(self._resume_from)
        if training is not None and "optimizer" in training:
            self.strategy.load_optimizer(self.model, self.optimizer, training["optimizer"])
        elif (self._resume_from / OPTIMIZER_SHARDS).is_dir():  # saved sharded (FSDP), by any world size
            from mmkit._internal.fsdp import load_sharded_optimizer

            load_sharded_optimizer(self.model, self.optimizer, self._resume_from)
        if training is not None:
            if training.get("scaler"):  # empty when saved by a disabled (non-fp16) scaler
                self.precision.scaler.load_state_dict(training["scaler"])
        self.state.load_state_dict(saved)
        self.data.load_state_dict(self.state.data)
        restore_rng(self.state.rng, cuda=self.device.type == "cuda")
        if self.state.world != self.dist.world:  # data shards differ across world sizes: restart the epoch's data
            self.say(f"resume: world size changed {self.state.world} -> {self.dist.world}; "
                     f"epoch {self.state.epoch} restarts its data")
            self.state.batch_in_epoch = 0
        self.state.world = self.dist.world
        self.say(f"resume: continuing {self.run.path} from step {self.state.step} (epoch {self.state.epoch})")

    # ------------------------------------------------------------------------------------ one step
    def train_step(self, batch: Batch) -> bool:
        """Forward and backward of one micro-batch; on the last micro-batch of an optimizer step (or
        of the epoch) also the schedule, unscaling, clipping and the optimizer step. True when an
        optimizer step was taken."""
        t, s = self.cfg, self.state
        batch = batch.to(self.device, non_blocking=True)
        n = len(self._micro) + 1
        sync = n == t["grad_accum"] or s.batch_in_epoch + n >= self.data.batches_per_epoch
        with self.strategy.no_sync(self.net, sync), autocast(self.device, self.precision.dtype):
            out = self.net(batch)
        loss = self._checked_loss(out.loss)
        self.precision.scaler.scale(out.loss / t["grad_accum"]).backward()
        self._micro.append(loss)
        self._samples += batch.size * self.dist.world
        for key, value in out.aux.items():
            self._aux[key] = self._aux.get(key, 0.0) + float(value.detach())
        if not sync:
            return False
        lr = self.schedule.apply(self.optimizer, s.step)
        scaler = self.precision.scaler
        scaler.unscale_(self.optimizer)
        if t["grad_clip"] > 0:
            self.strategy.clip_grad_norm(self.model, t["grad_clip"])
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self._commit_step(lr)
        return True

    def _checked_loss(self, loss: torch.Tensor | None) -> float:
        if loss is None:
            raise TrainingError("the head returned no loss for a training batch (are targets missing?)")
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainingError(f"non-finite loss ({value}) at step {self.state.step + 1} (epoch {self.state.epoch}); "
                                f"try a lower train.lr (now {self.cfg['lr']}), train.precision = 'fp32', "
                                f"or a grad_clip")
        return value

    def _commit_step(self, lr: float) -> None:
        s, n = self.state, len(self._micro)
        s.step += 1
        s.batch_in_epoch += n
        s.samples_seen += self._samples
        s.rng = RngSnapshot()
        self._tick()
        self.step_metrics = {"loss": sum(self._micro) / n, "lr": lr, "samples": self._samples, "micro_batches": n,
                             "aux": {k: v / n for k, v in self._aux.items()}}
        self._micro, self._aux, self._samples = [], {}, 0

    def end_step(self) -> None:
        """After an optimizer step: callbacks, the end of an epoch, evaluation and checkpoints when due."""
        s, t = self.state, self.cfg
        self.callbacks.fire("on_step_end", self)
        due = bool(t["eval_every"]) and s.step % t["eval_every"] == 0
        if s.batch_in_epoch >= self.data.batches_per_epoch:
            self.end_epoch()
            due = due or not t["eval_every"]
        if due:
            self.validate()
        elif t["checkpoint_every"] and s.step % t["checkpoint_every"] == 0:
            self.save_checkpoint(LAST)

    def end_epoch(self) -> None:
        s = self.state
        seconds = self._tick() - self._epoch_mark[0]
        samples = s.samples_seen - self._epoch_mark[1]
        self.callbacks.fire("on_epoch_end", self, {"seconds": seconds, "samples_per_s": samples / max(seconds, 1e-9)})
        s.epoch, s.batch_in_epoch = s.epoch + 1, 0
        self._epoch_mark = (s.train_time, s.samples_seen)

    # ------------------------------------------------------------------------------------ evaluation
    def validate(self, save: bool = True) -> dict[str, float] | None:
        """Evaluate on the validation split, track the best, tell the callbacks, save checkpoints/last
        (evaluation and saving are not training time)."""
        with self._paused():
            values = None
            if self.data.val is not None:
                values = self.evaluate(self.data.val)
                improved = self.monitor.update(self.state, values, self.recipe.source)
                self.last_eval = (self.state.step, values)
                self.callbacks.fire("on_eval_end", self, values, improved)
            if save:
                self.save_checkpoint(LAST)
        return values

    def evaluate(self, loader: Iterable[Batch]) -> dict[str, float]:
        return evaluate(self.net, self.strategy.eval_batches(self.net, loader), self.device, self.precision.dtype,
                        self.dist.gather_metrics)

    @contextmanager
    def _paused(self) -> Iterator[None]:
        self._tick()
        try:
            yield
        finally:
            self._last_tick = self.clock()

    def _start_clock(self) -> None:
        self._last_tick = self.clock()
        self._epoch_mark = (self.state.train_time, self.state.samples_seen)

    def _tick(self) -> float:
        """Add the time since the last tick to ``train_time``; returns the new total."""
        now = self.clock()
        self.state.train_time += now - self._last_tick
        self._last_tick = now
        return self.state.train_time

    # ------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, name: str) -> None:
        """Write ``checkpoints/NAME`` atomically. Every rank calls it (a sharded strategy gathers the
        weights); rank 0 writes."""
        module = self.strategy.state_module(self.model)
        tmp = None
        if self.strategy.sharded_optimizer:  # every rank writes its shard into rank 0's temp folder
            made = str(ckpt.make_tmp(self.run.checkpoints, name)) if self.dist.main else ""
            tmp = Path(self.dist.broadcast(made))
            self.strategy.save_optimizer(self.model, self.optimizer, tmp)
        if not self.dist.main:
            return
        self.state.data = self.data.state_dict()
        state = {**self.state.state_dict(), "fit_state": self.model.fit_state(), "model": self.recipe.model_signature(),
                 "columns": {**self.plan.field_columns, **self.plan.target_columns}, "seed": self.seed}
        training = {"scaler": self.precision.scaler.state_dict()}
        if tmp is None:
            training["optimizer"] = self.optimizer.state_dict()
        ckpt.save_checkpoint(self.run.checkpoints, name, module, state, training, tmp=tmp)

    # ------------------------------------------------------------------------------------ the end
    def finish(self) -> RunResult:
        """Interrupted: checkpoints/last and a resume hint. Finished: the final evaluation, checkpoints/last
        and summary.json. Then the callbacks' ``on_fit_end``."""
        self._tick()
        s = self.state
        if s.interrupt:
            self.save_checkpoint(LAST)
            from mmkit._internal.resume import resume_command

            what = f"preempted by {self.preempted}" if self.preempted else "interrupted"
            self.say(f"{what} at step {s.step}; checkpoint written. Resume with: "
                     f"{resume_command(self.recipe.source, self.run.name, self.overrides, self._nproc())}",
                     soft_wrap=True)
            result = RunResult(self.run.path, {"interrupted": True, "steps": s.step, "preempted": self.preempted},
                               self.renamed, True)
        else:
            final = self.final_metrics()
            self.save_checkpoint(LAST)
            result = RunResult(self.run.path, self.summary(final), self.renamed)
            if self.dist.main:
                self.run.write_summary(result.summary)
        self.callbacks.fire("on_fit_end", self, result)
        self.dist.finish()
        return result

    def _nproc(self) -> int:
        """``--nproc`` for the resume hint: the world size of a one-node multi-process run, else 0."""
        import os

        local = int(os.environ.get("LOCAL_WORLD_SIZE", self.dist.world))
        return self.dist.world if self.dist.world > 1 and local == self.dist.world else 0

    def final_metrics(self) -> dict[str, dict[str, float]]:
        """Validation at the last step (evaluated again unless just done) and the test split."""
        final: dict[str, dict[str, float]] = {}
        if self.data.val is not None:
            recent = self.last_eval is not None and self.last_eval[0] == self.state.step
            values = self.last_eval[1] if recent else self.validate(save=False)  # type: ignore[index]
            final["val"] = values  # type: ignore[assignment]
        if self.data.test is not None:
            final["test"] = self.evaluate(self.data.test)
        return final

    def summary(self, final: dict[str, dict[str, float]]) -> dict[str, Any]:
        s = self.state
        return {
            "run_dir": str(self.run.path), "best": s.best, "final": final, "steps": s.step, "epochs": s.epoch,
            "samples_seen": s.samples_seen, "samples_per_s": s.samples_seen / max(s.train_time, 1e-9),
            "train_seconds": round(s.train_time, 2), "wall_seconds": round(self.clock() - self.t0, 2),
            "stopped_early": s.stop is not None, "stop_reason": s.stop, "params": self.params,
            "cache": self.cache_info, "device": str(self.device), "precision": self.precision.name,
            "world_size": self.dist.world, "threads": self.threads.as_dict(),
            "data_cache": self.data.cache_summary() if hasattr(self.data, "cache_summary") else {},
        }

    @property
    def is_main(self) -> bool:
        return self.dist.main


def train(recipe: Recipe, *, mode: str = "new", quiet: bool = False, registry: Registry | None = None,
          callbacks: Iterable[Callback] = (), overrides: Sequence[str] = ()) -> RunResult:
    """Train what ``recipe`` names (see :class:`Trainer`); returns the run directory and its summary.
    ``overrides``: the command's ``--set`` items, recorded in the run's history for the resume hint."""
    return Trainer(recipe, mode=mode, quiet=quiet, registry=registry, callbacks=callbacks, overrides=overrides).fit()


__all__ = ["Monitor", "Precision", "RunResult", "TrainState", "Trainer", "TrainingError", "train"]
