"""The ``hf-text`` encoder: any local Hugging Face text model folder (AutoModel + AutoTokenizer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import Tensor

from mmkit import Embedding, Encoder, ParameterError
from mmkit_hf.inputs import TextInputs, max_tokens
from mmkit_hf.loading import load_model, load_tokenizer, model_folder, tower


def pool(hidden: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """``[B, T, D]`` states -> ``[B, D]``: the first token (``cls``) or the mean of the real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class HFTextEncoder(Encoder):
    """A Hugging Face text model from a local folder (BERT, RoBERTa, DeBERTa, MiniLM, ...), offline.

    The folder is what ``model.save_pretrained(FOLDER)`` and ``tokenizer.save_pretrained(FOLDER)``
    write: ``config.json``, ``model.safetensors`` and the tokenizer files. Nothing is downloaded and no
    code from the folder runs: a folder whose config has an ``auto_map`` (custom code) or only a
    ``pytorch_model.bin`` (a pickle) is refused. Of a CLIP/SigLIP folder the text tower is used; of an
    encoder-decoder (T5) the encoder.

    Texts are tokenized per sample in the data workers and padded per batch. ``pooled`` is the mean of
    the last layer's states over the real tokens (``mean``) or the first token's state (``cls``, for
    BERT-style models fine-tuned with a [CLS] classifier); ``tokens`` are the states with the
    attention mask. Fine-tune it (the recipe's default ``lr_mult = "auto"`` trains it at 1e-5, which keeps
    it close to its pretraining; 1e-4 left MiniLM on the quickstart's plateau) or freeze it (its outputs
    are then cached).

    Args:
        path: a local model folder; None uses the bundled all-MiniLM-L6-v2 (a BERT).
        pooling: ``mean`` (of the real tokens) or ``cls`` (the first token).
        max_length: texts are cut to this many tokens, special tokens included (also capped by the
            tokenizer's and the position embeddings' limit).
        tokens: return token states besides the pooled vector.
    """

    modality = "text"
    deterministic_train = True

    def __init__(self, path: str | None = None, pooling: Literal["mean", "cls"] = "mean", max_length: int = 128,
                 tokens: bool = True) -> None:
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ParameterError(f"hf-text: pooling must be 'mean' or 'cls', got {pooling!r}")
        folder = model_folder(path, "hf-text")
        loaded = load_model(folder, "hf-text")
        self.path = path
        self.pooling = pooling
        self.model = tower(loaded, "text", "hf-text")
        config = getattr(self.model, "config", loaded.config)
        tokenizer = load_tokenizer(folder, "hf-text")
        self.inputs = TextInputs(tokenizer, max_tokens(tokenizer, config, max_length, "hf-text"))
        self.max_length = self.inputs.max_length
        width = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
        if not isinstance(width, int):
            raise ParameterError(f"hf-text: cannot tell the hidden size of {folder} ({loaded.model_type})")
        self.dim = int(width)
        self.pretrained = True  # lr_mult auto: fine-tuned at 1e-5
        self.has_tokens = bool(tokens)
        self.model_type = loaded.model_type

    def preprocess(self, raw: Any, train: bool = False) -> list[int]:
        """Text -> token ids with the model's special tokens, at most ``max_length``."""
        return self.inputs.encode(raw)

    def collate(self, items: list[list[int]]) -> dict[str, Tensor]:
        return self.inputs.collate(items)

    def forward(self, inputs: Mapping[str, Tensor]) -> Embedding:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        real = mask.bool()
        pooled = pool(hidden, real, self.pooling)
        present = torch.ones(pooled.shape[0], dtype=torch.bool, device=pooled.device)
        if not self.has_tokens:
            return Embedding(pooled, present)
        return Embedding(pooled, present, hidden * real.unsqueeze(-1).to(hidden.dtype), real)
