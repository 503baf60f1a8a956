"""Modalities: how a raw cell of a manifest becomes a value an encoder can preprocess.

A modality plugin registers a :class:`Modality` subclass through ``register_modalities``. This module
imports nothing heavy; subclasses should import their libraries (PIL, soundfile…) inside ``load``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


class Modality:
    """The loader of one kind of raw value.

    Attributes:
        name: the modality's name (``"image"``), matched with an encoder's ``modality``.
        default_encoder: encoder used when a recipe names the field but no encoder type.
    """

    name: str = ""
    default_encoder: str = ""

    def is_absent(self, value: Any) -> bool:
        """True for an empty cell: None, an empty string, NaN. A missing *file* is an error, not absence."""
        if value is None:
            return True
        if isinstance(value, str) and not value.strip():
            return True
        if isinstance(value, float) and math.isnan(value):
            return True
        return False

    def load(self, value: Any, base_dir: Path | None = None) -> Any:
        """Turn a present cell into the raw value the encoder's ``preprocess`` takes.

        Raise :class:`mmkit.DataError` (or any exception; the caller adds file/row/column) when
        the value cannot be read.
        """
        return value

    def resolve_path(self, value: Any, base_dir: Path | None = None) -> Path:
        """A file cell as an existing path: ``~`` expanded, relative paths resolved against
        ``base_dir`` (the manifest's folder). A missing file is a :class:`DataError` naming the
        resolved path (it is an error, not absence)."""
        import os

        from mmkit._internal.errors import DataError

        path = Path(os.path.expanduser(os.fspath(value).strip()))
        relative = base_dir is not None and not path.is_absolute()
        if base_dir is not None and relative:
            path = Path(base_dir) / path
        if not path.is_file():
            where = f" (resolved against {base_dir})" if relative else ""
            raise DataError(f"{self.name} file not found: {path}{where}")
        return path
