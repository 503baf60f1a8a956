"""Classification head: single-label (softmax) or multi-label (sigmoid), labels mapped in ``fit``."""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit import Batch, DataError, Fused, Head, MmkitError, Output, ParameterError

from mmkit_heads.classmetrics import CLASSIFICATION_METRICS, CLASSIFICATION_PATTERNS, ClassificationMetrics, top_k
from mmkit_heads.common import batch_mix, json_label, mix_targets, mlp_trunk
from mmkit_heads.metricset import choose_metrics, metric_direction, pick_monitor


def canonical_label(value: Any) -> Any:
    """The key a raw label is mapped by: integral numbers -> int, strings stripped, others -> str."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()  # numpy / torch scalars
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return value.strip()
    return str(value)


class _LabelTypes:
    """Refuses training labels whose types make their meaning ambiguous: the same text as a number
    and as a string (``1`` and ``"1"`` would be two classes) and booleans beside other labels (``true``
    would merge into ``1``). Other mixes (``"cat"`` and ``2``: a CSV parses each cell by itself) stay
    distinct classes; nothing is merged or split silently."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.by_text: dict[str, tuple[str, Any, int]] = {}
        self.first: dict[bool, tuple[str, Any, int]] = {}  # is-bool -> the first such label

    def add(self, cell: Any, row: int, multi_label: bool) -> None:
        if multi_label and isinstance(cell, (list, tuple, set)):
            items = [v for v in cell if not _is_missing(v)]
        elif multi_label and isinstance(cell, str):
            return  # parts of a delimited string are all strings
        else:
            items = [cell]
        for raw in items:
            value = raw.item() if hasattr(raw, "item") and not isinstance(raw, (str, bytes)) else raw
            kind = ("bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float))
                    else type(value).__name__)
            seen = (kind, value, row)
            self.first.setdefault(kind == "bool", seen)
            if kind == "bool" and False in self.first:
                self._refuse(self.first[False], seen)
            if kind != "bool" and True in self.first:
                self._refuse(self.first[True], seen)
            other = self.by_text.setdefault(str(canonical_label(value)), seen)
            if other[0] != kind:
                self._refuse(other, seen)

    def _refuse(self, a: tuple[str, Any, int], b: tuple[str, Any, int]) -> None:
        first, second = sorted((a, b), key=lambda t: t[2])
        raise DataError(f"{self.field}: labels mix types: {first[1]!r} ({first[0]}, training row {first[2]}) and "
                        f"{second[1]!r} ({second[0]}, training row {second[2]}); write every label the same way")


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


def _sorted_labels(labels: set[Any]) -> list[Any]:
    if all(isinstance(v, int) for v in labels):
        return sorted(labels)
    return sorted(labels, key=str)


