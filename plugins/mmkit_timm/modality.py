"""The ``image`` modality: a cell is a path (relative to the manifest's folder) or a PIL image.

Loading always yields an RGB ``PIL.Image``: palette, alpha, grey, CMYK and 16-bit images are
converted (transparent areas are composited onto white; 16-bit values are scaled to 8 bits), and
the EXIF orientation is applied. A cell that names a file that does not exist is an error, not an
absent value -- absence is an empty cell.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from mmkit import DataError, Modality


def to_rgb(image: Any) -> Any:
    """Convert a PIL image of any mode to RGB (see the module docstring for the rules)."""
    from PIL import Image, ImageOps

    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unreadable
        pass
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        import numpy as np

        arr = np.asarray(image, dtype=np.float64)
        if mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        elif mode != "F" and arr.size and arr.max() > 255:
            arr = arr / 257.0  # 16-bit range -> 8-bit range
        arr = np.nan_to_num(arr).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def open_image(source: Any, what: str) -> Any:
    """Open and fully decode an image file (path or file object); errors become DataError naming ``what``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError as exc:
        raise DataError(f"image file not found: {what}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot read image {what}: {type(exc).__name__}: {exc}") from exc


class ImageModality(Modality):
    """Images: a path to an image file (relative paths resolve against the manifest's folder), a PIL
    image, raw encoded bytes, or a ``{"bytes": ..., "path": ...}`` dict (as Parquet exports hold)."""

    name = "image"
    default_encoder = "timm"

    def load(self, value: Any, base_dir: Path | None = None) -> Any:
        from PIL import Image

        if isinstance(value, Image.Image):
            return to_rgb(value)
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                value = value["bytes"]
            elif value.get("path"):
                value = value["path"]
            else:
                raise DataError(f"an image cell given as a dict needs a 'bytes' or 'path' key, got {sorted(value)}")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return open_image(io.BytesIO(bytes(value)), "(image bytes in the cell)")
        if isinstance(value, (str, os.PathLike)):
            path = self.resolve_path(value, base_dir)
            return open_image(path, str(path))
        raise DataError(f"an image cell must be a file path or a PIL image, got {type(value).__name__}")
