"""Zero-shot `mmkit predict` with hf-clip towers (tiny random CLIP/SigLIP folders): a card's [zero_shot]
table, --labels/--prompt overrides, a trained model, and the same numbers as the plugin's reference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import mmkit
from mmkit._internal.cli_models import predict_cmd

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from mmkit_hf import tiny
    from mmkit_shapes.generate import shapes

    root = tmp_path_factory.mktemp("zs")
    rows = shapes(n_train=0, n_val=0, n_test=5, image_size=32).splits["test"]
    for i, row in enumerate(rows):
        row["image"].save(root / f"{i}.png")
    manifest = root / "images.jsonl"
    manifest.write_text("".join(json.dumps({"image": f"{i}.png"}) + "\n" for i in range(len(rows))))
    return {"rows": rows, "input": manifest, "clip": tiny.save_tiny_clip(root / "clip"),
            "siglip": tiny.save_tiny_clip(root / "siglip", family="siglip")}


def reference(folder: Path, rows: list, labels: list[str], prompt: str) -> torch.Tensor:
    """The plugin's own computation, straight from the two towers."""
    from mmkit_hf.clip import HFClipEncoder
    from mmkit_hf.zeroshot import classify

    image, text = HFClipEncoder(str(folder), "vision"), HFClipEncoder(str(folder), "text")
    return classify(image, text, [r["image"] for r in rows], labels, prompt)


def predict(args: list[str], out: Path) -> list[dict]:
    result = CliRunner().invoke(predict_cmd, [*args, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_the_cards_zero_shot_table_and_the_overrides(setup: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMKIT_CLIP_PATH", str(setup["clip"]))
    from mmkit._internal import models

    table = models.builtin_card("clip-local")["zero_shot"]
    preds = predict(["clip-local", "--input", str(setup["input"])], tmp_path / "a.jsonl")
    assert [p["row"] for p in preds] == [1, 2, 3, 4, 5]
    assert all(list(p["probs"]) == table["labels"] for p in preds)
    want = reference(setup["clip"], setup["rows"], table["labels"], table["prompt"])
    got = torch.tensor([list(p["probs"].values()) for p in preds])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert [p["label"] for p in preds] == [table["labels"][i] for i in want.argmax(-1).tolist()]

    preds = predict(["clip-local", "--input", str(setup["input"]), "--labels", "cat, dog", "--prompt",
                     "a picture of a {label}"], tmp_path / "b.jsonl")
    got = torch.tensor([[p["probs"]["cat"], p["probs"]["dog"]] for p in preds])
    torch.testing.assert_close(got, reference(setup["clip"], setup["rows"], ["cat", "dog"], "a picture of a {label}"),
                               atol=1e-5, rtol=1e-4)


def test_siglip_scores_each_label_with_a_sigmoid(setup: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMKIT_CLIP_PATH", str(setup["siglip"]))
    preds = predict(["clip-local", "--input", str(setup["input"]), "--labels", "red,blue"], tmp_path / "s.jsonl")
    got = torch.tensor([[p["probs"]["red"], p["probs"]["blue"]] for p in preds])
    torch.testing.assert_close(got, reference(setup["siglip"], setup["rows"], ["red", "blue"],
                                              "a photo of a {label}."), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got.sum(-1), torch.ones(len(preds)))  # independent, not a softmax


def test_a_trained_model_with_labels_and_the_protocol(setup: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMKIT_CLIP_PATH", str(setup["clip"]))
    model = mmkit.fit("clip-local", train=[{"image": r["image"], "caption": r["caption"]} for r in setup["rows"]],
                      quiet=True, run__output_dir=str(tmp_path / "runs"), train__max_steps=1, train__batch_size=4)
    assert isinstance(model.model.encoders["image"], mmkit.ZeroShot)
    assert not isinstance(torch.nn.Linear(2, 2), mmkit.ZeroShot)
    monkeypatch.delenv("MMKIT_CLIP_PATH")  # the run directory holds the folder's path itself
    preds = predict([str(model.run_dir), "--input", str(setup["input"]), "--labels", "circle,square"],
                    tmp_path / "t.jsonl")
    assert preds[0]["probs"].keys() == {"circle", "square"}
    in_python = model.zero_shot([{"image": r["image"]} for r in setup["rows"]], ["circle", "square"])
    assert [p["label"] for p in in_python] == [p["label"] for p in preds]
    assert [p["probs"]["circle"] for p in in_python] == pytest.approx([p["probs"]["circle"] for p in preds], abs=1e-5)
    plain = predict([str(model.run_dir), "--input", str(setup["input"]), "--allow-missing-columns"],
                    tmp_path / "plain.jsonl")
    assert "label" not in plain[0]  # without --labels: the contrastive head's own predictions


def test_errors_name_the_problem(setup: dict, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMKIT_CLIP_PATH", str(setup["clip"]))
    args = ["clip-local", "--input", str(setup["input"]), "--out", str(tmp_path / "x.jsonl")]
    bad = CliRunner().invoke(predict_cmd, [*args, "--prompt", "a photo"])
    assert isinstance(bad.exception, mmkit.RecipeError)
    assert "model card 'clip-local': zero_shot.prompt: 'a photo' must contain {label}" in str(bad.exception)
    bad = CliRunner().invoke(predict_cmd, [*args, "--labels", " , "])
    assert "zero_shot.labels: give a non-empty list of label names" in str(bad.exception)
    bad = CliRunner().invoke(predict_cmd, ["claim-classifier", "--input", str(setup["input"]), "--labels", "a,b"])
    message = str(bad.exception)
    assert "mmkit.ZeroShot" in message and "'claim-classifier' has {'image': 'TimmEncoder'" in message
    assert not (tmp_path / "x.jsonl").exists()
