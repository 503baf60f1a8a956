"""Manifests: tables of samples in CSV, JSON Lines or Parquet files, read into row dicts.

* CSV: the header names the columns; an empty cell is ``None`` (absent); a cell that is exactly an
  integer (``42``, ``-3``; no leading zeros) becomes an ``int``, a decimal/exponent number (``0.5``,
  ``1e-3``) a ``float``; everything else stays a string (``007``, ``1,5``, ``nan``, ``inf``).
* JSON Lines: one JSON object per line, types as written; lines of only spaces/tabs are skipped;
  a key missing from a row is an absent cell. NaN is read as a missing number.
* Parquet: needs ``pyarrow`` (``pip install mmkit[parquet]``); nulls are ``None``.

Every tabular file mmkit reads (training manifests, ``predict``/``embed``/``eval`` inputs) goes
through :func:`iter_records`, so all of them agree on what a row is and on its number. Input is
bounded: nesting deeper than 64, integers longer than 1000 digits, cells over 128 KiB and lines over
64 MiB are errors naming the file and line; so is a CSV header that names one column twice.

Relative file paths in cells resolve against the manifest's folder (``DataSplits.base_dir``).
Nothing here imports torch.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmkit._internal.datasets import DataSplits
from mmkit._internal.errors import DataError
from mmkit._internal.safeio import MAX_INT_DIGITS, loads_json

FORMATS = (".csv", ".jsonl", ".parquet")
_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?(([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)")
MAX_LINE_CHARS = 64 << 20  # one JSONL row; longer lines are refused before they fill memory
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
               "dev": "val", "test": "test", "testing": "test"}


def parse_cell(text: str) -> Any:
    """A CSV cell: ``""`` -> None, clean integers -> int, clean decimals -> float, else the string.

    An integer of more than :data:`mmkit._internal.safeio.MAX_INT_DIGITS` digits is a DataError (Python
    cannot even convert one of 4300)."""
    if text == "" or not text.strip():
        return None
    stripped = text.strip()
    if _INT.fullmatch(stripped):
        if len(stripped.lstrip("+-")) > MAX_INT_DIGITS:
            raise DataError(f"a {len(stripped.lstrip('+-'))}-digit integer is too large "
                            f"(at most {MAX_INT_DIGITS} digits)")
        return int(stripped)
    if _FLOAT.fullmatch(stripped):
        return float(stripped)
    return text


# ------------------------------------------------------------------------------------------ the reader
Row = dict[str, Any]


def iter_records(path: str | Path) -> Iterator[tuple[int, Row | DataError]]:
    """``(row number, row)`` for each row of a ``.jsonl``/``.csv``/``.parquet`` file, read lazily.

    The one reader of tabular files: manifests (:func:`read_manifest`), ``predict``, ``embed`` and
    ``eval`` all see the same rows with the same numbers. Row numbers are 1-based data rows: a JSONL
    line holding only JSON whitespace (space, tab, CR, LF) is not a row, the CSV header is not a row
    and neither is an empty CSV line; lines end at LF, CRLF or CR. A row that cannot be parsed yields
    a :class:`DataError` naming the file, line and row in place of the dict, so callers may skip it;
    a file-level problem (missing, not UTF-8, duplicate CSV header) raises.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _iter_jsonl(path)
    elif suffix == ".csv":
        yield from _iter_csv(path)
    elif suffix in (".parquet", ".pq"):
        yield from _iter_parquet(path)
    else:
        raise DataError(f"{path}: unknown manifest format {suffix!r}; use .csv, .jsonl or .parquet")


def count_records(path: str | Path) -> int:
    """How many rows :func:`iter_records` yields (Parquet from its metadata; others by reading)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq") and path.is_file():
        return int(open_parquet(path).metadata.num_rows)
    return sum(1 for _ in iter_records(path))


def read_manifest(path: str | Path) -> list[Row]:
    """Rows of a ``.csv``, ``.jsonl`` (also ``.ndjson``) or ``.parquet`` file as dicts.

    Raises DataError naming the file (and line) when it is missing, empty, or malformed.
    """
    rows = []
    for _, row in iter_records(path):
        if isinstance(row, DataError):
            raise row
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    return rows


def _json_blank(line: str) -> bool:
    return not line.strip(" \t\r\n")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Row | DataError]]:
    number = 0
    try:
        with path.open(encoding="utf-8-sig") as fh:
            for line_no, line in enumerate(iter(lambda: fh.readline(MAX_LINE_CHARS + 1), ""), start=1):
                if len(line) > MAX_LINE_CHARS:
                    raise DataError(f"{path} line {line_no}: longer than {MAX_LINE_CHARS} characters")
                if _json_blank(line):
                    continue
                number += 1
                where = f"{path} line {line_no} (row {number})"
                try:
                    row = loads_json(line, str(path), where=where, error=DataError)
                except DataError as exc:
                    yield number, exc
                    continue
                if not isinstance(row, dict):
                    yield number, DataError(f"{where}: expected a JSON object, got {_json_type(row)}")
                    continue
                yield number, row
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "true/false", type(None): "null"}.get(type(value), "a number")


def _iter_csv(path: Path) -> Iterator[tuple[int, Row | DataError]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            try:
                header = reader.fieldnames
            except csv.Error as exc:
                raise DataError(f"{path} line 1: malformed CSV header: {_csv_message(exc)}") from None
            if header is None:
                return
            _check_header(path, header)
            number = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # the reader cannot go on after this
                    line = reader.reader.line_num  # DictReader's own line_num is updated after a good row only
                    raise DataError(f"{path} line {line}: malformed CSV: {_csv_message(exc)}") from None
                number += 1
                yield number, _csv_row(path, reader.line_num, number, row)
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None


def _csv_message(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"a cell is longer than {csv.field_size_limit()} characters"
    return text


def _check_header(path: Path, header: list[str]) -> None:
    """Header names: none blank, none repeated (a repeated name would silently keep its last cell)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if not (name or "").strip():
            raise DataError(f"{path}: header column {i} has no name")
        if name in seen:
            raise DataError(f"{path}: header names column {name!r} twice (columns {seen[name]} and {i}); "
                            f"rename one")
        seen[name] = i


def _csv_row(path: Path, line: int, number: int, row: dict[Any, Any]) -> Row | DataError:
    where = f"{path} line {line} (row {number})"
    extra = row.pop(None, None)
    if extra:
        return DataError(f"{where}: {len(extra)} more cell(s) than header columns")
    out = {}
    for key, value in row.items():
        try:
            out[key] = None if value is None else parse_cell(value)
        except DataError as exc:
            return DataError(f"{where} column {key}: {exc}")
    return out


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


def open_parquet(path: Path, doing: str = "reading", extra: str = "parquet") -> Any:
    """``pyarrow.parquet.ParquetFile`` of ``path``; a DataError naming the file (and the extra to install)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(f"{path}: {doing} Parquet needs pyarrow: pip install 'mmkit[{extra}]'") from exc
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
        raise DataError(f"{path}: cannot read Parquet: {exc}") from None


def _iter_parquet(path: Path) -> Iterator[tuple[int, Row | DataError]]:
    number = 0
    batches = open_parquet(path).iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - a corrupt file fails while reading, in pyarrow's words
            raise DataError(f"{path}: cannot read Parquet after row {number}: {exc}") from None
        for row in batch.to_pylist():
            number += 1
            yield number, row


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
    except Exception as exc:
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


__all__ = ["FORMATS", "check_columns", "count_records", "data_context", "iter_records", "load_cell",
           "load_manifest_splits", "parse_cell", "read_manifest", "where"]
