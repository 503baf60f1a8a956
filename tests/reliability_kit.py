"""Fakes shared by the registry, reliability and fuzz tests: a run directory as the engine writes it
(weights are opaque bytes to the registry) and a fitted, untrained tiny model for inference tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESOLVED = """
[run]
name = "fake"
[data]
dataset = "shapes"
options = { n_train = 2, n_val = 1, n_test = 1, image_size = 16 }
columns = { text = "caption" }
[model.encoders.image]
type = "timm"
model = "test_resnet"
[model.fusion]
type = "concat"
dim = 8
[model.head]
type = "classification"
"""


def make_run(root: Path, name: str = "fake", weights: bytes = b"weights-v1", best: bool = True) -> Path:
    """A run directory as the engine writes it (the weights are opaque bytes to the registry)."""
    run = root / name
    for ck in (["best", "last"] if best else ["last"]):
        folder = run / "checkpoints" / ck
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(weights + ck.encode())
        state = {"step": 3 if ck == "best" else 5, "fit_state": {"head": {"labels": [0, 1]}, "encoders": {}}}
        (folder / "state.json").write_text(json.dumps(state))
    (run / "recipe.resolved.toml").write_text(RESOLVED)
    (run / "summary.json").write_text(json.dumps({"final": {"test": {"accuracy": 0.75}},
                                                  "best": {"metric": "accuracy", "value": 0.8, "step": 3}}))
    (run / "metrics.jsonl").write_text('{"step": 3, "split": "val", "metrics": {"accuracy": 0.8}}\n')
    return run


def fitted_predictor(recipe_path: Path, card: dict[str, Any] | None = None) -> Any:
    """The model of a recipe, fitted on its data (label maps, vocabularies) but not trained: for tests
    of reading and writing, where the weights do not matter."""
    from mmkit._internal.assembly import assemble, load_splits, plan_data
    from mmkit._internal.predictor import Predictor
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.registry import get_registry

    recipe = load_recipe(recipe_path)
    registry = get_registry()
    splits = load_splits(recipe, registry)
    return Predictor(assemble(recipe, registry, plan_data(recipe, splits)), recipe,
                     {**splits.columns, **recipe.data["columns"]}, card=card)


def shapes_pngs(folder: Path, n: int) -> list[dict[str, Any]]:
    """``n`` shapes rows with their images saved as ``folder/{i}.png`` (cells hold the file names)."""
    from mmkit_shapes.generate import shapes

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, row in enumerate(shapes(n_train=0, n_val=0, n_test=n, image_size=32).splits["test"]):
        row["image"].save(folder / f"{i}.png")
        rows.append({**row, "image": f"{i}.png"})
    return rows
