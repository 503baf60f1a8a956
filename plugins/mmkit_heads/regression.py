"""Regression head: one standardized scalar target, MSE or Huber loss, RMSE/MAE/R²/Spearman metrics."""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit import Batch, DataError, Fused, Head, Output, ParameterError

from mmkit_heads.common import mix_targets, mlp_trunk
from mmkit_heads.metricset import TorchMetricSet, choose_metrics, pick_monitor, torchmetric


class RegressionHead(Head):
    """Predicts one number per sample.

    ``fit`` stores the training targets' mean and standard deviation; the network predicts the
    standardized value ``(y - mean) / std``, the loss is computed on that scale (so its size does not
    depend on the target's units) and predictions are returned on the original scale. Metrics on the
    original scale, computed with torchmetrics: ``rmse``, ``mae``, ``r2`` (1 - SS_res / SS_tot over the
    whole split) by default, and ``spearman`` (rank correlation) on request.

    Args:
        field: the data field holding the target number.
        loss: "mse" or "huber" (smooth L1 on the standardized scale).
        huber_delta: where the Huber loss turns from quadratic to linear (standardized units).
        standardize: standardize targets with the training mean/std (False: predict raw values).
        hidden: width of a hidden layer before the output (0 = linear).
        dropout: dropout on the fused vector (and after the hidden layer).
        metrics: metrics to report (None = ["rmse", "mae", "r2"]); any of rmse, mae, r2, spearman.
    """

    monitor = "rmse"
    monitor_mode = "min"

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None, field: str = "target",
                 loss: Literal["mse", "huber"] = "mse", huber_delta: float = 1.0, standardize: bool = True,
                 hidden: int = 0, dropout: float = 0.0, metrics: list[str] | None = None) -> None:
        super().__init__()
        self.metrics = choose_metrics("regression", metrics, REGRESSION_METRICS, ["rmse", "mae", "r2"])
        self.monitor, self.monitor_mode = pick_monitor("rmse", self.metrics, REGRESSION_METRICS)
        if loss not in ("mse", "huber"):
            raise ParameterError(f"loss must be 'mse' or 'huber', got {loss!r}")
        self.field = field
        self.fields = (field,)
        self.loss_kind = loss
        self.huber_delta = huber_delta
        self.standardize = standardize
        self.mean, self.std = 0.0, 1.0
        self.trunk, width = mlp_trunk(input_dim, hidden, dropout)
        self.out = nn.Linear(width, 1)

    def _value(self, cell: Any) -> float:
        try:
            value = float(cell)
        except (TypeError, ValueError):
            raise DataError(f"{self.field}: regression target {cell!r} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{self.field}: regression target {cell!r} is not finite")
        if abs(value) > 3.4028234663852886e38:  # targets are float32 tensors
            raise DataError(f"{self.field}: regression target {cell!r} is beyond float32's range (±3.4e38)")
        return value

    def fit(self, values: Sequence[Mapping[str, Any]]) -> None:
        ys = []
        for number, row in enumerate(values, start=1):
            try:
                ys.append(self._value(row[self.field]))
            except DataError as exc:
                raise DataError(f"training row {number}: {exc}") from None
        if not ys:
            raise DataError(f"{self.field}: the training split has no targets")
        if self.standardize:
            self.mean = sum(ys) / len(ys)
            var = sum((y - self.mean) ** 2 for y in ys) / len(ys)
            self.std = math.sqrt(var) if var > 0 else 1.0

    def get_fit_state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        self.mean = float(state.get("mean", 0.0))
        self.std = float(state.get("std", 1.0))

    def preprocess_target(self, raw: Mapping[str, Any]) -> Tensor:
        return torch.tensor(self._value(raw[self.field]), dtype=torch.float32)

    def collate_targets(self, items: list[Tensor]) -> Tensor:
        return torch.stack(items)

    def forward(self, fused: Fused, batch: Batch) -> Output:
        z = self.out(self.trunk(fused.pooled)).squeeze(-1).float()
        value = z * self.std + self.mean
        loss = None
        if batch.targets is not None:
            target_z = (mix_targets(batch.targets.to(z.device).float(), batch) - self.mean) / self.std
            if self.loss_kind == "mse":
                loss = F.mse_loss(z, target_z)
            else:
                loss = F.huber_loss(z, target_z, delta=self.huber_delta)
        return Output(loss, {"value": value})

    def new_metrics(self) -> RegressionMetrics:
        return RegressionMetrics(self.metrics)

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"value": v} for v in preds["value"].detach().float().cpu().tolist()]


#: metric name -> better direction
REGRESSION_METRICS = {"rmse": "min", "mae": "min", "r2": "max", "spearman": "max"}
_TORCHMETRICS = {"rmse": ("MeanSquaredError", {"squared": False}), "mae": ("MeanAbsoluteError", {}),
                 "r2": ("R2Score", {}), "spearman": ("SpearmanCorrCoef", {})}


class RegressionMetrics(TorchMetricSet):
    """RMSE, MAE, R² and Spearman's rank correlation over a whole evaluation (torchmetrics, float64).

    R² is ``1 - SS_res / SS_tot`` (1.0 for a perfect fit of a constant target, 0.0 for any other fit of
    one); R² and Spearman are NaN for a split of fewer than 2 samples.
    """

    def __init__(self, metrics: list[str] | None = None) -> None:
        super().__init__(metrics or ["rmse", "mae", "r2"])

    def build(self, name: str) -> Any:
        cls, kwargs = _TORCHMETRICS[name]
        return torchmetric(cls, "regression", **kwargs).set_dtype(torch.float64)

    def prepare(self, output: Output, batch: Batch) -> dict[str, Any] | None:
        if batch.targets is None:
            return None
        pred = output.preds["value"].detach().double().cpu().reshape(-1)
        return {"n": int(pred.shape[0]), "pred": pred, "target": batch.targets.detach().double().cpu().reshape(-1)}

    def feed(self, name: str, meter: Any, prepared: dict[str, Any]) -> None:
        meter.update(prepared["pred"], prepared["target"])

    def value(self, name: str) -> float:
        if name in ("r2", "spearman") and self.samples < 2:
            return float("nan")
        return float(self.meters[name].compute())
