"""``autoencoder``: a shared latent that must reconstruct every modality, so it can impute missing ones."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmkit import Embedding, Fused, Fusion, ParameterError
from mmkit_fusion.common import (FeedForward, Projection, batch_info, check_positive, check_probability,
                                 masked_pooled, modality_dropout, modality_order, presence)


class AutoencoderFusion(Fusion):
    """Encode all modalities into one latent vector and decode each modality back from it.

    Each present modality's pooled vector is projected to ``dim`` (Linear + LayerNorm); absent ones
    are zeros, and the presence bits are appended so the encoder knows which inputs it has. An MLP
    maps this to the latent (``latent_dim``, LayerNorm), which is the fused output. One decoder MLP
    per modality reconstructs that modality's *raw input embedding* (the encoder's output, detached)
    from the latent; ``aux_losses["recon_<modality>"]`` is its MSE over the samples that have the
    modality, times ``recon_weight`` (the engine adds them to the task loss).

    With ``modality_dropout`` (training only) a present modality is hidden from the encoder but
    still reconstructed, so the latent learns to impute it from the others; :meth:`impute` does that
    explicitly. Targets are the raw embeddings rather than the fusion's own projections because a
    projection could shrink to a constant and make the loss trivially zero, and because an imputed
    vector then lives in the encoder's output space and can stand in for it.

    Args:
        latent_dim: width of the shared latent (= the fused output width).
        dim: width of the per-modality projections and of the hidden layers.
        dropout: dropout inside the encoder and decoder MLPs.
        recon_weight: weight of each modality's reconstruction loss in ``aux_losses``.
        modality_dropout: training only: probability of hiding each present modality of each sample
            from the encoder (never a sample's last one); its reconstruction target stays.
    """

    has_tokens = False

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None,
                 latent_dim: int = 128, dim: int = 256, dropout: float = 0.1, recon_weight: float = 1.0,
                 modality_dropout: float = 0.25) -> None:
        super().__init__()
        check_positive("latent_dim", latent_dim)
        check_positive("dim", dim)
        check_probability("dropout", dropout)
        check_probability("modality_dropout", modality_dropout)
        if not float(recon_weight) >= 0:
            raise ParameterError(f"recon_weight must be >= 0, got {recon_weight!r}")
        self.modalities = modality_order(input_dims)
        self.input_dims = {m: int(input_dims[m]) for m in self.modalities}
        self.dim = latent_dim
        self.recon_weight = float(recon_weight)
        self.modality_dropout = modality_dropout
        n = len(self.modalities)
        self.proj = nn.ModuleDict({m: Projection(input_dims[m], dim) for m in self.modalities})
        self.encoder = FeedForward(n * dim + n, dim, latent_dim, dropout)
        self.latent_norm = nn.LayerNorm(latent_dim)
        self.decoders = nn.ModuleDict({m: FeedForward(latent_dim, dim, input_dims[m], dropout)
                                       for m in self.modalities})

    def encode(self, embeddings: Mapping[str, Embedding]) -> Tensor:
        """The latent ``[B, latent_dim]`` of the given embeddings (no modality dropout)."""
        batch, device, dtype = batch_info(embeddings, self.modalities)
        pres = presence(embeddings, self.modalities, batch, device)
        parts = []
        for i, m in enumerate(self.modalities):
            if m in embeddings:
                h = self.proj[m](masked_pooled(embeddings[m]))
                parts.append(torch.where(pres[:, i, None], h, torch.zeros_like(h)))
            else:
                parts.append(torch.zeros(batch, self.proj[m].linear.out_features, device=device, dtype=dtype))
        parts.append(pres.to(dtype))
        return self.latent_norm(self.encoder(torch.cat(parts, dim=-1)))

    def decode(self, latent: Tensor, modality: str) -> Tensor:
        """Reconstruct ``modality``'s raw embedding ``[B, input_dims[modality]]`` from a latent."""
        return self.decoders[modality](latent)

    def impute(self, embeddings: Mapping[str, Embedding], modality: str) -> Tensor:
        """Reconstruct ``modality``'s embedding ``[B, input_dims[modality]]`` from the *other* modalities.

        ``modality`` is hidden from the encoder even where it is present, so the result is a true
        imputation (compare it with the real embedding to measure imputation quality).
        """
        if modality not in self.decoders:
            raise ValueError(f"unknown modality {modality!r}; this fusion has {self.modalities}")
        others = {m: e for m, e in embeddings.items() if m != modality}
        if not others:
            batch, device, dtype = batch_info(embeddings, self.modalities)
            others = {modality: Embedding(torch.zeros(batch, self.input_dims[modality], device=device, dtype=dtype),
                                          torch.zeros(batch, dtype=torch.bool, device=device))}
        return self.decode(self.encode(others), modality)

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        batch, device, dtype = batch_info(embeddings, self.modalities)
        visible = modality_dropout(embeddings, self.modalities, self.modality_dropout, self.training)
        latent = self.encode(visible)
        aux = {}
        for m in self.modalities:
            if m not in embeddings:
                aux[f"recon_{m}"] = torch.zeros((), device=device, dtype=dtype)
                continue
            e = embeddings[m]  # the TRUE presence: dropped modalities are still reconstructed
            target = masked_pooled(e).detach()
            err = (self.decode(latent, m) - target).pow(2).mean(dim=-1)
            err = torch.where(e.present, err, torch.zeros_like(err))
            aux[f"recon_{m}"] = self.recon_weight * err.sum() / e.present.sum().clamp(min=1).to(err.dtype)
        return Fused(pooled=latent, aux_losses=aux, inputs=dict(embeddings))
