"""Recipe validation: every error names the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmkit._internal.errors import DataError, RecipeError
from mmkit._internal.recipe import apply_overrides, load_recipe, parse_value

BASE = """
[data]
dataset = "shapes"
options = { n_train = 16, n_val = 8, n_test = 0, image_size = 32 }

[model.encoders.image]
type = "timm"
model = "test_resnet"

[model.encoders.text]
type = "text-transformer"
dim = 16

[model.fusion]
type = "concat"
dim = 16

[model.head]
type = "classification"

[train]
max_steps = 2
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_recipe_fills_defaults(tmp_path: Path) -> None:
    rec = load_recipe(write(tmp_path, BASE))
    assert rec.train["lr"] == 3e-4 and rec.train["optimizer"] == "adamw"
    assert rec.run["name"] == "run" and rec.run["seed"] == 0
    assert rec.fusion.params["dim"] == 16
    assert rec.encoders["image"].freeze is False


def test_unknown_component_key_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("type = \"concat\"\ndim = 16", "type = \"concat\"\ndimm = 16"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: model.fusion.dimm: unknown key; did you mean dim?"


def test_unknown_train_key_suggests(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"recipe\.toml: train\.lrr: unknown key; did you mean lr\?"):
        load_recipe(write(tmp_path, BASE + "lrr = 0.1\n"))


def test_unknown_section(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"recipe\.toml: trian: unknown key; did you mean train\?"):
        load_recipe(write(tmp_path, BASE + "[trian]\nlr = 0.1\n"))


def test_bad_type_names_key(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"recipe\.toml: train\.batch_size: expected int, got str 'big'"):
        load_recipe(write(tmp_path, BASE + "batch_size = \"big\"\n"))
    with pytest.raises(RecipeError, match=r"model\.fusion\.dim: expected int, got float"):
        load_recipe(write(tmp_path, BASE.replace("dim = 16\n\n[model.head]", "dim = 16.5\n\n[model.head]")))


def test_unknown_component_suggests_close_name(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace('type = "concat"', 'type = "atention"'))
    with pytest.raises(RecipeError, match=r"model\.fusion\.type: unknown fusion 'atention'; did you mean 'attention'"):
        load_recipe(path)


def test_missing_required_sections(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"model\.head: missing"):
        load_recipe(write(tmp_path, BASE.replace('[model.head]\ntype = "classification"', "")))
    with pytest.raises(RecipeError, match=r"data: set dataset"):
        load_recipe(write(tmp_path, BASE.replace('dataset = "shapes"', "")))


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"recipe\.toml: invalid TOML"):
        load_recipe(write(tmp_path, "[train\nlr = 1"))


def test_set_overrides(tmp_path: Path) -> None:
    rec = load_recipe(write(tmp_path, BASE), ["train.lr=1e-3", "model.fusion.type=attention",
                                              "run.name=my run", "train.compile=true"])
    assert rec.train["lr"] == 1e-3
    assert rec.fusion.type == "attention"
    assert rec.run["name"] == "my run"
    assert rec.train["compile"] is True
    assert parse_value("[1, 2]") == [1, 2] and parse_value("hello") == "hello"
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(RecipeError, match=r"train\.lr: expected float, got str"):
        load_recipe(write(tmp_path, BASE), ["train.lr=fast"])


def test_dataset_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"data\.options\.n_trian: unknown key; did you mean n_train"):
        load_recipe(write(tmp_path, BASE.replace("n_train = 16", "n_trian = 16")))


def test_missing_column_is_named(tmp_path: Path) -> None:
    from mmkit._internal.assembly import assemble, load_splits, plan_data
    from mmkit._internal.registry import get_registry

    text = BASE.replace('dataset = "shapes"', 'dataset = "shapes"\ncolumns = { text = "claimz" }')
    rec = load_recipe(write(tmp_path, text))
    registry = get_registry()
    plan = plan_data(rec, load_splits(rec, registry))
    with pytest.raises(DataError, match=r"column 'claimz' \(field 'text'\) not found;.*did you mean 'claim'"):
        assemble(rec, registry, plan)


def test_required_plugin_missing(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"requires plugin mmkit-audio>=0\.2 which is not installed"):
        load_recipe(write(tmp_path, BASE + '\n[plugins]\nrequire = ["mmkit-audio>=0.2"]\n'))
    load_recipe(write(tmp_path, BASE + '\n[plugins]\nrequire = ["mmkit>=0.1"]\n'))
