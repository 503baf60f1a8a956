"""The ``hf-clip`` encoder: one tower (vision or text) of a local CLIP or SigLIP folder, with its projection.

A recipe uses two entries pointing at the same folder, ``tower = "vision"`` for the image field and
``tower = "text"`` for the text field; their ``pooled`` vectors live in the model's shared space, so
the pair serves the contrastive head (fine-tuning) and zero-shot classification (label prompts,
:mod:`mmkit_hf.zeroshot`) as the pretrained model does it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit import Embedding, Encoder, ParameterError
from mmkit_hf.inputs import ImageInputs, TextInputs, max_tokens
from mmkit_hf.loading import load_image_processor, load_model, load_tokenizer, model_folder

# model_type -> (text projection attribute, vision projection attribute, zero-shot activation, pad text to max)
FAMILIES: dict[str, tuple[str | None, str | None, str, bool]] = {
    "clip": ("text_projection", "visual_projection", "softmax", False),
    "siglip": (None, None, "sigmoid", True),
}
SIGLIP_TEXT_LENGTH = 64  # SigLIP's text length in training (its texts are padded to it)


class HFClipEncoder(Encoder):
    """One tower of a local CLIP/SigLIP folder, projected into the model's shared image-text space.

    ``tower = "vision"`` reads images (through the folder's image processor); ``tower = "text"`` reads
    texts (the folder's tokenizer; SigLIP texts are padded to the fixed length it was trained with).
    ``pooled`` is the tower's embedding as ``get_image_features``/``get_text_features`` return it
    (CLIP: pooled state through the projection; SigLIP: the pooling head's output), not normalised.
    Both towers keep the model's ``logit_scale`` (and SigLIP's ``logit_bias``) as buffers, for
    :meth:`zero_shot_logits`; with ``zero_shot_activation`` they make each tower an
    :class:`mmkit.ZeroShot` (what ``mmkit predict --labels`` looks for). No tokens. Nothing is
    downloaded; no code from the folder runs.

    Args:
        path: a local CLIP or SigLIP folder (``config.json``, ``model.safetensors``, tokenizer files,
            ``preprocessor_config.json``), as ``CLIPModel.save_pretrained`` writes it.
        tower: ``vision`` (modality image) or ``text`` (modality text).
        max_length: text tokens kept, special tokens included; None = the model's limit (CLIP 77,
            SigLIP 64).
    """

    deterministic_train = True
    has_tokens = False
    logit_scale: Tensor
    logit_bias: Tensor

    def __init__(self, path: str, tower: Literal["vision", "text"] = "vision", max_length: int | None = None) -> None:
        super().__init__()
        if tower not in ("vision", "text"):
            raise ParameterError(f"hf-clip: tower must be 'vision' or 'text', got {tower!r}")
        folder = model_folder(path, "hf-clip")
        loaded = load_model(folder, "hf-clip")
        if loaded.model_type not in FAMILIES:
            raise ParameterError(f"hf-clip: {folder} holds a {loaded.model_type!r} model; hf-clip reads "
                                 f"{' and '.join(sorted(FAMILIES))} folders (for another image or text model use "
                                 f"hf-vision or hf-text)")
        text_proj, vision_proj, self.zero_shot_activation, pad_to_max = FAMILIES[loaded.model_type]
        model = loaded.model
        self.path, self.tower_name, self.model_type = path, tower, loaded.model_type
        self.modality = "image" if tower == "vision" else "text"
        self.tower = getattr(model, f"{tower}_model")
        proj_name = vision_proj if tower == "vision" else text_proj
        self.projection = getattr(model, proj_name) if proj_name else nn.Identity()
        self.register_buffer("logit_scale", model.logit_scale.detach().clone().reshape(()))
        bias = getattr(model, "logit_bias", None)
        self.register_buffer("logit_bias", torch.zeros(()) if bias is None else bias.detach().clone().reshape(()))
        if tower == "vision":
            self.inputs: ImageInputs | TextInputs = ImageInputs(load_image_processor(folder, "hf-clip"))
        else:
            tokenizer = load_tokenizer(folder, "hf-clip")
            default = SIGLIP_TEXT_LENGTH if pad_to_max else 10**6
            length = max_tokens(tokenizer, self.tower.config, max_length or default, "hf-clip")
            self.inputs = TextInputs(tokenizer, length, pad_to_max=pad_to_max)
        self.dim = self._width(loaded)
        self.pretrained = True  # lr_mult auto: fine-tuned at 1e-5

    def _width(self, loaded: Any) -> int:
        if not isinstance(self.projection, nn.Identity):
            return int(self.projection.out_features)
        config = loaded.config.vision_config if self.tower_name == "vision" else loaded.config.text_config
        return int(getattr(config, "projection_size", None) or config.hidden_size)

    def preprocess(self, raw: Any, train: bool = False) -> Any:
        """An image -> pixels (vision tower) or a text -> token ids (text tower)."""
        return self.inputs.encode(raw)

    def collate(self, items: list[Any]) -> Any:
        return self.inputs.collate(items)

    def forward(self, inputs: Tensor | Mapping[str, Tensor]) -> Embedding:
        if isinstance(inputs, Tensor):
            out = self.tower(pixel_values=inputs)
        else:
            out = self.tower(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        pooled = self.projection(out.pooler_output)
        return Embedding(pooled, torch.ones(pooled.shape[0], dtype=torch.bool, device=pooled.device))

    def zero_shot_logits(self, images: Tensor, texts: Tensor) -> Tensor:
        """``[N, D]`` image and ``[L, D]`` text ``pooled`` vectors -> ``[N, L]`` logits as the pretrained
        model scores them: cosine similarity times ``exp(logit_scale)``, plus ``logit_bias`` (SigLIP).
        Turn them into probabilities with ``zero_shot_activation``: ``softmax`` over the labels (CLIP)
        or an independent ``sigmoid`` per label (SigLIP)."""
        sims = F.normalize(images.float(), dim=-1) @ F.normalize(texts.float(), dim=-1).T
        return sims * self.logit_scale.float().exp() + self.logit_bias.float()
