"""Evaluation of a model over a whole split: the head's metrics and the mean loss.

Shared by training (:mod:`mmkit._internal.trainer`) and inference
(:meth:`mmkit._internal.predictor.Predictor.evaluate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import torch
from torch import nn

from mmkit._internal.interfaces import Batch, Metrics
from mmkit._internal.model import MultimodalModel


def unwrap(model: nn.Module) -> MultimodalModel:
    """The :class:`MultimodalModel` inside ``torch.compile`` and DDP wrappers."""
    inner: Any = getattr(model, "_orig_mod", model)
    return cast(MultimodalModel, getattr(inner, "module", inner))


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """``torch.autocast`` to ``dtype`` on ``device``; nothing for fp32 (``dtype`` None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Batch], device: torch.device, amp_dtype: torch.dtype | None = None,
             gather: Callable[[Metrics], Metrics] | None = None) -> dict[str, float]:
    """The head's metrics (and the mean loss) over ``loader``; ``gather`` merges the metric states of
    all processes (a distributed run, where each rank saw a shard)."""
    net = unwrap(model)
    was_training = net.training
    net.eval()
    metrics = net.head.new_metrics()
    loss_meter = Metrics()
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            out = net(batch)
        metrics.update(out, batch)
        loss_meter.update(out, batch)
    if gather is not None:
        metrics, loss_meter = gather(metrics), gather(loss_meter)
    net.train(was_training)
    return {**loss_meter.compute(), **{k: float(v) for k, v in metrics.compute().items()}}
