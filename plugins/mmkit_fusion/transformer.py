"""``transformer``: a pre-norm transformer encoder over the tokens of all modalities plus a CLS token."""

from __future__ import annotations

from typing import Any, Literal, Mapping

import torch
from torch import nn

from mmkit import Embedding, Fused, Fusion, ParameterError
from mmkit_fusion.common import (Projection, batch_info, check_positive, check_probability,
                                 default_widths, masked_mean, modality_dropout,
                                 modality_order, token_view)


class TransformerFusion(Fusion):
    """Joint self-attention over all modalities' tokens; the CLS token is the fused vector.

    Every modality's tokens (its pooled vector as a single token when its encoder gives none) are
    projected to ``dim`` (Linear + LayerNorm) and get a learned modality-type embedding; a learned
    CLS token is prepended and ``layers`` pre-norm ``nn.TransformerEncoderLayer`` blocks run with a
    key-padding mask built from the token masks and presence (an absent modality's tokens are all
    masked; CLS never is, so no attention row is empty). Output: ``pooled`` = the final-LayerNorm
    CLS vector; ``tokens`` = all tokens, CLS first, with ``mask`` (padded positions are zero).

    Two choices measured on the learning benchmark (``benchmarks/learning.py``, docs/fusions.md):

    * A modality whose encoder gives no tokens (tabular, many time-series encoders) is one token, and
      its projected vector is also added to the CLS token where present: the CLS no longer has to find
      it through attention first (tabular task, 400 steps: 0.931 -> 0.956, cross-attention 0.972).
    * The query and key projections start sqrt(2) larger than ``nn.MultiheadAttention``'s packed
      Xavier init, which draws all three of q, k, v as one (3 dim x dim) matrix; this is the Xavier
      init of a single (dim x dim) projection. Sharper initial attention: sequence task 0.975 +- 0.023
      -> 0.992 +- 0.003, relation 0.973 -> 0.984.

    Args:
        dim: model width (tokens and fused output); unset: the widest encoder's width rounded up to a
            multiple of 32, within [128, 256].
        layers: number of transformer encoder layers.
        heads: attention heads per layer (must divide ``dim``); unset: heads of 32 channels.
        dropout: dropout in attention and feed-forward sublayers (default 0: at 0.1 the learning
            benchmark's tabular task reached 0.77 instead of 0.91 in 400 steps; raise it for long runs
            on small data).
        ff_mult: each layer's feed-forward hidden width is ``ff_mult * dim``.
        modality_dropout: training only: probability of dropping each present modality of each
            sample (never a sample's last one); dropped modalities' tokens are masked.
        pooling: the fused vector: ``cls`` (the CLS token's final state) or ``mean`` (the masked mean
            of all other tokens' final states; the CLS token still takes part in attention).
    """

    has_tokens = True

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None, dim: int | None = None,
                 layers: int = 2, heads: int | None = None, dropout: float = 0.0, ff_mult: int = 4,
                 modality_dropout: float = 0.0, pooling: Literal["cls", "mean"] = "cls") -> None:
        super().__init__()
        for name, value in (("layers", layers), ("ff_mult", ff_mult)):
            check_positive(name, value)
        check_probability("dropout", dropout)
        check_probability("modality_dropout", modality_dropout)
        if pooling not in ("cls", "mean"):
            raise ParameterError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.modalities = modality_order(input_dims)
        dim, heads = default_widths(input_dims, dim, heads)
        self.dim = dim
        self.modality_dropout = modality_dropout
        self.proj = nn.ModuleDict({m: Projection(input_dims[m], dim) for m in self.modalities})
        self.type_embed = nn.Parameter(torch.randn(len(self.modalities), dim) * 0.02)
        self.cls = nn.Parameter(torch.randn(dim) * 0.02)
        # Layers are called one by one (not through nn.TransformerEncoder) so that PyTorch's nested-tensor
        # fast path, which treats padded positions differently in eval mode, is never taken.
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=ff_mult * dim, dropout=dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(layers))
        for layer in self.layers:
            with torch.no_grad():  # q and k rows of the packed in-projection: Xavier of a (dim x dim) matrix
                layer.self_attn.in_proj_weight[: 2 * dim].mul_(2 ** 0.5)
        self.pooled_only = [m for m in self.modalities if token_inputs is not None and not token_inputs.get(m, True)]
        self.pooled_in_cls = True  # False for a model trained before this existed (see set_fit_state)
        self.norm = nn.LayerNorm(dim)

    def get_fit_state(self) -> dict[str, Any]:
        """Saved with a trained model, so that it is rebuilt with the same CLS input it was trained with."""
        return {"pooled_in_cls": self.pooled_in_cls} if self.pooled_only else {}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        # a model saved before pooled-only modalities entered the CLS has no such key: keep its behaviour
        self.pooled_in_cls = bool(state.get("pooled_in_cls", False))

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        batch, device, dtype = batch_info(embeddings, self.modalities)
        embs = modality_dropout(embeddings, self.modalities, self.modality_dropout, self.training)
        cls = self.cls.to(dtype).expand(batch, -1)
        toks, masks = [], []
        for i, m in enumerate(self.modalities):
            if m not in embs:
                continue
            t, mask = token_view(embs[m])
            projected = self.proj[m](t) + self.type_embed[i].to(t.dtype)
            # a pooled-only modality's one token also enters the CLS where present
            if self.pooled_in_cls and m in self.pooled_only and t.shape[1] == 1:
                cls = cls + torch.where(mask, projected[:, 0], torch.zeros_like(projected[:, 0]))
            toks.append(projected)
            masks.append(mask)
        toks.insert(0, cls[:, None])
        masks.insert(0, torch.ones(batch, 1, dtype=torch.bool, device=device))
        x, mask = torch.cat(toks, dim=1), torch.cat(masks, dim=1)
        padding = ~mask
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
            # padded positions never influence real ones (they are masked keys); zero them anyway so
            # that train and eval (fast path) give identical tensors
            x = torch.where(mask[..., None], x, torch.zeros_like(x))
        x = self.norm(x)
        tokens = torch.where(mask[..., None], x, torch.zeros_like(x))
        pooled = x[:, 0] if self.pooling == "cls" else masked_mean(tokens[:, 1:], mask[:, 1:])
        return Fused(pooled=pooled, tokens=tokens, mask=mask, inputs=dict(embeddings))
