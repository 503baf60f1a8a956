"""Small pieces shared by the heads: the MLP trunk and list-concatenating metric state."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def mlp_trunk(input_dim: int, hidden: int, dropout: float) -> tuple[nn.Module, int]:
    """Dropout, then (when ``hidden > 0``) ``Linear -> GELU -> Dropout``; returns the module and its width."""
    if hidden <= 0:
        return nn.Dropout(dropout), input_dim
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, hidden), nn.GELU(), nn.Dropout(dropout)), hidden


def cat_or_empty(parts: list[Tensor], *shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Concatenate accumulated CPU tensors (an empty tensor of ``shape`` when there are none)."""
    return torch.cat(parts) if parts else torch.zeros((0, *shape), dtype=dtype)


def json_label(value: Any) -> Any:
    """A label as JSON can hold it (numbers and strings stay, anything else becomes a string)."""
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
