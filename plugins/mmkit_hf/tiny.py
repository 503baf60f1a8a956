"""Tiny random Hugging Face model folders, built from configs (no download): for tests, docs and trying
a recipe before a real folder is at hand.

Each function writes a complete folder -- ``config.json``, ``model.safetensors`` and the tokenizer
and/or image processor files -- the way ``save_pretrained`` writes a real one, and returns its path.
The tokenizer is a word-level vocabulary of :data:`WORDS` (the ``shapes`` dataset's words plus a few),
with ``[CLS] ... [SEP]`` around each text. The weights are random: these folders show that loading,
shapes, masks and training work, not what a pretrained model knows.

    >>> from mmkit_hf.tiny import save_tiny_clip
    >>> folder = save_tiny_clip("/tmp/tiny-clip")                  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORDS = ("a", "an", "the", "is", "there", "of", "and", "photo", "picture", "shape", "red", "green", "blue",
         "yellow", "circle", "square", "triangle", "left", "right", "above", "below", "one", "two", "three",
         "cat", "dog")
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID = range(4)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_tokenizer(max_length: int = 32) -> Any:
    """A fast word-level tokenizer over :data:`WORDS` (lower-cased, whitespace and punctuation split)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate([*SPECIALS, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", model_max_length=max_length)


def save_folder(folder: str | Path, model: Any, *extras: Any) -> Path:
    """``model.save_pretrained(folder)`` as safetensors, then each tokenizer/processor in ``extras``."""
    from mmkit import hub_offline

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    with hub_offline():  # quiet: no progress bars
        model.save_pretrained(out, safe_serialization=True)
        for extra in extras:
            extra.save_pretrained(out)
    return out


def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def save_tiny_text(folder: str | Path, model_type: str = "bert", hidden: int = 32, layers: int = 2,
                   seed: int = 0) -> Path:
    """A tiny text model (``bert``, ``roberta``, ``distilbert`` or ``t5``) with the word tokenizer."""
    from transformers import AutoConfig, AutoModel

    _seeded(seed)
    common: dict[str, Any] = {"vocab_size": len(SPECIALS) + len(WORDS), "pad_token_id": PAD_ID}
    if model_type == "t5":
        config = AutoConfig.for_model("t5", d_model=hidden, d_kv=hidden // 2, d_ff=2 * hidden, num_layers=layers,
                                      num_decoder_layers=1, num_heads=2, decoder_start_token_id=PAD_ID, **common)
    elif model_type == "distilbert":
        config = AutoConfig.for_model("distilbert", dim=hidden, hidden_dim=2 * hidden, n_layers=layers, n_heads=2,
                                      max_position_embeddings=64, **common)
    else:
        config = AutoConfig.for_model(model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                      intermediate_size=2 * hidden, max_position_embeddings=64 + 2, **common)
    return save_folder(folder, AutoModel.from_config(config), tiny_tokenizer())


def save_tiny_vit(folder: str | Path, image_size: int = 32, patch: int = 8, hidden: int = 32, layers: int = 2,
                  seed: int = 0) -> Path:
    """A tiny ViT (with its pooler) and a ViT image processor resizing to ``image_size``."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    _seeded(seed)
    config = ViTConfig(image_size=image_size, patch_size=patch, hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=2, intermediate_size=2 * hidden)
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=MEAN, image_std=STD)
    return save_folder(folder, ViTModel(config), processor)


def save_tiny_clip(folder: str | Path, family: str = "clip", image_size: int = 32, patch: int = 8, hidden: int = 32,
                   projection: int = 16, seed: int = 0) -> Path:
    """A tiny two-tower model, ``clip`` or ``siglip``, with the word tokenizer and an image processor."""
    _seeded(seed)
    text = {"vocab_size": len(SPECIALS) + len(WORDS), "hidden_size": hidden, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 2 * hidden, "max_position_embeddings": 32,
            "pad_token_id": PAD_ID, "bos_token_id": CLS_ID, "eos_token_id": SEP_ID}
    config: Any
    processor: Any
    model: Any
    vision = {"hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 2 * hidden,
              "image_size": image_size, "patch_size": patch}
    if family == "clip":
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection)
        processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                       crop_size={"height": image_size, "width": image_size},
                                       image_mean=MEAN, image_std=STD)
        model = CLIPModel(config)
    elif family == "siglip":
        from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

        config = SiglipConfig(text_config={**text, "projection_size": hidden}, vision_config=vision)
        processor = SiglipImageProcessor(size={"height": image_size, "width": image_size}, image_mean=MEAN,
                                         image_std=STD)
        model = SiglipModel(config)
    else:
        raise ValueError(f"family must be 'clip' or 'siglip', got {family!r}")
    return save_folder(folder, model, processor, tiny_tokenizer(max_length=text["max_position_embeddings"]))
