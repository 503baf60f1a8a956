"""The notebook API: :func:`fit` a recipe on in-memory data and get a :class:`TrainedModel`;
:func:`load` one back.

    >>> import mmkit
    >>> model = mmkit.fit("recipe.toml", train=train_df, val=val_df, train__epochs=2)   # doctest: +SKIP
    >>> model.predict_proba(test_df)                                                     # doctest: +SKIP

``fit`` runs the same :class:`~mmkit._internal.trainer.Trainer` as ``mmkit run`` and writes the same run
directory; data given in memory is written into it (``inputs/``, images as files) so the run can be
loaded, evaluated and resumed like any other. Recipe overrides are keyword arguments whose ``__``
separates the key path (``train__lr=1e-3`` is ``--set train.lr=1e-3``); values are Python values.
The module is named ``fitting`` (not ``fit``) so that importing it never shadows ``mmkit.fit``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmkit._internal.errors import DataError, MmkitError, RecipeError
from mmkit._internal.inline_data import INLINE_HINT, Row, is_path, to_rows, write_split
from mmkit._internal.predictor import Predictor, Records
from mmkit._internal.recipe import set_path
from mmkit._internal.rundir import RunDir
from mmkit._internal.trained import load_trained

SPLITS = ("train", "val", "test")


# ------------------------------------------------------------------------------------------ the model
class TrainedModel(Predictor):
    """A trained model (from :func:`fit` or :func:`load`): a :class:`~mmkit._internal.predictor.Predictor`
    whose methods also take pandas DataFrames and ``datasets.Dataset`` objects.

    ``predict`` gives one dict per row (``label``/``probs``, ``value``, ``caption`` ...),
    ``predict_proba`` a ``[N, classes]`` array, ``evaluate`` the head's metrics, ``embed`` vectors
    and ``save`` a self-contained folder that :func:`load` reads back.
    """

    #: the run directory it was loaded from (None for a saved or registered folder)
    run_dir: Path | None = None

    @property
    def summary(self) -> dict[str, Any] | None:
        """The run's ``summary.json`` (final and best metrics, speed), when loaded from a run directory."""
        return RunDir(self.run_dir).read_summary() if self.run_dir is not None else None

    @property
    def classes(self) -> list[Any]:
        """The class labels in the column order of :meth:`predict_proba` (classification heads)."""
        labels = getattr(self.model.head, "labels", None)
        if not labels:
            raise MmkitError(f"classes: this is a {self.task} model; only classifiers have classes")
        return list(labels)

    def predict(self, records: Any, batch_size: int = 32, **kw: Any) -> list[dict[str, Any] | None]:
        return super().predict(_records(records), batch_size, **kw)

    def predict_proba(self, records: Any, batch_size: int = 32, *, base_dir: str | Path | None = None) -> np.ndarray:
        """``[N, C]`` float32 class probabilities (softmax; per-label sigmoid for multi-label heads),
        columns in the order of :attr:`classes`. Every row must be usable (an error names the first
        that is not)."""
        rows = _records(records)
        out = []
        for pred in self.predict(rows, batch_size, base_dir=base_dir):
            if pred is None or not isinstance(pred.get("probs"), Mapping):
                raise MmkitError(f"predict_proba: this {self.task} model does not predict class probabilities; "
                                 "use predict()")
            out.append(list(pred["probs"].values()))
        return np.asarray(out, dtype=np.float32).reshape(len(out), -1)

    def zero_shot(self, records: Any, labels: list[str], prompt: str = "a photo of a {label}.",
                  batch_size: int = 32) -> list[dict[str, Any]]:
        """Classify the images of ``records`` among ``labels`` without training, with an image/text
        encoder pair that declares :class:`mmkit.ZeroShot` (hf-clip): ``{"label", "probs"}`` per row."""
        from mmkit._internal.zeroshot import ZeroShotClassifier, make_spec

        spec = make_spec(self.model, None, labels, prompt)
        return ZeroShotClassifier(self, spec).predict(_records(records), batch_size)

    def evaluate(self, data: Any, split: str = "test", batch_size: int = 32, **kw: Any) -> dict[str, float]:
        return super().evaluate(data if is_path(data) else _records(data), split, batch_size, **kw)

    def embed(self, records: Any, modality: str | None = None, batch_size: int = 32, **kw: Any) -> np.ndarray:
        return super().embed(_records(records), modality, batch_size, **kw)


