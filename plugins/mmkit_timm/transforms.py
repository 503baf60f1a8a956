"""Image preprocessing and augmentation through timm's data config and ``create_transform``.

The default follows the data: images keep their native size (or ``image_size``, shorter side then a
centre crop that keeps the whole short side), are scaled to [0, 1] and normalised with the model's
mean/std -- no colour change. Augmentation is chosen by name (:data:`AUGMENTS`) or by a timm
auto-augment string (``"rand-m7-n2-mstd0.5"``, ``"augmix-m5-w4-d2"``).

Randomness: timm's crops and auto-augment policies draw from Python's ``random`` and numpy's global
RNG, torchvision's flips and colour jitter from torch's. The engine seeds torch's RNG per sample, so
:func:`rng_from_torch` seeds the other two from it for the duration of one transform (and restores
them): a sample's augmentation depends only on its seed, which keeps runs reproducible and
resumable. Mixup/CutMix act on a batch (:func:`mix_batch`); see ``docs/data.md``.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mmkit import ParameterError

#: augment name -> timm auto-augment string (None: a random resized crop only, or nothing for "none").
AUGMENTS: dict[str, str | None] = {
    "none": None,          # no augmentation: training decodes like evaluation
    "crop": None,          # random resized crop (scale crop_scale, aspect 3/4..4/3); geometry only
    "colorjitter": None,   # crop + brightness/contrast/saturation jitter of strength color_jitter
    "randaugment": "rand-m9-mstd0.5-inc1",  # crop + RandAugment (geometric and colour operations)
    "augmix": "augmix-m5-w4-d2",            # crop + AugMix
    "autoaugment": "original",              # crop + AutoAugment's ImageNet policy
}
_AA_PREFIXES = ("rand-", "augmix-")


def canonical_augment(augment: bool | str) -> tuple[str, str | None]:
    """``(name, timm auto-augment string or None)`` for an ``augment`` value (``True`` = "crop")."""
    if isinstance(augment, bool):
        return ("crop" if augment else "none"), None
    if not isinstance(augment, str):
        raise ParameterError(f"augment must be a name or true/false, got {augment!r}")
    name = augment.strip().lower()
    if name in AUGMENTS:
        return name, AUGMENTS[name]
    if name.startswith(_AA_PREFIXES):
        return name, name
    raise ParameterError(f"augment = {augment!r} is not known; choose one of {', '.join(AUGMENTS)}, or a timm "
                         "auto-augment string such as 'rand-m7-n2-mstd0.5' or 'augmix-m5-w4-d2'")


@dataclass(frozen=True)
class TransformSpec:
    """Everything that decides an image's decoding (hashable: transforms are cached per spec and size)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    image_size: int | None = None
    augment: str = "none"
    auto_augment: str | None = None
    color_jitter: float = 0.4
    hflip: bool = False
    crop_scale: tuple[float, float] = (0.8, 1.0)

    @property
    def augments(self) -> bool:
        return self.augment != "none"


@functools.lru_cache(maxsize=64)
def build_transform(spec: TransformSpec, height: int, width: int, train: bool) -> Any:
    """timm's ``create_transform`` for one output size, ending in a uint8 ``[3, H, W]`` tensor (cached;
    built in the worker that uses it). :func:`to_normalized` does the scaling and normalisation."""
    from timm.data import create_transform

    common = {"input_size": (3, height, width), "interpolation": spec.interpolation, "mean": spec.mean,
              "std": spec.std, "normalize": False}
    if train and spec.augments:
        return create_transform(**common, is_training=True, scale=spec.crop_scale, ratio=(3 / 4, 4 / 3),
                                hflip=0.5 if spec.hflip else 0.0, vflip=0.0,
                                color_jitter=spec.color_jitter if spec.augment == "colorjitter" else None,
                                auto_augment=spec.auto_augment, re_prob=0.0)
    # crop_pct 1: keep the whole shorter side
    return create_transform(**common, is_training=False, crop_pct=1.0, crop_mode="center")


def preprocess_image(spec: TransformSpec, image: Any, train: bool) -> Tensor:
    """An RGB PIL image -> normalised float tensor ``[3, H, W]`` (H, W: native size or ``image_size``).

    At the native size without augmentation the geometry is the identity, so no transform runs: the
    image goes straight to :func:`to_normalized` (the data pipeline's common case, kept fast).
    """
    augmenting = train and spec.augments
    if not augmenting and not spec.image_size:
        return to_normalized(image, spec)
    height, width = (spec.image_size, spec.image_size) if spec.image_size else (image.height, image.width)
    transform = build_transform(spec, height, width, augmenting)
    if not augmenting:
        return to_normalized(transform(image), spec)
    with rng_from_torch():
        return to_normalized(transform(image), spec)


def to_normalized(image: Any, spec: TransformSpec) -> Tensor:
    """A PIL image or uint8 ``[3, H, W]`` tensor -> float32 ``(x / 255 - mean) / std`` (timm's
    ``ToTensor`` + ``Normalize``, in one float pass instead of several)."""
    import numpy as np

    if isinstance(image, Tensor):
        x = image.to(torch.float32)
    else:
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)
    return x.div_(255.0).sub_(mean).div_(std)


@contextmanager
def rng_from_torch() -> Iterator[int]:
    """Seed Python's ``random`` and numpy's global RNG from torch's, restoring them afterwards."""
    import numpy as np

    seed = int(torch.randint(0, 2**31 - 1, ()))
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield seed
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


# ----------------------------------------------------------------------------------- mixup / cutmix
def batch_seed(seeds: list[int]) -> int:
    """A seed for a batch from its samples' seeds (so a batch mixes the same way whoever collates it)."""
    digest = hashlib.sha256(",".join(map(str, seeds)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def mix_batch(pixels: Tensor, seed: int, mixup: float, cutmix: float) -> tuple[Tensor, dict[str, Tensor]]:
    """Mixup or CutMix of a batch ``[P, 3, H, W]`` as timm's ``Mixup`` does in 'batch' mode.

    Sample ``i`` is mixed with sample ``P - 1 - i`` (the flipped batch) with weight ``lam`` ~
    Beta(alpha, alpha); with both alphas > 0 each batch uses one of the two with probability 1/2.
    CutMix pastes a box of the partner image; ``lam`` is corrected to the area actually kept.
    Returns the mixed pixels and ``{"lam": scalar, "perm": [P] long}``: target ``i`` becomes
    ``lam * target[i] + (1 - lam) * target[perm[i]]`` (the heads do that).
    """
    import numpy as np
    from timm.data.mixup import cutmix_bbox_and_lam

    rng = np.random.default_rng(seed)
    use_cutmix = cutmix > 0 and (mixup <= 0 or rng.random() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    lam = float(rng.beta(alpha, alpha))
    perm = torch.arange(pixels.shape[0] - 1, -1, -1)
    if use_cutmix:
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            (y0, y1, x0, x1), lam = cutmix_bbox_and_lam(pixels.shape, lam, correct_lam=True)
        finally:
            np.random.set_state(state)
        pixels = pixels.clone()
        pixels[:, :, y0:y1, x0:x1] = pixels[perm][:, :, y0:y1, x0:x1]
    else:
        pixels = pixels * lam + pixels[perm] * (1.0 - lam)
    return pixels, {"lam": torch.tensor(float(lam)), "perm": perm}
