"""``concat``: project, concatenate in a fixed modality order, MLP. The baseline fusion."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from mmkit import Embedding, Fused, Fusion
from mmkit_fusion.common import (FeedForward, Projection, batch_info, check_positive, check_probability,
                                 masked_pooled, modality_dropout, modality_order)


class ConcatFusion(Fusion):
    """Concatenate the projected pooled vectors of all modalities, then an MLP.

    Each modality's pooled vector is projected to ``dim`` (Linear + LayerNorm); an absent modality
    is replaced by a learned "missing" vector of its own, so the MLP sees which inputs are missing.
    The vectors are concatenated in sorted modality order and an MLP maps them to ``dim``.

    Args:
        dim: width of each projection and of the fused output.
        hidden_mult: the MLP's hidden width is ``hidden_mult * dim``.
        dropout: dropout inside the MLP.
        modality_dropout: training only: probability of dropping each present modality of each
            sample (never a sample's last one), so the model learns to cope with missing inputs.
    """

    has_tokens = False

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None, dim: int = 256,
                 hidden_mult: int = 2, dropout: float = 0.1, modality_dropout: float = 0.0) -> None:
        super().__init__()
        check_positive("dim", dim)
        check_positive("hidden_mult", hidden_mult)
        check_probability("dropout", dropout)
        check_probability("modality_dropout", modality_dropout)
        self.modalities = modality_order(input_dims)
        self.dim = dim
        self.modality_dropout = modality_dropout
        self.proj = nn.ModuleDict({m: Projection(input_dims[m], dim) for m in self.modalities})
        self.missing = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.mlp = FeedForward(len(self.modalities) * dim, hidden_mult * dim, dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        batch, _, dtype = batch_info(embeddings, self.modalities)
        embs = modality_dropout(embeddings, self.modalities, self.modality_dropout, self.training)
        parts = []
        for i, m in enumerate(self.modalities):
            missing = self.missing[i].to(dtype).expand(batch, -1)
            if m in embs:
                e = embs[m]
                parts.append(torch.where(e.present[:, None], self.proj[m](masked_pooled(e)), missing))
            else:
                parts.append(missing)
        pooled = self.norm(self.mlp(torch.cat(parts, dim=-1)))
        return Fused(pooled=pooled, inputs=dict(embeddings))
