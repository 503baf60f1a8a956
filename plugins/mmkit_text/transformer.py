"""The ``text-transformer`` encoder: a small pre-norm Transformer trained from scratch."""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import torch
from torch import Tensor, nn

from mmkit import Embedding, Encoder, ParameterError, WordTokenizer, make_tokenizer, tokenizer_from_state


class TextTransformerEncoder(Encoder):
    """A small Transformer over word or WordPiece tokens, trained from scratch.

    Token embeddings plus learned positions go through pre-norm encoder layers with a key-padding
    mask; ``tokens`` are the final (layer-normed) token states and ``pooled`` is their masked mean.
    The ``word`` vocabulary is built by ``fit`` from the training texts and saved with the model.
    A padded batch gives every sample the same output it gets alone.

    Args:
        tokenizer: ``word`` (vocabulary of the most frequent training words) or ``wordpiece`` (the
            bundled all-MiniLM-L6-v2 vocabulary, no fitting needed).
        max_vocab: largest word vocabulary including 4 special tokens (``word`` only); the embedding
            table has one row per word ``fit`` found, up to this many.
        dim: width of the token states and of the pooled vector.
        layers: number of Transformer layers.
        heads: attention heads per layer (must divide ``dim``).
        max_length: texts are cut to this many tokens.
        dropout: dropout inside the layers and on the input embeddings.
    """

    modality = "text"
    has_tokens = True
    deterministic_train = True

    def __init__(self, tokenizer: Literal["word", "wordpiece"] = "word", max_vocab: int = 8000, dim: int = 128,
                 layers: int = 2, heads: int = 4, max_length: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        if dim % heads:
            raise ParameterError(f"text-transformer: heads ({heads}) must divide dim ({dim})")
        if max_vocab < 5:
            raise ParameterError(f"text-transformer: max_vocab must be at least 5, got {max_vocab}")
        if max_length < 1:
            raise ParameterError(f"text-transformer: max_length must be positive, got {max_length}")
        self.tokenizer = make_tokenizer(tokenizer, max_vocab)
        self.dim = dim
        self.max_length = max_length
        self.embed = self._embedding()
        self.pos = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        # no nested tensors: their fast path changes results with the amount of padding
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def _rows(self) -> int:
        """Embedding rows: the fitted word vocabulary (4 specials + the words ``fit`` kept), never more
        than ``max_vocab``; the full id space for ``wordpiece``."""
        tok = self.tokenizer
        return len(tok.itos) if isinstance(tok, WordTokenizer) else tok.vocab_size

    def _embedding(self) -> nn.Embedding:
        embed = nn.Embedding(self._rows(), self.dim, padding_idx=self.tokenizer.pad_id)
        # Word embeddings N(0, 1) (PyTorch's default), positions N(0, 0.02): a token's identity must
        # dominate its position. With both at 0.02 the shapes claim task stalls at the 0.85 plateau
        # (colour and shape present, not bound to one object); with N(0, 1) it reaches 0.99 in the
        # same 500 steps (measured on the quickstart recipe).
        nn.init.normal_(embed.weight, std=1.0)
        with torch.no_grad():
            embed.weight[self.tokenizer.pad_id].zero_()
        return embed.to(self.pos.device) if hasattr(self, "pos") else embed

    # ------------------------------------------------------------------ fitting
    def fit(self, values: Sequence[Any]) -> None:
        """Build the word vocabulary from the training texts and size the embedding table to it
        (a 30-word task gets 34 rows, not ``max_vocab``; no-op for ``wordpiece``)."""
        self.tokenizer.fit(str(v) for v in values)
        if self._rows() != self.embed.num_embeddings:
            self.embed = self._embedding()

    def get_fit_state(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer.get_state()}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        if "tokenizer" in state:
            self.tokenizer = tokenizer_from_state(dict(state["tokenizer"]))
            if self._rows() != self.embed.num_embeddings:
                self.embed = self._embedding()

    # ------------------------------------------------------------------ worker side
    def preprocess(self, raw: Any, train: bool = False) -> list[int]:
        """Text -> token ids (at most ``max_length``; an empty result becomes one ``<unk>``)."""
        ids = self.tokenizer.encode(str(raw), max_len=self.max_length)
        return ids or [self.tokenizer.unk_id]

    def collate(self, items: list[list[int]]) -> dict[str, Tensor]:
        length = max(len(i) for i in items)
        ids = torch.full((len(items), length), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.bool)
        for row, seq in enumerate(items):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = True
        return {"ids": ids, "mask": mask}

    # ------------------------------------------------------------------ model side
    def forward(self, inputs: Mapping[str, Tensor]) -> Embedding:
        ids, mask = inputs["ids"], inputs["mask"]
        x = self.drop(self.embed(ids) + self.pos[: ids.shape[1]])
        x = self.encoder(x, src_key_padding_mask=~mask)
        x = self.norm(x) * mask[..., None]
        pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        present = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
        return Embedding(pooled, present, x, mask)
