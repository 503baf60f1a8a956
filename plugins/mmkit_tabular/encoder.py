"""The ``tabular-mlp`` encoder: one token per column, pooled by an MLP over all column tokens."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from mmkit import DataError, Embedding, Encoder, ParameterError
from mmkit_tabular.modality import value_is_absent

UNKNOWN, MISSING = 0, 1  # reserved categorical indices


F32_MAX = 3.4028234663852886e38  # values are float32 tensors in the model


def parse_number(value: Any) -> float | None:
    """A finite float32-range float, None for an absent value (NaN included); raises ValueError with
    the reason when ``value`` is not a number, is infinite, or is beyond float32's range."""
    if value_is_absent(value):
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value.strip() if isinstance(value, str) else value)  # numpy scalars too
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number") from None
    except OverflowError:  # a huge JSON integer
        raise ValueError(f"{value!r} is beyond float32's range (±3.4e38)") from None
    if math.isnan(out):
        return None
    if math.isinf(out):
        raise ValueError(f"{value!r} is not a finite number")
    if abs(out) > F32_MAX:
        raise ValueError(f"{value!r} is beyond float32's range (±3.4e38)")
    return out


def _looks_numeric(value: Any) -> bool:
    """Parses as a float at all (inf and huge values included): such a column is numeric, and its
    bad values are errors rather than a reason to make the column categorical."""
    if value_is_absent(value) or isinstance(value, bool):
        return True
    try:
        float(value.strip() if isinstance(value, str) else value)
        return True
    except (TypeError, ValueError):
        return False
    except OverflowError:
        return True


def _category(value: Any) -> str:
    return str(value).strip() if not isinstance(value, float) or not value.is_integer() else str(int(value))


