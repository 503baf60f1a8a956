"""The ``hf-vision`` encoder: a local Hugging Face image model folder (ViT, DeiT, DINOv2, BEiT, Swin,
ConvNeXt, the vision tower of CLIP/SigLIP), with the folder's own image preprocessing."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from mmkit import Embedding, Encoder, ParameterError
from mmkit_hf.inputs import ImageInputs
from mmkit_hf.loading import load_image_processor, load_model, model_folder, tower

MAX_PREFIX = 16  # class + distillation + register tokens of the ViT family stay well below this


def _patch_grid(config: Any, height: int, width: int) -> int | None:
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, (list, tuple)):
        ph, pw = int(patch[0]), int(patch[-1])
    elif isinstance(patch, int) and patch > 0:
        ph = pw = patch
    else:
        return None
    return (height // ph) * (width // pw)


class HFVisionEncoder(Encoder):
    """A Hugging Face image model from a local folder, offline; of a CLIP/SigLIP folder its vision tower.

    Images are prepared by the folder's image processor (``preprocessor_config.json``: its size,
    crop, resampling, mean and std), the same way in training and evaluation (no augmentation), so a
    frozen encoder's outputs are cached. ``tokens`` are the patch tokens (class, distillation and
    register tokens dropped) or a CNN's flattened feature map; ``pooled`` depends on ``pooling``.

    Args:
        path: a local model folder with ``config.json``, ``model.safetensors`` and
            ``preprocessor_config.json``.
        pooling: ``auto`` = the model's pooler output when its weights are in the folder (CLIP/SigLIP
            towers, DINOv2, ViT with a pooler, Swin, ConvNeXt), else the class token, else the mean
            of the patch tokens; or ``pooler``, ``cls``, ``mean`` explicitly.
        tokens: return patch tokens besides the pooled vector (only when they share its width).
    """

    modality = "image"
    deterministic_train = True

    def __init__(self, path: str, pooling: Literal["auto", "pooler", "cls", "mean"] = "auto",
                 tokens: bool = True) -> None:
        super().__init__()
        if pooling not in ("auto", "pooler", "cls", "mean"):
            raise ParameterError(f"hf-vision: pooling must be auto, pooler, cls or mean, got {pooling!r}")
        folder = model_folder(path, "hf-vision")
        loaded = load_model(folder, "hf-vision")
        self.path = path
        self.model = tower(loaded, "vision", "hf-vision")
        self.inputs = ImageInputs(load_image_processor(folder, "hf-vision"))
        self.model_type = loaded.model_type
        height, width = self.inputs.size()
        with torch.no_grad():
            out = self.model(pixel_values=torch.zeros(1, 3, height, width))
        hidden = out.last_hidden_state
        pooler = getattr(out, "pooler_output", None)
        has_pooler = pooler is not None and pooler.dim() == 2 and not loaded.untrained
        grid = _patch_grid(getattr(self.model, "config", loaded.config), height, width) if hidden.dim() == 3 else None
        extra = hidden.shape[1] - grid if grid is not None else 0
        self.num_prefix_tokens = extra if 0 <= extra <= MAX_PREFIX else 0
        self.pooling = self._choose_pooling(pooling, has_pooler, loaded)
        feature_dim = int(hidden.shape[1] if hidden.dim() == 4 else hidden.shape[-1])
        self.dim = int(pooler.shape[-1]) if self.pooling == "pooler" and pooler is not None else feature_dim
        self.pretrained = True  # lr_mult auto: fine-tuned at 1e-5
        self.has_tokens = bool(tokens) and self.dim == feature_dim

    def _choose_pooling(self, asked: str, has_pooler: bool, loaded: Any) -> str:
        if asked == "pooler" and not has_pooler:
            why = "its pooler weights are not in the folder" if loaded.untrained else "it has no pooler output"
            raise ParameterError(f"hf-vision: pooling = 'pooler' but {loaded.folder} ({loaded.model_type}): {why}; "
                                 f"use pooling = 'cls' or 'mean'")
        if asked == "cls" and not self.num_prefix_tokens:
            raise ParameterError(f"hf-vision: pooling = 'cls' but {loaded.folder} ({loaded.model_type}) has no "
                                 f"class token; use pooling = 'mean' or 'auto'")
        if asked != "auto":
            return asked
        return "pooler" if has_pooler else "cls" if self.num_prefix_tokens else "mean"

    def preprocess(self, raw: Any, train: bool = False) -> Tensor:
        """An RGB PIL image -> ``[3, H, W]`` pixels by the folder's image processor."""
        return self.inputs.encode(raw)

    def collate(self, items: list[Tensor]) -> Tensor:
        return self.inputs.collate(items)

    def forward(self, inputs: Tensor) -> Embedding:
        out = self.model(pixel_values=inputs)
        hidden = out.last_hidden_state
        patches = hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden[:, self.num_prefix_tokens:]
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = patches.mean(1)
        present = torch.ones(pooled.shape[0], dtype=torch.bool, device=pooled.device)
        if not self.has_tokens:
            return Embedding(pooled, present)
        mask = torch.ones(patches.shape[:2], dtype=torch.bool, device=patches.device)
        return Embedding(pooled, present, patches, mask)
