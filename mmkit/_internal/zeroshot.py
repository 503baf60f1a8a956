"""Zero-shot classification with a pair of image/text encoders that share an embedding space (CLIP,
SigLIP): each image is scored against a text prompt per label, without training a classifier.

An encoder takes part by declaring :class:`ZeroShot` (``zero_shot_logits`` and
``zero_shot_activation``; no base class needed). The model is a trained one (:func:`mmkit.load`) or
the untrained model of a built-in registry card, whose ``[zero_shot]`` table names the image field,
the text field, the prompt and the labels::

    [zero_shot]
    image = "image"
    text = "text"
    prompt = "a photo of a {label}."
    labels = ["circle", "square", "triangle"]

Prompts are embedded by the text field's encoder; images by :meth:`Predictor.iter_embed` with the
image field (so rows stream in batches, with the predictor's row checks); logits come from the
encoder's ``zero_shot_logits`` and become probabilities with ``softmax`` over labels or an
independent ``sigmoid`` per label (``zero_shot_activation``). ``mmkit predict`` uses this for
``--labels`` or a card with ``[zero_shot]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mmkit._internal.errors import DataError, MmkitError, RecipeError

DEFAULT_PROMPT = "a photo of a {label}."


@runtime_checkable
class ZeroShot(Protocol):
    """What an encoder declares to classify zero-shot (``mmkit predict --labels``).

    * ``zero_shot_logits(images [N, D], texts [L, D]) -> [N, L]``: the logits of each image for each
      label prompt, from the two encoders' ``pooled`` vectors, as the pretrained model scores them.
    * ``zero_shot_activation``: ``"softmax"`` (one label per image, CLIP) or ``"sigmoid"`` (each
      label on its own, SigLIP).

    The text field's encoder is asked first, else the image field's.
    """

    zero_shot_activation: str

    def zero_shot_logits(self, images: Tensor, texts: Tensor) -> Tensor:
        ...  # pragma: no cover - a protocol


@dataclass
class ZeroShotSpec:
    """Which fields and prompts a zero-shot prediction uses."""

    image: str
    text: str
    labels: list[str]
    prompt: str = DEFAULT_PROMPT

    def prompts(self) -> list[str]:
        return [self.prompt.replace("{label}", label) for label in self.labels]


def make_spec(model: Any, table: Mapping[str, Any] | None = None, labels: Sequence[str] | None = None,
              prompt: str | None = None, where: str = "zero_shot") -> ZeroShotSpec:
    """The spec from a card's ``[zero_shot]`` ``table`` (may be empty) with ``labels``/``prompt``
    overriding it; the fields default to the model's image and text encoders. Errors name ``where``."""
    table = dict(table or {})
    encoders = model.encoders
    fields = {}
    for side in ("image", "text"):
        name = table.get(side)
        if name is None:
            found = [f for f, e in encoders.items() if e.modality == side]
            if len(found) != 1:
                raise MmkitError(f"{where}.{side}: the model has {len(found)} {side} encoders "
                                 f"({', '.join(found) or 'none'}); name the field in the card's [zero_shot] table")
            name = found[0]
        if not isinstance(name, str) or name not in encoders:
            raise RecipeError(f"{where}.{side}: {name!r} is not an encoder field of the model "
                              f"({', '.join(encoders)})")
        fields[side] = name
    chosen = list(labels) if labels is not None else table.get("labels")
    if not isinstance(chosen, list) or not chosen or not all(isinstance(x, str) and x.strip() for x in chosen):
        raise RecipeError(f"{where}.labels: give a non-empty list of label names (--labels a,b,c)")
    text = prompt if prompt is not None else table.get("prompt", DEFAULT_PROMPT)
    if not isinstance(text, str) or "{label}" not in text:
        raise RecipeError(f"{where}.prompt: {text!r} must contain {{label}}, e.g. {DEFAULT_PROMPT!r}")
    return ZeroShotSpec(fields["image"], fields["text"], [x.strip() for x in chosen], text)


