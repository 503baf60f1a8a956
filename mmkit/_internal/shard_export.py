"""Write a dataset's splits as shards: WebDataset tar files (with the ``webdataset`` library's
``TarWriter``) or Parquet files, ``SPLIT-000000.tar`` ... of at most ``shard_size`` samples each.

A tar sample is ``KEY.png`` (the image, when a row has one image column; ``KEY.COLUMN.png`` for
each when it has several) plus ``KEY.json`` holding every other column, which the reader
(:mod:`mmkit._internal.shards`) turns back into columns of their own. Parquet images are PNG bytes.
:func:`mmkit._internal.cli_data.write_export` writes into a hidden folder and renames it into place.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from mmkit._internal.errors import DataError

FORMATS = ("jsonl", "webdataset", "parquet")
SHARD_NAME = re.compile(r"^(train|val|test)-[0-9]{6}\.(tar|parquet)$")


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _images(row: dict[str, Any]) -> list[str]:
    from PIL import Image

    return [k for k, v in row.items() if isinstance(v, Image.Image)]


def tar_sample(row: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """The members of one row's sample (``__key__``, ``png``/``COLUMN.png``, ``json``)."""
    from mmkit._internal.cli_data import _jsonable

    images = _images(row)
    sample: dict[str, Any] = {"__key__": key}
    rest = {}
    for name, value in row.items():
        if name in images:
            sample["png" if len(images) == 1 else f"{_safe(name)}.png"] = _png(value)
        else:
            rest[str(name)] = _jsonable(value, f"{where} column {name}")
    sample["json"] = json.dumps(rest, ensure_ascii=False, allow_nan=False).encode("utf-8")
    return sample


def _safe(name: Any) -> str:
    text = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name))[:40]
    return text or "image"


def write_tar_shards(rows: list[dict[str, Any]], out: Path, split: str, shard_size: int, progress: Any = None,
                     task: Any = None) -> list[str]:
    """``SPLIT-000000.tar`` ... under ``out``; returns the file names."""
    from webdataset.writer import TarWriter

    names = []
    for first in range(0, len(rows), shard_size):
        name = f"{split}-{first // shard_size:06d}.tar"
        # an int mtime: a float one makes tarfile write a PAX header before every member
        with TarWriter(str(out / name), encoder=False, mtime=0) as sink:
            for i in range(first, min(first + shard_size, len(rows))):
                sink.write(tar_sample(rows[i], f"{i:06d}", f"{split} row {i + 1}"))
                if task is not None:
                    progress.advance(task)
        names.append(name)
    return names


def write_parquet_shards(rows: list[dict[str, Any]], out: Path, split: str, shard_size: int, progress: Any = None,
                         task: Any = None) -> list[str]:
    """``SPLIT-000000.parquet`` ...; images as PNG bytes, row groups of at most 256 rows."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError("writing Parquet needs pyarrow: pip install 'mmkit[stream]'") from exc
    from mmkit._internal.cli_data import _jsonable

    names = []
    for first in range(0, len(rows), shard_size):
        name = f"{split}-{first // shard_size:06d}.parquet"
        chunk = []
        for i in range(first, min(first + shard_size, len(rows))):
            images = set(_images(rows[i]))
            chunk.append({k: _png(v) if k in images else _jsonable(v, f"{split} row {i + 1} column {k}")
                          for k, v in rows[i].items()})
            if task is not None:
                progress.advance(task)
        try:
            table = pa.Table.from_pylist(chunk)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # e.g. a column mixing numbers and text
            last = first + len(chunk)
            raise DataError(f"{split} rows {first + 1}-{last} ({name}): cannot be written as Parquet: {exc}") from None
        pq.write_table(table, out / name, row_group_size=256)
        names.append(name)
    return names


def export_shards(data: Any, out: Path, fmt: str, shard_size: int, progress: Any = None) -> dict[str, list[str]]:
    """Write every non-empty split of ``data`` (DataSplits) as shards into the new folder ``out``."""
    write = write_tar_shards if fmt == "webdataset" else write_parquet_shards
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, rows in data.splits.items():
        if not rows:
            continue
        if split not in ("train", "val", "test"):
            raise DataError(f"{data.name}: split {split!r} is not one of train, val, test")
        task = progress.add_task(split, total=len(rows)) if progress is not None else None
        written[split] = write(rows, out, split, shard_size, progress, task)
    return written


def pattern(names: list[str]) -> str:
    """``train-{000000..000003}.tar`` for a split's shard names (the name itself for one shard)."""
    if len(names) == 1:
        return names[0]
    split, rest = names[0].split("-", 1)
    suffix = rest.split(".", 1)[1]
    return f"{split}-{{000000..{len(names) - 1:06d}}}.{suffix}"


def recipe_columns(columns: dict[str, Any], sample_row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The dataset's field -> column mapping as the shards spell it (a tar's single image is ``png``)."""
    if fmt != "webdataset":
        return dict(columns)
    images = _images(sample_row)
    out = {}
    for fld, col in columns.items():
        if isinstance(col, str) and col in images:
            out[fld] = "png" if len(images) == 1 else f"{_safe(col)}.png"
        else:
            out[fld] = col
    return out
