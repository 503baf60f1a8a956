"""Assembles encoders, a fusion and a head into one ``nn.Module`` from a validated recipe."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from mmkit._internal.interfaces import (
    Batch,
    Embedding,
    Encoder,
    Fused,
    Fusion,
    Head,
    Output,
    empty_embedding,
    scatter_embedding,
)
from mmkit._internal.errors import MmkitError
from mmkit._internal.recipe import ComponentSpec, Recipe
from mmkit._internal.registry import Registry, get_registry


class MultimodalModel(nn.Module):
    """``encoders -> fusion -> head``. Frozen encoders run without gradients and stay in eval mode.

    ``batch.inputs[field]`` is either what the encoder's ``collate`` produced for the present samples
    (scattered here into a full batch), a cached full-batch :class:`Embedding`, or None (no sample of
    the batch has the field).
    """

    def __init__(self, encoders: Mapping[str, Encoder], fusion: Fusion, head: Head, frozen: Sequence[str] = ()):
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.head = head
        self.frozen = set(frozen)
        self.apply_freeze()

    def apply_freeze(self) -> None:
        """No gradients and eval mode for frozen encoders (call again after ``fit`` creates parameters)."""
        for name in self.frozen:
            self.encoders[name].requires_grad_(False)
            self.encoders[name].eval()

    def train(self, mode: bool = True) -> "MultimodalModel":
        super().train(mode)
        for name in self.frozen:
            self.encoders[name].eval()
        return self

    def encode(self, batch: Batch) -> dict[str, Embedding]:
        out: dict[str, Embedding] = {}
        for name, encoder in self.encoders.items():
            value = batch.inputs.get(name)
            present = batch.present[name]
            if isinstance(value, Embedding):
                out[name] = value
            elif value is None or not bool(present.any()):
                ref = next(encoder.parameters(), None)
                dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
                out[name] = empty_embedding(batch.size, encoder.dim, present.device, dtype, encoder.has_tokens)
            else:
                if name in self.frozen:
                    with torch.no_grad():
                        emb = encoder(value)
                else:
                    emb = encoder(value)
                out[name] = scatter_embedding(emb, present)
        return out

    def fuse(self, batch: Batch) -> Fused:
        embeddings = self.encode(batch)
        fused = self.fusion(embeddings)
        fused.inputs = embeddings
        return fused

    def forward(self, batch: Batch, return_fused: bool = False) -> Output | tuple[Output, Fused]:
        fused = self.fuse(batch)
        out = self.head(fused, batch)
        if fused.aux_losses:
            aux = {k: v.float() for k, v in fused.aux_losses.items()}
            out.aux.update(aux)
            if out.loss is not None:
                out.loss = out.loss + sum(aux.values())
        return (out, fused) if return_fused else out

    def fit_state(self) -> dict[str, Any]:
        """JSON state of every component (vocabularies, label maps, statistics)."""
        return {"encoders": {k: e.get_fit_state() for k, e in self.encoders.items()},
                "fusion": self.fusion.get_fit_state(), "head": self.head.get_fit_state()}


class LazyValues(Sequence[Any]):
    """A sequence whose items are computed on access (so ``fit`` that ignores its data costs nothing)."""

    def __init__(self, n: int, get: Any) -> None:
        self._n, self._get = n, get

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._get(i)


def _create(registry: Registry, spec: ComponentSpec, context: dict[str, Any] | None = None) -> Any:
    """Build one component; an error is prefixed with where the recipe names it (``FILE: model.head``)."""
    try:
        return registry.create(spec.kind, spec.type, context=context, **spec.params)
    except MmkitError as exc:
        raise type(exc)(f"{spec.where}: {exc}") from exc


def build_model(recipe: Recipe, *, fit_state: Mapping[str, Any] | None = None,
                registry: Registry | None = None) -> MultimodalModel:
    """Build the model a recipe names.

    Components come unfitted; the engine then calls each one's ``fit`` on the training split. To load
    a trained model pass its ``fit_state`` (restored before the weights are loaded).
    """
    registry = registry or get_registry()
    encoders: dict[str, Encoder] = {}
    for name, spec in recipe.encoders.items():
        enc = _create(registry, spec)
        if fit_state is not None:
            enc.set_fit_state(fit_state["encoders"].get(name, {}))
        encoders[name] = enc
    context = {"input_dims": {k: e.dim for k, e in encoders.items()},
               "token_inputs": {k: e.has_tokens for k, e in encoders.items()}}
    fusion = _create(registry, recipe.fusion, context)
    head = _create(registry, recipe.head, {"input_dim": fusion.dim, "modality_dims": context["input_dims"]})
    if fit_state is not None:
        fusion.set_fit_state(fit_state.get("fusion", {}))
        head.set_fit_state(fit_state.get("head", {}))
    frozen = [k for k, s in recipe.encoders.items() if s.freeze]
    return MultimodalModel(encoders, fusion, head, frozen)


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total - trainable
