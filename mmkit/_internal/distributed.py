"""Processes and strategies: the process group torchrun sets up, and how the model is spread over it.

:class:`Dist` says who this process is (rank, world) and talks to the others (broadcast, gather,
barrier). A :class:`Strategy` wraps the model for training and owns what depends on the wrapping:
skipping the gradient all-reduce between accumulation steps, clipping, and the full weights a
checkpoint stores. ``ddp`` is the default strategy of a multi-process run; ``fsdp``
(:mod:`mmkit._internal.fsdp`) shards the model and its optimizer state.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmkit._internal.errors import RecipeError
from mmkit._internal.interfaces import Metrics


@dataclass
class Dist:
    """This process in the group: rank 0 of 1 when not distributed."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # mmkit created the process group (and so tears it down)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        import torch.distributed as tdist

        box = [value if self.main else None]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_metrics(self, metrics: Metrics) -> Metrics:
        """Every rank's metric state merged (each rank evaluated a shard)."""
        if not self.enabled:
            return metrics
        import torch.distributed as tdist

        parts: list[Any] = [None] * self.world
        tdist.all_gather_object(parts, metrics)
        merged = parts[0]
        for other in parts[1:]:
            merged.merge(other)
        return merged

    def max_int(self, value: int, device: torch.device) -> int:
        """The largest of every rank's ``value`` (one all-reduce of one integer; e.g. a stop flag)."""
        if not self.enabled:
            return value
        import torch.distributed as tdist

        box = torch.tensor([value], dtype=torch.int64, device=device)
        tdist.all_reduce(box, op=tdist.ReduceOp.MAX)
        return int(box.item())

    def finish(self) -> None:
        """Wait for every rank, then tear down the group if mmkit created it."""
        if not self.enabled:
            return
        import torch.distributed as tdist

        tdist.barrier()
        if self.owned:
            tdist.destroy_process_group()


def init_distributed(device_kind: str) -> Dist:
    """Join the process group torchrun set up (env RANK/WORLD_SIZE); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    owned = not tdist.is_initialized()
    if owned:
        tdist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)


class Strategy:
    """One process holds the whole model (also the base of multi-process strategies)."""

    name = "single"
    #: the optimizer state is saved by every rank (sharded) into the checkpoint's temp folder
    sharded_optimizer = False

    def __init__(self, dist: Dist, device: torch.device, dtype: torch.dtype | None = None) -> None:
        self.dist, self.device, self.dtype = dist, device, dtype  # dtype: the autocast dtype (None: fp32)

    def prepare(self, model: nn.Module, plan: Any, registry: Any, say: Any = None) -> None:
        """Before :meth:`wrap`: look at the model and the training data (e.g. DDP decides whether
        parameters can go without gradients); ``say`` prints on rank 0."""

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the training step calls (the model itself here)."""
        return model

    def no_sync(self, net: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        """Around a micro-batch's forward: skip the gradient all-reduce unless ``sync``."""
        return nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def state_module(self, model: nn.Module) -> nn.Module:
        """The module whose full weights a checkpoint stores (a sharded strategy gathers them)."""
        return model

    def save_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, folder: Any) -> bool:
        """Every rank: write the optimizer state into the checkpoint's temp ``folder`` (a sharded
        strategy); False when it goes into ``training_state.pt`` instead (rank 0)."""
        return False

    def load_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer, saved: Any) -> None:
        """Load a plain ``optimizer.state_dict()`` (from ``training_state.pt``)."""
        optimizer.load_state_dict(saved)

    def eval_batches(self, net: nn.Module, loader: Any) -> Any:
        """The evaluation batches of this rank (a sharded strategy adds forward passes so that every
        rank runs as many as the others)."""
        return loader


