"""Assembly: from a recipe (and its data splits) to a data plan and a model, ready to train or use.

This module owns the one merge of a dataset's default columns with the recipe's ``[data] columns``
(:class:`DataPlan`), the one device choice (:func:`choose_device`), fitting components on the
training split, and the frozen-encoder caches. Training (:mod:`mmkit._internal.trainer`), inference
(:mod:`mmkit._internal.predictor`) and ablation import it; it imports none of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from mmkit._internal.data import Collator, EmbeddingCache, Field, MultimodalDataset, load_field
from mmkit._internal.datasets import DataSplits
from mmkit._internal.errors import DataError, MmkitError
from mmkit._internal.interfaces import Batch, scatter_embedding
from mmkit._internal.manifest import check_columns
from mmkit._internal.model import LazyValues, MultimodalModel, build_model
from mmkit._internal.recipe import Recipe
from mmkit._internal.registry import Registry


# ------------------------------------------------------------------------------------------ device
def choose_device(setting: str | torch.device | None = "auto", local_rank: int | None = None,
                  what: str = "device") -> torch.device:
    """``auto``/None: CUDA (device ``local_rank``) when available, else the CPU; ``cpu``; ``cuda``;
    ``cuda:N``. Asking for CUDA where there is none is an error naming ``what`` (e.g. ``train.device``)."""
    text = "auto" if setting is None else str(setting)
    if text in ("cpu", "cpu:0") or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if re.fullmatch(r"auto|cuda(:(0|[1-9][0-9]{0,2}))?", text) is None:  # 'meta', 'bogus', 'cuda:x' ...
        raise MmkitError(f"{what} = {text!r}: not a device ('auto', 'cpu', 'cuda' or 'cuda:N')")
    if not torch.cuda.is_available():
        raise MmkitError(f"{what} = {text!r} but no CUDA device is available; use 'auto' or 'cpu'")
    if text in ("auto", "cuda"):
        return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
    count = torch.cuda.device_count()
    if int(text[5:]) >= count:
        raise MmkitError(f"{what} = {text!r}: there {'is' if count == 1 else 'are'} {count} CUDA device(s) "
                         f"(cuda:0 to cuda:{count - 1})")
    return torch.device(text)


# ------------------------------------------------------------------------------------------ data
def load_splits(recipe: Recipe, registry: Registry) -> DataSplits:
    """The rows of a recipe's data: a registered dataset, or its manifests (relative to the recipe)."""
    data = recipe.data
    if data["dataset"]:
        return registry.create("dataset", data["dataset"], **data["options"])
    from mmkit._internal.shards import load_stream_splits

    paths = {s: (str((recipe.base_dir / data[s]).resolve()) if data[s] else None) for s in ("train", "val", "test")}
    return load_stream_splits(paths, data["stream"], data["columns"], data["split_column"], f"{recipe.source}: data",
                              data["shuffle_buffer"], data["skip_bad_rows"])


@dataclass
class DataPlan:
    """The split rows and which column feeds each field: the dataset's defaults overridden by the
    recipe's ``[data] columns`` (merged here, once); a field without a mapping reads its own name."""

    splits: DataSplits
    columns: dict[str, str | list[str]]
    field_columns: dict[str, str | list[str]]
    target_columns: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> str | list[str]:
        return self.columns.get(name, name)

    def bind_targets(self, target_fields: Sequence[str]) -> None:
        """Fill ``target_columns`` for the head's target fields."""
        self.target_columns = {f: self.column(f) for f in target_fields}  # type: ignore[misc]

    def rows(self, split: str) -> list[dict[str, Any]]:
        return self.splits.splits.get(split) or []

    def stream(self, split: str) -> Any:
        """The :class:`~mmkit._internal.shards.Source` of a streamed split (None when it is read into memory)."""
        from mmkit._internal.shards import streams_of

        return streams_of(self.splits).get(split)

    def source(self, split: str) -> str:
        files = getattr(self.splits, "files", None) or {}
        if split in files:
            return f"{files[split]} ({split})"
        return f"{self.splits.name}:{split}" if self.splits.base_dir is None else f"{self.splits.name} ({split})"


def plan_data(recipe: Recipe, splits: DataSplits) -> DataPlan:
    columns = splits.merged_columns(recipe.data["columns"])
    if not splits.splits.get("train") and "train" not in getattr(splits, "streams", {}):
        raise DataError(f"{splits.name}: the training split is empty")
    return DataPlan(splits, columns, {f: columns.get(f, f) for f in recipe.encoders})


