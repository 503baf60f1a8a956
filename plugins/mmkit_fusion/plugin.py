"""Registers the built-in fusion components (lazily, by import string)."""

import mmkit


@mmkit.hookimpl
def register_fusions(register):
    register("concat", "mmkit_fusion.concat:ConcatFusion",
             summary="Project each modality, concatenate in a fixed order (learned 'missing' vectors), MLP")
    register("attention", "mmkit_fusion.attention:AttentionFusion",
             summary="Per-sample softmax weights over the present modalities; weighted sum (weights inspectable)")
    register("cross-attention", "mmkit_fusion.cross_attention:CrossAttentionFusion",
             summary="One modality's tokens attend to another's (multi-head, key padding masks)")
    register("autoencoder", "mmkit_fusion.autoencoder:AutoencoderFusion",
             summary="Shared latent trained to reconstruct every modality; imputes missing ones")
    register("transformer", "mmkit_fusion.transformer:TransformerFusion",
             summary="Pre-norm transformer over all modalities' tokens with a CLS token")
