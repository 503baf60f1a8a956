"""mmkit.fit / TrainedModel / mmkit.load: in-memory data in, the same Trainer and run directory out."""

from __future__ import annotations

import io
import json
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmkit

pd = pytest.importorskip("pandas")


def recipe(tmp_path: Path) -> dict[str, Any]:
    """A tiny image + text classifier (seconds on a CPU)."""
    return {
        "run": {"name": "api", "output_dir": str(tmp_path / "runs"), "seed": 0},
        "data": {"columns": {"image": "img", "text": "claim", "label": "label"}},
        "model": {"encoders": {"image": {"type": "timm", "model": "test_resnet"},
                               "text": {"type": "text-transformer", "dim": 16, "layers": 1}},
                  "fusion": {"type": "concat", "dim": 16},
                  "head": {"type": "classification"}},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "num_workers": 0},
    }


def shapes_rows(split: str, n: int) -> list[dict[str, Any]]:
    data = mmkit.create("dataset", "shapes", n_train=n, n_val=n, n_test=n, image_size=32).splits[split]
    return [{"img": r["image"], "claim": r["claim"], "label": r["label"]} for r in data]


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class Seen(mmkit.Callback):
    def __init__(self) -> None:
        self.steps = 0

    def on_step_end(self, trainer: Any) -> None:
        self.steps = trainer.state.step