def _records(data: Any) -> Records:
    """A manifest path or a list as it is; other in-memory data (DataFrame, datasets.Dataset, an
    iterable of dicts) as plain rows. Images stay objects: the modalities read them."""
    if is_path(data) or isinstance(data, list):
        return data
    return to_rows(data, "input")


def load(ref: str | Path, device: str | torch.device = "cpu", *, registry: str | Path | None = None,
         checkpoint: str = "best") -> TrainedModel:
    """A :class:`TrainedModel` from ``NAME[@V]`` (the user registry), a saved or registered folder,
    or a run directory (its ``checkpoint``: ``best``, falling back to ``last``)."""
    trained = load_trained(ref, checkpoint=checkpoint, models_dir=registry, device=device)
    card = {**trained.ref.card, "path": str(trained.ref.folder)}
    model = TrainedModel(trained.model, trained.recipe, trained.columns, card=card, device=device,
                         registry=trained.registry)
    model.run_dir = trained.ref.folder if trained.ref.kind == "run" else None
    return model


# ------------------------------------------------------------------------------------------ fit
def fit(recipe: str | Path | Mapping[str, Any], train: Any = None, val: Any = None, test: Any = None, *,
        base_dir: str | Path | None = None, quiet: bool = False, callbacks: Iterable[Any] = (),
        overwrite: bool = False, **overrides: Any) -> TrainedModel:
    """Train ``recipe`` and return the trained model (its best checkpoint, on the training device).

    Args:
        recipe: a recipe file, a recipe as a dict (the TOML's tables as dicts), or a model card name
            from the built-in registry (``"claim-classifier"``).
        train, val, test: each split as a manifest path or as {hint}; a split not given comes from the
            recipe. Images may be paths, PIL images or encoded bytes.
        base_dir: the folder relative paths in in-memory rows resolve against (default: the working dir).
        quiet: no progress on stderr.
        callbacks: :class:`mmkit.Callback` instances, run after the built-in ones.
        overwrite: replace an existing run directory of the same name (default: a new ``NAME-2``...).
        **overrides: recipe keys with ``__`` between the parts: ``train__lr=1e-3``,
            ``model__fusion__type="concat"``, ``run__name="exp1"``.

    Raises:
        RecipeError: an invalid recipe or override (the key is named).
        DataError: data that cannot be used (the split, row and column are named).
    """
    from mmkit._internal.recipe import build_recipe
    from mmkit._internal.registry import get_registry

    doc, source, recipe_dir = _recipe_doc(recipe)
    _apply_overrides(doc, overrides)
    given = {s: d for s, d in zip(SPLITS, (train, val, test)) if d is not None}
    inline = {s: d for s, d in given.items() if not is_path(d)}
    data = doc.setdefault("data", {})
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: data: expected a table")
    for split, value in given.items():
        data[split] = str(Path(value).resolve()) if is_path(value) else f"<in-memory {split}>"
    if "train" in given:
        data["dataset"] = None
    registry = get_registry()
    rec = build_recipe(doc, source, recipe_dir, registry)
    if rec.data["dataset"] is None:
        rec.data["options"] = {}
    elif given:
        raise RecipeError(f"{source}: data.dataset = {rec.data['dataset']!r}: pass train= too to train on your "
                          f"own data (the splits of a registered dataset cannot be mixed with {', '.join(given)}=)")
    rows = _inline_rows(rec, inline, Path(base_dir or Path.cwd()).resolve()) if inline else {}
    from mmkit._internal.trainer import Trainer

    trainer_class = _inline_trainer(rows) if rows else Trainer
    result = trainer_class(rec, mode="overwrite" if overwrite else "new", quiet=quiet, registry=registry,
                           callbacks=callbacks).fit()
    if result.interrupted:
        raise KeyboardInterrupt(f"training interrupted; its last checkpoint is in {result.run_dir}")
    return load(result.run_dir, device=result.summary.get("device", "cpu"), checkpoint="best")


