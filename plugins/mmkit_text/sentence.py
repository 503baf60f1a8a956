"""The ``sentence-transformer`` encoder: a local sentence-transformers model, loaded offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit import Embedding, Encoder, ParameterError, check_hf_folder, hub_offline, local_folder


def _load(folder: Path) -> Any:
    """The sentence-transformers model in ``folder``, offline (see :mod:`mmkit._internal.offline`): no code from
    the folder runs, weights are read from safetensors only, and no environment variable changes."""
    if (folder / "config.json").is_file():
        check_hf_folder(folder, "sentence-transformer", weights=False)
    with hub_offline():
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(str(folder), device="cpu", local_files_only=True, trust_remote_code=False,
                                       model_kwargs={"use_safetensors": True})
        except Exception as exc:  # noqa: BLE001
            raise ParameterError(
                f"sentence-transformer: cannot load a model from {folder}: {type(exc).__name__}: {exc}") from exc


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model from a local folder (default: the bundled all-MiniLM-L6-v2).

    ``pooled`` is the model's own pooling of its token states (mean pooling for MiniLM) and
    ``tokens`` are the token states with the attention mask. The model's ``Normalize`` step is
    skipped unless ``normalize`` is set. Nothing is downloaded: the folder must exist.

    Args:
        path: folder of a sentence-transformers model; None uses the bundled all-MiniLM-L6-v2.
        max_length: texts are cut to this many WordPiece tokens (special tokens included).
        normalize: L2-normalise the pooled vector (as the model does for cosine similarity).
    """

    modality = "text"
    has_tokens = True
    deterministic_train = True

    def __init__(self, path: str | None = None, max_length: int = 64, normalize: bool = False) -> None:
        super().__init__()
        if path is None:
            from mmkit import bundled_minilm_path

            folder = Path(bundled_minilm_path())
        else:
            folder = local_folder(path, "sentence-transformer")
        if max_length < 2:
            raise ParameterError(f"sentence-transformer: max_length must be at least 2, got {max_length}")
        model = _load(folder)
        self.path = path
        self.max_length = max_length
        self.normalize = normalize
        self.steps = nn.ModuleList([m for m in model if type(m).__name__ != "Normalize"])
        self.tokenizer = model.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id or 0)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.pretrained = True  # lr_mult auto: fine-tuned at 1e-5
        first = self.steps[0]
        get_token_dim = (getattr(first, "get_embedding_dimension", None)
                         or getattr(first, "get_word_embedding_dimension", None) or (lambda: self.dim))
        token_dim = get_token_dim()
        self.has_tokens = int(token_dim) == self.dim

    def preprocess(self, raw: Any, train: bool = False) -> list[int]:
        """Text -> WordPiece ids with the model's special tokens, at most ``max_length`` of them."""
        return list(self.tokenizer(str(raw), truncation=True, max_length=self.max_length)["input_ids"])

    def collate(self, items: list[list[int]]) -> dict[str, Tensor]:
        length = max(len(i) for i in items)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, seq in enumerate(items):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def forward(self, inputs: Mapping[str, Tensor]) -> Embedding:
        features: dict[str, Any] = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        for step in self.steps:
            features = step(features)
        pooled = features["sentence_embedding"]
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        present = torch.ones(pooled.shape[0], dtype=torch.bool, device=pooled.device)
        if not self.has_tokens:
            return Embedding(pooled, present)
        mask = inputs["attention_mask"].bool()
        tokens = features["token_embeddings"] * mask[..., None]
        return Embedding(pooled, present, tokens, mask)
