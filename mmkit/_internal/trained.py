"""One way to load a trained model: :func:`load_trained` (registry name, run directory or saved folder).

It resolves the reference (:func:`mmkit._internal.models.resolve`), checks the weights' sha256 where a card
recorded one, rebuilds the model from its recipe (:func:`mmkit._internal.assembly.assemble` with the saved
fit state) and loads the weights. The predictor, ablation and resuming a run all use it; none of
them needs the training loop.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmkit._internal import models as mreg
from mmkit._internal.assembly import DataPlan, assemble, choose_device, load_splits, plan_data
from mmkit._internal.checkpoint import load_weights
from mmkit._internal.errors import MmkitError, RecipeError
from mmkit._internal.model import MultimodalModel
from mmkit._internal.recipe import Recipe, build_recipe, read_toml
from mmkit._internal.registry import Registry, get_registry


@dataclass
class TrainedModel:
    """A trained model with its recipe; the data plan of its recipe is built on first use."""

    recipe: Recipe
    model: MultimodalModel
    ref: mreg.ModelRef
    columns: dict[str, Any]
    registry: Registry
    _plan: DataPlan | None = field(default=None, repr=False)

    @property
    def state(self) -> dict[str, Any]:
        """The checkpoint's ``state.json`` (a run directory's), else empty."""
        return dict(self.ref.state or {})

    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint folder the weights came from (run directories)."""
        return self.ref.weights.parent if self.ref.kind == "run" else None

    def plan(self) -> DataPlan:
        """The recipe's data splits and columns, with the head's target columns bound."""
        if self._plan is None:
            recipe = _with_data_base(self.recipe, self.ref.folder)
            self._plan = plan_data(recipe, load_splits(recipe, self.registry))
            self._plan.bind_targets(self.model.head.fields)
        return self._plan


def inference_recipe(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved recipe document prepared for rebuilding a trained model: encoder ``pretrained``
    weight files are not read again (every weight comes from the model's safetensors) and training
    callbacks are left out."""
    out: dict[str, Any] = copy.deepcopy(dict(doc))
    doc = out
    if isinstance(doc.get("train"), dict):
        doc["train"].pop("callbacks", None)  # training-time only; their plugins need not be installed here
    for table in ((doc.get("model") or {}).get("encoders") or {}).values():
        if isinstance(table, dict) and isinstance(table.get("pretrained"), str):
            table["pretrained"] = False
    return out


def load_trained(ref: str | Path, *, checkpoint: str = "best", device: str | torch.device = "cpu",
                 models_dir: str | Path | None = None, registry: Registry | None = None,
                 recipe: Recipe | None = None, plan: DataPlan | None = None) -> TrainedModel:
    """Load a trained model: ``NAME[@V]`` (the model registry ``models_dir``), a registered or saved
    folder, or a run directory (its ``checkpoint``: ``best`` falls back to ``last``).

    ``recipe`` (resuming) replaces the stored recipe; it must describe the same model, else a
    :class:`~mmkit.RecipeError` lists the differences. ``plan`` is used to fit the data's
    columns (the model's components are restored from their fit state either way).
    """
    registry = registry or get_registry()
    found = mreg.resolve(ref, models_dir, checkpoint)
    found.verify()
    doc = inference_recipe(read_toml(found.recipe))
    if recipe is None:
        recipe = build_recipe(doc, str(found.recipe), found.recipe.parent, registry)
    else:
        refuse_different_model(recipe, found.state or {}, found.weights.parent)
    columns = found.card.get("columns")
    if columns is None:
        columns = plan.columns if plan is not None else mreg.data_columns(doc)
    model = assemble(recipe, registry, plan, fit_state=found.load_fit_state())
    load_weights(model, found.weights, strict=True)
    model.to(choose_device(device))
    return TrainedModel(recipe, model, found, dict(columns), registry, plan)


def refuse_different_model(recipe: Recipe, state: Mapping[str, Any], where: Path) -> None:
    """A checkpoint is only resumed by a recipe whose model section is the same."""
    old, new = state.get("model", {}), recipe.model_signature()
    if old == new:
        return
    diffs = _diff(old, new)
    raise RecipeError(f"{where}: cannot resume: the recipe's model differs from the checkpoint's:\n  "
                      + "\n  ".join(diffs[:20]))


def _diff(a: Any, b: Any, prefix: str = "model") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{prefix}.{k}: added ({b[k]!r})")
            elif k not in b:
                out.append(f"{prefix}.{k}: removed (was {a[k]!r})")
            else:
                out += _diff(a[k], b[k], f"{prefix}.{k}")
        return out
    return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]


def _with_data_base(recipe: Recipe, folder: Path) -> Recipe:
    """Resolved recipes keep manifest paths absolute; an older one may hold paths relative to the
    original recipe: try the run directory, the working directory and the run's parents."""
    if recipe.data["dataset"]:
        return recipe
    rel = [p for p in (recipe.data[s] for s in ("train", "val", "test")) if p and not Path(p).is_absolute()]
    if not rel or all((recipe.base_dir / p).exists() for p in rel):
        return recipe
    for base in (Path.cwd(), folder.parent, folder.parent.parent):
        if all((base / p).exists() for p in rel):
            return dataclasses.replace(recipe, base_dir=base)
    raise MmkitError(f"{folder}: cannot find the run's data files ({', '.join(rel)}) relative to the run "
                     f"directory or the working directory; run from the folder the recipe was trained in")


__all__ = ["TrainedModel", "inference_recipe", "load_trained", "refuse_different_model"]
