"""Data handed to :func:`mmkit.fit` in memory: rows from a list of dicts, a pandas DataFrame or a
Hugging Face ``datasets.Dataset``, and their materialisation as manifests in the run directory.

pandas, polars and datasets are never imported here: a value is recognised by its methods
(``to_dict(orient="records")``, ``to_dicts()``, a ``datasets`` object's ``features``), so none of
them is needed to use the rest.
Cells become plain JSON values (numpy scalars -> Python numbers, NaN/None/pd.NA -> None = an absent
value). Images given as objects (PIL images, encoded bytes, ``{"bytes": ...}`` dicts as Parquet and
``datasets`` hold them) are written as files next to the manifest, so a run directory holds every
byte it was trained on; paths stay paths (relative ones made absolute against ``base_dir``).
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmkit._internal.errors import DataError
from mmkit._internal.safeio import atomic_file, dumps_json

Row = dict[str, Any]
#: what a split may be given as (besides a manifest path)
INLINE_HINT = "a manifest path, a list of dicts, a pandas DataFrame or a datasets.Dataset"


def is_path(data: Any) -> bool:
    return isinstance(data, (str, Path))


def _is_dataframe(data: Any) -> bool:
    return hasattr(data, "to_dict") and hasattr(data, "columns") and hasattr(data, "iloc")


def _is_hf_dataset(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "features")


def to_rows(data: Any, what: str = "data") -> list[Row]:
    """The rows of in-memory data as plain dicts (see the module docstring); ``what`` names it in errors."""
    if _is_dataframe(data):
        records: Iterable[Any] = data.to_dict(orient="records")
    elif hasattr(data, "to_dicts") and hasattr(data, "columns"):  # a polars DataFrame
        records = data.to_dicts()
    elif _is_hf_dataset(data):
        records = iter(data)
    elif isinstance(data, Mapping):
        raise DataError(f"{what}: expected {INLINE_HINT}, got a single dict (wrap it in a list: one dict per row)")
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
        records = data
    else:
        raise DataError(f"{what}: expected {INLINE_HINT}, got {type(data).__name__}")
    rows = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise DataError(f"{what} row {number}: expected a dict, got {type(record).__name__}")
        rows.append({str(k): plain(v) for k, v in record.items()})
    if not rows:
        raise DataError(f"{what}: no rows")
    return rows


def plain(value: Any) -> Any:
    """A cell as a JSON-able value where it is a number, text or list; images and bytes as they are."""
    if value is None or isinstance(value, (str, bytes, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas' missing markers
        return None
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalars and arrays
        return plain(value.tolist())
    return value  # a PIL image, or another object a modality may read


# ------------------------------------------------------------------------------------------ files
def _is_image_object(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


def _is_blob(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray)) or (isinstance(value, Mapping) and value.get("bytes") is not None)


def _extension(blob: bytes) -> str:
    """The file extension of encoded bytes (PIL's format name), ``.bin`` if PIL cannot tell."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(blob)) as img:
            fmt = (img.format or "").lower()
    except Exception:  # noqa: BLE001 - not an image PIL knows: the bytes are written unchanged
        return ".bin"
    return {"jpeg": ".jpg", "tiff": ".tif"}.get(fmt, f".{fmt}" if fmt else ".bin")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)[:40] or "col"


def _path_columns(rows: Sequence[Row], base: Path) -> set[str]:
    """Columns whose every non-empty string is a relative path to an existing file under ``base``
    (a text column is never one: its cells are not all files)."""
    out = set()
    for col in {k for r in rows for k in r}:
        texts = [r[col] for r in rows if isinstance(r.get(col), str) and r[col]]
        if texts and all(len(t) < 4096 and "\n" not in t and not Path(t).is_absolute() and (base / t).is_file()
                         for t in texts):
            out.add(col)
    return out


def write_split(rows: Sequence[Row], manifest: Path, files: Path, split: str, base: Path,
                relative_files: bool) -> Path:
    """Write ``rows`` as the JSON Lines ``manifest``: image objects and bytes as files in ``files``
    (named ``SPLIT-ROW-COLUMN.EXT``; referenced relative to the manifest's folder when
    ``relative_files``, else absolute), relative paths made absolute against ``base``."""
    paths = _path_columns(rows, base)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(manifest) as fh:
        for number, row in enumerate(rows, start=1):
            out = {}
            for col, value in row.items():
                if _is_image_object(value) or _is_blob(value):
                    value = _write_file(value, files / f"{split}-{number:06d}-{_safe(col)}", split, number, col)
                    value = str(value.relative_to(manifest.parent)) if relative_files else str(value.resolve())
                elif col in paths:
                    value = str((base / value).resolve())
                elif isinstance(value, Mapping) and value.get("path"):  # {"bytes": None, "path": ...}
                    value = str((base / value["path"]).resolve())
                out[col] = value
            fh.write(dumps_json(out, ensure_ascii=False) + "\n")
    return manifest


def _write_file(value: Any, stem: Path, split: str, number: int, col: str) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    if _is_image_object(value):
        target = stem.with_suffix(".png")  # lossless: the pixels trained on are the pixels given
        with atomic_file(target, "wb") as fh:
            try:
                value.save(fh, format="PNG")
            except (OSError, ValueError) as exc:
                raise DataError(f"{split} row {number} column {col}: cannot save the image: {exc}") from exc
        return target
    blob = bytes(value["bytes"] if isinstance(value, Mapping) else value)
    target = stem.with_suffix(_extension(blob))
    with atomic_file(target, "wb") as fh:
        fh.write(blob)
    return target


__all__ = ["INLINE_HINT", "is_path", "plain", "to_rows", "write_split"]
