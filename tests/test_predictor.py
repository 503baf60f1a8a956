"""Inference end to end on a tiny trained model: register, load in a fresh process, predict (exactly
the same probabilities), missing modalities, bad rows, tampering, eval, embed, save, search."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mmkit
from mmkit._internal import models
from mmkit._internal.cli_models import embed_cmd, eval_cmd, predict_cmd
from mmkit._internal.errors import DataError, MmkitError
from mmkit._internal.predictor import Predictor, iter_records, load


# The subprocess runs the CLI with the model commands added (mmkit._internal.cli may already have them).
CLI = ("import sys; from mmkit._internal.cli import cli; from mmkit._internal.cli_models import COMMANDS\n"
       "for c in COMMANDS:\n    cli.commands.setdefault(c.name, c)\n"
       "cli(sys.argv[1:], prog_name='mmkit')")


def write_manifest(folder: Path, n: int = 12, seed: int = 11) -> Path:
    """Shapes rows as PNG files + JSONL; rows 2, 5 and 9 lack text (null, missing key, empty)."""
    from mmkit_shapes.generate import shapes

    rows = shapes(n_train=0, n_val=0, n_test=n, seed=seed, image_size=32).splits["test"]
    (folder / "img").mkdir(parents=True)
    lines = []
    for i, row in enumerate(rows):
        row["image"].save(folder / "img" / f"{i}.png")
        rec = {"image": f"img/{i}.png", "claim": row["claim"], "label": row["label"], "caption": row["caption"]}
        if i == 1:
            rec["claim"] = None
        elif i == 4:
            del rec["claim"]
        elif i == 8:
            rec["claim"] = ""
        lines.append(json.dumps(rec))
    path = folder / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, write_tiny_recipe) -> dict:
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    root = tmp_path_factory.mktemp("pred")
    recipe = write_tiny_recipe(root / "tiny.toml", "run.seed=5", "train.lr=3e-3")
    result = train(load_recipe(recipe), quiet=True)
    registry = root / "registry"
    card = models.register(result.run_dir, "tiny", registry=registry)
    return {"root": root, "recipe": recipe, "run": result.run_dir, "registry": registry, "card": card,
            "manifest": write_manifest(root / "data")}


@pytest.fixture(scope="module")
def predictor(trained: dict) -> Predictor:
    return load("tiny", registry=trained["registry"])


def reference_predictor(trained: dict) -> Predictor:
    """The model as the training process knows it: components fitted on the training data (not
    restored from JSON) and the best checkpoint's weights."""
    from mmkit._internal import checkpoint as ckpt
    from mmkit._internal.assembly import assemble, load_splits, plan_data
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.registry import get_registry

    recipe = load_recipe(trained["recipe"])
    reg = get_registry()
    splits = load_splits(recipe, reg)
    model = assemble(recipe, reg, plan_data(recipe, splits))
    ckpt.load_weights(model, trained["run"] / "checkpoints" / "best" / ckpt.WEIGHTS)
    return Predictor(model, recipe, {**splits.columns, **recipe.data["columns"]})


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # the same intra-op thread count as this process: a float sum's order depends on it, and the
    # fresh-process test compares probabilities bit for bit
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


