"""Bad data through the real training path: every fault is a DataError naming the file, row and
column, or a documented behaviour (wrong-mode images become RGB, NaN numbers are missing values).

Each test writes a small manifest (+ images) into tmp_path, builds a tiny recipe (timm test_resnet at
32 px + text-transformer dim 16 + concat fusion + classification, or tabular-mlp for numeric faults)
and calls :func:`mmkit._internal.trainer.train`. Faults already covered at the modality level live in
tests/test_manifest.py (missing image file, non-numeric tabular value, image modes, bytes text).
"""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from mmkit._internal.trainer import TrainingError, train
from mmkit._internal.errors import DataError
from mmkit._internal.recipe import load_recipe


TABULAR_RECIPE = """
[run]
name = "tab"
output_dir = "{out}"

[data]
train = "{train}"
val = "{val}"
columns = {{ tabular = ["size", "weight"], label = "label", target = "label" }}

[model.encoders.tabular]
type = "tabular-mlp"
dim = 8
hidden = 8

[model.fusion]
type = "concat"
dim = 8

[model.head]
type = "{head}"

[train]
max_steps = 2
batch_size = 8
"""


# ------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """24 random RGB 32x32 PNGs, plus broken and odd-mode files."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    out: dict[str, Path] = {}
    for i in range(24):
        out[str(i)] = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(out[str(i)])
    good = out["0"].read_bytes()
    broken = {"truncated.png": good[: len(good) // 2], "zero.png": b"", "text.png": b"just some text\n",
              "bomb.png": _png_header(100_000, 100_000)}
    for name, data in broken.items():
        out[name] = folder / name
        out[name].write_bytes(data)
    modes = {"cmyk.jpg": Image.new("CMYK", (32, 32), (0, 50, 100, 10)),
             "i16.png": Image.fromarray(np.full((32, 32), 40_000, dtype=np.uint16)),
             "p.png": Image.new("P", (32, 32), 3),
             "la.png": Image.new("LA", (32, 32), (30, 100)),
             "rgba.png": Image.new("RGBA", (32, 32), (3, 100, 3, 0)),
             "bw.png": Image.new("1", (32, 32), 1)}
    for name, img in modes.items():
        out[name] = folder / name
        img.save(out[name])
    return out


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _rows(images: dict[str, Path], n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"image": str(images[str(i)]), "text": f"word{i % 3} thing", "label": "ab"[i % 2]}
            for i in range(start, start + n)]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ImageRun = Callable[..., Any]  # (train_rows, val_rows or None, *overrides) -> the training result


@pytest.fixture
def image_run(tmp_path: Path, write_tiny_recipe) -> ImageRun:
    """Train the tiny image + text recipe (concat fusion) on ``train.jsonl`` (+ ``val.jsonl``) in tmp_path."""

    def run(train_rows: list[dict[str, Any]], val_rows: list[dict[str, Any]] | None, *overrides: str) -> Any:
        _jsonl(tmp_path / "train.jsonl", train_rows)
        if val_rows is not None:
            _jsonl(tmp_path / "val.jsonl", val_rows)
            overrides = ('data.val="val.jsonl"', *overrides)
        recipe = write_tiny_recipe(
            tmp_path / "recipe.toml", "run.name=data", "run.seed=1", 'data={ train = "train.jsonl" }',
            'model.fusion={ type = "concat", dim = 16 }',
            "train={ max_steps = 1, batch_size = 16 }",  # one step = the whole training split: every row is loaded
            *overrides)
        return train(load_recipe(recipe), quiet=True)

    return run


def _tab_run(tmp_path: Path, train_text: str | bytes, val_text: str | bytes, ext: str = "csv",
             head: str = "classification") -> Any:
    for name, text in (("train", train_text), ("val", val_text)):
        data = text.encode("utf-8") if isinstance(text, str) else text
        (tmp_path / f"{name}.{ext}").write_bytes(data)
    recipe = tmp_path / "tab.toml"
    recipe.write_text(TABULAR_RECIPE.format(out=(tmp_path / "runs").as_posix(), train=f"train.{ext}",
                                            val=f"val.{ext}", head=head), encoding="utf-8")
    return train(load_recipe(recipe), quiet=True)


HEADER = "size,weight,label\n"
ROWS = "".join(f"{i},{i * 0.5},{'ab'[i % 2]}\n" for i in range(16))  # rows 1-16; a 17th row is the bad one
NUM_ROWS = ROWS.replace(",a\n", ",1\n").replace(",b\n", ",2\n")  # numeric labels for regression


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------------------- images
@pytest.mark.parametrize("bad, cause", [
    ("truncated.png", "image file is truncated"),
    ("zero.png", "cannot identify image file"),
    ("text.png", "cannot identify image file"),
])
def test_unreadable_image_in_training_names_file_row_and_column(tmp_path: Path, images: dict[str, Path],
                                                                image_run: ImageRun, bad: str, cause: str) -> None:
    rows = _rows(images, 16)
    rows[5]["image"] = str(images[bad])
    with pytest.raises(DataError) as err:
        image_run(rows, None)
    message = str(err.value)
    assert re.search(r"train\.jsonl \(train\) row 6 column image: cannot read image .*" + re.escape(bad), message)
    assert cause in message
    assert not list((tmp_path / "runs").glob("*/checkpoints/last")), "no checkpoint of a run that never trained"


