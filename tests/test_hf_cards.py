"""Registry cards that name a local Hugging Face folder through an environment variable
(``path = "${MMKIT_CLIP_PATH}"``): expansion, clear errors, and the cards training at tiny scale."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import mmkit
from mmkit._internal import models
from mmkit._internal.errors import RecipeError
from mmkit._internal.recipe import build_recipe, load_recipe

CARDS = {"clip-local": "MMKIT_CLIP_PATH", "hf-text-claims": "MMKIT_TEXT_MODEL_PATH"}
SMALL = ["data.options.n_train=8", "data.options.n_val=4", "data.options.n_test=4", "data.options.image_size=32"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mmkit_hf import tiny

    root = tmp_path_factory.mktemp("hf-cards")
    return {"MMKIT_CLIP_PATH": tiny.save_tiny_clip(root / "clip"),
            "MMKIT_TEXT_MODEL_PATH": tiny.save_tiny_text(root / "bert")}


def _recipe(tmp_path: Path, card: str, body: str = "") -> Path:
    path = tmp_path / f"{card}.toml"
    path.write_text(f'[model]\ncard = "{card}"\n{body}')
    return path


@pytest.mark.parametrize("card", sorted(CARDS))
def test_an_unset_variable_names_the_card_the_key_and_the_variable(card, tmp_path, monkeypatch):
    var = CARDS[card]
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(RecipeError, match=rf"model card '{card}': (model\.encoders\.\w+\.path) = "
                                          rf"'\$\{{{var}\}}': environment variable {var} is not set; "
                                          rf"export {var}=.*or set \1 in your recipe"):
        load_recipe(_recipe(tmp_path, card))
    monkeypatch.setenv(var, "")  # empty counts as unset
    with pytest.raises(RecipeError, match=f"{var} is not set"):
        load_recipe(_recipe(tmp_path, card))


def test_the_variable_is_expanded_and_a_recipe_value_wins(tmp_path, monkeypatch, folders):
    monkeypatch.setenv("MMKIT_TEXT_MODEL_PATH", str(folders["MMKIT_TEXT_MODEL_PATH"]))
    recipe = load_recipe(_recipe(tmp_path, "hf-text-claims"))
    assert recipe.encoders["text"].params["path"] == str(folders["MMKIT_TEXT_MODEL_PATH"])
    assert recipe.to_dict()["model"]["encoders"]["text"]["path"] == str(folders["MMKIT_TEXT_MODEL_PATH"])
    monkeypatch.delenv("MMKIT_TEXT_MODEL_PATH")
    body = f'[model.encoders.text]\npath = "{folders["MMKIT_TEXT_MODEL_PATH"].as_posix()}"\n'
    recipe = load_recipe(_recipe(tmp_path, "hf-text-claims", body))  # no variable needed: overridden
    assert recipe.encoders["text"].params["path"] == folders["MMKIT_TEXT_MODEL_PATH"].as_posix()
    # a recipe's own strings are never expanded (only a card's)
    doc = {"model": {"card": "hf-text-claims", "encoders": {"text": {"path": "${HOME}/x"}}}}
    assert build_recipe(doc).encoders["text"].params["path"] == "${HOME}/x"


@pytest.mark.parametrize("card", sorted(CARDS))
def test_each_hf_card_trains_and_loads_at_tiny_scale(card, tmp_path, monkeypatch, folders):
    from mmkit._internal.trainer import train

    data = models.builtin_card(card)
    assert data["version"] == 1 and data["task"] == data["model"]["head"]["type"]
    monkeypatch.setenv(CARDS[card], str(folders[CARDS[card]]))
    over = [*SMALL, "train.max_steps=2", "train.batch_size=4", f"run.output_dir={(tmp_path / 'runs').as_posix()}"]
    result = train(load_recipe(_recipe(tmp_path, card), over), quiet=True)
    assert result.summary["steps"] == 2
    assert all(math.isfinite(v) for v in result.summary["final"]["val"].values())
    monkeypatch.delenv(CARDS[card])  # the resolved recipe holds the folder itself
    predictor = mmkit.load(str(result.run_dir))
    assert predictor.task == data["task"]


def test_clip_card_zero_shot_table_drives_classification_through_a_loaded_model(tmp_path, monkeypatch, folders):
    """What `mmkit predict` must do for a card with [zero_shot]: the image field's pooled embedding
    against the text field's pooled embedding of each label prompt, scored by the text tower."""
    from mmkit_hf.zeroshot import classify, probabilities, prompts
    from mmkit_shapes.generate import shapes

    from mmkit._internal.trainer import train

    table = models.builtin_card("clip-local")["zero_shot"]
    monkeypatch.setenv("MMKIT_CLIP_PATH", str(folders["MMKIT_CLIP_PATH"]))
    over = [*SMALL, "train.max_steps=1", "train.batch_size=4", f"run.output_dir={(tmp_path / 'runs').as_posix()}"]
    predictor = mmkit.load(str(train(load_recipe(_recipe(tmp_path, "clip-local"), over), quiet=True).run_dir))
    image_enc, text_enc = predictor.model.encoders[table["image"]], predictor.model.encoders[table["text"]]
    rows = shapes(n_train=0, n_val=0, n_test=4, image_size=32).splits["test"]
    columns = predictor.input_columns
    images = predictor.embed([{columns["image"]: r["image"]} for r in rows], modality=table["image"])
    texts = predictor.embed([{columns["text"]: t} for t in prompts(table["labels"], table["prompt"])],
                            modality=table["text"])
    logits = text_enc.zero_shot_logits(torch.from_numpy(images), torch.from_numpy(texts))
    probs = probabilities(logits, text_enc.zero_shot_activation)
    reference = classify(image_enc, text_enc, [r["image"] for r in rows], table["labels"], table["prompt"])
    torch.testing.assert_close(probs, reference, atol=1e-5, rtol=1e-4)
    assert probs.shape == (4, 3) and np.allclose(probs.sum(-1).numpy(), 1.0, atol=1e-5)