class TabularMLPEncoder(Encoder):
    """Encodes a row of numeric and categorical columns: one token per column, and an MLP over them.

    ``fit`` learns from the training split which columns are numeric (unless given), the mean/std of
    each numeric column and the vocabulary of each categorical one; the embedding tables are
    allocated there (their sizes depend on the data) and saved with the model's fit state.
    A numeric token is ``standardised value * w_col + col_embedding``; a missing numeric value in a
    present row is imputed with the training mean (0 after standardising) and adds a learned
    missing-indicator vector instead. A categorical token is ``embedding(value) + col_embedding``;
    values unseen in training map to index 0 (unknown), missing ones to index 1.

    Args:
        numeric: numeric columns; None infers them in ``fit`` (columns whose training values all parse
            as numbers).
        categorical: categorical columns; None means every other column seen in training.
        dim: width of each column token and of the pooled vector.
        hidden: hidden width of the pooling MLP.
    """

    modality = "tabular"
    has_tokens = True
    deterministic_train = True

    def __init__(self, numeric: list[str] | None = None, categorical: list[str] | None = None, dim: int = 64,
                 hidden: int = 128) -> None:
        super().__init__()
        if numeric is not None and categorical is not None and set(numeric) & set(categorical):
            both = sorted(set(numeric) & set(categorical))
            raise ParameterError(f"tabular-mlp: columns both numeric and categorical: {both}")
        self.numeric_arg = None if numeric is None else [str(c) for c in numeric]
        self.categorical_arg = None if categorical is None else [str(c) for c in categorical]
        self.dim = dim
        self.hidden = hidden
        self.numeric: list[str] = []
        self.categorical: list[str] = []
        self.vocab: dict[str, list[str]] = {}
        self._index: dict[str, dict[str, int]] = {}
        self.fitted = False
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # device for tables built in fit

    # ------------------------------------------------------------------ fitting
    def fit(self, values: Sequence[Any]) -> None:
        """Choose numeric/categorical columns, compute mean/std and vocabularies, build the tables."""
        rows = [self._as_dict(v) for v in values]
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        given = set(self.numeric_arg or []) | set(self.categorical_arg or [])
        numeric = list(self.numeric_arg or [])
        categorical = list(self.categorical_arg or [])
        for col in (c for c in seen if c not in given):
            column_values = [r.get(col) for r in rows]
            if self.numeric_arg is None and all(_looks_numeric(v) for v in column_values):
                numeric.append(col)
            elif self.categorical_arg is None:
                categorical.append(col)
            elif self.numeric_arg is None:
                bad = next(v for v in column_values if not _looks_numeric(v))
                raise DataError(f"tabular column {col!r} has a non-numeric value {bad!r}; list it under categorical")
        if not numeric and not categorical:
            raise DataError("tabular-mlp: the training data has no tabular columns")
        means, stds = [], []
        for col in numeric:
            nums = [x for x in (self._number(r.get(col), col) for r in rows) if x is not None]
            mean = sum(nums) / len(nums) if nums else 0.0
            var = sum((x - mean) ** 2 for x in nums) / len(nums) if nums else 1.0
            means.append(mean)
            stds.append(math.sqrt(var) if var > 1e-12 else 1.0)
        vocab = {}
        for col in categorical:
            counts = Counter(_category(r[col]) for r in rows if not value_is_absent(r.get(col)))
            vocab[col] = sorted(counts, key=lambda v: (-counts[v], v))
        self._build({"numeric": numeric, "categorical": categorical, "mean": means, "std": stds, "vocab": vocab})

    def get_fit_state(self) -> dict[str, Any]:
        if not self.fitted:
            return {}
        return {"numeric": list(self.numeric), "categorical": list(self.categorical),
                "mean": list(self._stats[0]), "std": list(self._stats[1]),
                "vocab": {c: list(v) for c, v in self.vocab.items()}}

    def set_fit_state(self, state: Mapping[str, Any]) -> None:
        if state:
            self._build(state)

    def _build(self, state: Mapping[str, Any]) -> None:
        device = self._anchor.device
        self.numeric = [str(c) for c in state["numeric"]]
        self.categorical = [str(c) for c in state["categorical"]]
        self.vocab = {str(c): [str(v) for v in vals] for c, vals in state["vocab"].items()}
        self._stats = ([float(m) for m in state["mean"]], [float(s) for s in state["std"]])
        self._index = {c: {v: i + 2 for i, v in enumerate(vals)} for c, vals in self.vocab.items()}
        n_num, n_cat = len(self.numeric), len(self.categorical)
        n_cols = n_num + n_cat
        self.register_buffer("mean", torch.tensor(state["mean"], dtype=torch.float32, device=device).view(n_num),
                             persistent=False)
        self.register_buffer("std", torch.tensor(state["std"], dtype=torch.float32, device=device).view(n_num),
                             persistent=False)
        sizes = [len(self.vocab[c]) + 2 for c in self.categorical]
        offsets = [sum(sizes[:i]) for i in range(n_cat)]
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long, device=device), persistent=False)
        scale = 1.0 / math.sqrt(self.dim)
        self.num_weight = nn.Parameter(torch.randn(n_num, self.dim, device=device) * scale)
        self.num_missing = nn.Parameter(torch.randn(n_num, self.dim, device=device) * scale)
        self.col_embed = nn.Parameter(torch.randn(n_cols, self.dim, device=device) * scale)
        self.cat_embed = nn.Embedding(max(sum(sizes), 1), self.dim, device=device)
        nn.init.normal_(self.cat_embed.weight, std=scale)
        self.mlp = nn.Sequential(nn.Linear(n_cols * self.dim, self.hidden), nn.GELU(),
                                 nn.Linear(self.hidden, self.dim)).to(device)
        self.fitted = True

    # ------------------------------------------------------------------ worker side
    @staticmethod
    def _as_dict(raw: Any) -> dict[str, Any]:
        if isinstance(raw, dict):
            return {str(k): v for k, v in raw.items()}
        if isinstance(raw, (list, tuple)):
            return {str(i): v for i, v in enumerate(raw)}
        raise DataError(f"tabular-mlp expects a loaded tabular row (dict), got {type(raw).__name__}")

    @staticmethod
    def _number(value: Any, column: str) -> float | None:
        try:
            return parse_number(value)
        except ValueError as exc:
            raise DataError(f"tabular column {column!r}: {exc} (the column is numeric)") from None

    def preprocess(self, raw: Any, train: bool = False) -> dict[str, Tensor]:
        """A row dict -> numeric values with a missing flag, and categorical indices."""
        self._require_fit()
        row = self._as_dict(raw)
        nums = [self._number(row.get(c), c) for c in self.numeric]
        cats = [MISSING if value_is_absent(row.get(c)) else self._index[c].get(_category(row[c]), UNKNOWN)
                for c in self.categorical]
        return {"num": torch.tensor([0.0 if x is None else x for x in nums], dtype=torch.float32),
                "missing": torch.tensor([x is None for x in nums], dtype=torch.bool),
                "cat": torch.tensor(cats, dtype=torch.long)}

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        return {k: torch.stack([i[k] for i in items]) for k in ("num", "missing", "cat")}

    # ------------------------------------------------------------------ model side
    def _require_fit(self) -> None:
        if not self.fitted:
            raise RuntimeError("tabular-mlp: call fit() on the training values (or set_fit_state) before use")

    def forward(self, inputs: Mapping[str, Tensor]) -> Embedding:
        self._require_fit()
        num, missing, cat = inputs["num"], inputs["missing"], inputs["cat"]
        n_num = len(self.numeric)
        z = ((num - self.mean) / self.std).masked_fill(missing, 0.0)
        num_tokens = z[..., None] * self.num_weight + missing[..., None].to(z.dtype) * self.num_missing
        cat_tokens = self.cat_embed(cat + self.offsets)
        tokens = torch.cat([num_tokens, cat_tokens], dim=1)
        tokens = tokens + self.col_embed
        pooled = self.mlp(tokens.flatten(1))
        batch = tokens.shape[0]
        present = torch.ones(batch, dtype=torch.bool, device=tokens.device)
        mask = torch.ones((batch, n_num + len(self.categorical)), dtype=torch.bool, device=tokens.device)
        return Embedding(pooled, present, tokens, mask)
