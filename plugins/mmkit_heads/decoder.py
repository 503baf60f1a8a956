"""A small pre-norm Transformer decoder with an explicit key-value cache, and greedy/beam decoding.

Why not ``nn.TransformerDecoder``: it has no incremental state, so generating ``L`` tokens would
recompute every past position at every step (O(L^2) layer passes). Here each layer keeps its past
self-attention keys/values (:class:`LayerCache`) and the memory's cross-attention keys/values are
projected once per sequence, so a decoding step processes one new position only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LayerCache:
    """Self-attention keys and values of the positions decoded so far, ``[N, heads, t, head_dim]``."""

    k: Tensor | None = None
    v: Tensor | None = None

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam search moves hypotheses between beams)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


class Attention(nn.Module):
    """Multi-head attention whose key/value projection can be run separately (and cached)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.o = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        return x.view(n, t, self.heads, d // self.heads).transpose(1, 2)

    def project_kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(source).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q = self._split(self.q(x))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        n, h, t, dh = out.shape
        return self.o(out.transpose(1, 2).reshape(n, t, h * dh))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the memory, feed-forward (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory_kv: tuple[Tensor, Tensor], memory_mask: Tensor,
                cache: LayerCache | None = None) -> Tensor:
        """``x [N, T, dim]`` are the new positions; ``cache`` holds the ones before them (and is extended)."""
        h = self.ln1(x)
        k, v = self.self_attn.project_kv(h)
        past = 0
        if cache is not None:
            if cache.k is not None:
                past = cache.k.shape[2]
                k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
            cache.k, cache.v = k, v
        t = x.shape[1]
        causal = None
        if t > 1:  # a single new position may attend to every cached one
            keys = torch.arange(past + t, device=x.device)
            causal = keys[None, :] <= (past + torch.arange(t, device=x.device))[:, None]
        x = x + self.drop(self.self_attn(h, k, v, causal))
        x = x + self.drop(self.cross_attn(self.ln2(x), *memory_kv, memory_mask))
        return x + self.drop(self.ff(self.ln3(x)))


class CaptionDecoder(nn.Module):
    """Token + position embeddings, ``layers`` decoder layers, final norm and (tied) output layer."""

    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, ff_dim: int, dropout: float,
                 max_positions: int, tie_embeddings: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.tie_embeddings = tie_embeddings
        self.pos = nn.Embedding(max_positions, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ff_dim, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.pos.weight, std=0.02)
        self.resize_vocab(vocab_size)

    def resize_vocab(self, vocab_size: int) -> None:
        """(Re)create the token embedding and output layer for ``vocab_size`` ids."""
        self.vocab_size = vocab_size
        self.tok = nn.Embedding(vocab_size, self.dim)
        nn.init.normal_(self.tok.weight, std=0.02)
        self.out = nn.Linear(self.dim, vocab_size, bias=True)
        if self.tie_embeddings:
            self.out.weight = self.tok.weight

    def memory_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Each layer's cross-attention keys/values of ``memory [N, S, dim]`` (computed once)."""
        return [layer.cross_attn.project_kv(memory) for layer in self.layers]

    def new_cache(self) -> list[LayerCache]:
        return [LayerCache() for _ in self.layers]

    def forward(self, ids: Tensor, memory_kv: list[tuple[Tensor, Tensor]], memory_mask: Tensor,
                cache: list[LayerCache] | None = None, start: int = 0) -> Tensor:
        """Logits ``[N, T, vocab]`` for token ``ids [N, T]`` at positions ``start..start+T-1``.

        ``memory_mask`` is ``[N, 1, 1, S]`` bool, True for real memory tokens.
        """
        positions = torch.arange(start, start + ids.shape[1], device=ids.device)
        x = self.drop(self.tok(ids) + self.pos(positions)[None])
        for i, layer in enumerate(self.layers):
            x = layer(x, memory_kv[i], memory_mask, None if cache is None else cache[i])
        return self.out(self.ln(x))


def _step(decoder: CaptionDecoder, ids: Tensor, memory_kv: list[tuple[Tensor, Tensor]], mask: Tensor,
          cache: list[LayerCache] | None, banned: tuple[int, ...]) -> Tensor:
    """Next-token logits ``[N, vocab]`` after prefix ``ids``: one new position with a cache, else all.
    Tokens in ``banned`` (padding, BOS) get ``-inf``: they are never generated."""
    if cache is not None:
        logits = decoder(ids[:, -1:], memory_kv, mask, cache, start=ids.shape[1] - 1)[:, -1]
    else:
        logits = decoder(ids, memory_kv, mask)[:, -1]
    if banned:
        logits = logits.float().index_fill(1, torch.tensor(banned, device=logits.device), float("-inf"))
    return logits


@torch.no_grad()
def greedy_decode(decoder: CaptionDecoder, memory_kv: list[tuple[Tensor, Tensor]], mask: Tensor, *, bos: int,
                  eos: int, pad: int, max_steps: int, use_cache: bool = True) -> tuple[Tensor, Tensor]:
    """Argmax decoding. Returns ``(tokens [N, L], logits [N, L, vocab])``; after EOS a row gets ``pad``.
    ``pad`` and ``bos`` are never generated."""
    n = mask.shape[0]
    ids = torch.full((n, 1), bos, dtype=torch.long, device=mask.device)
    cache = decoder.new_cache() if use_cache else None
    finished = torch.zeros(n, dtype=torch.bool, device=mask.device)
    tokens, logits = [], []
    for _ in range(max_steps):
        step_logits = _step(decoder, ids, memory_kv, mask, cache, (pad, bos))
        nxt = torch.where(finished, torch.full_like(finished, pad, dtype=torch.long), step_logits.argmax(-1))
        tokens.append(nxt)
        logits.append(step_logits)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        finished |= nxt == eos
        if bool(finished.all()):
            break
    return torch.stack(tokens, 1), torch.stack(logits, 1)


@torch.no_grad()
def beam_decode(decoder: CaptionDecoder, memory_kv: list[tuple[Tensor, Tensor]], mask: Tensor, *, bos: int,
                eos: int, pad: int, max_steps: int, beam_size: int, length_penalty: float = 1.0,
                use_cache: bool = True) -> Tensor:
    """Beam search; hypotheses are ranked by ``sum log p / length ** length_penalty`` (length counts
    the generated tokens up to and including EOS). A finished hypothesis keeps its beam and score.
    With ``beam_size = 1`` this is exactly greedy decoding; ``pad`` and ``bos`` are never generated.
    Returns the best ``tokens [N, L]``."""
    n, k = mask.shape[0], beam_size
    device = mask.device
    memory_kv = [(mk.repeat_interleave(k, 0), mv.repeat_interleave(k, 0)) for mk, mv in memory_kv]
    mask = mask.repeat_interleave(k, 0)
    ids = torch.full((n * k, 1), bos, dtype=torch.long, device=device)
    cache = decoder.new_cache() if use_cache else None
    scores = torch.full((n, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive
    lengths = torch.zeros((n, k), device=device)
    finished = torch.zeros((n, k), dtype=torch.bool, device=device)
    vocab = decoder.vocab_size
    frozen = torch.full((vocab,), float("-inf"), device=device)
    frozen[pad] = 0.0  # the only continuation of a finished hypothesis: pad, at no cost
    offsets = (torch.arange(n, device=device) * k)[:, None]
    for _ in range(max_steps):
        logits = _step(decoder, ids, memory_kv, mask, cache, (pad, bos))
        logp = F.log_softmax(logits.float(), dim=-1).view(n, k, vocab)
        logp = torch.where(finished[..., None], frozen, logp)
        cand = scores[..., None] + logp
        new_len = torch.where(finished, lengths, lengths + 1)
        norm = cand / new_len[..., None].pow(length_penalty)
        _, top = norm.view(n, k * vocab).topk(k, dim=1)
        beam, tok = top // vocab, top % vocab
        scores = cand.view(n, k * vocab).gather(1, top)
        lengths = new_len.gather(1, beam)
        finished = finished.gather(1, beam) | (tok == eos)
        flat = (beam + offsets).view(-1)
        ids = torch.cat([ids.index_select(0, flat), tok.view(-1, 1)], dim=1)
        if cache is not None:
            for layer_cache in cache:
                layer_cache.reorder(flat)
        if bool((finished | scores.isinf()).all()):  # -inf: a beam never filled (beam > candidates)
            break
    best = (scores / lengths.clamp(min=1).pow(length_penalty)).argmax(dim=1)
    return ids.view(n, k, -1)[torch.arange(n, device=device), best, 1:]
