"""Worker-side preprocessing shared by the Hugging Face encoders: text -> token ids, image -> pixels.

Text is tokenized per sample in ``preprocess`` (DataLoader workers, one string at a time, so the
tokenizers library never starts its own thread pool before a fork) and padded per batch in
``collate``. Images go through the folder's own image processor (its resize, crop, rescale and
normalisation), one image at a time; the result is deterministic.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mmkit import DataError, ParameterError


def max_tokens(tokenizer: Any, config: Any, asked: int, what: str) -> int:
    """``asked`` capped by what the tokenizer and the position embeddings allow."""
    if asked < 2:
        raise ParameterError(f"{what}: max_length must be at least 2, got {asked}")
    limits = [asked]
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        limits.append(model_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    return min(limits)


class TextInputs:
    """Token ids of one text (special tokens included, at most ``max_length``) and their padding.

    ``pad_to_max`` pads every batch to ``max_length`` (SigLIP pools the last position and was
    trained that way).
    """

    def __init__(self, tokenizer: Any, max_length: int, pad_to_max: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_max = pad_to_max
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = int(pad) if pad is not None else 0  # padded positions are masked either way

    def encode(self, raw: Any) -> list[int]:
        if not isinstance(raw, str):
            raise DataError(f"expected a text string, got {type(raw).__name__}: {raw!r:.60}")
        ids = self.tokenizer(raw, truncation=True, max_length=self.max_length)["input_ids"]
        return [int(i) for i in ids]

    def collate(self, items: list[list[int]]) -> dict[str, Tensor]:
        length = self.max_length if self.pad_to_max else max(max(len(i) for i in items), 1)
        ids = torch.full((len(items), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), length), dtype=torch.long)
        for row, seq in enumerate(items):
            ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}


class ImageInputs:
    """An RGB PIL image -> ``[3, H, W]`` float pixels, by the folder's image processor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def encode(self, raw: Any) -> Tensor:
        from PIL import Image

        if not isinstance(raw, Image.Image):
            raise DataError(f"expected a loaded PIL image, got {type(raw).__name__}")
        image = raw if raw.mode == "RGB" else raw.convert("RGB")
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return torch.as_tensor(pixels[0], dtype=torch.float32)

    @staticmethod
    def collate(items: list[Tensor]) -> Tensor:
        return torch.stack(items)

    def size(self) -> tuple[int, int]:
        """(height, width) the processor produces (for a probe forward pass)."""
        from PIL import Image

        return tuple(self.encode(Image.new("RGB", (64, 48))).shape[-2:])  # type: ignore[return-value]
