"""Small pieces shared by the heads: the MLP trunk, list-concatenating metric state, mixed targets."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmkit import Batch, ParameterError


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


# --------------------------------------------------------------------------------- mixed batches
def batch_mix(batch: Batch) -> tuple[str, Tensor, Tensor, Tensor] | None:
    """``(field, rows, lam, perm)`` when an encoder mixed this batch's inputs (Mixup/CutMix), else None.

    The convention (``docs/heads.md``): an encoder that mixes returns from ``collate`` a dict with
    ``"mix": {"lam": scalar, "perm": [P] long}`` over its *present* rows; present row ``i`` became
    ``lam * x[i] + (1 - lam) * x[perm[i]]``. ``rows`` are those present rows' batch positions.
    """
    found = [(name, value["mix"]) for name, value in batch.inputs.items()
             if isinstance(value, dict) and isinstance(value.get("mix"), dict)]
    if not found:
        return None
    if len(found) > 1:
        raise ParameterError(f"mixup/cutmix is on for more than one encoder ({', '.join(n for n, _ in found)}); "
                             "the targets can follow one mixing only: turn it off for all but one")
    name, mix = found[0]
    rows = batch.present[name].nonzero(as_tuple=True)[0]
    return name, rows, mix["lam"], mix["perm"]


def mix_targets(target: Tensor, batch: Batch) -> Tensor:
    """Float targets ``[B, ...]`` mixed the way an encoder mixed the inputs (unchanged if it did not)."""
    info = batch_mix(batch)
    if info is None:
        return target
    _, rows, lam, perm = info
    rows = rows.to(target.device)
    lam = lam.to(device=target.device, dtype=target.dtype)
    mixed = target.clone()
    mixed[rows] = lam * target[rows] + (1 - lam) * target[rows[perm.to(target.device)]]
    return mixed


def refuse_mixing(batch: Batch, head: str) -> None:
    """Raise if an encoder mixed the batch: ``head`` has no targets that can be mixed."""
    info = batch_mix(batch)
    if info is not None:
        raise ParameterError(f"the {head} head cannot mix its targets, but mixup/cutmix is on for encoder "
                             f"{info[0]!r}: set mixup = 0 and cutmix = 0 there")