fit.__doc__ = (fit.__doc__ or "").replace("{hint}", INLINE_HINT)


def _recipe_doc(recipe: Any) -> tuple[dict[str, Any], str, Path]:
    """``(document, source name, base folder)`` of a recipe path, dict or card name."""
    from mmkit._internal.recipe import read_toml

    if isinstance(recipe, Mapping):
        return copy.deepcopy(dict(recipe)), "mmkit.fit (recipe dict)", Path.cwd()
    if not isinstance(recipe, (str, Path)):
        raise RecipeError(f"recipe: expected a file path, a dict or a model card name, got {type(recipe).__name__}")
    path = Path(recipe).expanduser()
    if isinstance(recipe, Path) or path.suffix == ".toml" or path.is_file():
        return read_toml(path), str(path), path.resolve().parent
    return {"model": {"card": str(recipe)}}, "mmkit.fit", Path.cwd()  # errors add "model card 'NAME'"


def _apply_overrides(doc: dict[str, Any], overrides: Mapping[str, Any]) -> None:
    """``a__b__c=value`` sets ``doc[a][b][c]`` (a card reference ``model = "NAME"`` becomes a table)."""
    if isinstance(doc.get("model"), str):
        doc["model"] = {"card": doc["model"]}
    for key, value in overrides.items():
        parts = key.split("__")
        if len(parts) < 2 or not all(parts):
            raise RecipeError(f"override {key}=...: expected SECTION__KEY, e.g. train__lr=1e-3 or "
                              f"model__fusion__type='concat' (double underscores between the parts)")
        set_path(doc, parts, copy.deepcopy(value), f"override {key}")


def _inline_rows(rec: Any, inline: Mapping[str, Any], base: Path) -> dict[str, tuple[list[Row], Path]]:
    """``{split: (rows, base folder of their relative paths)}`` of every split once one is in memory:
    all are written to the run directory, so relative paths keep one meaning."""
    from mmkit._internal.manifest import check_columns, read_manifest

    if rec.data["split_column"]:
        raise RecipeError(f"{rec.source}: data.split_column cannot be combined with in-memory splits; "
                          f"pass train=, val=, test= separately")
    out: dict[str, tuple[list[Row], Path]] = {}
    for split in SPLITS:
        if split in inline:
            out[split] = (to_rows(inline[split], split), base)
        elif rec.data[split]:
            path = (rec.base_dir / rec.data[split]).resolve()
            out[split] = (read_manifest(path), path.parent)
    if "train" not in out:
        raise DataError("the training split is missing: pass train=")
    fields = {f: rec.data["columns"].get(f, f) for f in rec.encoders}
    for split, (split_rows, _) in out.items():  # a column typo is found before a run directory is made
        check_columns(split_rows, fields, f"{split} data" if split in inline else str(rec.data[split]))
    return out


def _inline_trainer(rows: Mapping[str, tuple[list[Row], Path]]) -> Any:
    """A Trainer that writes the in-memory splits into its run directory before reading them."""
    from mmkit._internal.trainer import Trainer

    class InlineTrainer(Trainer):
        def setup_run_dir(self) -> None:
            super().setup_run_dir()
            paths = {s: self.run.input_manifest(s).resolve() for s in rows}
            if self.dist.main:
                for split, (split_rows, base) in rows.items():
                    write_split(split_rows, paths[split], self.run.input_files.resolve(), split, base,
                                relative_files=True)
            self.dist.broadcast(None)  # the other ranks read the files once they are written
            for split in SPLITS:
                self.recipe.data[split] = str(paths[split]) if split in paths else None

    return InlineTrainer


__all__ = ["TrainedModel", "fit", "load"]
