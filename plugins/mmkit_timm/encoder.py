"""The ``timm`` image encoder: any timm backbone, headless, yielding a pooled vector and spatial tokens."""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
from torch import Tensor

from mmkit.errors import DataError, ParameterError
from mmkit.interfaces import Embedding, Encoder


def _create(model: str) -> Any:
    import timm

    try:
        try:  # ViT-like models: accept any input size (positions are interpolated)
            return timm.create_model(model, pretrained=False, num_classes=0, dynamic_img_size=True)
        except TypeError:  # CNNs take any size natively and do not know the argument
            return timm.create_model(model, pretrained=False, num_classes=0)
    except RuntimeError as exc:
        if "Unknown model" not in str(exc):
            raise
        close = difflib.get_close_matches(model, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else " (see timm.list_models())"
        raise ParameterError(f"unknown timm model {model!r}{hint}") from exc


class TimmEncoder(Encoder):
    """A timm image backbone (headless) giving a pooled vector and spatial or patch tokens.

    Images are used at their own size unless ``image_size`` is given (no upsampling to the size on
    the model card), scaled to [0, 1] and normalised with the model's mean/std. Tokens are the final
    feature map flattened to ``H*W`` tokens for CNNs, or the patch tokens (prefix tokens dropped) for
    ViTs; ``pooled`` is the model's own head pooling (``forward_head(pre_logits=True)``).

    Args:
        model: timm architecture name (``resnet18``, ``convnext_atto``, ``vit_small_patch16_224`` ...).
        pretrained: False for random initialisation, or a local ``.safetensors`` / torch state-dict file
            (loaded with ``weights_only=True``; classifier weights in it are ignored). Never downloads.
        image_size: resize images to this square size (shorter side, then centre crop); None keeps the
            data's native size (all images in a batch must then share one size).
        augment: light geometric augmentation in training (random resized crop, scale 0.8-1);
            no colour changes.
        hflip: also flip horizontally when ``augment`` (off by default: captions may say left/right).
        tokens: return spatial/patch tokens besides the pooled vector.
    """

    modality = "image"

    def __init__(self, model: str = "resnet18", pretrained: bool | str = False, image_size: int | None = None,
                 augment: bool = False, hflip: bool = False, tokens: bool = True) -> None:
        super().__init__()
        if pretrained is True:
            raise ParameterError(
                "timm encoder: pretrained = true would download weights; mmkit never downloads. "
                "Give the path of a local .safetensors (or torch state dict) file instead")
        if image_size is not None and image_size < 1:
            raise ParameterError(f"timm encoder: image_size must be positive, got {image_size}")
        self.model_name = model
        self.image_size = image_size
        self.augment = augment
        self.hflip = hflip
        self.model = _create(model)
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        if pretrained:
            from mmkit_timm.weights import load_into, read_state_dict

            load_into(self.model, read_state_dict(pretrained), str(pretrained), cfg.get("classifier"))
        mean = cfg.get("mean") or (0.485, 0.456, 0.406)
        std = cfg.get("std") or (0.229, 0.224, 0.225)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self.feature_dim = int(self.model.num_features)
        self.dim = int(getattr(self.model, "head_hidden_size", None) or self.feature_dim)
        # tokens must share pooled's width; models whose head widens the features give pooled only
        self.has_tokens = bool(tokens) and self.dim == self.feature_dim
        self.deterministic_train = not augment

    # ------------------------------------------------------------------ worker side
    def preprocess(self, raw: Any, train: bool = False) -> Tensor:
        """An RGB PIL image -> normalised float tensor ``[3, H, W]``."""
        import numpy as np
        from PIL import Image

        if not isinstance(raw, Image.Image):
            raise DataError(f"timm encoder expects a loaded PIL image, got {type(raw).__name__}")
        image = raw if raw.mode == "RGB" else raw.convert("RGB")
        out_w, out_h = (self.image_size, self.image_size) if self.image_size else image.size
        if train and self.augment:
            image = self._random_resized_crop(image, out_w, out_h)
            if self.hflip and torch.rand(()) < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        elif self.image_size:
            image = self._resize_center_crop(image, self.image_size)
        arr = np.asarray(image, dtype=np.float32)
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return x.sub_(mean).div_(std)

    @staticmethod
    def _resize_center_crop(image: Any, size: int) -> Any:
        from PIL import Image

        w, h = image.size
        if (w, h) == (size, size):
            return image
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        image = image.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        return image.crop((left, top, left + size, top + size))

    @staticmethod
    def _random_resized_crop(image: Any, out_w: int, out_h: int, scale: tuple[float, float] = (0.8, 1.0),
                             ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Any:
        from PIL import Image

        w, h = image.size
        area = w * h
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(*scale))
            log_r = float(torch.empty(()).uniform_(math.log(ratio[0]), math.log(ratio[1])))
            cw = int(round(math.sqrt(target * math.exp(log_r))))
            ch = int(round(math.sqrt(target / math.exp(log_r))))
            if 0 < cw <= w and 0 < ch <= h:
                left = int(torch.randint(0, w - cw + 1, ()))
                top = int(torch.randint(0, h - ch + 1, ()))
                break
        else:
            cw, ch, left, top = w, h, 0, 0
        return image.resize((out_w, out_h), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))

    def collate(self, items: list[Tensor]) -> Tensor:
        sizes = {tuple(t.shape[-2:]) for t in items}
        if len(sizes) > 1:
            raise DataError(
                f"timm encoder: images of different sizes in one batch ({sorted(sizes)[:4]} ...); "
                "set image_size in the encoder's recipe section to resize them")
        return torch.stack(items)

    # ------------------------------------------------------------------ model side
    def forward(self, inputs: Tensor) -> Embedding:
        features = self.model.forward_features(inputs)
        pooled = self.model.forward_head(features, pre_logits=True)
        present = torch.ones(pooled.shape[0], dtype=torch.bool, device=pooled.device)
        if not self.has_tokens:
            return Embedding(pooled, present)
        tokens = self._tokens(features)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return Embedding(pooled, present, tokens, mask)

    def _tokens(self, features: Tensor) -> Tensor:
        if features.dim() == 3:  # ViT-like [B, N, C]: drop class/register tokens
            return features[:, self.num_prefix_tokens:]
        if features.dim() == 4:
            if features.shape[1] == self.feature_dim:  # NCHW
                return features.flatten(2).transpose(1, 2)
            return features.flatten(1, 2)  # NHWC (swin and friends)
        raise RuntimeError(f"timm model {self.model_name!r}: unexpected feature shape {tuple(features.shape)}")