def test_unreadable_image_in_val_names_row_and_column(image_run: ImageRun, images: dict[str, Path]) -> None:
    val = _rows(images, 6, start=16)
    val[2]["image"] = str(images["zero.png"])
    with pytest.raises(DataError, match=r"\(val\) row 3 column image: cannot read image .*zero\.png"):
        image_run(_rows(images, 16), val)


def test_unreadable_image_in_val_names_the_val_file(image_run: ImageRun, images: dict[str, Path]) -> None:
    val = _rows(images, 6, start=16)
    val[2]["image"] = str(images["zero.png"])
    with pytest.raises(DataError) as err:
        image_run(_rows(images, 16), val)
    assert re.search(r"val\.jsonl\b.* row 3 column image", str(err.value)), str(err.value)
    assert "train.jsonl" not in str(err.value)


def test_decompression_bomb_header_is_refused_without_decoding(image_run: ImageRun, images: dict[str, Path]) -> None:
    rows = _rows(images, 16)
    rows[5]["image"] = str(images["bomb.png"])
    with pytest.raises(DataError, match=r"row 6 column image: .*DecompressionBombError.*exceeds limit"):
        image_run(rows, None)


def test_decompression_bomb_cannot_exhaust_memory(images: dict[str, Path]) -> None:
    """The same file loaded in a process limited to 1 GiB of address space: a clear error, not a
    MemoryError or a kill (decoding 10^10 RGB pixels would need 30 GB)."""
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
import mmkit
from mmkit._internal.manifest import load_cell
from mmkit._internal.errors import DataError
image = mmkit.get_registry().get("modality", "image").load()()
try:
    load_cell(image, {str(images["bomb.png"])!r}, None, "m.csv", 4, "path")
