"""The ``timm`` image encoder: any timm backbone, headless, yielding a pooled vector and spatial tokens."""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import Tensor

from mmkit import DataError, Embedding, Encoder, ParameterError

from mmkit_timm.offline import local_model_name, local_weights
from mmkit_timm.transforms import (TransformSpec, batch_seed, build_transform, canonical_augment, mix_batch,
                                   preprocess_image, to_normalized)


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


def _crop_scale(value: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"timm encoder: crop_scale must be two numbers [min, max], got {value!r}") from None
    if not 0 < lo <= hi <= 1:
        raise ParameterError(f"timm encoder: crop_scale must satisfy 0 < min <= max <= 1, got {value!r}")
    return lo, hi


class TimmEncoder(Encoder):
    """A timm image backbone (headless) giving a pooled vector and spatial or patch tokens.

    Decoding uses timm's data config (mean/std, interpolation) and ``create_transform``. By default
    images keep their own size (no upsampling to the size on the model card) and their colours: they
    are scaled to [0, 1] and normalised, nothing else. Tokens are the final feature map flattened to
    ``H*W`` tokens for CNNs, or the patch tokens (prefix tokens dropped) for ViTs; ``pooled`` is the
    model's own head pooling (``forward_head(pre_logits=True)``). Nothing is ever downloaded: a hub
    model name (``hf-hub:...``, ``timm/...``) or ``pretrained = true`` is refused.

    Args:
        model: timm architecture name (``resnet18``, ``convnext_atto``, ``vit_small_patch16_224`` ...);
            a tag (``resnet18.a1_in1k``) selects that tag's preprocessing config.
        pretrained: False for random initialisation, or a local ``.safetensors`` (or torch state-dict,
            loaded with ``weights_only=True``) file; classifier weights in it are ignored. Never downloads.
        image_size: resize images to this square size (shorter side, then centre crop); None keeps the
            data's native size (all images in a batch must then share one size).
        augment: training augmentation: "none" (default; false), "crop" (true: random resized crop,
            geometry only), "colorjitter" (crop + colour jitter), "randaugment", "augmix", "autoaugment"
            (crop + that timm policy; these change colours), or a timm auto-augment string
            ("rand-m7-n2-mstd0.5").
        hflip: also flip horizontally when augmenting (off by default: captions may say left/right).
        color_jitter: brightness/contrast/saturation strength of "colorjitter".
        crop_scale: area range [min, max] of the random resized crop (fractions of the image).
        mixup: Mixup alpha for training batches (0 = off); the head mixes the targets (classification
            and regression heads; others refuse).
        cutmix: CutMix alpha for training batches (0 = off); with mixup too, each batch uses one of the two.
        tokens: return spatial/patch tokens besides the pooled vector.
    """

    modality = "image"

    def __init__(self, model: str = "resnet18", pretrained: bool | str = False, image_size: int | None = None,
                 augment: bool | str = "none", hflip: bool = False, color_jitter: float = 0.4,
                 crop_scale: list[float] = [0.8, 1.0], mixup: float = 0.0, cutmix: float = 0.0,  # noqa: B006
                 tokens: bool = True) -> None:
        super().__init__()
        model = local_model_name(model)  # before timm sees the name: it would fetch hub names
        weights = local_weights(pretrained)
        self.pretrained = weights is not None  # lr_mult auto: fine-tuned at 1e-5
        if image_size is not None and image_size < 1:
            raise ParameterError(f"timm encoder: image_size must be positive, got {image_size}")
        augment_name, auto_augment = canonical_augment(augment)
        scale = _crop_scale(crop_scale)
        if mixup < 0 or cutmix < 0:
            raise ParameterError(f"timm encoder: mixup and cutmix are Beta alphas >= 0, got {mixup} and {cutmix}")
        self.model_name = model
        self.image_size = image_size
        self.augment = augment_name
        self.hflip = hflip
        self.mixup, self.cutmix = float(mixup), float(cutmix)
        self.model = _create(model)
        if weights:
            from mmkit_timm.weights import load_into, read_state_dict

            cfg = getattr(self.model, "pretrained_cfg", None) or {}
            load_into(self.model, read_state_dict(weights), weights, cfg.get("classifier"))
        from timm.data import resolve_data_config

        config = resolve_data_config({}, model=self.model)
        self.mean = tuple(float(m) for m in config["mean"])
        self.std = tuple(float(s) for s in config["std"])
        self.transform_spec = TransformSpec(self.mean, self.std, str(config.get("interpolation") or "bicubic"),
                                            image_size, augment_name, auto_augment, float(color_jitter),
                                            bool(hflip), scale)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0) or 0)
        self.feature_dim = int(self.model.num_features)
        self.dim = int(getattr(self.model, "head_hidden_size", None) or self.feature_dim)
        # tokens must share pooled's width; models whose head widens the features give pooled only
        self.has_tokens = bool(tokens) and self.dim == self.feature_dim
        self.deterministic_train = augment_name == "none" and not self.mixes

    @property
    def mixes(self) -> bool:
        """Whether training batches are mixed (Mixup/CutMix)."""
        return self.mixup > 0 or self.cutmix > 0

    # ------------------------------------------------------------------ worker side
    def preprocess(self, raw: Any, train: bool = False) -> Any:
        """An RGB PIL image -> normalised float tensor ``[3, H, W]`` (with Mixup/CutMix in training: a dict
        of the tensor and the sample's seed, which the batch's mixing is drawn from)."""
        from PIL import Image

        if not isinstance(raw, Image.Image):
            raise DataError(f"timm encoder expects a loaded PIL image, got {type(raw).__name__}")
        image = raw if raw.mode == "RGB" else raw.convert("RGB")
        pixels = preprocess_image(self.transform_spec, image, train)
        if train and self.mixes:
            return {"pixels": pixels, "seed": int(torch.randint(0, 2**31 - 1, ()))}
        return pixels

    def to_cache(self, raw: Any, train: bool = False) -> Tensor | None:
        """The decoded-sample cache's form: uint8 ``[3, H, W]`` -- resized/cropped when that is
        deterministic (no augmentation), else the decoded image itself (augmentation runs after the cache)."""
        from PIL import Image

        if not isinstance(raw, Image.Image):
            raise DataError(f"timm encoder expects a loaded PIL image, got {type(raw).__name__}")
        image = raw if raw.mode == "RGB" else raw.convert("RGB")
        if not (train and self.transform_spec.augments) and self.image_size:
            return build_transform(self.transform_spec, self.image_size, self.image_size, False)(image)
        import numpy as np

        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def from_cache(self, item: Tensor, train: bool = False) -> Any:
        """What :meth:`preprocess` gives for the image ``item`` was cached from (bitwise)."""
        if train and self.transform_spec.augments:
            from PIL import Image

            return self.preprocess(Image.fromarray(item.permute(1, 2, 0).numpy(), mode="RGB"), train)
        pixels = to_normalized(item, self.transform_spec)
        if train and self.mixes:
            return {"pixels": pixels, "seed": int(torch.randint(0, 2**31 - 1, ()))}
        return pixels

    def collate(self, items: list[Any]) -> Any:
        """Stack the images; training items of a mixing encoder are mixed (``{"pixels", "mix"}``)."""
        mixing = bool(items) and isinstance(items[0], dict)
        pixels = [it["pixels"] for it in items] if mixing else items
        sizes = {tuple(t.shape[-2:]) for t in pixels}
        if len(sizes) > 1:
            raise DataError(
                f"timm encoder: images of different sizes in one batch ({sorted(sizes)[:4]} ...); "
                "set image_size in the encoder's recipe section to resize them")
        stacked = torch.stack(pixels)
        if not mixing:
            return stacked
        mixed, mix = mix_batch(stacked, batch_seed([it["seed"] for it in items]), self.mixup, self.cutmix)
        return {"pixels": mixed, "mix": mix}

    # ------------------------------------------------------------------ model side
    def forward(self, inputs: Tensor | dict[str, Any]) -> Embedding:
        if isinstance(inputs, dict):  # a mixed training batch
            inputs = inputs["pixels"]
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
