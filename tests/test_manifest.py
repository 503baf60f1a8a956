"""Manifests (CSV/JSONL/Parquet), the modalities' loaders, ``mmkit data export`` and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import mmkit
from mmkit._internal.cli_data import data, split_sizes
from mmkit._internal.errors import DataError
from mmkit._internal.manifest import (
    check_columns,
    data_context,
    load_cell,
    load_manifest_splits,
    parse_cell,
    read_manifest,
)


def _modality(name):
    return mmkit.get_registry().get("modality", name).load()()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    result = CliRunner().invoke(data, ["export", "shapes", "--n", "200", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


# ---------------------------------------------------------------------------------------- export
def test_export_shapes_round_trip(exported):
    from PIL import ImageChops

    from mmkit_shapes.generate import shapes

    out, output = exported
    assert "train.jsonl (160 rows)" in output and "columns = { image" in output
    assert len(list((out / "images" / "train").glob("*.png"))) == 160
    columns = {"image": "image", "text": "claim", "label": "label"}
    loaded = load_manifest_splits(train=out / "train.jsonl", val=out / "val.jsonl", test=out / "test.jsonl",
                                  columns=columns)
    assert loaded.base_dir == out.resolve() and loaded.columns == columns
    reference = shapes(n_train=160, n_val=20, n_test=20, seed=3)
    image = _modality("image")
    for split in ("train", "val", "test"):
        rows, ref = loaded.splits[split], reference.splits[split]
        assert len(rows) == len(ref)
        for i, (row, want) in enumerate(zip(rows, ref)):
            assert not Path(row["image"]).is_absolute()
            for key in ("caption", "claim", "label", "first_shape", "first_color", "n_shapes"):
                assert row[key] == want[key], (split, i, key)
            img = load_cell(image, row["image"], loaded.base_dir, f"{split}.jsonl", i + 1, "image")
            assert img.mode == "RGB" and img.size == want["image"].size
            assert ImageChops.difference(img, want["image"]).getbbox() is None, (split, i)


def test_export_options_sizes_and_other_datasets(tmp_path):
    runner = CliRunner()
    result = runner.invoke(data, ["export", "shapes", "--split-sizes", "12,4,0", "-o", "image_size=32",
                                  "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "s" / "test.jsonl").exists()  # empty splits are not written
    rows = read_manifest(tmp_path / "s" / "val.jsonl")
    assert len(rows) == 4
    assert _modality("image").load(rows[0]["image"], tmp_path / "s").size == (32, 32)
    # a dataset without images exports as plain manifests
    result = runner.invoke(data, ["export", "toy-tabular", "--n", "50", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert 'tabular = ["size", "weight", "city"]' in result.output
    toy = load_manifest_splits(train=tmp_path / "t" / "train.jsonl", val=tmp_path / "t" / "val.jsonl",
                               columns={"tabular": ["size", "weight", "city"], "text": "note", "target": "target"})
    assert [len(toy.splits[s]) for s in ("train", "val")] == [40, 5]
    assert split_sizes(200, None) == (160, 20, 20)
    assert split_sizes(100, "0.5,0.3,0.2") == (50, 30, 20)
    result = runner.invoke(data, ["export", "shapess", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "shapes" in str(result.exception)


# ------------------------------------------------------------------------------------- manifests
def test_csv_cells_and_split_column(tmp_path):
    csv_file = tmp_path / "all.csv"
    csv_file.write_text("path,text,label,code,split\n"
                        "a.png,hello,1,007,train\n"
                        "b.png,,0,1.5,Validation\n"
                        "c.png,42,2.5e1,x,test\n"
                        ",bye,1,,train\n", encoding="utf-8")
    rows = read_manifest(csv_file)
    assert rows[0] == {"path": "a.png", "text": "hello", "label": 1, "code": "007", "split": "train"}
    assert rows[1]["text"] is None and rows[1]["code"] == 1.5
    assert rows[2]["text"] == 42 and rows[2]["label"] == 25.0
    assert rows[3]["path"] is None and rows[3]["code"] is None
    splits = load_manifest_splits(train=csv_file, split_column="split", columns={"image": "path", "label": "label"})
    assert [len(splits.splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert splits.base_dir == tmp_path.resolve()
    assert _modality("text").load(rows[2]["text"]) == "42"
    assert parse_cell(" 3 ") == 3 and parse_cell("1,5") == "1,5" and parse_cell("nan") == "nan"
    bad = tmp_path / "bad_split.csv"
    bad.write_text("x,split\n1,train\n2,holdout\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad_split.csv row 2 column split: unknown split 'holdout'"):
        load_manifest_splits(train=bad, split_column="split")


def test_jsonl_invalid_line_names_file_and_line(tmp_path):
    f = tmp_path / "broken.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2,}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"broken.jsonl line 3 \(row 2\): invalid JSON"):
        read_manifest(f)
    f.write_text('{"a": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 2 \(row 2\): expected a JSON object"):
        read_manifest(f)
    with pytest.raises(DataError, match="not found"):
        read_manifest(tmp_path / "missing.jsonl")
    (tmp_path / "empty.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        read_manifest(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="unknown manifest format"):
        (tmp_path / "x.txt").write_text("hi")
        read_manifest(tmp_path / "x.txt")


def test_missing_column_names_column_field_and_file(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"image": "a.png", "size": 1, "weight": 2}\n{"image": "b.png", "size": 3}\n', encoding="utf-8")
    rows = read_manifest(f)
    check_columns(rows, {"tabular": ["size", "weight"]}, f)  # weight missing in one row only = absent cell
    with pytest.raises(DataError, match=r"train.jsonl: column 'wieght' \(field 'tabular'\) not found.*'weight'"):
        check_columns(rows, {"tabular": ["size", "wieght"]}, f)
    with pytest.raises(DataError, match=r"column 'caption' \(field 'text'\)"):
        load_manifest_splits(train=f, columns={"image": "image", "text": "caption"})


def test_parquet(tmp_path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (tmp_path / "x.parquet").write_bytes(b"PAR1")
        with pytest.raises(DataError, match=r"pip install '?mmkit\[parquet\]"):
            read_manifest(tmp_path / "x.parquet")
        return
    pq.write_table(pa.table({"text": ["a", None], "label": [1, 0]}), tmp_path / "x.parquet")
    assert read_manifest(tmp_path / "x.parquet") == [{"text": "a", "label": 1}, {"text": None, "label": 0}]


# ------------------------------------------------------------------------------------ bad values
def test_missing_and_corrupt_image_files(tmp_path):
    image = _modality("image")
    assert not image.is_absent("gone.png")  # a path to a missing file is not absence
    with pytest.raises(DataError, match=r"train.csv row 7 column path: image file not found: .*gone.png"):
        load_cell(image, "gone.png", tmp_path, "train.csv", 7, "path")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(DataError, match=r"train.csv row 2 column path: cannot read image .*bad.png"):
        load_cell(image, "bad.png", tmp_path, "train.csv", 2, "path")
    (tmp_path / "sub").mkdir()
    from PIL import Image

    Image.new("RGB", (5, 4), (1, 2, 3)).save(tmp_path / "sub" / "ok.png")
    assert load_cell(image, "sub/ok.png", tmp_path, "f", 1, "path").getpixel((0, 0)) == (1, 2, 3)


def test_non_numeric_tabular_value_is_located():
    enc = mmkit.create("encoder", "tabular-mlp", dim=8, hidden=8)
    tab = _modality("tabular")
    enc.fit([tab.load({"size": 1.0, "city": "a"}), tab.load({"size": 2.5, "city": "b"})])
    message = r"val.csv row 3 column size, city: tabular column 'size': 'big' is not a number"
    with pytest.raises(DataError, match=message):
        with data_context("val.csv", 3, ["size", "city"]):
            enc.preprocess(tab.load({"size": "big", "city": "a"}))


def test_image_modes_become_rgb():
    import numpy as np
    from PIL import Image

    load = _modality("image").load
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = load(rgba)
    assert out.mode == "RGB" and out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)
    pal = Image.new("P", (2, 2), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    assert load(pal).getpixel((0, 0)) == (10, 20, 30)
    assert load(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert load(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert load(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)
    deep = Image.fromarray(np.array([[0, 65535], [32896, 257]], dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    out = load(deep)
    assert [out.getpixel(p)[0] for p in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 255, 128, 1]


def test_text_and_tabular_modalities():
    text = _modality("text")
    assert text.load("héllo".encode()) == "héllo"
    with pytest.raises(DataError, match="UTF-8"):
        text.load(b"\xff\xfe bad")
    assert text.is_absent("  ") and text.is_absent(None) and not text.is_absent("0")
    tab = _modality("tabular")
    assert tab.is_absent({"a": None, "b": float("nan"), "c": ""}) and not tab.is_absent({"a": None, "b": 0})
    assert tab.is_absent([None, None]) and tab.is_absent([])
    assert tab.load([1, 2]) == {"0": 1, "1": 2}
    assert tab.load('{"a": 1}') == {"a": 1} and tab.load(3.5) == {"value": 3.5}


def test_toy_tabular_dataset():
    from mmkit_tabular.toy import WORD_EFFECT

    fn = mmkit.get_registry().get("dataset", "toy-tabular").load()
    a, b, c = fn(n_train=300, n_val=5, n_test=5, seed=1), fn(n_train=300, n_val=5, n_test=5, seed=1), fn(seed=2)
    assert a.splits == b.splits and a.splits["train"] != c.splits["train"][:300]
    assert a.columns == {"tabular": ["size", "weight", "city"], "text": "note", "target": "target"}
    rows = a.splits["train"]
    assert 0 < sum(r["weight"] is None for r in rows) < 40
    # the note's words carry signal: rows mentioning "renovated" have higher targets than "damaged"
    def mean_target(word):
        hits = [r["target"] for r in rows if r["note"] and word in r["note"].split()]
        return sum(hits) / len(hits)

    assert WORD_EFFECT["renovated"] > 0 > WORD_EFFECT["damaged"]
    assert mean_target("renovated") > mean_target("damaged") + 1.5
