"""Hand-written PyTorch reference for the learning benchmark: a token-level Transformer written from
scratch (no mmkit component), with the choices a careful hand-written model makes: a Linear +
LayerNorm input projection per modality, a learned modality embedding, a learned CLS token, pre-LN
blocks with GELU, padded tokens zeroed between blocks, and a linear classifier on the final CLS.
The benchmark trains it with hand-picked AdamW 3e-4, 100-step warm-up and cosine decay."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class ReferenceModel(nn.Module):
    def __init__(self, input_dims: dict[str, int], dim: int = 128, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, dim), nn.LayerNorm(dim))
                                   for m, d in input_dims.items()})
        self.modality = nn.ParameterDict({m: nn.Parameter(torch.randn(dim) * 0.02) for m in input_dims})
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 2)

    def forward(self, feats: dict, idx: torch.Tensor, modalities: list[str]) -> torch.Tensor:
        toks = [self.cls.expand(len(idx), 1, -1)]
        masks = [torch.ones(len(idx), 1, dtype=torch.bool)]
        for m in modalities:
            pooled, tokens, mask = feats[m]
            t = pooled[idx][:, None] if tokens is None else tokens[idx]
            toks.append(self.proj[m](t) + self.modality[m])
            masks.append(torch.ones(len(idx), 1, dtype=torch.bool) if mask is None else mask[idx])
        x, mask = torch.cat(toks, 1), torch.cat(masks, 1)
        for block in self.blocks:
            x = block(x, ~mask) * mask[..., None]
        return self.out(self.norm(x[:, 0]))