# ------------------------------------------------------------------------------- acceptance
@pytest.mark.slow  # a fresh interpreter imports torch + timm and loads the model (~10 s on 2 cores)
def test_fresh_process_predictions_equal_training_process(trained: dict) -> None:
    """Register -> `mmkit predict` in a new process -> the same probabilities, bit for bit, for every
    row, including rows whose text is missing (null, absent key, empty string)."""
    ref = reference_predictor(trained)
    expected = ref.predict(trained["manifest"], batch_size=8)
    out = trained["root"] / "pred.jsonl"
    done = run_cli("predict", "tiny", "--registry", str(trained["registry"]), "--input", str(trained["manifest"]),
                   "--out", str(out), "--batch-size", "8")
    assert done.returncode == 0, done.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["row"] for g in got] == list(range(1, 13)), "one prediction per input row, in order"
    assert len(expected) == 12 and all(e is not None for e in expected)
    for g, e in zip(got, expected):
        assert g["label"] == e["label"]
        assert g["probs"] == e["probs"], f"row {g['row']}: {g['probs']} != {e['probs']}"  # exact (atol=0)
    assert "12 row(s)" in done.stderr
    # the rows without text are predicted through the fusion's missing-modality path, not as text ""
    rows = [r for _, r in iter_records(trained["manifest"])]
    with_text = dict(rows[1], claim="there is a red circle")
    assert ref.predict([with_text], base_dir=trained["manifest"].parent)[0]["probs"] != expected[1]["probs"]


def test_tampered_weights_fail_with_checksum_error_naming_the_file(trained: dict, tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    shutil.copytree(trained["registry"], registry)
    weights = registry / "tiny" / "1" / "model.safetensors"
    load("tiny", registry=registry)  # intact: loads
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01  # flip one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(models.ChecksumError, match=f"{weights}: checksum mismatch"):
        load("tiny", registry=registry)
    result = CliRunner().invoke(predict_cmd, ["tiny", "--registry", str(registry), "--input",
                                              str(trained["manifest"])])
    assert isinstance(result.exception, models.ChecksumError)


def test_loaded_model_is_on_cpu_in_eval_mode(predictor: Predictor) -> None:
    assert all(p.device.type == "cpu" for p in predictor.model.parameters())
    assert not predictor.model.training


# ------------------------------------------------------------------------------- predict
def test_loading_a_run_dir_and_a_registered_model_agree(trained: dict, predictor: Predictor) -> None:
    from_run = load(trained["run"])
    assert from_run.card["checkpoint"] == "best"
    rows = list(r for _, r in iter_records(trained["manifest"]))
    assert from_run.predict(rows, base_dir=trained["manifest"].parent) == predictor.predict(trained["manifest"])
    assert mmkit.load("tiny", registry=trained["registry"]).predict(trained["manifest"]) == \
        predictor.predict(trained["manifest"])


def test_probabilities_are_distributions_over_the_trained_labels(predictor: Predictor, trained: dict) -> None:
    preds = predictor.predict(trained["manifest"])
    for p in preds:
        assert set(p["probs"]) == {"0", "1"}
        assert abs(sum(p["probs"].values()) - 1.0) < 1e-6
        assert p["label"] == int(max(p["probs"], key=p["probs"].get))


def test_unreadable_row_is_an_error_with_its_number_or_skipped(predictor: Predictor, trained: dict,
                                                                tmp_path: Path) -> None:
    lines = trained["manifest"].read_text().splitlines()
    bad = json.loads(lines[3])
    bad["image"] = "img/missing.png"
    lines[3] = json.dumps(bad)
    lines[6] = "{not json"
    path = trained["manifest"].parent / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl row 4 column image: image file not found"):
        predictor.predict(path)
    preds = predictor.predict(path, skip_bad_rows=True)
    assert len(preds) == 12 and preds[3] is None and preds[6] is None
    assert preds[0] == predictor.predict(trained["manifest"])[0]
    out = tmp_path / "p.jsonl"
    result = CliRunner().invoke(predict_cmd, ["tiny", "--registry", str(trained["registry"]), "--input", str(path),
                                              "--out", str(out), "--skip-bad-rows"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line)["row"] for line in out.read_text().splitlines()]
    assert rows == [1, 2, 3, 5, 6, 8, 9, 10, 11, 12]
    assert "skipped 2 bad row(s)" in result.output and "row 7" in result.output
    failed = CliRunner().invoke(predict_cmd, ["tiny", "--registry", str(trained["registry"]), "--input", str(path),
                                              "--out", str(tmp_path / "q.jsonl")])
    assert isinstance(failed.exception, DataError) and "row 4" in str(failed.exception)
    assert not (tmp_path / "q.jsonl").exists() and not list(tmp_path.glob(".q.jsonl*")), "no partial output"


def test_row_without_any_input_is_bad(predictor: Predictor) -> None:
    with pytest.raises(DataError, match="input row 2: every input is empty"):
        predictor.predict([{"image": None, "claim": "there is a red circle"}, {"image": None, "claim": None}])


def test_missing_column_is_an_error_unless_allowed(predictor: Predictor, trained: dict) -> None:
    rows = [{"image": r["image"], "text": r.get("claim")} for _, r in iter_records(trained["manifest"])]
    with pytest.raises(DataError, match=r"column 'claim' \(field 'text'\) not found"):
        predictor.predict(rows, base_dir=trained["manifest"].parent)
    preds = predictor.predict(rows, base_dir=trained["manifest"].parent, allow_missing_columns=True)
    image_only = [{"image": r["image"]} for r in rows]
    assert preds == predictor.predict(image_only, base_dir=trained["manifest"].parent, allow_missing_columns=True)


def test_csv_input_and_stdout(trained: dict, predictor: Predictor, tmp_path: Path) -> None:
    import csv

    rows = [r for _, r in iter_records(trained["manifest"])]
    path = trained["manifest"].parent / "rows.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "claim"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"image": r["image"], "claim": r.get("claim") or ""})
    result = CliRunner().invoke(predict_cmd, ["tiny", "--registry", str(trained["registry"]), "--input", str(path),
                                              "--quiet"])
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.output.splitlines()]
    expected = predictor.predict(trained["manifest"])
    assert [{k: v for k, v in g.items() if k != "row"} for g in got] == expected


