"""``attention``: a per-sample softmax over the present modalities weights their projected vectors."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmkit import Embedding, Fused, Fusion, ParameterError
from mmkit_fusion.common import (FeedForward, Projection, batch_info, check_positive, check_probability,
                                 masked_pooled, modality_dropout, modality_order, presence)


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax of ``scores [B, M]`` over the True entries of ``mask``; exactly 0 elsewhere, and an
    all-zero row where ``mask`` has no True entry (no NaN)."""
    any_real = mask.any(dim=-1, keepdim=True)
    filled = scores.masked_fill(~mask, float("-inf"))
    filled = torch.where(any_real, filled, torch.zeros_like(scores))
    return torch.softmax(filled, dim=-1) * mask.to(scores.dtype)


class AttentionFusion(Fusion):
    """Modality-level attention: a learned gate scores each present modality per sample.

    Each modality's pooled vector is projected to ``dim`` (Linear + LayerNorm); a shared scoring MLP
    plus a per-modality bias gives one score per modality; a softmax over the *present* modalities
    gives weights (absent -> 0) and the fused vector is the weighted sum, optionally refined by a
    residual MLP. ``Fused.weights [B, M]`` with ``Fused.weight_names`` shows which modality each
    sample relied on.

    Args:
        dim: width of the projections and of the fused output.
        gate_hidden: hidden width of the scoring MLP.
        temperature: softmax temperature of the gate (higher -> more uniform weights).
        mlp: add a residual MLP (``dim -> 2*dim -> dim``) after the weighted sum.
        dropout: dropout inside the MLP.
        modality_dropout: training only: probability of dropping each present modality of each
            sample (never a sample's last one).
    """

    has_tokens = False

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None, dim: int = 256,
                 gate_hidden: int = 64, temperature: float = 1.0, mlp: bool = True, dropout: float = 0.1,
                 modality_dropout: float = 0.0) -> None:
        super().__init__()
        check_positive("dim", dim)
        check_positive("gate_hidden", gate_hidden)
        check_probability("dropout", dropout)
        check_probability("modality_dropout", modality_dropout)
        if not float(temperature) > 0:
            raise ParameterError(f"temperature must be > 0, got {temperature!r}")
        self.modalities = modality_order(input_dims)
        self.dim = dim
        self.temperature = float(temperature)
        self.modality_dropout = modality_dropout
        self.proj = nn.ModuleDict({m: Projection(input_dims[m], dim) for m in self.modalities})
        self.gate = nn.Sequential(nn.Linear(dim, gate_hidden), nn.Tanh(), nn.Linear(gate_hidden, 1))
        self.gate_bias = nn.Parameter(torch.zeros(len(self.modalities)))
        self.mlp = nn.Sequential(nn.LayerNorm(dim), FeedForward(dim, 2 * dim, dim, dropout)) if mlp else None
        self.norm = nn.LayerNorm(dim)

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        batch, device, dtype = batch_info(embeddings, self.modalities)
        embs = modality_dropout(embeddings, self.modalities, self.modality_dropout, self.training)
        pres = presence(embs, self.modalities, batch, device)
        vectors = torch.stack([self.proj[m](masked_pooled(embs[m])) if m in embs
                               else torch.zeros(batch, self.dim, device=device, dtype=dtype)
                               for m in self.modalities], dim=1)  # [B, M, dim]
        vectors = torch.where(pres[..., None], vectors, torch.zeros_like(vectors))
        scores = (self.gate(vectors).squeeze(-1) + self.gate_bias) / self.temperature
        weights = masked_softmax(scores, pres)
        pooled = (weights[..., None] * vectors).sum(dim=1)
        if self.mlp is not None:
            pooled = pooled + self.mlp(pooled)
        return Fused(pooled=self.norm(pooled), weights=weights, weight_names=list(self.modalities),
                     inputs=dict(embeddings))
