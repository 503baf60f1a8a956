"""Classification metrics (single-label and multi-label), computed with torchmetrics.

Names (``[model.head] metrics = [...]``):

* ``accuracy``: fraction of samples whose top class is the label (multi-label: exact set match).
* ``macro_f1``: per-class F1 averaged over the classes that occur in the targets or the predictions
  of the split (as scikit-learn does for single-label data); ``micro_f1``: F1 of the pooled counts.
* ``top<K>_accuracy`` (single-label): the label is among the ``K`` most probable classes.
* ``auroc``: area under the ROC curve, one class against the rest, averaged over the classes that
  have both positives and negatives in the split; with 2 classes, the AUROC of class index 1.
* ``average_precision``: area under the precision-recall curve (torchmetrics' step-wise AP), averaged
  over the classes with positives; with 2 classes, the AP of class index 1.
* ``log_loss``: mean negative log-likelihood of the true class (multi-label: mean binary
  cross-entropy over samples and labels); unlike ``loss`` it ignores label smoothing and class weights.
* ``ece``: expected calibration error, 15 equal-width bins, L1: top-label confidence against
  accuracy (multi-label: every (sample, label) probability against its 0/1 target).

A metric that the split cannot define (AUROC with one class present) is NaN.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mmkit import Batch, Output

from mmkit_heads.metricset import TorchMetricSet, torchmetric

#: metric name -> better direction
CLASSIFICATION_METRICS = {"accuracy": "max", "macro_f1": "max", "micro_f1": "max", "auroc": "max",
                          "average_precision": "max", "log_loss": "min", "ece": "min"}
#: names with a parameter (single-label only)
TOP_K = r"top([1-9]\d*)_accuracy"
CLASSIFICATION_PATTERNS = {TOP_K: "max"}
ECE_BINS = 15


def top_k(name: str) -> int | None:
    """``K`` of a ``top<K>_accuracy`` name, else None."""
    import re

    match = re.fullmatch(TOP_K, name)
    return int(match.group(1)) if match else None


def f1_scores(tp: Tensor, fp: Tensor, fn: Tensor) -> tuple[float, float]:
    """(micro-F1, macro-F1) from per-class counts; macro averages classes with ``tp + fp + fn > 0``."""
    tp, fp, fn = tp.double(), fp.double(), fn.double()
    denom = 2 * tp + fp + fn
    used = denom > 0
    micro = float(2 * tp.sum() / denom.sum()) if denom.sum() > 0 else 0.0
    macro = float((2 * tp[used] / denom[used]).mean()) if used.any() else 0.0
    return micro, macro


class ClassificationMetrics(TorchMetricSet):
    """The chosen classification metrics over a whole evaluation (see the module docstring)."""

    def __init__(self, num_classes: int, multi_label: bool = False, threshold: float = 0.5,
                 metrics: list[str] | None = None) -> None:
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.threshold = threshold
        names = metrics or (["accuracy", "micro_f1", "macro_f1"] if multi_label else ["accuracy", "macro_f1"])
        helpers = ["_support"] if {"auroc", "average_precision"} & set(names) else []
        super().__init__(names, helpers)

    @property
    def binary_column(self) -> int | None:
        """The column of a binary problem (class index 1 of two classes; a multi-label task's only
        label), which torchmetrics' ``Binary*`` metrics then read; None for a multi-class one."""
        if not self.multi_label and self.num_classes == 2:
            return 1
        return 0 if self.multi_label and self.num_classes == 1 else None

    # ------------------------------------------------------------------------------- building
    def build(self, name: str) -> Any:
        c, kind = self.num_classes, "Multilabel" if self.multi_label else "Multiclass"
        args: dict[str, Any] = {"num_labels": c, "threshold": self.threshold} if self.multi_label else {
            "num_classes": c}
        one_label = self.multi_label and c == 1  # torchmetrics' multi-label metrics need 2+ labels
        if name in ("macro_f1", "micro_f1", "_support"):  # per-class tp, fp, tn, fn, support
            if one_label:
                return torchmetric("BinaryStatScores", threshold=self.threshold)
            return torchmetric(f"{kind}StatScores", average="none", **args)
        if name == "accuracy":
            if one_label:
                return torchmetric("BinaryAccuracy", threshold=self.threshold)
            if self.multi_label:
                return torchmetric("MultilabelExactMatch", **args)
            return torchmetric("MulticlassAccuracy", average="micro", **args)
        if top_k(name):
            return torchmetric("MulticlassAccuracy", average="micro", top_k=top_k(name), **args)
        if name in ("auroc", "average_precision"):
            cls = "AUROC" if name == "auroc" else "AveragePrecision"
            if self.binary_column is not None:
                return torchmetric(f"Binary{cls}", thresholds=None)
            args.pop("threshold", None)
            return torchmetric(f"{kind}{cls}", average="none", thresholds=None, **args)
        if name == "log_loss":
            meter = torchmetric("MeanMetric", "aggregation")
            return meter.set_dtype(torch.float64)
        if name == "ece":
            if self.multi_label:
                return torchmetric("BinaryCalibrationError", n_bins=ECE_BINS, norm="l1")
            return torchmetric("MulticlassCalibrationError", n_bins=ECE_BINS, norm="l1", num_classes=c)
        raise KeyError(name)

    # ------------------------------------------------------------------------------- feeding
    def prepare(self, output: Output, batch: Batch) -> dict[str, Any] | None:
        if batch.targets is None:
            return None
        logits = output.preds["logits"].detach().double().cpu()
        if self.multi_label:
            target = (batch.targets.detach().cpu() > 0.5).long()
            probs = torch.sigmoid(logits)
            nll = F.binary_cross_entropy_with_logits(logits, target.double(), reduction="none").mean(dim=1)
        else:
            target = batch.targets.detach().cpu().long()
            probs = torch.softmax(logits, dim=-1)
            nll = -torch.log_softmax(logits, dim=-1).gather(1, target[:, None])[:, 0]
        return {"n": int(target.shape[0]), "probs": probs.float(), "target": target, "nll": nll}

    def feed(self, name: str, meter: Any, prepared: dict[str, Any]) -> None:
        probs, target = prepared["probs"], prepared["target"]
        if name == "log_loss":
            meter.update(prepared["nll"])
        elif name == "ece" and self.multi_label:
            meter.update(probs.flatten(), target.flatten())
        elif self.multi_label and self.num_classes == 1:
            meter.update(probs[:, 0], target[:, 0])
        elif name in ("auroc", "average_precision") and self.binary_column is not None:
            meter.update(probs[:, self.binary_column], target)
        else:
            meter.update(probs, target)

    # ------------------------------------------------------------------------------- reading
    def value(self, name: str) -> float:
        meter = self.meters[name]
        if name in ("macro_f1", "micro_f1"):
            stats = meter.compute().reshape(-1, 5)  # per class: tp, fp, tn, fn, support
            micro, macro = f1_scores(stats[:, 0], stats[:, 1], stats[:, 3])
            return macro if name == "macro_f1" else micro
        if name in ("auroc", "average_precision"):
            return self._per_class_mean(name, meter)
        return float(meter.compute())

    def _per_class_mean(self, name: str, meter: Any) -> float:
        """Mean over the classes the split defines it for (positives, and negatives for AUROC)."""
        support = self.meters["_support"].compute().reshape(-1, 5)[:, 4]
        defined = (support > 0) & ((support < self.samples) if name == "auroc" else True)
        if self.binary_column is not None:
            return float(meter.compute()) if bool(defined[self.binary_column]) else float("nan")
        scores = meter.compute().double()
        return float(scores[defined].mean()) if bool(defined.any()) else float("nan")
