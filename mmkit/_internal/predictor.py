"""Inference with trained models: load by name or path, predict, embed, search, evaluate, save.

    >>> import mmkit
    >>> model = mmkit.load("claims")                                   # doctest: +SKIP
    >>> model.predict([{"image": "a.png", "claim": "there is a red circle"}])  # doctest: +SKIP
    [{'label': 1, 'probs': {'0': 0.03, '1': 0.97}}]

Loading never unpickles: weights are safetensors (their sha256 is checked against ``card.json`` for
registered models), the recipe is TOML and the fit state (label maps, vocabularies) is JSON. The model
is rebuilt from its recipe by :func:`mmkit._internal.trained.load_trained` (which never imports the training
loop), restored, and put in eval mode on the requested device (CPU by default, whatever device it was
trained on).

Input records are dicts keyed by the columns the model was trained with (``card["columns"]``: the
dataset's defaults overridden by the recipe's ``[data] columns``). An empty or missing cell is an
absent modality and goes through the fusion's missing-modality handling; a row whose every input is
empty, or whose value cannot be loaded, is an error naming its row number (or skipped on request).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from mmkit._internal import models as mreg
from mmkit._internal.assembly import choose_device, make_fields
from mmkit._internal.data import Collator, Field, MultimodalDataset, load_field
from mmkit._internal.datasets import DataSplits
from mmkit._internal.errors import DataError, MmkitError
from mmkit._internal.evaluation import evaluate
from mmkit._internal.interfaces import Batch, Fused, Output, Retrieval
from mmkit._internal.manifest import check_columns, count_records, data_context, iter_records
from mmkit._internal.model import MultimodalModel
from mmkit._internal.recipe import Recipe, dump_toml
from mmkit._internal.registry import Registry, get_registry
from mmkit._internal.trained import inference_recipe, load_trained

Records = Iterable[Mapping[str, Any]] | str | Path


# ------------------------------------------------------------------------------------------ records
def _numbered(records: Records) -> tuple[Iterator[tuple[int, Any]], Path | None, str]:
    """(numbered rows, base dir for relative paths, source name) of a file path or an iterable of dicts."""
    if isinstance(records, (str, Path)):
        path = Path(records)
        return iter_records(path), path.resolve().parent, str(path)
    if isinstance(records, Mapping):
        raise TypeError("records must be a list of dicts (one per sample), not a single dict")
    return ((i, r) for i, r in enumerate(records, start=1)), None, "input"


@dataclass
class BadRow:
    """A row that could not be used (``number`` is 1-based)."""

    number: int
    error: str


# ------------------------------------------------------------------------------------------ predictor
class Predictor:
    """A trained model ready for inference (built by :func:`load`).

    Attributes:
        model: the :class:`~mmkit._internal.model.MultimodalModel`, in eval mode on ``device``.
        recipe: the resolved recipe it was trained with.
        columns: field -> input column(s) (``image -> "image"``, ``text -> "claim"``, ``label -> "label"``).
        card: the model card (name, version, task, metrics, ...).
    """

    def __init__(self, model: MultimodalModel, recipe: Recipe, columns: Mapping[str, Any] | None = None, *,
                 card: Mapping[str, Any] | None = None, device: str | torch.device = "cpu",
                 registry: Registry | None = None) -> None:
        self.registry = registry or get_registry()
        self.device = choose_device(device)
        self.model = model.to(self.device).eval()
        self.recipe = recipe
        self.columns = dict(columns if columns is not None else recipe.data.get("columns") or {})
        self.card = dict(card or {})
        self.fields = self._fields(self.columns)

    # ------------------------------------------------------------------ description
    @property
    def task(self) -> str:
        """The head type (``classification``, ``regression``, ``contrastive``, ``captioning`` ...)."""
        return self.recipe.head.type

    @property
    def input_columns(self) -> dict[str, str | list[str]]:
        """Input field -> the column(s) records must have."""
        return {f.name: f.columns for f in self.fields}

    @property
    def target_columns(self) -> dict[str, str]:
        return {f: self.columns.get(f, f) for f in self.model.head.fields}

    def __repr__(self) -> str:
        name = self.card.get("name", "?")
        version = self.card.get("version")
        label = f"{name}@{version}" if version is not None else name
        return f"{type(self).__name__}({label}, task={self.task}, inputs={self.input_columns}, device={self.device})"

    def _fields(self, columns: Mapping[str, Any]) -> list[Field]:
        return make_fields(self.model, columns, self.registry)

    # ------------------------------------------------------------------ batches
    def _items(self, row: Mapping[str, Any], number: int, base_dir: Path | None, source: str) -> dict[str, Any]:
        items: dict[str, Any] = {}
        for fld in self.fields:
            raw = load_field(fld, row, base_dir, source, number - 1)
            if raw is None:
                items[fld.name] = None
                continue
            with data_context(source, number, fld.columns):
                items[fld.name] = fld.encoder.preprocess(raw, train=False)
        if all(v is None for v in items.values()):
            cols = ", ".join(f.column_label() for f in self.fields)
            raise DataError(f"{source} row {number}: every input is empty (columns {cols})")
        return items

    def _check_columns(self, rows: Sequence[Mapping[str, Any]], source: str,
                       only: Sequence[str] | None = None) -> None:
        needed = {f.name: f.columns for f in self.fields if only is None or f.name in only}
        try:
            check_columns(rows, needed, source)
        except DataError as exc:
            raise DataError(f"{exc}. The model reads {self.input_columns} (the columns it was trained on); "
                            f"a modality may be missing from some rows (empty cell), but its column must "
                            f"exist. To predict with a modality absent from every row, pass "
                            f"allow_missing_columns=True (--allow-missing-columns)") from None

    def iter_batches(self, records: Records, batch_size: int = 32, *, base_dir: str | Path | None = None,
                     skip_bad_rows: bool = False, bad_rows: list[BadRow] | None = None,
                     allow_missing_columns: bool = False,
                     require: Sequence[str] | None = None) -> Iterator[tuple[list[int], Batch]]:
        """``(row numbers, Batch)`` over ``records`` (a file or dicts), ``batch_size`` rows at a time.

        Only one chunk of rows is held in memory. A row that cannot be loaded raises
        :class:`DataError` naming its number, or with ``skip_bad_rows`` is appended to ``bad_rows``.
        Every input column must exist in the first chunk (a typo would otherwise silently make a
        modality absent), unless ``allow_missing_columns``; ``require`` limits that check to some fields.
        """
        if batch_size < 1:
            raise MmkitError(f"batch_size must be >= 1, got {batch_size}")
        rows, file_base, source = _numbered(records)
        base = Path(base_dir) if base_dir is not None else file_base
        collate = Collator(self.fields, None)
        checked = allow_missing_columns
        chunk: list[tuple[int, Any]] = []

        def flush() -> Iterator[tuple[list[int], Batch]]:
            nonlocal checked
            good = [r for _, r in chunk if isinstance(r, Mapping)]
            if not checked and good:  # checked on the first chunk with readable rows
                self._check_columns(good, source, require)
                checked = True
            numbers, samples = [], []
            for number, row in chunk:
                try:
                    if isinstance(row, Exception):
                        raise row
                    if not isinstance(row, Mapping):
                        raise DataError(f"{source} row {number}: expected a dict, got {type(row).__name__}")
                    items = self._items(row, number, base, source)
                except DataError as exc:
                    if not skip_bad_rows:
                        raise
                    if bad_rows is not None:
                        bad_rows.append(BadRow(number, str(exc)))
                    continue
                numbers.append(number)
                samples.append((len(samples), items, None))
            chunk.clear()
            if samples:
                yield numbers, collate(samples)

        for number, row in rows:
            chunk.append((number, row))
            if len(chunk) >= batch_size:
                yield from flush()
        if chunk:
            yield from flush()

    @torch.no_grad()
    def _forward(self, batch: Batch) -> tuple[Output, Fused]:
        out, fused = self.model(batch.to(self.device), return_fused=True)
        return out, fused

    # ------------------------------------------------------------------ predict
    def iter_predict(self, records: Records, batch_size: int = 32, **kw: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row number, prediction)`` per usable row; keyword arguments as :meth:`iter_batches`."""
        for numbers, batch in self.iter_batches(records, batch_size, **kw):
            out, _ = self._forward(batch)
            decoded = self.model.head.decode(out.preds)
            yield from zip(numbers, decoded)

    def predict(self, records: Records, batch_size: int = 32, *, base_dir: str | Path | None = None,
                skip_bad_rows: bool = False, allow_missing_columns: bool = False) -> list[dict[str, Any] | None]:
        """One JSON-able prediction per record (the head's ``decode``: ``label``/``probs``, ``value``,
        ``caption``, embeddings ...). With ``skip_bad_rows`` an unusable record gives None."""
        results: dict[int, dict[str, Any]] = {}
        bad: list[BadRow] = []
        for number, pred in self.iter_predict(records, batch_size, base_dir=base_dir,
                                              skip_bad_rows=skip_bad_rows, bad_rows=bad,
                                              allow_missing_columns=allow_missing_columns):
            results[number] = pred
        n = max([*results, *(b.number for b in bad), 0])
        if isinstance(records, (str, Path)):
            n = max(n, count_records(records))
        elif hasattr(records, "__len__"):
            n = max(n, len(records))  # type: ignore[arg-type]
        return [results.get(i) for i in range(1, n + 1)]

    # ------------------------------------------------------------------ embed
    def embedding_dim(self, modality: str | None = None) -> int:
        self._check_modality(modality)
        return int(self.model.fusion.dim if modality is None else self.model.encoders[modality].dim)

    def _check_modality(self, modality: str | None) -> None:
        if modality is not None and modality not in self.model.encoders:
            raise MmkitError(f"unknown modality {modality!r}; this model encodes: {', '.join(self.model.encoders)}")

    def iter_embed(self, records: Records, modality: str | None = None, batch_size: int = 32,
                   **kw: Any) -> Iterator[tuple[list[int], np.ndarray]]:
        """``(row numbers, [n, D] float32)`` chunks; rows where ``modality`` is absent are NaN."""
        self._check_modality(modality)
        if modality is not None:
            kw.setdefault("require", [modality])
        for numbers, batch in self.iter_batches(records, batch_size, **kw):
            _, fused = self._forward(batch)
            if modality is None:
                arr = fused.pooled.float().cpu().numpy()
            else:
                emb = fused.inputs[modality]
                arr = emb.pooled.float().cpu().numpy().copy()
                arr[~emb.present.cpu().numpy()] = np.nan
            yield numbers, arr.astype(np.float32, copy=False)

    def embed(self, records: Records, modality: str | None = None, batch_size: int = 32, *,
              base_dir: str | Path | None = None, skip_bad_rows: bool = False,
              allow_missing_columns: bool = False) -> np.ndarray:
        """``[N, D]`` float32: the fused pooled embedding of each record, or ``modality``'s pooled
        encoder output (NaN rows where that modality is absent; NaN rows for skipped bad records).
        With ``modality`` only that modality's column is required."""
        bad: list[BadRow] = []
        chunks = list(self.iter_embed(records, modality, batch_size, base_dir=base_dir, skip_bad_rows=skip_bad_rows,
                                      bad_rows=bad, allow_missing_columns=allow_missing_columns))
        n = max([n for nums, _ in chunks for n in nums] + [b.number for b in bad] + [0])
        if isinstance(records, (str, Path)):
            n = max(n, count_records(records))
        elif hasattr(records, "__len__"):
            n = max(n, len(records))  # type: ignore[arg-type]
        out = np.full((n, self.embedding_dim(modality)), np.nan, dtype=np.float32)
        for numbers, arr in chunks:
            out[np.asarray(numbers, dtype=np.int64) - 1] = arr
        return out

    # ------------------------------------------------------------------ search
    def _retrieval_head(self) -> Retrieval:
        head = self.model.head
        if not isinstance(head, Retrieval):
            raise MmkitError(f"search needs a head that declares mmkit.Retrieval (retrieval_modalities and "
                             f"retrieval_embeddings, e.g. the 'contrastive' head); this is a {self.task} model "
                             f"({type(head).__name__}): compare embed() vectors instead")
        return head

    def _retrieval_embeddings(self, records: Records, side: str | None, batch_size: int,
                              base_dir: str | Path | None) -> tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """``(side, {modality: (embeddings [N, D], present [N])})`` of the head's retrieval modalities;
        ``side`` is the given one, else the first modality present in every record."""
        head = self._retrieval_head()
        sides = tuple(head.retrieval_modalities)
        parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {m: ([], []) for m in sides}
        for _, batch in self.iter_batches(records, batch_size, base_dir=base_dir, allow_missing_columns=True):
            out, _ = self._forward(batch)
            pairs = head.retrieval_embeddings(out.preds)
            for m in sides:
                emb, present = pairs[m]
                parts[m][0].append(emb.float().cpu().numpy())
                parts[m][1].append(present.bool().cpu().numpy())
        result = {m: (np.concatenate(e) if e else np.zeros((0, 1), np.float32),
                      np.concatenate(p) if p else np.zeros(0, bool)) for m, (e, p) in parts.items()}
        if side is None:
            full = [m for m in sides if result[m][1].shape[0] and result[m][1].all()]
            if not full:
                raise MmkitError(f"search: no modality ({' or '.join(sides)}) is present in every query record")
            side = full[0]
        return side, result

    def search(self, queries: Records, candidates: Records, k: int = 5, *, query_modality: str | None = None,
               candidate_modality: str | None = None, batch_size: int = 32,
               base_dir: str | Path | None = None) -> list[list[dict[str, Any]]]:
        """Rank ``candidates`` for each query with a model whose head declares :class:`mmkit.Retrieval`
        (e.g. contrastive: cosine in its shared space; scores are the head's dot products).

        The query side is ``query_modality``, else the first of the head's ``retrieval_modalities``
        present in every query record; candidates are embedded with ``candidate_modality``, else the
        first other retrieval modality. Returns, per query, the top ``k`` as ``{"index": candidate
        position (0-based), "score": float}``; candidates without that modality are never returned.
        """
        sides = tuple(self._retrieval_head().retrieval_modalities)
        for given, what in ((query_modality, "query_modality"), (candidate_modality, "candidate_modality")):
            if given is not None and given not in sides:
                raise MmkitError(f"{what} must be one of {', '.join(map(repr, sides))}, got {given!r}")
        qside, qres = self._retrieval_embeddings(queries, query_modality, batch_size, base_dir)
        cside = candidate_modality or next(m for m in sides if m != qside)
        _, cres = self._retrieval_embeddings(candidates, cside, batch_size, base_dir)
        (qemb, qpres), (cemb, cpres) = qres[qside], cres[cside]
        if not qpres.all():
            missing = int(np.flatnonzero(~qpres)[0]) + 1
            raise MmkitError(f"search: query record {missing} has no {qside}")
        scores = qemb @ cemb.T
        scores[:, ~cpres] = -np.inf
        k = min(k, int(cpres.sum()))
        results = []
        for row in scores:
            top = np.argsort(-row, kind="stable")[:k]
            results.append([{"index": int(j), "score": float(row[j])} for j in top])
        return results

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, data: Any, split: str = "test", batch_size: int = 32, *, base_dir: str | Path | None = None,
                 options: Mapping[str, Any] | None = None) -> dict[str, float]:
        """The head's metrics on labelled data.

        ``data`` is a manifest path (.jsonl/.csv/.parquet), a registered dataset name (its ``split``;
        the recipe's dataset options are reused when it is the training dataset, ``options`` override),
        a :class:`~mmkit.DataSplits`, or a list of dicts.
        """
        columns = dict(self.columns)
        base = Path(base_dir) if base_dir is not None else None
        if isinstance(data, (str, Path)) and (Path(data).is_file() or Path(data).suffix.lower() in
                                              (".jsonl", ".ndjson", ".csv", ".parquet", ".pq")):
            from mmkit._internal.manifest import read_manifest

            rows = read_manifest(data)
            base = base or Path(data).resolve().parent
            source = str(data)
        else:
            if isinstance(data, str):
                data = self._dataset(data, options)
            if isinstance(data, DataSplits):
                rows = data.splits.get(split) or []
                if not rows:
                    have = [s for s, r in data.splits.items() if r]
                    raise DataError(f"{data.name}: split {split!r} is empty; splits with rows: {', '.join(have)}")
                columns = data.merged_columns(self.recipe.data.get("columns"))
                base = base or data.base_dir
                source = f"{data.name}:{split}"
            else:
                rows = list(data)
                source = "input"
        fields = self._fields(columns)
        head = self.model.head
        targets = {f: columns.get(f, f) for f in head.fields}
        check_columns(rows, {**{f.name: f.columns for f in fields}, **targets}, source)
        ds = MultimodalDataset(rows, fields, head, targets, base_dir=base, source=source, train=False)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False,
                                             collate_fn=Collator(fields, head))
        return evaluate(self.model, loader, self.device)

    def _dataset(self, name: str, options: Mapping[str, Any] | None) -> DataSplits:
        data = self.recipe.data
        opts = dict(data.get("options") or {}) if data.get("dataset") == name else {}
        opts.update(options or {})
        try:
            info = self.registry.describe("dataset", name)
        except MmkitError as exc:
            raise DataError(f"{name!r} is neither a file nor a registered dataset: {exc}") from None
        known = {p.name for p in info.params or ()}
        unknown = sorted(set(opts) - known) if known else []
        if unknown:
            raise DataError(f"dataset {name!r} has no option {unknown[0]!r}; options: {', '.join(sorted(known))}")
        return self.registry.create("dataset", name, **opts)

    # ------------------------------------------------------------------ save
    def save(self, path: str | Path) -> Path:
        """Write this model as a self-contained folder (weights, recipe, fit state, card.json with
        the weights' sha256) that :func:`load` accepts. Refuses to overwrite a non-empty folder."""
        from mmkit._internal.checkpoint import save_weights

        dest = Path(path).expanduser()
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise MmkitError(f"{dest}: already exists and is not empty; choose a new folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            save_weights(self.model, tmp / mreg.WEIGHTS)
            (tmp / mreg.RECIPE).write_text(dump_toml(self.recipe.to_dict()), encoding="utf-8")
            (tmp / mreg.FIT_STATE).write_text(json.dumps(self.model.fit_state(), indent=1), encoding="utf-8")
            keep = {k: v for k, v in self.card.items() if k not in ("sha256", "path", "source")}
            card = {**keep, "format": mreg.CARD_FORMAT, "name": self.card.get("name") or dest.name,
                    "version": self.card.get("version"), "task": self.task,
                    "created": self.card.get("created") or mreg._now(), "saved": mreg._now(),
                    "sha256": {mreg.WEIGHTS: mreg.sha256_file(tmp / mreg.WEIGHTS)}, "columns": self.columns}
            mreg.write_card(tmp, card)
            if dest.exists():
                dest.rmdir()
            os.rename(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest


# ------------------------------------------------------------------------------------------ loading
def load(name_or_path: str | Path, device: str | torch.device = "cpu", *, registry: str | Path | None = None,
         checkpoint: str = "best") -> Predictor:
    """Load a trained model for inference.

    Args:
        name_or_path: ``NAME``, ``NAME@3``, ``NAME@latest`` (the user registry), a registered or saved
            model folder, or a run directory (its ``checkpoint``).
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
        registry: the registry folder (default ``$MMKIT_REGISTRY`` or the user data dir).
        checkpoint: for run directories: ``"best"`` (falls back to ``"last"``) or ``"last"``.

    Raises:
        ChecksumError: the weights do not match the sha256 recorded in card.json.
        ModelNotFoundError: no such model, version or folder.
    """
    trained = load_trained(name_or_path, checkpoint=checkpoint, models_dir=registry, device=choose_device(device))
    card = {**trained.ref.card, "path": str(trained.ref.folder)}
    return Predictor(trained.model, trained.recipe, trained.columns, card=card, device=device,
                     registry=trained.registry)


__all__ = ["BadRow", "Predictor", "count_records", "inference_recipe", "iter_records", "load"]
