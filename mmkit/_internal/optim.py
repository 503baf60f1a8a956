"""Optimizer and learning-rate schedule of a recipe's ``[train]`` table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmkit._internal.errors import RecipeError
from mmkit._internal.recipe import Recipe


# The rate ``lr_mult = "auto"`` gives an encoder that loaded pretrained weights. Measured on the quickstart
# (docs/models.md): MiniLM fine-tuned at 1e-5 reached 1.000 val accuracy; at 1e-4 it stayed on the 0.85 plateau.
PRETRAINED_LR = 1e-5


def encoder_lr_mult(lr_mult: float | str, encoder: nn.Module | None, lr: float) -> float:
    """An encoder's lr multiplier: the recipe's, or for ``auto`` 1 -- or ``PRETRAINED_LR / lr`` (at most 1)
    when the encoder says it loaded pretrained weights (``Encoder.pretrained``)."""
    if lr_mult != "auto":
        return float(lr_mult)
    if getattr(encoder, "pretrained", False) is True and lr > 0:  # True, not a truthy name or path
        return min(1.0, PRETRAINED_LR / lr)
    return 1.0


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """AdamW/SGD groups: no weight decay on norms and biases; per-encoder lr multipliers;
    frozen parameters excluded."""
    lr, wd = recipe.train["lr"], recipe.train["weight_decay"]
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    encoders = getattr(model, "encoders", {})
    mults = {f"encoders.{k}.": encoder_lr_mult(s.lr_mult, encoders[k] if k in encoders else None, lr)
             for k, s in recipe.encoders.items()}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for prefix, m in mults.items() if name.startswith(prefix)), 1.0)
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        groups.setdefault((mult, no_decay), []).append(p)
    return [{"params": ps, "lr": lr * mult, "base_lr": lr * mult, "weight_decay": 0.0 if nd else wd}
            for (mult, nd), ps in groups.items()]


def make_optimizer(groups: list[dict[str, Any]], recipe: Recipe) -> torch.optim.Optimizer:
    t = recipe.train
    if not groups:
        raise RecipeError(f"{recipe.source}: nothing to train: every parameter is frozen")
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=t["lr"], momentum=t["momentum"], foreach=True)
    if _fusable(groups):
        return torch.optim.AdamW(groups, lr=t["lr"], fused=True)
    return torch.optim.AdamW(groups, lr=t["lr"], foreach=True)  # one kernel per op for all tensors


_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _fusable(groups: list[dict[str, Any]]) -> bool:
    """Whether AdamW's fused kernel applies (floating-point parameters on CPU or CUDA). It took 7 %
    less CPU time per step than foreach on CPU (benchmarks/tricks.py, docs/performance.md)."""
    params = [p for g in groups for p in g["params"]]
    return all(p.device.type in ("cpu", "cuda") and p.dtype in _FUSED_DTYPES for p in params)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class Schedule:
    """Linear warm-up, then cosine/linear decay or constant, over ``total`` optimizer steps."""

    total: int
    warmup: int
    kind: str
    lr: float  # train.lr: what apply() reports (a group may run at an encoder's multiple of it)

    @classmethod
    def from_recipe(cls, train: Mapping[str, Any], total: int) -> Schedule:
        # auto: 100 steps, or a quarter of a shorter run. On the learning benchmark (transformer fusion,
        # 400 steps, seed 0) 100 steps beat the former min(100, 10%) = 40: tabular 0.936 vs 0.914,
        # counting 0.664 vs 0.634, sequence 0.996 vs 0.990; lr 1e-3 was worse on two of the three.
        warmup = min(100, total // 4) if train["warmup_steps"] == "auto" else int(train["warmup_steps"])
        return cls(total, warmup, train["schedule"], float(train["lr"]))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set every group's lr for optimizer step ``step``; returns ``train.lr``'s value at that step (the
        fusion and head's rate; a pretrained encoder's group may be at a fraction of it)."""
        factor = lr_factor(step, self.total, self.warmup, self.kind)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        return self.lr * factor
