"""Registers the built-in heads components (lazily, by import string)."""

import mmkit


@mmkit.hookimpl
def register_heads(register):
    register("classification", "mmkit_heads.classification:ClassificationHead",
             summary="Single- or multi-label classification (cross-entropy / BCE); accuracy, F1, AUROC, AP, ECE...")
    register("regression", "mmkit_heads.regression:RegressionHead",
             summary="Scalar regression on standardized targets (MSE / Huber); RMSE, MAE, R², Spearman")
    register("contrastive", "mmkit_heads.contrastive:ContrastiveHead",
             summary="CLIP-style InfoNCE between two modalities; retrieval recall@K, mean rank, mAP")
    register("captioning", "mmkit_heads.captioning:CaptioningHead",
             summary="Transformer decoder generating text (greedy / beam search, KV cache); BLEU, CIDEr")