def absent_field_reasons(model: nn.Module, plan: Any, registry: Any, splits: tuple[str, ...] = ("train",),
                         trainable_only: bool = True) -> list[str]:
    """One line per encoder whose field is absent from some rows of ``splits`` (a batch without it
    skips the encoder)."""
    encoders = getattr(model, "encoders", {})
    if not encoders or plan is None:
        return []
    from mmkit._internal.assembly import make_fields

    reasons = []
    for fld in make_fields(model, plan, registry):  # type: ignore[arg-type]
        if trainable_only and not any(p.requires_grad for p in encoders[fld.name].parameters()):
            continue
        for split in splits:
            rows = plan.rows(split)
            missing = sum(1 for row in rows if fld.is_absent(fld.cell(row)))
            if missing:
                reasons.append(f"field {fld.name!r} is absent from {missing} of {len(rows)} {split} rows")
    return reasons


def unused_parameter_reasons(model: nn.Module, plan: Any, registry: Any) -> list[str]:
    """Why a training step can leave trainable parameters without gradients (empty: it cannot).

    * a trainable encoder's field is absent from some training rows: a batch without it skips the
      encoder (absent and optional modalities);
    * a module drops modalities in training (``modality_dropout > 0``, the built-in fusions' option);
    * a module says so: ``may_leave_parameters_unused = True`` (a plugin with a branch that does not
      always run). Frozen encoders have no trainable parameters and never count.
    """
    reasons = absent_field_reasons(model, plan, registry)
    for name, module in model.named_modules():
        if not any(p.requires_grad for p in module.parameters()):
            continue
        where = name or "the model"
        if float(getattr(module, "modality_dropout", 0.0) or 0.0) > 0:
            reasons.append(f"{where} drops modalities in training (modality_dropout = {module.modality_dropout})")
        if getattr(module, "may_leave_parameters_unused", False):
            reasons.append(f"{where} may leave parameters unused (may_leave_parameters_unused)")
    return reasons


class DDPStrategy(Strategy):
    """``DistributedDataParallel``: every rank holds the model; gradients are all-reduced.

    ``find_unused_parameters`` (an extra autograd-graph walk every step, and a warning on every rank
    when nothing was unused) is turned on only when :func:`unused_parameter_reasons` finds a reason;
    every rank decides from the same model and rows, so they agree."""

    name = "ddp"
    find_unused = True  # until prepare() looked at the model

    def prepare(self, model: nn.Module, plan: Any, registry: Any, say: Any = None) -> None:
        reasons = unused_parameter_reasons(model, plan, registry)
        self.find_unused = bool(reasons)
        if say is not None and reasons:
            say("ddp: find_unused_parameters on: " + "; ".join(reasons))

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                   find_unused_parameters=self.find_unused)

    def no_sync(self, net: nn.Module, sync: bool) -> AbstractContextManager[Any]:
        if sync or not hasattr(net, "no_sync"):
            return nullcontext()
        return net.no_sync()  # type: ignore[operator]


STRATEGIES: dict[str, type[Strategy]] = {"ddp": DDPStrategy}


def strategy_class(name: str) -> type[Strategy]:
    """``ddp`` or ``fsdp`` (imported on demand: :mod:`mmkit._internal.fsdp`)."""
    if name == "fsdp" and "fsdp" not in STRATEGIES:
        from mmkit._internal.fsdp import FSDPStrategy

        STRATEGIES["fsdp"] = FSDPStrategy
    return STRATEGIES[name]


def make_strategy(setting: str, dist: Dist, device: torch.device, source: str = "<recipe>",
                  dtype: torch.dtype | None = None) -> Strategy:
    """The strategy ``train.strategy`` names (``auto`` = ddp) for a multi-process run; one process
    always trains the whole model. ``dtype``: the run's autocast dtype (FSDP's mixed precision)."""
    name = "ddp" if setting == "auto" else setting
    if name not in ("ddp", "fsdp") and name not in STRATEGIES:
        raise RecipeError(f"{source}: train.strategy = {setting!r}: unknown; use 'ddp', 'fsdp' or 'auto'")
    return strategy_class(name)(dist, device, dtype) if dist.enabled else Strategy(dist, device, dtype)