class ZeroShotClassifier:
    """Zero-shot predictions of a :class:`~mmkit._internal.predictor.Predictor`'s model: ``iter_predict`` and
    ``predict`` as the predictor's, each row ``{"label": best, "probs": {label: p}}``."""

    def __init__(self, predictor: Any, spec: ZeroShotSpec) -> None:
        self.predictor, self.spec = predictor, spec
        encoders = predictor.model.encoders
        scorer = next((encoders[f] for f in (spec.text, spec.image) if isinstance(encoders[f], ZeroShot)), None)
        if scorer is None:
            names = {f: type(encoders[f]).__name__ for f in (spec.image, spec.text)}
            raise MmkitError(f"zero-shot classification needs an encoder that declares mmkit.ZeroShot "
                             f"(zero_shot_logits, zero_shot_activation, e.g. hf-clip); the model "
                             f"{predictor.card.get('name', '')!r} has {names}")
        if scorer.zero_shot_activation not in ("softmax", "sigmoid"):
            raise MmkitError(f"{type(scorer).__name__}.zero_shot_activation must be 'softmax' or 'sigmoid', "
                             f"got {scorer.zero_shot_activation!r}")
        self.scorer = scorer
        self.label_embeddings = self._embed_prompts()

    @torch.no_grad()
    def _embed_prompts(self) -> Tensor:
        encoder = self.predictor.model.encoders[self.spec.text]
        items = [encoder.preprocess(p, train=False) for p in self.spec.prompts()]
        return encoder(_to(encoder.collate(items), self.predictor.device)).pooled.float().cpu()

    def probabilities(self, images: Tensor) -> Tensor:
        """``[N, L]`` probabilities of each label for ``[N, D]`` image embeddings."""
        logits = self.scorer.zero_shot_logits(images.to(self.predictor.device),
                                              self.label_embeddings.to(self.predictor.device)).float().cpu()
        return torch.sigmoid(logits) if self.scorer.zero_shot_activation == "sigmoid" else logits.softmax(-1)

    def iter_predict(self, records: Any, batch_size: int = 32, *, bad_rows: list[Any] | None = None,
                     skip_bad_rows: bool = False, **kw: Any) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row number, {"label", "probs"})`` per row with an image; keyword arguments as
        :meth:`Predictor.iter_batches`. A row without an image is an error (or a bad row when skipping)."""
        from mmkit._internal.predictor import BadRow

        for numbers, emb in self.predictor.iter_embed(records, self.spec.image, batch_size, bad_rows=bad_rows,
                                                      skip_bad_rows=skip_bad_rows, **kw):
            arr = torch.from_numpy(emb)
            missing = torch.isnan(arr).any(dim=1)
            probs = self.probabilities(torch.nan_to_num(arr))
            for number, p, absent in zip(numbers, probs.tolist(), missing.tolist()):
                if absent:
                    column = self.predictor.input_columns[self.spec.image]
                    error = DataError(f"row {number}: no image (column {column!r} is empty)")
                    if not skip_bad_rows:
                        raise error
                    if bad_rows is not None:
                        bad_rows.append(BadRow(number, str(error)))
                    continue
                named = dict(zip(self.spec.labels, p))
                yield number, {"label": max(named, key=named.__getitem__), "probs": named}

    def predict(self, records: Any, batch_size: int = 32, **kw: Any) -> list[dict[str, Any]]:
        return [pred for _, pred in self.iter_predict(records, batch_size, **kw)]


def _to(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def zero_shot(ref: str | Path, labels: Sequence[str] | None = None, prompt: str | None = None, *,
              device: str | torch.device = "cpu", registry: str | Path | None = None,
              checkpoint: str = "best") -> ZeroShotClassifier:
    """A zero-shot classifier from a trained model (``NAME``, a folder, a run directory) or, when no
    trained model has that name, from the untrained model of the built-in card ``ref`` (its
    ``[zero_shot]`` table; ``labels``/``prompt`` override it). A trained model needs ``labels``."""
    from mmkit._internal import models as mreg
    from mmkit._internal.fitting import load

    try:
        predictor = load(ref, device=device, registry=registry, checkpoint=checkpoint)
        table: Mapping[str, Any] = {}
        where = f"{ref}: zero_shot"
    except mreg.ModelNotFoundError:
        if mreg.looks_like_path(str(ref)) or mreg.builtin_card(str(ref)) is None:
            raise
        card = mreg.builtin_card(str(ref)) or {}
        table = card.get("zero_shot") or {}
        if not table and labels is None:
            raise RecipeError(f"model card {ref!r} has no [zero_shot] table: pass the labels (--labels a,b,c)") \
                from None
        predictor = card_predictor(str(ref), device)
        where = f"model card {ref!r}: zero_shot"
    if not isinstance(table, Mapping):
        raise RecipeError(f"{where}: expected a table")
    return ZeroShotClassifier(predictor, make_spec(predictor.model, table, labels, prompt, where))


def card_predictor(name: str, device: str | torch.device = "cpu") -> Any:
    """The untrained model of a built-in registry card (pretrained encoders need no training to embed)."""
    from mmkit._internal.assembly import assemble
    from mmkit._internal.fitting import TrainedModel
    from mmkit._internal.recipe import build_recipe
    from mmkit._internal.registry import get_registry

    registry = get_registry()
    recipe = build_recipe({"model": {"card": name}}, "zero-shot", Path.cwd(), registry)
    model = assemble(recipe, registry)
    return TrainedModel(model, recipe, recipe.data["columns"], card={"name": name}, device=device, registry=registry)


__all__ = ["DEFAULT_PROMPT", "ZeroShot", "ZeroShotClassifier", "ZeroShotSpec", "card_predictor", "make_spec",
           "zero_shot"]
