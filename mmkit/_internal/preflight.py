"""What ``mmkit run`` refuses before its first step, in one place.

:class:`~mmkit._internal.trainer.Trainer` meets these checks while it sets up (device, precision, strategy,
callbacks and the optional packages they need, the monitored metric); ``mmkit check`` calls
:func:`check_training`, which runs the *same* functions in the same order on a model that is
already built, so that ``check`` refuses everything ``run`` would -- without creating a run
directory and without training. There is no second list of rules here: a new strategy in
:data:`mmkit._internal.distributed.STRATEGIES`, a new precision rule in ``Precision.choose`` or a callback's
own :meth:`~mmkit.Callback.check` is seen by both.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from mmkit._internal.errors import DataError, RecipeError

if TYPE_CHECKING:  # pragma: no cover
    from mmkit._internal.assembly import DataPlan
    from mmkit._internal.model import MultimodalModel
    from mmkit._internal.recipe import Recipe
    from mmkit._internal.registry import Registry
    from mmkit._internal.trainer import Monitor


def choose_precision(cfg: Any, device: torch.device, source: str) -> Any:
    """``Precision.choose`` for ``train.precision`` on ``device``; a refusal names the recipe file."""
    from mmkit._internal.trainer import Precision

    try:
        return Precision.choose(cfg["precision"], device)
    except RecipeError as exc:
        raise RecipeError(f"{source}: {exc}") from None


def check_callbacks(callbacks: Iterable[Any], recipe: Recipe) -> None:
    """Each callback's :meth:`~mmkit.Callback.check` (e.g. TensorBoard without its package)."""
    for callback in callbacks:
        check = getattr(callback, "check", None)
        if check is not None:
            check(recipe)


def check_monitor(monitor: Monitor, model: torch.nn.Module, val: Iterable[Any] | None, device: torch.device,
                  amp_dtype: torch.dtype | None, source: str) -> None:
    """Evaluate one validation batch and check that ``train.monitor`` is among the metrics the head
    reports (training would otherwise stop at its first evaluation). Nothing to check without a
    validation split: training never evaluates then."""
    from mmkit._internal.evaluation import evaluate

    if val is None:
        return
    batch = next(iter(val), None)
    if batch is None:
        return
    monitor.check(evaluate(model, [batch], device, amp_dtype), source)


def check_training(recipe: Recipe, registry: Registry, model: MultimodalModel, plan: DataPlan, *,
                   rows: bool = True) -> list[str]:
    """Everything ``mmkit run`` (one process) refuses after its model is built: the device, precision,
    strategy, callbacks and monitored metric, through the functions the Trainer uses. With ``rows``
    False (``mmkit check --no-rows``) a validation batch that cannot be loaded does not fail the
    check: it becomes a note (the monitor is then unchecked). Returns the notes."""
    from mmkit._internal.assembly import choose_device, make_fields
    from mmkit._internal.callbacks import build_callbacks
    from mmkit._internal.distributed import Dist, make_strategy
    from mmkit._internal.loaders import TrainData
    from mmkit._internal.trainer import Monitor

    cfg = recipe.train
    dist = Dist()
    device = choose_device(cfg["device"], dist.local_rank, what="train.device")
    precision = choose_precision(cfg, device, recipe.source)
    monitor = Monitor.from_recipe(cfg, model.head)  # in the Trainer's order: the first refusal is the same
    data = TrainData(plan, make_fields(model, plan, registry), model.head, {}, batch_size=min(cfg["batch_size"], 8),
                     workers=0, seed=int(recipe.run["seed"]), dist=dist, device=device)
    model.to(device)
    notes = []
    try:
        check_monitor(monitor, model, data.val, device, precision.dtype, recipe.source)
    except DataError as exc:
        if rows:
            raise
        notes.append(f"train.monitor not checked: the first validation batch cannot be loaded: {exc}")
    make_strategy(cfg["strategy"], dist, device, recipe.source)
    check_callbacks(build_callbacks(cfg["callbacks"], registry, recipe.source), recipe)
    return notes


__all__ = ["check_callbacks", "check_monitor", "check_training", "choose_precision"]
