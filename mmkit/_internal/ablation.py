"""Modality ablation: how much does the model rely on each input?

For every input field in turn, every row is marked absent for that field (its presence mask all
False, so the fusion's missing-modality path runs, exactly as for data that lacks the modality) and
the head's metrics are recomputed; the drop against the full model says what that modality
contributes. With a fusion that exposes per-sample modality weights, their mean is reported too:
as *attention weights* when each row's weights sum to 1 (``attention``), else as *gate values*.

``ablate`` works from a run directory (the ``best`` checkpoint by default), a registered model, or a
model already in memory; ``mmkit ablate RUN_DIR`` prints the same numbers, naming the model and the
split it evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmkit._internal.assembly import DataPlan, choose_device, load_splits, make_fields, plan_data
from mmkit._internal.data import Collator, EpochSampler, Field, MultimodalDataset
from mmkit._internal.errors import MmkitError
from mmkit._internal.interfaces import Batch, Metrics
from mmkit._internal.model import MultimodalModel
from mmkit._internal.recipe import Recipe
from mmkit._internal.registry import Registry, get_registry
from mmkit._internal.trained import TrainedModel, load_trained


class AblationError(MmkitError):
    """The ablation cannot run as asked (no checkpoint, unknown split...)."""


def load_run_model(run_dir: str | Path, checkpoint: str = "best", registry: Registry | None = None,
                   device: str | torch.device = "cpu") -> TrainedModel:
    """Restore a trained model (``best`` falls back to ``last`` when the run never evaluated), in
    eval mode; a thin name for :func:`mmkit._internal.trained.load_trained`."""
    try:
        trained = load_trained(run_dir, checkpoint=checkpoint, registry=registry, device=device)
    except LookupError as exc:  # ModelNotFoundError: no such run or no checkpoint yet
        raise AblationError(str(exc)) from None
    trained.model.eval()
    return trained


def without(batch: Batch, name: str) -> Batch:
    """``batch`` with field ``name`` absent from every row (input None, presence all False)."""
    inputs = dict(batch.inputs)
    present = dict(batch.present)
    inputs[name] = None
    present[name] = torch.zeros_like(batch.present[name])
    return Batch(inputs, present, batch.targets, batch.index)


class _Weights:
    """Mean fusion weight per modality over the rows where any modality is present, and over the
    rows where that modality is present; whether every such row's weights sum to 1 (attention
    weights) or not (gate values)."""

    def __init__(self) -> None:
        self.names: list[str] | None = None
        self.total: torch.Tensor | None = None
        self.rows = 0
        self.max_off_one = 0.0  # largest |sum of a row's weights - 1|
        self.when_present: torch.Tensor | None = None
        self.present_rows: torch.Tensor | None = None

    def update(self, weights: torch.Tensor, names: Sequence[str], batch: Batch) -> None:
        w = weights.detach().float().cpu()
        pres = torch.stack([batch.present[n].cpu() if n in batch.present else torch.zeros(w.shape[0], dtype=torch.bool)
                            for n in names], dim=1)
        if self.names is None:
            self.names = list(names)
            self.total = torch.zeros(len(names))
            self.when_present = torch.zeros(len(names))
            self.present_rows = torch.zeros(len(names))
        rows = pres.any(dim=1)
        if rows.any():
            self.max_off_one = max(self.max_off_one, float((w[rows].sum(dim=1) - 1).abs().max()))
        self.total += w[rows].sum(dim=0)
        self.rows += int(rows.sum())
        self.when_present += (w * pres).sum(dim=0)
        self.present_rows += pres.sum(dim=0)

    def result(self) -> dict[str, Any] | None:
        if self.names is None or self.rows == 0:
            return None
        assert self.total is not None and self.when_present is not None and self.present_rows is not None
        mean = {n: float(v) for n, v in zip(self.names, self.total / self.rows)}
        present = {n: float(self.when_present[i] / self.present_rows[i]) if self.present_rows[i] > 0 else None
                   for i, n in enumerate(self.names)}
        kind = "attention" if self.max_off_one < 1e-3 else "gate"
        return {"kind": kind, "mean": mean, "when_present": present, "rows": self.rows}


@torch.no_grad()
def ablate_model(model: MultimodalModel, fields: Sequence[Field], target_columns: Mapping[str, str],
                 rows: Sequence[Mapping[str, Any]], *, base_dir: Path | None = None, batch_size: int = 64,
                 device: str | torch.device = "cpu", source: str = "rows") -> dict[str, Any]:
    """Metrics of ``model`` on ``rows`` with all fields, then without each field in turn.

    One pass over the data: every batch is scored once as is and once per removed field.
    """
    if not rows:
        raise AblationError(f"{source}: no rows to evaluate")
    names = [f.name for f in fields]
    model.eval()
    ds = MultimodalDataset(rows, fields, model.head, target_columns, base_dir=base_dir, source=source, train=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=EpochSampler(len(rows), shuffle=False),
                                         collate_fn=Collator(fields, model.head))
    conditions = [None, *names]
    metrics = {c: model.head.new_metrics() for c in conditions}
    losses = {c: Metrics() for c in conditions}
    weights = _Weights()
    for batch in loader:
        batch = batch.to(device)
        if batch.targets is None:
            raise AblationError(f"{source}: the rows have no targets ({', '.join(target_columns.values())}); "
                                f"ablation needs labelled data")
        for cond in conditions:
            b = batch if cond is None else without(batch, cond)
            out, fused = model(b, return_fused=True)
            metrics[cond].update(out, b)
            losses[cond].update(out, b)
            if cond is None and fused.weights is not None and fused.weight_names:
                weights.update(fused.weights, fused.weight_names, b)

    def computed(cond: str | None) -> dict[str, float]:
        return {**losses[cond].compute(), **{k: float(v) for k, v in metrics[cond].compute().items()}}

    full = computed(None)
    ablations = {}
    for name in names:
        values = computed(name)
        ablations[name] = {"metrics": values,
                           "drop": {k: full[k] - v for k, v in values.items() if k in full}}
    fusion_weights = weights.result()
    return {"metric": model.head.monitor, "monitor_mode": model.head.monitor_mode, "samples": len(rows),
            "fields": names, "full": full, "ablations": ablations, "weights": fusion_weights,
            "attention": fusion_weights if fusion_weights and fusion_weights["kind"] == "attention" else None}


def ablate(source: str | Path | MultimodalModel | Any, split: str = "val",
           rows: Sequence[Mapping[str, Any]] | None = None, *, checkpoint: str = "best",
           recipe: Recipe | None = None, batch_size: int | None = None, device: str | torch.device | None = None,
           registry: Registry | None = None) -> dict[str, Any]:
    """Modality ablation of a trained model.

    Args:
        source: a run directory or registered model name (anything :func:`mmkit.load` takes), a
            :class:`~mmkit._internal.model.MultimodalModel` (then ``recipe`` is needed to know its data), or any
            object with ``model`` and ``recipe`` attributes (a loaded predictor).
        split: the split of the recipe's data to evaluate, used when ``rows`` is None.
        rows: labelled rows (column -> cell) to evaluate instead of a split.
        checkpoint: ``best`` (falls back to ``last``) or ``last``, for a run directory.
        recipe: the model's recipe, when ``source`` is a model.
        batch_size: evaluation batch size (default: the recipe's).
        device: ``cpu``, ``cuda`` or ``auto``/None (cuda when available).

    Returns:
        ``{"model", "split", "source", "metric", "monitor_mode", "samples", "fields",
        "full": {metric: value}, "ablations": {field: {"metrics": {...}, "drop": {metric: full - ablated}}},
        "weights": {"kind": "attention" | "gate", "mean": {field: weight}, "when_present": {...}, "rows"}
        or None, "attention": the same when its kind is attention, else None, "run_dir", "checkpoint"}``.
    """
    dev = choose_device(device)
    registry = registry or get_registry()
    run_dir = checkpoint_path = None
    if isinstance(source, (str, Path)):
        loaded = load_run_model(source, checkpoint, registry, dev)
        model, recipe, plan = loaded.model, loaded.recipe, loaded.plan()
        label = loaded.ref.label if loaded.ref.kind == "registered" else str(loaded.ref.folder)
        if loaded.ref.kind == "run":
            run_dir, checkpoint_path = loaded.ref.folder, loaded.checkpoint
    else:
        model, recipe = _in_memory(source, recipe)
        model = model.to(dev)
        plan = plan_data(recipe, load_splits(recipe, registry))
        plan.bind_targets(model.head.fields)
        label = f"model {recipe.run['name']!r} (in memory)"
    rows, split, where = _rows(plan, split, rows)
    fields = make_fields(model, plan, registry)
    result = ablate_model(model, fields, plan.target_columns, rows, base_dir=plan.splits.base_dir,
                          batch_size=batch_size or int(recipe.train["batch_size"]), device=dev, source=where)
    result.update(model=label, split=split, source=where, run_dir=str(run_dir) if run_dir else None,
                  checkpoint=str(checkpoint_path) if checkpoint_path else None)
    return result


def _in_memory(source: Any, recipe: Recipe | None) -> tuple[MultimodalModel, Recipe]:
    if not isinstance(source, MultimodalModel) and hasattr(source, "model"):
        recipe = recipe or getattr(source, "recipe", None)
        source = source.model
    if not isinstance(source, MultimodalModel):
        raise AblationError(f"ablate: expected a run directory or a model, got {type(source).__name__}")
    if recipe is None:
        raise AblationError("ablate: pass recipe= with a model (it says which columns feed which field)")
    return source, recipe


def _rows(plan: DataPlan, split: str, rows: Sequence[Mapping[str, Any]] | None
          ) -> tuple[Sequence[Mapping[str, Any]], str, str]:
    """(rows, split label, source label): the given rows, or the split's."""
    if rows is not None:
        return rows, "rows", "rows"
    found = plan.rows(split)
    if not found:
        have = ", ".join(s for s, r in plan.splits.splits.items() if r) or "none"
        raise AblationError(f"{plan.splits.name}: split {split!r} is empty or missing (splits: {have})")
    return found, split, plan.source(split)
