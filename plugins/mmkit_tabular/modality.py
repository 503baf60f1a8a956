"""The ``tabular`` modality: a cell is a dict ``{column: value}`` (a recipe field mapped to a list of
columns gives one) or a list of numbers (columns ``"0"``, ``"1"``, ...)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mmkit import DataError, Modality


def value_is_absent(value: Any) -> bool:
    """None, an empty/blank string or NaN."""
    if value is None:
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return isinstance(value, float) and math.isnan(value)


class TabularModality(Modality):
    """A row of named values: ``{column: value}``, a list of numbers, or a JSON object/list in a string.
    A single scalar becomes the column ``"value"``. The cell is absent when every value is absent."""

    name = "tabular"
    default_encoder = "tabular-mlp"

    def is_absent(self, value: Any) -> bool:
        if isinstance(value, dict):
            return all(value_is_absent(v) for v in value.values())
        if isinstance(value, (list, tuple)):
            return all(value_is_absent(v) for v in value)
        return value_is_absent(value)

    def load(self, value: Any, base_dir: Path | None = None) -> dict[str, Any]:
        if isinstance(value, str) and value.strip()[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise DataError(f"tabular cell looks like JSON but does not parse: {exc}") from exc
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return {str(i): v for i, v in enumerate(value)}
        try:  # numpy arrays and similar
            import numpy as np

            if isinstance(value, np.ndarray):
                return {str(i): v.item() for i, v in enumerate(value.ravel())}
        except ImportError:  # pragma: no cover
            pass
        if isinstance(value, (str, int, float, bool)):
            return {"value": value}
        raise DataError(f"a tabular cell must be a dict or a list of values, got {type(value).__name__}")