def test_predict_streams_in_batches(predictor: Predictor, trained: dict) -> None:
    """The input is read lazily: records are pulled from the iterator one batch at a time."""
    pulled: list[int] = []

    def gen():
        for number, row in iter_records(trained["manifest"]):
            pulled.append(number)
            yield row

    it = predictor.iter_predict(gen(), batch_size=4, base_dir=trained["manifest"].parent)
    first = next(it)
    assert first[0] == 1 and len(pulled) == 4
    assert len(list(it)) == 11 and len(pulled) == 12


# ------------------------------------------------------------------------------- eval / embed / save
def test_evaluate_matches_the_runs_best_validation_accuracy(predictor: Predictor, trained: dict) -> None:
    metrics = predictor.evaluate("shapes", split="val")
    best = trained["card"]["metrics"]["best"]
    assert best["metric"] == "accuracy"
    assert metrics["accuracy"] == pytest.approx(best["val"]["accuracy"], abs=0)
    assert metrics["loss"] == pytest.approx(best["val"]["loss"], rel=1e-5)
    result = CliRunner().invoke(eval_cmd, ["tiny", "--registry", str(trained["registry"]), "--data", "shapes",
                                           "--split", "val", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["accuracy"] == metrics["accuracy"]


def test_evaluate_a_manifest_file(predictor: Predictor, trained: dict) -> None:
    metrics = predictor.evaluate(trained["manifest"])
    preds = predictor.predict(trained["manifest"])
    labels = [r["label"] for _, r in iter_records(trained["manifest"])]
    assert metrics["accuracy"] == pytest.approx(np.mean([p["label"] == y for p, y in zip(preds, labels)]))
    with pytest.raises(MmkitError, match="no option 'n_tst'"):
        predictor.evaluate("shapes", options={"n_tst": 3})


def test_embed_fused_and_per_modality(predictor: Predictor, trained: dict, tmp_path: Path) -> None:
    fused = predictor.embed(trained["manifest"])
    assert fused.shape == (12, 16) and fused.dtype == np.float32 and np.isfinite(fused).all()
    text = predictor.embed(trained["manifest"], modality="text")
    missing = [1, 4, 8]
    assert np.isnan(text[missing]).all()
    assert np.isfinite(np.delete(text, missing, axis=0)).all()
    image = predictor.embed(trained["manifest"], modality="image")
    assert np.isfinite(image).all() and image.shape[0] == 12
    with pytest.raises(MmkitError, match="unknown modality 'audio'"):
        predictor.embed(trained["manifest"], modality="audio")
    out = tmp_path / "e.npy"
    result = CliRunner().invoke(embed_cmd, ["tiny", "--registry", str(trained["registry"]), "--input",
                                            str(trained["manifest"]), "--out", str(out), "--modality", "text"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out), text)


def test_save_and_load_round_trip(predictor: Predictor, trained: dict, tmp_path: Path) -> None:
    folder = predictor.save(tmp_path / "saved")
    again = load(folder)
    assert again.predict(trained["manifest"]) == predictor.predict(trained["manifest"])
    assert again.card["name"] == "tiny" and again.card["columns"] == predictor.columns
    card = json.loads((folder / "card.json").read_text())
    assert card["sha256"]["model.safetensors"] == models.sha256_file(folder / "model.safetensors")
    with pytest.raises(MmkitError, match="not empty"):
        predictor.save(folder)
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl")), "nothing pickled"


# ------------------------------------------------------------------------------- search
CLIP = """
[data]
dataset = "shapes"
options = {{ n_train = 16, n_val = 4, n_test = 4, image_size = 32 }}
columns = {{ image = "image", text = "caption" }}
[model.encoders.image]
type = "timm"
model = "test_resnet"
tokens = false
[model.encoders.text]
type = "text-transformer"
dim = 16
layers = 1
heads = 2
[model.fusion]
type = "concat"
dim = 16
[model.head]
type = "contrastive"
proj_dim = 8
"""


def test_search_ranks_candidates_by_cosine_in_the_shared_space(tmp_path: Path) -> None:
    import torch.nn.functional as F

    import tomllib

    from mmkit._internal.assembly import assemble, load_splits, plan_data
    from mmkit._internal.recipe import build_recipe
    from mmkit._internal.registry import get_registry

    torch.manual_seed(0)
    recipe = build_recipe(tomllib.loads(CLIP.format()), "clip.toml", tmp_path)
    reg = get_registry()
    splits = load_splits(recipe, reg)
    model = assemble(recipe, reg, plan_data(recipe, splits))
    pred = Predictor(model, recipe, {**splits.columns, **recipe.data["columns"]})
    rows = splits.splits["train"][:6]
    images = [{"image": r["image"]} for r in rows]
    captions = [{"caption": r["caption"]} for r in rows]
    hits = pred.search(images, captions, k=3)
    assert len(hits) == 6 and all(len(h) == 3 for h in hits)
    # independent computation: projections of each modality's pooled embedding, L2-normalised
    head = model.head
    img = torch.from_numpy(pred.embed(images, modality="image"))
    txt = torch.from_numpy(pred.embed(captions, modality="text"))
    with torch.no_grad():
        scores = F.normalize(head.proj_q(img), dim=-1) @ F.normalize(head.proj_k(txt), dim=-1).T
    for i, h in enumerate(hits):
        order = torch.argsort(scores[i], descending=True)[:3].tolist()
        assert [x["index"] for x in h] == order
        assert [x["score"] for x in h] == pytest.approx(scores[i, order].tolist(), abs=1e-5)
    back = pred.search(captions, images, k=2)  # text queries retrieve images
    assert [x["index"] for x in back[0]] == torch.argsort(scores[:, 0], descending=True)[:2].tolist()


def test_search_needs_a_contrastive_model(predictor: Predictor, trained: dict) -> None:
    with pytest.raises(MmkitError, match="search needs a head that declares mmkit.Retrieval"):
        predictor.search(trained["manifest"], trained["manifest"])
