"""Manifests: tables of samples in CSV, JSON Lines or Parquet files, read into row dicts.

* CSV: the header names the columns; an empty cell is ``None`` (absent); a cell that is exactly an
  integer (``42``, ``-3``; no leading zeros) becomes an ``int``, a decimal/exponent number (``0.5``,
  ``1e-3``) a ``float``; everything else stays a string (``007``, ``1,5``, ``nan``, ``inf``).
* JSON Lines: one JSON object per line, types as written; blank lines are skipped; a key missing
  from a row is an absent cell.
* Parquet: needs ``pyarrow`` (``pip install mmkit[parquet]``); nulls are ``None``.

Relative file paths in cells resolve against the manifest's folder (``DataSplits.base_dir``).
Nothing here imports torch.
"""

from __future__ import annotations

import csv
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from mmkit.datasets import DataSplits
from mmkit.errors import DataError

FORMATS = (".csv", ".jsonl", ".parquet")
_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?(([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)")
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}


def parse_cell(text: str) -> Any:
    """A CSV cell: ``""`` -> None, clean integers -> int, clean decimals -> float, else the string."""
    if text == "" or not text.strip():
        return None
    stripped = text.strip()
    if _INT.fullmatch(stripped):
        return int(stripped)
    if _FLOAT.fullmatch(stripped):
        return float(stripped)
    return text


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``.csv``, ``.jsonl`` (also ``.ndjson``) or ``.parquet`` file as dicts.

    Raises DataError naming the file (and line) when it is missing, empty, or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(path)
    elif suffix in (".parquet", ".pq"):
        rows = _read_parquet(path)
    else:
        raise DataError(f"{path}: unknown manifest format {suffix!r}; use .csv, .jsonl or .parquet")
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    return rows


def _read_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None:
                return []
            blank = [i + 1 for i, name in enumerate(reader.fieldnames) if not (name or "").strip()]
            if blank:
                raise DataError(f"{path}: header column {blank[0]} has no name")
            rows = []
            for row in reader:
                extra = row.pop(None, None)  # type: ignore[call-overload]
                if extra:
                    raise DataError(f"{path} line {reader.line_num}: {len(extra)} more cell(s) than header columns")
                rows.append({k: (None if v is None else parse_cell(v)) for k, v in row.items()})
            return rows
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from exc


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> DataError:
    """``FILE line N: not UTF-8 text``: the line of the first undecodable byte (the decoder's own
    position is relative to the chunk it was reading)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as full:
        line = data.count(b"\n", 0, full.start) + 1
        return DataError(f"{path} line {line}: not UTF-8 text (byte {full.start}: "
                         f"{data[full.start:full.start + 4]!r}); save the file as UTF-8")
    return DataError(f"{path}: not UTF-8 text ({exc})")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    try:
        with path.open(encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path} line {number}: invalid JSON: {exc.msg} (column {exc.colno})") from exc
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from exc
    return rows


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"{path}: reading Parquet needs pyarrow: pip install mmkit[parquet]") from exc
    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
        raise DataError(f"{path}: cannot read Parquet: {exc}") from exc


def _column_names(columns: Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, str | None]]:
    """(column, field) pairs of a field -> column(s) mapping, or (column, None) of a list of names."""
    out: list[tuple[str, str | None]] = []
    items = columns.items() if isinstance(columns, Mapping) else ((None, c) for c in columns)
    for field, value in items:
        for col in ([value] if isinstance(value, str) else list(value or [])):
            out.append((str(col), field))
    return out


def check_columns(rows: list[dict[str, Any]], columns: Mapping[str, Any] | Iterable[Any], file: str | Path) -> None:
    """Raise DataError when a column named by ``columns`` (field -> column or list of columns, or a
    plain list of names) appears in none of ``rows``; the message names the column, field and file."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    for col, field in _column_names(columns):
        if col not in seen:
            import difflib

            close = difflib.get_close_matches(col, list(seen), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            for_field = f" (field {field!r})" if field else ""
            raise DataError(f"{file}: column {col!r}{for_field} not found; columns are "
                            f"{', '.join(map(repr, seen)) or '(none)'}{hint}")


def where(file: str | Path, row: int | str, column: str | list[str] | tuple[str, ...]) -> str:
    """``"FILE row N column C"``, the location prefix of data errors (a list of columns is joined)."""
    col = ", ".join(map(str, column)) if isinstance(column, (list, tuple)) else column
    return f"{file} row {row} column {col}"


@contextmanager
def data_context(file: str | Path, row: int | str, column: str | list[str] | tuple[str, ...]) -> Iterator[None]:
    """Turn any error raised inside into DataError ``"FILE row N column C: ..."``.

    Wrap ``modality.load`` and ``encoder.preprocess`` calls with it, so a bad value (a missing image,
    a non-numeric value in a numeric column) is reported where it is.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported with its location
        detail = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{where(file, row, column)}: {detail}") from exc


def load_cell(modality: Any, cell: Any, base_dir: Path | None, file: str | Path, row: int | str,
              column: str | list[str]) -> Any:
    """``modality.load(cell, base_dir)`` with any error turned into DataError
    ``"FILE row N column C: ..."`` (``row`` is shown as given; callers pass 1-based row numbers)."""
    with data_context(file, row, column):
        return modality.load(cell, base_dir)


def load_manifest_splits(train: str | Path | None = None, val: str | Path | None = None,
                         test: str | Path | None = None, split_column: str | None = None,
                         columns: Mapping[str, Any] | None = None) -> DataSplits:
    """Read manifests into :class:`DataSplits`.

    Either one file per split (``train``/``val``/``test``), or one file (``train``) whose
    ``split_column`` says each row's split (``train``; ``val``/``valid``/``validation``/``dev``;
    ``test``; case-insensitive). ``columns`` (field -> column or list of columns) is checked against
    every file and becomes the splits' default mapping. ``base_dir`` is the folder of the ``train``
    manifest (else the first one given): relative paths in all splits resolve against it.
    """
    files = {s: Path(p) for s, p in (("train", train), ("val", val), ("test", test)) if p is not None}
    if not files:
        raise DataError("no manifest given: set train (and val/test, or a split column)")
    splits: dict[str, list[dict[str, Any]]] = {}
    if split_column is not None:
        if len(files) > 1:
            raise DataError(f"split_column={split_column!r} takes one manifest, got {len(files)} "
                            f"({', '.join(map(str, files.values()))})")
        path = next(iter(files.values()))
        rows = read_manifest(path)
        check_columns(rows, [split_column], path)
        splits = {"train": [], "val": [], "test": []}
        for number, row in enumerate(rows, start=1):
            value = row.get(split_column)
            split = SPLIT_NAMES.get(str(value).strip().lower()) if value is not None else None
            if split is None:
                raise DataError(f"{path} row {number} column {split_column}: unknown split {value!r} "
                                "(use train, val or test)")
            splits[split].append(row)
        if columns:
            check_columns(rows, columns, path)
        name = str(path)
        split_files = {s: str(path) for s in splits}
    else:
        for split, path in files.items():
            splits[split] = read_manifest(path)
            if columns:
                check_columns(splits[split], columns, path)
        name = str(files.get("train", next(iter(files.values()))))
        split_files = {s: str(p) for s, p in files.items()}
    base = files.get("train", next(iter(files.values()))).resolve().parent
    return DataSplits(splits, columns=dict(columns or {}), base_dir=base, name=name, files=split_files)


__all__ = ["FORMATS", "check_columns", "data_context", "load_cell", "load_manifest_splits", "parse_cell",
           "read_manifest", "where"]
