"""Zero-shot classification with a pair of ``hf-clip`` towers: score images against label prompts.

Only the encoder contract is used (``preprocess``/``collate``/``forward``), plus the text tower's
:meth:`~mmkit_hf.clip.HFClipEncoder.zero_shot_logits` and ``zero_shot_activation``; this is the
computation ``mmkit predict`` performs for a card with a ``[zero_shot]`` table.

    >>> probs = classify(image_tower, text_tower, images, ["cat", "dog"])   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mmkit import ParameterError

DEFAULT_PROMPT = "a photo of a {label}."


def prompts(labels: Sequence[str], template: str = DEFAULT_PROMPT) -> list[str]:
    """One text per label: ``template`` with ``{label}`` replaced."""
    if "{label}" not in template:
        raise ParameterError(f"zero-shot prompt {template!r} must contain {{label}}")
    if not labels:
        raise ParameterError("zero-shot classification needs at least one label")
    return [template.replace("{label}", str(label)) for label in labels]


@torch.no_grad()
def encode(encoder: Any, raws: Sequence[Any], batch_size: int = 64) -> Tensor:
    """``pooled [N, D]`` of raw values (eval-mode preprocessing), in batches."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.buffers()).device
    try:
        chunks = []
        for start in range(0, len(raws), batch_size):
            items = [encoder.preprocess(r, train=False) for r in raws[start:start + batch_size]]
            batch = encoder.collate(items)
            batch = {k: v.to(device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)
            chunks.append(encoder(batch).pooled.float())
        return torch.cat(chunks)
    finally:
        encoder.train(was_training)


def probabilities(logits: Tensor, activation: str) -> Tensor:
    """``softmax`` over the labels (CLIP) or an independent ``sigmoid`` per label (SigLIP)."""
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def classify(image_tower: Any, text_tower: Any, images: Sequence[Any], labels: Sequence[str],
             prompt: str = DEFAULT_PROMPT, batch_size: int = 64) -> Tensor:
    """``[N, L]`` probabilities of each label for each image (loaded PIL images)."""
    label_emb = encode(text_tower, prompts(labels, prompt), batch_size)
    image_emb = encode(image_tower, list(images), batch_size)
    logits = text_tower.zero_shot_logits(image_emb, label_emb)
    return probabilities(logits, text_tower.zero_shot_activation)
