"""``cross-attention``: one modality's tokens attend to another modality's tokens."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmkit import Embedding, Fused, Fusion, ParameterError
from mmkit_fusion.common import (FeedForward, Projection, batch_info, check_positive, check_probability,
                                 default_widths,
                                 masked_mean, modality_dropout, modality_order, token_view)


class CrossAttentionFusion(Fusion):
    """The ``query`` modality's tokens attend (multi-head) to the ``key`` modality's tokens.

    Tokens of every modality are projected to ``dim`` (Linear + LayerNorm) plus a learned
    modality-type embedding; a modality without tokens contributes its pooled vector as one token.
    One pre-norm block updates the query tokens: ``x = q + MHA(LN(q), LN(k), LN(k))`` with a key
    padding mask from the token masks, then ``x = x + FF(LN(x))``. The pooled output is the masked
    mean of the updated query tokens (final LayerNorm).

    Missing inputs: where a sample has no key tokens the attention term is dropped, so its output
    is the query's own pooled representation; where it has no query, the output is the pooled key
    representation (through the same feed-forward). ``tokens`` are the updated query tokens followed
    by the projected key tokens, with ``mask`` (a decoder may attend to them).

    Args:
        query: the modality whose tokens ask; default the first modality in sorted order.
        key: the modality attended to; default all the other modalities (their tokens concatenated),
            which for two modalities is the second one in sorted order. With a single modality the
            query attends to itself. An explicit ``key`` leaves any third modality unused.
        dim: width of the tokens and of the fused output; unset: 256 (narrower learned markedly
            slower on the learning benchmark's sequence task: 0.84 vs 0.99 at 128).
        heads: attention heads (must divide ``dim``); unset: heads of 32 channels.
        ff_mult: the feed-forward hidden width is ``ff_mult * dim``.
        dropout: dropout on attention weights and in the feed-forward (default 0, as the
            ``transformer`` fusion: it slows learning in short runs).
        modality_dropout: training only: probability of dropping each present modality of each
            sample (never a sample's last one).
    """

    has_tokens = True

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None,
                 query: str | None = None, key: str | None = None, dim: int | None = None, heads: int | None = None,
                 ff_mult: int = 4, dropout: float = 0.0, modality_dropout: float = 0.0) -> None:
        super().__init__()
        check_positive("ff_mult", ff_mult)
        check_probability("dropout", dropout)
        check_probability("modality_dropout", modality_dropout)
        self.modalities = modality_order(input_dims)
        # 256 wide whatever the encoders: at 128 the learning benchmark's sequence task fell from 0.99 to 0.84
        dim, heads = default_widths(input_dims, dim, heads, smallest=256)
        for name, value in (("query", query), ("key", key)):
            if value is not None and value not in input_dims:
                raise ParameterError(f"{name} = {value!r} is not an input modality (have {self.modalities})")
        self.query = query or self.modalities[0]
        if key is not None:
            self.keys = [key]
        else:
            self.keys = [m for m in self.modalities if m != self.query] or [self.query]
        self.dim = dim
        self.modality_dropout = modality_dropout
        self.proj = nn.ModuleDict({m: Projection(input_dims[m], dim) for m in self.modalities})
        self.type_embed = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.q_norm = nn.LayerNorm(dim)
        self.kv_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult * dim, dim, dropout)
        self.norm = nn.LayerNorm(dim)

    def _tokens(self, embs: Mapping[str, Embedding], modalities: list[str], batch: int,
                device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        toks, masks = [], []
        for m in modalities:
            if m not in embs:
                continue
            t, mask = token_view(embs[m])
            toks.append(self.proj[m](t) + self.type_embed[self.modalities.index(m)].to(t.dtype))
            masks.append(mask)
        if not toks:
            return (torch.zeros(batch, 1, self.dim, device=device, dtype=dtype),
                    torch.zeros(batch, 1, dtype=torch.bool, device=device))
        return torch.cat(toks, dim=1), torch.cat(masks, dim=1)

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        batch, device, dtype = batch_info(embeddings, self.modalities)
        embs = modality_dropout(embeddings, self.modalities, self.modality_dropout, self.training)
        q, q_mask = self._tokens(embs, [self.query], batch, device, dtype)
        k, k_mask = self._tokens(embs, self.keys, batch, device, dtype)
        has_q, has_k = q_mask.any(dim=1), k_mask.any(dim=1)
        # a sample without key tokens gets one dummy real key (its attention output is discarded below),
        # so that no softmax row is all -inf (NaN)
        safe = torch.cat([k_mask[:, :1] | ~has_k[:, None], k_mask[:, 1:]], dim=1)
        kv = self.kv_norm(k)
        attended, _ = self.attn(self.q_norm(q), kv, kv, key_padding_mask=~safe, need_weights=False)
        x = q + torch.where(has_k[:, None, None], attended, torch.zeros_like(attended))
        x = x + self.ff(self.ff_norm(x))
        k_out = k + self.ff(self.ff_norm(k))
        pooled = torch.where(has_q[:, None], masked_mean(x, q_mask), masked_mean(k_out, k_mask))
        tokens = self.norm(torch.cat([x, k], dim=1))
        mask = torch.cat([q_mask, k_mask], dim=1)
        tokens = torch.where(mask[..., None], tokens, torch.zeros_like(tokens))
        return Fused(pooled=self.norm(pooled), tokens=tokens, mask=mask, inputs=dict(embeddings))