class ClassificationHead(Head):
    """Classifies the fused vector: cross-entropy over classes, or per-class BCE with ``multi_label``.

    Labels may be strings or integers; ``fit`` maps the training labels to class indices (sorted),
    and predictions are decoded back to the original labels. A label met after training that was not
    seen in it is a :class:`~mmkit.DataError`. Metrics (``metrics``; computed with torchmetrics,
    see ``docs/heads.md``): ``accuracy``, ``macro_f1``, ``micro_f1``, ``auroc``, ``average_precision``,
    ``log_loss``, ``ece`` and ``top<K>_accuracy``; by default ``accuracy`` and ``macro_f1``
    (multi-label: ``accuracy`` = exact set match, ``micro_f1``, ``macro_f1``).

    Args:
        num_classes: number of classes, or "auto" to use the distinct labels of the training split.
        field: the data field holding the label.
        multi_label: each sample has a set of labels (a list, or a string split on ``delimiter``).
        delimiter: separator of labels in a multi-label string cell, e.g. "cat|dog".
        label_smoothing: cross-entropy label smoothing (single-label only).
        class_weights: per-class loss weights in class-index order (sorted labels), or None.
        hidden: width of a hidden layer before the classifier (0 = linear classifier).
        dropout: dropout on the fused vector (and after the hidden layer).
        threshold: probability above which a class is predicted (multi-label only).
        metrics: metrics to report: accuracy, macro_f1, micro_f1, auroc, average_precision, log_loss, ece,
            top<K>_accuracy (None = accuracy and macro_f1; multi-label: accuracy, micro_f1, macro_f1).
    """

    monitor = "accuracy"
    monitor_mode = "max"

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None,
                 num_classes: int | Literal["auto"] = "auto", field: str = "label", multi_label: bool = False,
                 delimiter: str = "|", label_smoothing: float = 0.0, class_weights: list[float] | None = None,
                 hidden: int = 0, dropout: float = 0.0, threshold: float = 0.5,
                 metrics: list[str] | None = None) -> None:
        super().__init__()
        if num_classes != "auto" and (not isinstance(num_classes, int) or num_classes < 2 and not multi_label):
            raise ParameterError(f"num_classes must be 'auto' or an int >= 2, got {num_classes!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ParameterError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.field = field
        self.fields = (field,)
        self.multi_label = multi_label
        self.delimiter = delimiter
        self.label_smoothing = label_smoothing
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.threshold = threshold
        defaults = ["accuracy", "micro_f1", "macro_f1"] if multi_label else ["accuracy", "macro_f1"]
        self.metrics = choose_metrics("classification", metrics, CLASSIFICATION_METRICS, defaults,
                                      CLASSIFICATION_PATTERNS)
        if multi_label and any(top_k(n) for n in self.metrics):
            raise ParameterError("classification head: top-K accuracy needs single-label data (multi_label = false)")
        directions = {n: metric_direction(n, CLASSIFICATION_METRICS, CLASSIFICATION_PATTERNS) for n in self.metrics}
        self.monitor, self.monitor_mode = pick_monitor("micro_f1" if multi_label else "accuracy", self.metrics,
                                                       directions)
        self.trunk, self._width = mlp_trunk(input_dim, hidden, dropout)
        self.labels: list[Any] = []
        self._index: dict[Any, int] = {}
        self.out: nn.Linear | None = None
        if isinstance(num_classes, int):
            self._set_labels(list(range(num_classes)))

    # ----------------------------------------------------------------------------- labels
    def _set_labels(self, labels: list[Any]) -> None:
        if self.class_weights is not None and len(self.class_weights) != len(labels):
            raise ParameterError(f"class_weights has {len(self.class_weights)} values but there are "
                                 f"{len(labels)} classes ({self._show(labels)})")
        too_big = [n for n in self.metrics if (top_k(n) or 0) >= len(labels)]
        if too_big:
            raise ParameterError(f"classification head: {too_big[0]} needs more than {top_k(too_big[0])} classes, "
                                 f"there are {len(labels)} ({self._show(labels)})")
        self.labels = list(labels)
        self._index = {canonical_label(v): i for i, v in enumerate(self.labels)}
        if self.out is None or self.out.out_features != len(labels):
            self.out = nn.Linear(self._width, len(labels))

    @staticmethod
    def _show(labels: Sequence[Any], limit: int = 20) -> str:
        shown = ", ".join(repr(v) for v in labels[:limit])
        return shown + (f", ... ({len(labels)} in all)" if len(labels) > limit else "")

    def _cell_labels(self, cell: Any) -> list[Any]:
        """The labels in one raw cell (a list for multi-label, else a single label)."""
        if not self.multi_label:
            if _is_missing(cell):
                raise DataError(f"{self.field}: missing label ({cell!r})")
            return [canonical_label(cell)]
        if _is_missing(cell):
            return []
        if isinstance(cell, str):
            return [canonical_label(p) for p in cell.split(self.delimiter) if p.strip()]
        if isinstance(cell, (list, tuple, set)):
            return [canonical_label(p) for p in cell if not _is_missing(p)]
        return [canonical_label(cell)]

    def label_index(self, label: Any) -> int:
        """Class index of a raw label; a :class:`DataError` naming the known labels if it is unknown."""
        key = canonical_label(label)
        idx = self._index.get(key)
        if idx is None and isinstance(key, str):  # "3" in a CSV for an int label seen in JSON
            try:
                idx = self._index.get(int(key))
            except ValueError:
                idx = None
        elif idx is None:
            idx = self._index.get(str(key))
        if idx is None:
            if not self.labels:
                raise MmkitError(f"{type(self).__name__}: fit() must run before labels can be mapped "
                                 "(num_classes = 'auto')")
            raise DataError(f"{self.field}: label {label!r} was not seen in training; known labels: "
                            f"{self._show(self.labels)}")
        return idx

    def fit(self, values: Sequence[Mapping[str, Any]]) -> None:
        found: set[Any] = set()
        types = _LabelTypes(self.field)
        for number, row in enumerate(values, start=1):
            try:
                found.update(self._cell_labels(row[self.field]))
            except DataError as exc:
                raise DataError(f"training row {number}: {exc}") from None
            types.add(row[self.field], number, self.multi_label)
        if not found:
            raise DataError(f"{self.field}: the training split has no labels")
        if self.num_classes == "auto":
            labels = _sorted_labels(found)
        elif all(isinstance(v, int) for v in found) and all(0 <= v < self.num_classes for v in found):
            labels = list(range(self.num_classes))
        elif len(found) == self.num_classes:
            labels = _sorted_labels(found)
        else:
            raise DataError(f"{self.field}: num_classes = {self.num_classes} but the training labels are "
                            f"{self._show(_sorted_labels(found))}; use num_classes = 'auto'")
        if len(labels) < 2 and not self.multi_label:
            raise DataError(f"{self.field}: a classifier needs 2+ classes, training has only {labels!r}")
        self._set_labels(labels)

    def get_fit_state(self) -> dict[str, Any]:
        return {"labels": [json_label(v) for v in self.labels]}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        if "labels" in state:
            self._set_labels(list(state["labels"]))

    # ---------------------------------------------------------------------------- targets
    def preprocess_target(self, raw: Mapping[str, Any]) -> Tensor:
        labels = self._cell_labels(raw[self.field])
        if not self.multi_label:
            return torch.tensor(self.label_index(labels[0]), dtype=torch.long)
        target = torch.zeros(len(self.labels))
        for label in labels:
            target[self.label_index(label)] = 1.0
        return target

    def collate_targets(self, items: list[Tensor]) -> Tensor:
        return torch.stack(items)

    # ---------------------------------------------------------------------------- forward
    def forward(self, fused: Fused, batch: Batch) -> Output:
        if self.out is None:
            raise MmkitError(f"{type(self).__name__}: fit() must run first when num_classes = 'auto'")
        logits = self.out(self.trunk(fused.pooled))
        loss = None
        if batch.targets is not None:
            weight = None if self.class_weights is None else logits.new_tensor(self.class_weights)
            targets = batch.targets.to(logits.device)
            if self.multi_label:
                soft = mix_targets(targets.float(), batch)
                per = F.binary_cross_entropy_with_logits(logits.float(), soft, reduction="none")
                loss = (per * weight if weight is not None else per).mean()
            elif batch_mix(batch) is not None:  # Mixup/CutMix: class probabilities as targets
                soft = mix_targets(F.one_hot(targets, logits.shape[-1]).float(), batch)
                loss = F.cross_entropy(logits.float(), soft, weight=weight, label_smoothing=self.label_smoothing)
            else:
                loss = F.cross_entropy(logits.float(), targets, weight=weight,
                                       label_smoothing=self.label_smoothing)
        return Output(loss, {"logits": logits})

    def new_metrics(self) -> ClassificationMetrics:
        return ClassificationMetrics(len(self.labels), self.multi_label, self.threshold, self.metrics)

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        logits = preds["logits"].detach().float().cpu()
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        rows = []
        for p in probs.tolist():
            named = {str(json_label(label)): v for label, v in zip(self.labels, p)}
            if self.multi_label:
                rows.append({"labels": [json_label(lb) for lb, v in zip(self.labels, p) if v > self.threshold],
                             "probs": named})
            else:
                rows.append({"label": json_label(self.labels[max(range(len(p)), key=p.__getitem__)]),
                             "probs": named})
        return rows