def make_field(name: str, columns: str | list[str], encoder: Any, registry: Registry) -> Field:
    if not encoder.modality:
        raise MmkitError(f"encoder {type(encoder).__name__} for field {name!r} declares no modality")
    modality = registry.get("modality", encoder.modality).load()()
    return Field(name, columns, modality, encoder)


def make_fields(model: MultimodalModel, columns: DataPlan | Mapping[str, Any], registry: Registry) -> list[Field]:
    """One :class:`~mmkit._internal.data.Field` per encoder; ``columns`` (a plan, or field -> column(s)) says
    which column feeds each (a field without a mapping reads its own name)."""
    mapping = columns.field_columns if isinstance(columns, DataPlan) else columns
    return [make_field(n, mapping.get(n, n), e, registry) for n, e in model.encoders.items()]


class FitData:
    """Lazy training-split values handed to ``fit`` (an encoder that ignores them loads nothing)."""

    def __init__(self, plan: DataPlan, registry: Registry) -> None:
        self.plan, self.registry = plan, registry

    def values(self, name: str, encoder: Any) -> Sequence[Any]:
        fld = make_field(name, self.plan.field_columns[name], encoder, self.registry)
        if self.plan.stream("train") is not None:
            from mmkit._internal.streaming import field_values

            return field_values(self.plan.stream("train"), fld)
        rows = self.plan.rows("train")
        src = self.plan.source("train")
        present = [i for i, r in enumerate(rows) if not fld.is_absent(fld.cell(r))]
        return LazyValues(len(present), lambda j: load_field(fld, rows[present[j]], self.plan.splits.base_dir, src,
                                                             present[j]))

    def targets(self, fields: Sequence[str]) -> Sequence[Mapping[str, Any]]:
        cols = {f: self.plan.target_columns[f] for f in fields}
        if self.plan.stream("train") is not None:
            from mmkit._internal.streaming import target_values

            return target_values(self.plan.stream("train"), cols)
        return [{f: r.get(c) for f, c in cols.items()} for r in self.plan.rows("train")]


# ------------------------------------------------------------------------------------------ model
def assemble(recipe: Recipe, registry: Registry, plan: DataPlan | None = None,
             fit_state: Mapping[str, Any] | None = None) -> MultimodalModel:
    """Build the model, then fit its components on the training split (or restore ``fit_state``).

    With a ``plan``, its target columns are bound to the head and every split is checked to have
    the columns the model reads.
    """
    model = build_model(recipe, fit_state=fit_state, registry=registry)
    if plan is None:
        model.apply_freeze()
        return model
    plan.bind_targets(model.head.fields)
    for split, rows in plan.splits.splits.items():
        if rows:
            check_columns(rows, {**plan.field_columns, **plan.target_columns}, plan.source(split))
        elif plan.stream(split) is not None:  # a stream: its first samples
            check_columns(plan.stream(split).peek(), {**plan.field_columns, **plan.target_columns},
                          plan.source(split))
    if fit_state is None:
        _fit(model, recipe, plan, registry)
    model.apply_freeze()  # again: fit may have created parameters (vocabulary-sized tables)
    return model


def _fit(model: MultimodalModel, recipe: Recipe, plan: DataPlan, registry: Registry) -> None:
    fit = FitData(plan, registry)
    src = plan.source("train")
    for name, enc in model.encoders.items():
        cols = plan.field_columns[name]
        with _fitting(src, f"field {name!r} (column {cols if isinstance(cols, str) else ', '.join(cols)})",
                      recipe.encoders[name].type):
            enc.fit(fit.values(name, enc))
    targets = ", ".join(f"{f!r} (column {plan.target_columns[f]!r})" for f in model.head.fields)
    with _fitting(src, f"target {targets}", recipe.head.type):
        model.head.fit(fit.targets(model.head.fields))


@contextmanager
def _fitting(source: str, what: str, component: str) -> Iterator[None]:
    """Errors of a component's ``fit`` name the training file and the field they come from."""
    try:
        yield
    except DataError as exc:
        if str(exc).startswith(source):  # a value that failed to load: already located
            raise
        raise DataError(f"{source}: {what}: {exc}") from exc
    except MmkitError:
        raise
    except Exception as exc:
        raise DataError(f"{source}: {what}: {component} could not fit the training data: "
                        f"{type(exc).__name__}: {exc}") from exc