except DataError as exc:
    print("DataError:", exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "DataError: m.csv row 4 column path: DecompressionBombError" in done.stdout


def test_wrong_mode_images_are_converted_to_rgb_and_train(tmp_path: Path, images: dict[str, Path],
                                                          image_run: ImageRun) -> None:
    """Documented behaviour: CMYK, 16-bit, palette, alpha and 1-bit images become RGB (alpha over white)."""
    from mmkit._internal.assembly import assemble, load_splits, make_fields, plan_data
    from mmkit._internal.data import MultimodalDataset
    from mmkit._internal.registry import get_registry

    odd = ["cmyk.jpg", "i16.png", "p.png", "la.png", "rgba.png", "bw.png"]
    rows = _rows(images, 16)
    for i, name in enumerate(odd):
        rows[2 * i]["image"] = str(images[name])
    result = image_run(rows, _rows(images, 4, start=16))
    assert result.summary["steps"] == 1 and math.isfinite(result.summary["final"]["val"]["loss"])
    recipe = load_recipe(tmp_path / "recipe.toml")
    registry = get_registry()
    plan = plan_data(recipe, load_splits(recipe, registry))
    model = assemble(recipe, registry, plan)
    ds = MultimodalDataset(plan.splits.splits["train"], make_fields(model, plan, registry), model.head,
                           plan.target_columns, base_dir=plan.splits.base_dir, source="train", train=True)
    for i in range(len(odd)):
        x = ds[2 * i][1]["image"]
        assert x.shape == (3, 32, 32) and torch.isfinite(x).all(), odd[i]


# ------------------------------------------------------------------------------------- text encodings
@pytest.mark.parametrize("ext, bad_line", [
    ("csv", b"7,1.5,caf\xe9\n"),
    ("jsonl", b'{"size": 7, "weight": 1.5, "label": "caf\xe9"}\n'),
])
def test_non_utf8_manifest_is_a_data_error_naming_the_file(tmp_path: Path, ext: str, bad_line: bytes) -> None:
    good = (HEADER + ROWS).encode() if ext == "csv" else "".join(
        json.dumps({"size": i, "weight": i * 0.5, "label": "ab"[i % 2]}) + "\n" for i in range(16)).encode()
    with pytest.raises(DataError, match=rf"train\.{ext}( line \d+)?: not UTF-8 text"):
        _tab_run(tmp_path, good + bad_line, good, ext=ext)


def test_non_utf8_manifest_error_names_the_line(tmp_path: Path) -> None:
    bad = (HEADER + ROWS).encode() + b"7,1.5,caf\xe9\n"
    with pytest.raises(DataError, match=r"train\.csv line 18: not UTF-8"):
        _tab_run(tmp_path, bad, HEADER + ROWS)


# ------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_nan_in_a_numeric_column_is_a_missing_value(tmp_path: Path, ext: str) -> None:
    """Documented behaviour: NaN (CSV ``nan``, JSON ``NaN``) is an absent value: imputed with the
    training mean plus a learned missing indicator; the column stays numeric, the loss finite."""
    if ext == "csv":
        train_text, val_text = HEADER + ROWS + "3,nan,a\n", HEADER + ROWS + "4,nan,b\n"
    else:
        rows = [{"size": i, "weight": i * 0.5, "label": "ab"[i % 2]} for i in range(16)]
        train_text = "".join(json.dumps(r) + "\n" for r in rows + [{"size": 3, "weight": float("nan"), "label": "a"}])
        val_text = "".join(json.dumps(r) + "\n" for r in rows + [{"size": 4, "weight": float("nan"), "label": "b"}])
    result = _tab_run(tmp_path, train_text, val_text, ext=ext)
    assert math.isfinite(result.summary["final"]["val"]["loss"])
    state = json.loads((result.run_dir / "checkpoints" / "last" / "state.json").read_text())
    assert state["fit_state"]["encoders"]["tabular"]["numeric"] == ["size", "weight"]
    _strict_json((result.run_dir / "summary.json").read_text())


def test_inf_in_a_val_numeric_column_names_row_and_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\(val\) row 17 column size, weight: tabular column 'weight': 'inf' is not"):
        _tab_run(tmp_path, HEADER + ROWS, HEADER + ROWS + "3,inf,a\n")


def test_inf_in_a_training_numeric_column_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.csv.*weight.*(finite|inf)"):
        _tab_run(tmp_path, HEADER + ROWS + "3,inf,a\n", HEADER + ROWS)


@pytest.mark.parametrize("split, value", [("train", "1e39"), ("train", "1e200"), ("val", "1e39")])
def test_numbers_beyond_float32_are_data_errors(tmp_path: Path, split: str, value: str) -> None:
    bad = HEADER + ROWS + f"3,{value},a\n"
    train_text, val_text = (bad, HEADER + ROWS) if split == "train" else (HEADER + ROWS, bad)
    with pytest.raises(DataError, match=r"weight"):
        _tab_run(tmp_path, train_text, val_text)


def test_number_beyond_float32_in_training_is_caught_within_one_step(tmp_path: Path) -> None:
    """Today's behaviour for the fault above: the non-finite loss is caught at step 1, nothing is saved."""
    with pytest.raises((TrainingError, DataError), match=r"step 1\b|weight"):
        _tab_run(tmp_path, HEADER + ROWS + "3,1e39,a\n", HEADER + ROWS)
    assert not list((tmp_path / "runs").glob("*/checkpoints/last"))


# ------------------------------------------------------------------------------------- targets
def test_label_unseen_in_training_names_row_and_known_labels(image_run: ImageRun, images: dict[str, Path]) -> None:
    val = _rows(images, 4, start=16)
    val[2]["label"] = "zzz"
    with pytest.raises(DataError, match=r"\(val\) row 3: label: label 'zzz' was not seen in training; "
                                        r"known labels: 'a', 'b'"):
        image_run(_rows(images, 16), val)


@pytest.mark.parametrize("head, bad_row", [("classification", "3,1.5,\n"), ("regression", "3,1.5,inf\n"),
                                           ("regression", "3,1.5,nan\n")])
def test_bad_training_target_names_file_row_and_column(tmp_path: Path, head: str, bad_row: str) -> None:
    rows = ROWS if head == "classification" else NUM_ROWS
    with pytest.raises(DataError) as err:
        _tab_run(tmp_path, HEADER + rows + bad_row, HEADER + rows, head=head)
    message = str(err.value)
    assert "train.csv" in message and "row 17" in message and "'label'" in message, message


def test_huge_regression_target_is_a_data_error_or_trains(tmp_path: Path) -> None:
    try:
        _tab_run(tmp_path, HEADER + NUM_ROWS + "3,1.5,1e308\n", HEADER + NUM_ROWS, head="regression")
    except DataError as exc:
        assert "label" in str(exc) or "target" in str(exc)


# ------------------------------------------------------------------------------------- empty splits
def test_empty_training_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"train\.csv: the manifest has no rows"):
        _tab_run(tmp_path, HEADER, HEADER + ROWS)


def test_empty_val_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"val\.csv: the manifest has no rows"):
        _tab_run(tmp_path, HEADER + ROWS, HEADER)


def test_split_column_with_no_training_rows(image_run: ImageRun, images: dict[str, Path]) -> None:
    rows = [{**r, "split": "val"} for r in _rows(images, 8)]
    with pytest.raises(DataError, match=r"train\.jsonl: the training split is empty"):
        image_run(rows, None, 'data.split_column="split"')


def test_split_column_with_no_val_rows_trains_without_evaluation(image_run: ImageRun, images: dict[str, Path]) -> None:
    """Documented behaviour: no val rows -> no evaluation, no best checkpoint, final metrics omit val."""
    rows = [{**r, "split": "train"} for r in _rows(images, 16)]
    result = image_run(rows, None, 'data.split_column="split"')
    assert result.summary["steps"] == 1 and "val" not in result.summary["final"] and result.summary["best"] == {}
    assert (result.run_dir / "checkpoints" / "last").is_dir() and not (result.run_dir / "checkpoints" / "best").exists()
