"""Captioning head: an autoregressive Transformer decoder over the fused representation."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit import (Batch, DataError, Fused, Head, Metrics, Output, ParameterError, WordPieceTokenizer, WordTokenizer,
                   tokenizer_from_state)

from mmkit_heads.common import refuse_mixing
from mmkit_heads.decoder import CaptionDecoder, beam_decode, greedy_decode
from mmkit_heads.metricset import choose_metrics, pick_monitor
from mmkit_heads.textmetrics import caption_scores

#: caption metric names -> better direction
CAPTION_METRICS = {"bleu1": "max", "bleu2": "max", "bleu3": "max", "bleu4": "max", "cider": "max",
                   "exact_match": "max"}


def _references(cell: Any, field: str) -> list[str]:
    if isinstance(cell, str):
        refs = [cell]
    elif isinstance(cell, (list, tuple)):
        refs = [c for c in cell if isinstance(c, str)]
    else:
        refs = []
    refs = [r for r in refs if r.strip()]
    if not refs:
        raise DataError(f"{field}: expected a caption string (or a list of them), got {cell!r}")
    return refs


class CaptioningHead(Head):
    """Generates text from the fused representation (image captioning and the like).

    The decoder is a causal Transformer with cross-attention to a memory made of the fused pooled
    vector (one token) followed by the fused tokens when the fusion yields them. Training uses
    teacher forcing (cross-entropy on the next token). In eval/predict mode ``forward`` also
    generates a caption per sample -- greedy when ``beam_size = 1``, else beam search -- with a
    key-value cache so each step processes only the new position. A caption cell may be a string or a
    list of reference strings (training uses the first; metrics use all). Metrics: corpus
    ``bleu1``..``bleu4``, ``cider`` (CIDEr-D) and ``exact_match`` (all by default).

    Args:
        field: the data field holding the caption (a string or a list of strings).
        tokenizer: "word" (vocabulary built from the training captions) or "wordpiece" (bundled MiniLM).
        max_vocab: largest word vocabulary, special tokens included ("word" only).
        min_freq: words seen fewer times in training map to <unk> ("word" only).
        dim: decoder width.
        layers: number of decoder layers.
        heads: attention heads per layer.
        ff_dim: feed-forward width (0 = 4 * dim).
        dropout: dropout in the decoder.
        max_len: longest caption in tokens (training truncates to it; decoding stops after it).
        beam_size: beams for decoding in eval/predict (1 = greedy).
        length_penalty: beam ranking score is sum(log p) / length ** length_penalty (0 = raw sum,
            1 = mean per token; higher favours longer captions).
        use_cache: cache past keys/values while decoding (False recomputes the prefix each step; for
            benchmarking -- the output is the same).
        label_smoothing: label smoothing of the next-token cross-entropy.
        tie_embeddings: share the token embedding with the output layer.
        metrics: metrics to report (None = all of bleu1, bleu2, bleu3, bleu4, cider, exact_match).
    """

    monitor = "bleu4"
    monitor_mode = "max"

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None, field: str = "caption",
                 tokenizer: Literal["word", "wordpiece"] = "word", max_vocab: int = 8000, min_freq: int = 1,
                 dim: int = 256, layers: int = 2, heads: int = 4, ff_dim: int = 0, dropout: float = 0.1,
                 max_len: int = 32, beam_size: int = 1, length_penalty: float = 1.0, use_cache: bool = True,
                 label_smoothing: float = 0.0, tie_embeddings: bool = True, metrics: list[str] | None = None) -> None:
        super().__init__()
        self.metrics = choose_metrics("captioning", metrics, CAPTION_METRICS, list(CAPTION_METRICS))
        self.monitor, self.monitor_mode = pick_monitor("bleu4", self.metrics, CAPTION_METRICS)
        if tokenizer not in ("word", "wordpiece"):
            raise ParameterError(f"tokenizer must be 'word' or 'wordpiece', got {tokenizer!r}")
        if beam_size < 1 or max_len < 1:
            raise ParameterError(f"beam_size and max_len must be >= 1, got {beam_size} and {max_len}")
        self.field = field
        self.fields = (field,)
        self.max_len = max_len
        self.beam_size = beam_size
        self.length_penalty = length_penalty
        self.use_cache = use_cache
        self.label_smoothing = label_smoothing
        self.tokenizer: WordTokenizer | WordPieceTokenizer = (
            WordTokenizer(max_vocab, min_freq) if tokenizer == "word" else WordPieceTokenizer())
        self.memory_proj = nn.Linear(input_dim, dim)
        self.memory_type = nn.Parameter(torch.zeros(2, dim))  # pooled token vs fused tokens
        nn.init.normal_(self.memory_type, std=0.02)
        self.decoder = CaptionDecoder(self._vocab_size(), dim, layers, heads, ff_dim or 4 * dim, dropout,
                                      max_positions=max_len + 2, tie_embeddings=tie_embeddings)

    def _vocab_size(self) -> int:
        tok = self.tokenizer
        return len(tok.itos) if isinstance(tok, WordTokenizer) else tok.vocab_size

    # -------------------------------------------------------------------------- fitting
    def fit(self, values: Sequence[Mapping[str, Any]]) -> None:
        texts = [r for row in values for r in _references(row[self.field], self.field)]
        self.tokenizer.fit(texts)
        if self._vocab_size() != self.decoder.vocab_size:
            self.decoder.resize_vocab(self._vocab_size())

    def get_fit_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.get_state()}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        if "tokenizer" in state:
            self.tokenizer = tokenizer_from_state(dict(state["tokenizer"]))
            if self._vocab_size() != self.decoder.vocab_size:
                self.decoder.resize_vocab(self._vocab_size())

    # -------------------------------------------------------------------------- targets
    def preprocess_target(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        refs = _references(raw[self.field], self.field)
        tok = self.tokenizer
        ids = [tok.bos_id] + tok.encode(refs[0], max_len=self.max_len) + [tok.eos_id]
        return {"ids": torch.tensor(ids, dtype=torch.long), "refs": refs}

    def collate_targets(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        ids = nn.utils.rnn.pad_sequence([it["ids"] for it in items], batch_first=True,
                                        padding_value=self.tokenizer.pad_id)
        return {"ids": ids, "refs": [it["refs"] for it in items]}

    # -------------------------------------------------------------------------- model
    def memory(self, fused: Fused) -> tuple[Tensor, Tensor]:
        """Decoder memory ``[B, 1 + T, dim]`` and its mask ``[B, 1, 1, 1 + T]`` (True = attend)."""
        pooled = self.memory_proj(fused.pooled)[:, None] + self.memory_type[0]
        mask = torch.ones(pooled.shape[:2], dtype=torch.bool, device=pooled.device)
        if fused.tokens is not None:
            tokens = self.memory_proj(fused.tokens) + self.memory_type[1]
            tmask = fused.mask if fused.mask is not None else torch.ones(
                tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            pooled = torch.cat([pooled, tokens], dim=1)
            mask = torch.cat([mask, tmask.to(torch.bool)], dim=1)
        return pooled, mask[:, None, None, :]

    def generate(self, fused: Fused, beam_size: int | None = None, use_cache: bool | None = None,
                 max_len: int | None = None) -> Tensor:
        """Token ids ``[B, L]`` (EOS included, then pad) for each sample; defaults from the head's params
        (``max_len`` cannot exceed the head's: the position table ends there)."""
        memory, mask = self.memory(fused)
        memory_kv = self.decoder.memory_kv(memory)
        tok = self.tokenizer
        steps = min(max_len or self.max_len, self.max_len) + 1  # the words, then EOS
        kwargs = dict(bos=tok.bos_id, eos=tok.eos_id, pad=tok.pad_id, max_steps=steps,
                      use_cache=self.use_cache if use_cache is None else use_cache)
        beams = self.beam_size if beam_size is None else beam_size
        if beams == 1:
            return greedy_decode(self.decoder, memory_kv, mask, **kwargs)[0]
        return beam_decode(self.decoder, memory_kv, mask, beam_size=beams, length_penalty=self.length_penalty,
                           **kwargs)

    def forward(self, fused: Fused, batch: Batch) -> Output:
        refuse_mixing(batch, "captioning")
        loss = None
        preds: dict[str, Any] = {}
        if batch.targets is not None:
            memory, mask = self.memory(fused)
            ids = batch.targets["ids"].to(memory.device)
            logits = self.decoder(ids[:, :-1], self.decoder.memory_kv(memory), mask)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                   ignore_index=self.tokenizer.pad_id, label_smoothing=self.label_smoothing)
        if not self.training:
            tokens = self.generate(fused)
            preds = {"tokens": tokens, "captions": [self.tokenizer.decode(row) for row in tokens.tolist()]}
        return Output(loss, preds)

    def new_metrics(self) -> CaptionMetrics:
        return CaptionMetrics(self.metrics)

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"caption": c} for c in preds["captions"]]


class CaptionMetrics(Metrics):
    """Keeps generated captions and references of a whole evaluation; BLEU/CIDEr on ``compute``."""

    def __init__(self, metrics: list[str] | None = None) -> None:
        super().__init__()
        self.names = list(metrics or CAPTION_METRICS)
        self.hyps: list[str] = []
        self.refs: list[list[str]] = []

    def update(self, output: Output, batch: Batch) -> None:
        super().update(output, batch)
        if batch.targets is not None and "captions" in output.preds:
            self.hyps += list(output.preds["captions"])
            self.refs += [list(r) for r in batch.targets["refs"]]

    def merge(self, other: "Metrics") -> None:
        super().merge(other)
        assert isinstance(other, CaptionMetrics)
        self.hyps += other.hyps
        self.refs += other.refs

    def compute(self) -> dict[str, float]:
        out = super().compute()
        if self.hyps:
            scores = caption_scores(self.hyps, self.refs)
            out.update({name: scores[name] for name in self.names})
        return out