def check_rows(model: MultimodalModel, fields: Sequence[Field], plan: DataPlan, limit: int = 20) -> dict[str, Any]:
    """Load and preprocess every row of every split as evaluation would (files, cells, targets).

    Returns ``{"rows": {split: n}, "errors": [message, ...]}`` with at most ``limit`` errors, each
    naming the file, row and column.
    """
    counts: dict[str, int] = {}
    errors: list[str] = []
    for split, rows in plan.splits.splits.items():
        if plan.stream(split) is not None:
            from mmkit._internal.streaming import check_stream

            counts[split] = check_stream(plan.stream(split), model, fields, plan.target_columns, errors, limit)
            if len(errors) >= limit:
                return {"rows": counts, "errors": errors, "truncated": True}
            continue
        if not rows:
            continue
        ds = MultimodalDataset(rows, fields, model.head, plan.target_columns, base_dir=plan.splits.base_dir,
                               source=plan.source(split), train=False)
        counts[split] = len(rows)
        for i in range(len(rows)):
            try:
                ds[i]
            except DataError as exc:
                errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a component's own failure, located here
                errors.append(f"{plan.source(split)} row {i + 1}: {type(exc).__name__}: {exc}")
            if len(errors) >= limit:
                return {"rows": counts, "errors": errors, "truncated": True}
    return {"rows": counts, "errors": errors, "truncated": False}


# ------------------------------------------------------------------------------------------ caches
def build_caches(model: MultimodalModel, fields: Sequence[Field], plan: DataPlan, device: torch.device,
                 batch_size: int, enabled: bool, log: Callable[[str], None]) -> dict[str, dict[str, EmbeddingCache]]:
    """``{split: {field: cache}}`` for frozen encoders with deterministic preprocessing."""
    caches: dict[str, dict[str, EmbeddingCache]] = {}
    if not enabled:
        return caches
    for fld in fields:
        if fld.name not in model.frozen:
            continue
        if not fld.encoder.deterministic_train:
            log(f"cache: {fld.name} not cached (its training preprocessing is random)")
            continue
        for split, rows in plan.splits.splits.items():
            if not rows:
                continue
            ds = MultimodalDataset(rows, [fld], None, None, base_dir=plan.splits.base_dir,
                                   source=plan.source(split), train=False)
            loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                                 collate_fn=Collator([fld], None))
            caches.setdefault(split, {})[fld.name] = _encode_split(model, fld, loader, len(rows), device)
    return caches


@torch.no_grad()
def _encode_split(model: MultimodalModel, fld: Field, loader: Iterable[Batch], n: int,
                  device: torch.device) -> EmbeddingCache:
    encoder = model.encoders[fld.name]
    pooled = torch.zeros(n, encoder.dim)
    present = torch.zeros(n, dtype=torch.bool)
    chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for batch in loader:
        batch = batch.to(device)
        value = batch.inputs[fld.name]
        mask = batch.present[fld.name]
        idx = batch.index.cpu()
        present[idx] = mask.cpu()
        if value is None:
            continue
        emb = scatter_embedding(encoder(value), mask)
        pooled[idx] = emb.pooled.float().cpu()
        if emb.tokens is not None:
            chunks.append((idx, emb.tokens.float().cpu(), emb.token_mask.cpu()))
    tokens = token_mask = None
    if chunks:
        t_max = max(c[1].shape[1] for c in chunks)
        tokens = torch.zeros(n, t_max, encoder.dim)
        token_mask = torch.zeros(n, t_max, dtype=torch.bool)
        for idx, tok, msk in chunks:
            tokens[idx, : tok.shape[1]] = tok
            token_mask[idx, : msk.shape[1]] = msk
    elif encoder.has_tokens:
        tokens, token_mask = torch.zeros(n, 1, encoder.dim), torch.zeros(n, 1, dtype=torch.bool)
    return EmbeddingCache(pooled, present, tokens, token_mask)


def cache_info(caches: Mapping[str, Mapping[str, EmbeddingCache]], plan: DataPlan) -> dict[str, Any]:
    """``{field: {"samples", "mb"}}`` over the splits a field is cached for (the summary's ``cache``)."""
    fields = {f for split in caches.values() for f in split}
    return {f: {"samples": sum(len(plan.rows(s)) for s in caches if f in caches[s]),
                "mb": round(sum(caches[s][f].nbytes for s in caches if f in caches[s]) / 2**20, 1)}
            for f in fields}
