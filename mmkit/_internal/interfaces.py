"""The three component interfaces -- Encoder, Fusion, Head -- and the tensor bundles between them.

Conventions (checked by :mod:`mmkit.testing`):

* ``B`` is the batch size, ``D`` a feature dim, ``T`` a token count.
* Masks are ``torch.bool`` with ``True`` meaning *real* (a present sample, a real token).
* An absent modality never reaches an encoder: the engine collates and encodes only the samples that
  have it and scatters the result into a batch-sized :class:`Embedding` whose absent rows are zeros
  with ``present = False`` (see :func:`scatter_embedding`). Fusions must ignore absent rows and
  padded tokens: changing their values must not change the fused output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn


def _to(value: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, dict):
        return {k: _to(v, device, non_blocking) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device, non_blocking) for v in value)
    if hasattr(value, "to") and hasattr(value, "__dataclass_fields__"):
        return value.to(device, non_blocking=non_blocking)
    return value


@dataclass
class Embedding:
    """One modality's encoding of a batch.

    Attributes:
        pooled: ``[B, D]`` float; one vector per sample (zeros where absent).
        present: ``[B]`` bool; False where the sample has no such modality.
        tokens: optional ``[B, T, D]`` float token embeddings (same ``D`` as ``pooled``).
        token_mask: ``[B, T]`` bool, True for real tokens; all False for absent samples.
    """

    pooled: Tensor
    present: Tensor
    tokens: Tensor | None = None
    token_mask: Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Embedding":
        return Embedding(*(_to(getattr(self, f.name), device, non_blocking) for f in fields(self)))

    def detach(self) -> "Embedding":
        return Embedding(*(getattr(self, f.name).detach() if isinstance(getattr(self, f.name), Tensor)
                           else getattr(self, f.name) for f in fields(self)))


@dataclass
class Fused:
    """The output of a fusion.

    Attributes:
        pooled: ``[B, D]`` joint representation.
        tokens: optional ``[B, T, D]`` joint tokens (a captioning decoder attends to them).
        mask: ``[B, T]`` bool for ``tokens``, True for real tokens.
        aux_losses: extra losses already weighted (e.g. the autoencoder's reconstruction); the engine
            adds them to the head's loss.
        weights: optional per-sample modality weights ``[B, M]`` (attention fusion), for inspection.
        weight_names: the modality of each column of ``weights``.
        inputs: the per-modality embeddings that were fused (heads such as contrastive use them).
    """

    pooled: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None
    aux_losses: dict[str, Tensor] = field(default_factory=dict)
    weights: Tensor | None = None
    weight_names: list[str] | None = None
    inputs: dict[str, Embedding] = field(default_factory=dict)


@dataclass
class Output:
    """What a head returns.

    Attributes:
        loss: scalar training loss (None when the batch carries no targets, e.g. in predict).
        preds: tensors the head's metrics and ``decode`` need (e.g. ``logits``), batch-first.
        aux: extra scalars to log (loss parts).
    """

    loss: Tensor | None
    preds: dict[str, Any] = field(default_factory=dict)
    aux: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        inputs: modality -> what that modality's encoder's ``collate`` returned for the *present*
            samples (or a cached :class:`Embedding` for the whole batch when the encoder is cached).
        present: modality -> ``[B]`` bool presence mask.
        targets: what the head's ``collate_targets`` returned, or None (no targets, e.g. predict).
        index: ``[B]`` long, the samples' row numbers in their split.
    """

    inputs: dict[str, Any]
    present: dict[str, Tensor]
    targets: Any
    index: Tensor

    @property
    def size(self) -> int:
        return int(self.index.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(_to(self.inputs, device, non_blocking), _to(self.present, device, non_blocking),
                     _to(self.targets, device, non_blocking), self.index.to(device, non_blocking=non_blocking))


def _recording_init(init: Any) -> Any:
    """Wrap a component's ``__init__`` so the outermost call records its arguments."""

    @functools.wraps(init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        if "_mmkit_init_args" not in self.__dict__:
            self.__dict__["_mmkit_init_args"] = (args, dict(kwargs))
        init(self, *args, **kwargs)

    __init__._mmkit_records_args = True  # type: ignore[attr-defined]
    return __init__


class Component(nn.Module):
    """Shared behaviour: optional fitting on the training split, and JSON state saved with the model.

    ``fit`` runs once before training, on the training split's raw values (build a vocabulary, label
    map, normalisation statistics). Whatever it learns that is not a tensor must be returned by
    ``get_fit_state`` (JSON-serialisable) and restored by ``set_fit_state`` when a trained model is
    loaded, before its weights.

    A component remembers the arguments its constructor was called with (``init_args``, by
    reference), so that the contract kit can build a fresh instance and check that the fit state and
    the weights alone restore it, as loading a trained model does.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_mmkit_records_args", False):
            cls.__init__ = _recording_init(init)  # type: ignore[method-assign]

    @property
    def init_args(self) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """``(args, kwargs)`` of the outermost constructor call, or None when unknown."""
        return self.__dict__.get("_mmkit_init_args")

    def fit(self, values: Sequence[Any]) -> None:  # noqa: D102 - documented above
        return None

    def get_fit_state(self) -> dict[str, Any]:
        return {}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        return None


class Encoder(Component):
    """Encodes one modality.

    Subclasses set ``modality`` (class attribute: the kind of raw value it reads, e.g. ``"image"``),
    and in ``__init__`` the output width ``self.dim``; ``has_tokens`` says whether ``forward`` returns
    tokens.

    * ``fit(values)``: raw training values of the field (present samples only).
    * ``preprocess(raw, train)``: one loaded raw value -> tensor-ready item. Runs in DataLoader
      workers, so it must not touch CUDA. ``train=True`` may augment; ``train=False`` must be
      deterministic. Set ``deterministic_train = True`` when training preprocessing is also
      deterministic (then a frozen encoder's outputs can be cached).
    * ``collate(items)``: a list of preprocessed items (present samples only) -> tensors.
    * ``to_cache(raw, train)`` / ``from_cache(item, train)`` (optional): split ``preprocess`` at the
      decoded-sample cache (``train.data_cache``): ``to_cache`` does the deterministic, costly part
      once (decode, resize) and returns a tensor to keep (uint8 for images) or None (not cacheable);
      ``from_cache`` does the rest every epoch (augmentation, normalisation) and must give exactly
      what ``preprocess`` gives. The default caches ``preprocess``'s output when it is a tensor and
      preprocessing is deterministic.
    * ``forward(inputs)``: collated inputs of ``P`` present samples -> :class:`Embedding` with
      ``pooled [P, dim]`` and, if ``has_tokens``, ``tokens [P, T, dim]`` with ``token_mask [P, T]``
      (``present`` all True). The engine scatters it to the full batch.
    """

    modality: str = ""
    dim: int
    has_tokens: bool = False
    deterministic_train: bool = False
    #: ``True`` (the bool) when ``__init__`` loaded pretrained weights: the recipe's ``lr_mult = "auto"`` (the
    #: default) then fine-tunes this encoder at 1e-5 instead of ``train.lr`` (at most ``train.lr``). Set it on
    #: the instance, e.g. only when a weights file was given; any other value counts as not pretrained.
    pretrained: bool = False

    def preprocess(self, raw: Any, train: bool = False) -> Any:
        return raw

    def collate(self, items: list[Any]) -> Any:
        return torch.utils.data.default_collate(items)

    def to_cache(self, raw: Any, train: bool = False) -> Tensor | None:
        """The decoded form of ``raw`` kept by the decoded-sample cache, or None when not cacheable."""
        if train and not self.deterministic_train:
            return None
        item = self.preprocess(raw, train)
        return item if isinstance(item, Tensor) else None

    def from_cache(self, item: Tensor, train: bool = False) -> Any:
        """The preprocessed item from a cached one (what ``preprocess`` returns for the same raw value);
        never changes ``item`` in place (the cache keeps it)."""
        return item.clone()

    def forward(self, inputs: Any) -> Embedding:  # pragma: no cover - abstract
        raise NotImplementedError


class Fusion(Component):
    """Combines ``{modality: Embedding}`` into one :class:`Fused`.

    The constructor receives ``input_dims: dict[str, int]`` (each modality's ``dim``) and
    ``token_inputs: dict[str, bool]`` (whether it yields tokens) from the engine, then its own
    parameters; it sets ``self.dim`` (width of ``Fused.pooled``) and ``has_tokens``.

    ``forward`` must accept any subset of the modalities it was built for, for every sample: use
    ``present`` and ``token_mask``; an absent row's values must not influence the output, and a sample
    with only one modality present must give finite outputs.
    """

    dim: int
    has_tokens: bool = False

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:  # pragma: no cover - abstract
        raise NotImplementedError


class Head(Component):
    """A task: loss, predictions, metrics.

    The constructor receives ``input_dim`` (the fusion's ``dim``) and ``modality_dims`` from the engine.

    * ``fields``: names of the data columns the head needs as targets (``("label",)``); a recipe whose
      data lacks one fails before training, naming it.
    * ``fit(values)``: ``values`` is a list of target dicts ``{field: raw}`` from the training split.
    * ``preprocess_target(raw)`` / ``collate_targets(items)``: like an encoder's, for targets.
    * ``forward(fused, batch) -> Output``: ``loss`` when ``batch.targets`` is not None.
    * ``new_metrics()``: a fresh :class:`Metrics` accumulator for one evaluation.
    * ``decode(preds)``: per-row JSON-able predictions for ``mmkit predict``.
    * ``monitor``/``monitor_mode``: the metric early stopping and "best" checkpoints use by default.
    """

    fields: tuple[str, ...] = ()
    monitor: str = "loss"
    monitor_mode: str = "min"

    def preprocess_target(self, raw: Mapping[str, Any]) -> Any:
        return dict(raw)

    def collate_targets(self, items: list[Any]) -> Any:
        return torch.utils.data.default_collate(items)

    def forward(self, fused: Fused, batch: Batch) -> Output:  # pragma: no cover - abstract
        raise NotImplementedError

    def new_metrics(self) -> "Metrics":
        return Metrics()

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        n = next(iter(preds.values())).shape[0] if preds else 0
        return [{k: v[i].tolist() for k, v in preds.items() if isinstance(v, Tensor)} for i in range(n)]


@runtime_checkable
class Retrieval(Protocol):
    """What a head declares to take part in retrieval (``mmkit.load(...).search``).

    A head is searchable when it has both members (no base class needed; ``isinstance(head,
    Retrieval)`` checks them):

    * ``retrieval_modalities``: the modalities it embeds into one shared space, the default query
      side first (e.g. ``("image", "text")``).
    * ``retrieval_embeddings(preds)``: from the ``Output.preds`` of a batch, for each of those
      modalities ``(embeddings [B, D] float, present [B] bool)``. Every modality has the same ``D``;
      search scores are dot products, so L2-normalise the embeddings when cosine is meant. Rows whose
      ``present`` is False are never returned by a search.
    """

    retrieval_modalities: tuple[str, ...]

    def retrieval_embeddings(self, preds: Mapping[str, Any]) -> dict[str, tuple[Tensor, Tensor]]:
        ...  # pragma: no cover - a protocol


class Metrics:
    """Accumulates predictions over an evaluation; ``compute()`` gives ``{name: float}``.

    The default averages the loss. Subclasses override ``update``/``compute`` and keep state in plain
    tensors/lists so that ``merge`` (used to combine ranks under torch.distributed) can concatenate.
    """

    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.count = 0

    def update(self, output: Output, batch: Batch) -> None:
        if output.loss is not None:
            self.loss_sum += float(output.loss.detach()) * batch.size
            self.count += batch.size

    def merge(self, other: "Metrics") -> None:
        self.loss_sum += other.loss_sum
        self.count += other.count

    def compute(self) -> dict[str, float]:
        return {"loss": self.loss_sum / max(self.count, 1)} if self.count else {}


def scatter_embedding(emb: Embedding, present: Tensor) -> Embedding:
    """Place an encoder's output for the present samples into batch-sized tensors.

    ``emb`` holds ``P = present.sum()`` rows; the result has ``B = len(present)`` rows, zeros and an
    all-False token mask where absent.
    """
    batch = present.shape[0]
    idx = present.nonzero(as_tuple=True)[0]
    pooled = emb.pooled.new_zeros((batch, emb.pooled.shape[-1])).index_copy(0, idx, emb.pooled)
    tokens = mask = None
    if emb.tokens is not None:
        tokens = emb.tokens.new_zeros((batch, *emb.tokens.shape[1:])).index_copy(0, idx, emb.tokens)
        token_mask = emb.token_mask if emb.token_mask is not None else torch.ones(
            emb.tokens.shape[:2], dtype=torch.bool, device=emb.tokens.device)
        mask = torch.zeros((batch, emb.tokens.shape[1]), dtype=torch.bool, device=emb.tokens.device)
        mask = mask.index_copy(0, idx, token_mask)
    return Embedding(pooled, present.to(torch.bool), tokens, mask)


def empty_embedding(batch: int, dim: int, device: torch.device | str, dtype: torch.dtype = torch.float32,
                    tokens: bool = False) -> Embedding:
    """An all-absent embedding (for a batch in which no sample has the modality)."""
    present = torch.zeros(batch, dtype=torch.bool, device=device)
    pooled = torch.zeros(batch, dim, device=device, dtype=dtype)
    if not tokens:
        return Embedding(pooled, present)
    return Embedding(pooled, present, torch.zeros(batch, 1, dim, device=device, dtype=dtype),
                     torch.zeros(batch, 1, dtype=torch.bool, device=device))


__all__ = ["Batch", "Component", "Embedding", "Encoder", "Fused", "Fusion", "Head", "Metrics", "Output",
           "Retrieval", "empty_embedding", "scatter_embedding"]
