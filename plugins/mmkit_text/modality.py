"""The ``text`` modality: a cell is a string (bytes are decoded as UTF-8; numbers become their text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmkit import DataError, Modality


class TextModality(Modality):
    """Text: a string cell. Bytes are decoded as UTF-8; a number (a CSV cell such as ``42``) is used
    as its text. Empty or whitespace-only cells are absent."""

    name = "text"
    default_encoder = "text-transformer"

    def is_absent(self, value: Any) -> bool:
        if isinstance(value, (bytes, bytearray)):
            return not bytes(value).strip()
        return super().is_absent(value)

    def load(self, value: Any, base_dir: Path | None = None) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = bytes(value)[exc.start:exc.start + 4]
                raise DataError(f"text cell is not valid UTF-8 (at byte {exc.start}: {bad!r})") from exc
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise DataError(f"a text cell must be a string, got {type(value).__name__}: {value!r:.60}")
