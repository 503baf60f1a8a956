"""Fuzz the one row reader (manifests, predict/embed/eval inputs): hostile JSONL, CSV and bytes.

Invariant: only a DataError naming the file comes out; ``iter_records``, ``count_records`` and
``read_manifest`` agree on every file (the same rows, numbered 1..N, the same count); and
``load_manifest_splits`` fails only with a DataError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import HUGE_NUMBERS, WEIRD_TEXT, deep, run_property
from hypothesis import strategies as st

from mmkit._internal.errors import DataError
from mmkit._internal.manifest import count_records, iter_records, load_manifest_splits, read_manifest

SAMPLE, NIGHTLY = 60, 3000

KEYS = st.sampled_from(["image", "claim", "label", "text", "a", "", " ", "é", "\x00", "label "])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | WEIRD_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3), max_leaves=8)
raw_json_lines = st.one_of(
    st.dictionaries(KEYS, json_values, max_size=4).map(lambda d: json.dumps(d, ensure_ascii=False)),
    HUGE_NUMBERS.map(lambda n: '{"label": ' + n + "}"),
    deep("[", "]").map(lambda t: '{"claim": ' + t + "}"),
    deep("{\"a\":").map(lambda t: t + "1"),
    st.sampled_from(["{", "}", "[1, 2]", '"text"', "null", "12", "{'a': 1}", '{"a": 1}{"b": 2}', '{"a": NaN}',
                     '{"a": Infinity}', '{"a": 1,}', '{"a": "\\ud800"}']),
    WEIRD_TEXT,
    st.text(max_size=30),
)
SEPARATORS = st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\n \n", "\n\x0c\n"])


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[str, bytes]:
    lines = draw(st.lists(raw_json_lines, max_size=8))
    sep = draw(SEPARATORS)
    text = sep.join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))
    data = text.encode("utf-8", "surrogatepass")
    return ".jsonl", _damage(draw, data)


CELLS = st.one_of(st.text(max_size=12), HUGE_NUMBERS, WEIRD_TEXT, st.sampled_from(['"', '""', '"a,b"', '"x\ny"',
                                                                                   '"unterminated', " 42 ", "007"]))


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[str, bytes]:
    header = draw(st.lists(st.sampled_from(["image", "claim", "label", "text", "", " ", "a", "a", '"q"', "é"]),
                           min_size=0, max_size=5))
    rows = draw(st.lists(st.lists(CELLS, max_size=6), max_size=6))
    sep = draw(st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))
    text = sep.join([",".join(header)] + [",".join(r) for r in rows]) + draw(st.sampled_from(["", "\n"]))
    return ".csv", _damage(draw, text.encode("utf-8", "surrogatepass"))


def _damage(draw: st.DrawFn, data: bytes) -> bytes:
    """Sometimes: a BOM, an invalid UTF-8 byte, a UTF-16 re-encoding, or truncation."""
    how = draw(st.sampled_from(["none"] * 6 + ["bom", "latin1", "utf16", "truncate", "nul"]))
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "latin1":
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + b"\xe9" + data[pos:]
    if how == "utf16":
        return data.decode("utf-8", "replace").encode("utf-16")
    if how == "truncate":
        return data[:draw(st.integers(0, len(data)))]
    if how == "nul":
        return data.replace(b",", b"\x00", 1)
    return data


manifest_files = st.one_of(jsonl_files(), csv_files(),
                           st.tuples(st.sampled_from([".jsonl", ".csv", ".parquet"]), st.binary(max_size=64)))


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except DataError as exc:
        return exc


def check_file(folder: Path, case: tuple[str, bytes]) -> None:
    suffix, data = case
    path = folder / f"m{suffix}"
    path.write_bytes(data)
    records = _outcome(lambda: list(iter_records(path)))
    count = _outcome(lambda: count_records(path))
    rows = _outcome(lambda: read_manifest(path))
    for got in (records, count, rows):
        if isinstance(got, DataError):
            assert str(path) in str(got) or path.name in str(got), f"error does not name the file: {got}"
    if isinstance(records, DataError):
        if suffix != ".parquet":
            assert isinstance(rows, DataError)
        return
    assert count == len(records), f"count_records {count} != {len(records)} rows read"
    assert [n for n, _ in records] == list(range(1, len(records) + 1))
    good = [r for _, r in records if isinstance(r, dict)]
    if len(good) == len(records) and good:
        assert rows == good
    else:
        assert isinstance(rows, DataError)
    splits = _outcome(lambda: load_manifest_splits(train=path, columns={"text": "claim"}))
    assert not isinstance(splits, Exception) or isinstance(splits, DataError)


def _run(tmp_path: Path, examples: int, nightly: bool) -> None:
    run_property("manifest files (jsonl/csv/bytes)", manifest_files, lambda case: check_file(tmp_path, case),
                 examples, nightly=nightly)


def test_manifest_reader_sample(tmp_path: Path) -> None:
    _run(tmp_path, SAMPLE, False)


@pytest.mark.fuzz
def test_manifest_reader_nightly(tmp_path: Path) -> None:
    _run(tmp_path, NIGHTLY, True)
