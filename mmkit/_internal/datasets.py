"""Datasets in memory: named splits of row dicts, plus the default mapping from fields to columns.

A dataset plugin registers a callable (``register_datasets``) whose keyword arguments are recipe
options under ``[data]`` and which returns :class:`DataSplits`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass
class DataSplits:
    """Rows per split.

    Attributes:
        splits: ``{"train": [row, ...], "val": [...], "test": [...]}``; a row maps column -> cell.
        columns: default field -> column mapping (``{"image": "image", "text": "claim", "label": "label"}``),
            which a recipe's ``[data] columns`` overrides.
        base_dir: folder that relative file paths in cells are resolved against.
        name: where the rows came from, for error messages (a file or dataset name).
        files: the manifest file of each split, for error messages (empty for in-memory datasets).
    """

    splits: dict[str, list[dict[str, Any]]]
    columns: dict[str, str | list[str]] = field(default_factory=dict)
    base_dir: Path | None = None
    name: str = "data"
    files: dict[str, str] = field(default_factory=dict)

    def merged_columns(self, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
        """Field -> column(s): these defaults overridden by a recipe's ``[data] columns``."""
        return {**self.columns, **(overrides or {})}