def test_fit_a_dataframe_predict_proba_evaluate_save_load(tmp_path: Path) -> None:
    train = shapes_rows("train", 48)
    for i, row in enumerate(train):
        if i % 2:
            row["img"] = png_bytes(row["img"])  # encoded bytes, as Parquet and datasets hold images
    train[3]["claim"] = float("nan")  # a missing text: an absent modality, not the string "nan"
    test = pd.DataFrame(shapes_rows("test", 16))
    seen = Seen()
    model = mmkit.fit(recipe(tmp_path), train=pd.DataFrame(train), val=test, quiet=True, callbacks=[seen],
                      train__lr=2e-3, model__head__metrics=["accuracy", "auroc"])
    assert isinstance(model, mmkit.TrainedModel) and seen.steps == 3  # 48 rows / 16 = 3 steps, our callback ran

    run = model.run_dir
    assert run is not None and run.parent == tmp_path / "runs"
    resolved = tomllib.loads((run / "recipe.resolved.toml").read_text())
    assert resolved["train"]["lr"] == 2e-3
    assert Path(resolved["data"]["train"]) == (run / "inputs" / "train.jsonl").resolve()
    rows = [json.loads(line) for line in (run / "inputs" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and rows[3]["claim"] is None
    assert rows[0]["img"] == "files/train-000001-img.png" and rows[1]["img"] == "files/train-000002-img.png"
    assert all((run / "inputs" / r["img"]).is_file() for r in rows)
    assert model.summary["steps"] == 3

    probs = model.predict_proba(test)
    assert probs.shape == (16, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert model.classes == [0, 1]
    labels = [p["label"] for p in model.predict(test)]
    assert labels == [model.classes[i] for i in probs.argmax(axis=1)]
    metrics = model.evaluate(test)
    assert set(metrics) == {"loss", "accuracy", "auroc"} and 0 <= metrics["auroc"] <= 1

    saved = model.save(tmp_path / "saved")
    for ref in (saved, run):
        again = mmkit.load(ref)
        assert isinstance(again, mmkit.TrainedModel)
        np.testing.assert_allclose(again.predict_proba(test), probs, atol=1e-6)
    assert mmkit.load(saved).run_dir is None


def test_lists_paths_and_hf_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    (tmp_path / "imgs").mkdir()
    train = shapes_rows("train", 32)
    for i, row in enumerate(train):
        row["img"].save(tmp_path / "imgs" / f"{i}.png")
        row["img"] = f"imgs/{i}.png"  # relative to base_dir
    (tmp_path / "there is a red circle").write_text("a file named like a claim")
    val = datasets.Dataset.from_list(shapes_rows("val", 16))  # images as the datasets Image feature
    (tmp_path / "held" / "pics").mkdir(parents=True)
    test = shapes_rows("test", 8)
    for i, row in enumerate(test):
        row["img"].save(tmp_path / "held" / "pics" / f"{i}.png")
        row["img"] = f"pics/{i}.png"  # relative to the manifest's folder
    manifest = tmp_path / "held" / "test.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in test))
    model = mmkit.fit(recipe(tmp_path), train=train, val=val, test=manifest, base_dir=tmp_path, quiet=True)
    inputs = model.run_dir / "inputs"
    rows = [json.loads(line) for line in (inputs / "train.jsonl").read_text().splitlines()]
    assert rows[0]["img"] == str((tmp_path / "imgs" / "0.png").resolve())  # still loads from the run dir
    copied = [json.loads(line) for line in (inputs / "test.jsonl").read_text().splitlines()]
    assert copied[2]["img"] == str((tmp_path / "held" / "pics" / "2.png").resolve())  # its own folder's meaning
    assert set(model.summary["final"]) == {"val", "test"}
    assert [r["claim"] for r in rows] == [r["claim"] for r in train]  # a text column is never a path column
    assert len(list((inputs / "files").glob("val-*-img.png"))) == 16
    assert model.evaluate(val)["accuracy"] == model.evaluate(list(val))["accuracy"]
    again = mmkit.fit(recipe(tmp_path), train=train[:16], base_dir=tmp_path, quiet=True, overwrite=True)
    assert again.run_dir == model.run_dir and again.summary["steps"] == 1  # replaced, not api-2
    assert not (inputs / "val.jsonl").exists() and not (inputs / "files").exists()
    assert model.embed(val.select(range(3)), modality="image").shape == (3, model.embedding_dim("image"))


def test_recipe_forms_and_errors_name_the_problem(tmp_path: Path) -> None:
    rows = shapes_rows("train", 4)
    with pytest.raises(mmkit.RecipeError, match=r"override lr=\.\.\.: expected SECTION__KEY, e\.g\. train__lr"):
        mmkit.fit(recipe(tmp_path), train=rows, lr=1e-3)
    with pytest.raises(mmkit.RecipeError, match=r"^mmkit\.fit: data\.dataset = 'shapes': pass train= too"):
        mmkit.fit("claim-classifier", val=rows)
    with pytest.raises(mmkit.RecipeError, match="train.epochs: expected int"):
        mmkit.fit("claim-classifier", train=rows, train__epochs="two")
    with pytest.raises(mmkit.DataError, match=r"train: expected a manifest path, a list of dicts.*got a single dict"):
        mmkit.fit(recipe(tmp_path), train=rows[0])
    with pytest.raises(mmkit.DataError, match="val row 2: expected a dict, got int"):
        mmkit.fit(recipe(tmp_path), train=rows, val=[rows[0], 3])
    with pytest.raises(mmkit.DataError, match=r"val data: column 'claim' \(field 'text'\) not found; columns are "
                                              r"'img', 'text', 'label'"):
        mmkit.fit(recipe(tmp_path), train=rows, val=[{"img": r["img"], "text": r["claim"], "label": 1} for r in rows])
    with pytest.raises(mmkit.RecipeError, match="no such recipe file"):
        mmkit.fit(tmp_path / "missing.toml", train=rows)
    assert not (tmp_path / "runs").exists()  # every problem found before a run directory is made


def test_cells_become_plain_values_and_image_bytes_keep_their_format(tmp_path: Path) -> None:
    from PIL import Image

    from mmkit._internal.inline_data import to_rows, write_split

    frame = pd.DataFrame({"n": np.array([1, 2], dtype=np.int64), "x": [0.5, np.nan],
                          "s": pd.array(["a", pd.NA], dtype="string"), "v": [np.array([1.0, 2.0]), None]})
    rows = to_rows(frame)
    assert rows == [{"n": 1, "x": 0.5, "s": "a", "v": [1.0, 2.0]}, {"n": 2, "x": None, "s": None, "v": None}]
    assert type(rows[0]["n"]) is int
    jpeg = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 10, 10)).save(jpeg, format="JPEG")
    blob = jpeg.getvalue()
    manifest = write_split([{"img": blob}, {"img": {"bytes": b"not an image", "path": None}}],
                           tmp_path / "m" / "train.jsonl", tmp_path / "m" / "files", "train", tmp_path, True)
    written = [json.loads(line)["img"] for line in manifest.read_text().splitlines()]
    assert written == ["files/train-000001-img.jpg", "files/train-000002-img.bin"]
    assert (tmp_path / "m" / written[0]).read_bytes() == blob  # the bytes as given, not re-encoded
    with pytest.raises(mmkit.DataError, match="input: expected a manifest path.*got int"):
        to_rows(3, "input")
