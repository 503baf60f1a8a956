"""Registers the Hugging Face encoders (lazily, by import string: listing imports no transformers)."""

import mmkit


@mmkit.hookimpl
def register_encoders(register):
    register("hf-text", "mmkit_hf.text:HFTextEncoder",
             summary="A local Hugging Face text model folder (BERT, DeBERTa, ...): pooled (mean/CLS) + tokens")
    register("hf-vision", "mmkit_hf.vision:HFVisionEncoder",
             summary="A local Hugging Face image model folder (ViT, DINOv2, CLIP/SigLIP vision): pooled + patches")
    register("hf-clip", "mmkit_hf.clip:HFClipEncoder",
             summary="One tower of a local CLIP/SigLIP folder with its projection (contrastive, zero-shot)")
