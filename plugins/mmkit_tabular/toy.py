"""The ``toy-tabular`` dataset: a small regression problem over numeric, categorical and text columns.

Each row has ``size`` and ``weight`` (numbers; ``weight`` is sometimes missing), ``city`` (one of
four), ``note`` (a few words, sometimes absent) and the regression ``target``::

    target = 0.03 * size - 0.04 * (weight - 50) + city effect + note word effects + noise

Words of the note carry part of the signal (``renovated`` +1.5, ``garden`` +1, ``noisy`` -1,
``damaged`` -1.5; other words are neutral), so text helps beyond the table. Deterministic from
``seed``.
"""

from __future__ import annotations

import random
from typing import Any

from mmkit import DataSplits, ParameterError

CITY_EFFECT = {"paris": 2.0, "nice": 1.0, "lyon": 0.5, "lille": 0.0}
WORD_EFFECT = {"renovated": 1.5, "garden": 1.0, "noisy": -1.0, "damaged": -1.5}
MAX_ROWS = 1_000_000  # per split: rows are held in memory
NEUTRAL = ("bright", "quiet street", "second floor", "near station", "small kitchen", "big windows", "old building",
           "parking", "south facing", "top floor")


def make_row(rng: random.Random, p_missing: float = 0.05) -> dict[str, Any]:
    """One row drawn with ``rng``."""
    size = round(rng.uniform(20, 200), 1)
    weight = round(rng.gauss(50, 15), 1)
    city = rng.choice(sorted(CITY_EFFECT))
    words = rng.sample(NEUTRAL, rng.randint(1, 2)) + rng.sample(sorted(WORD_EFFECT), rng.randint(0, 2))
    rng.shuffle(words)
    note = " ".join(words)
    target = (0.03 * size - 0.04 * (weight - 50) + CITY_EFFECT[city]
              + sum(WORD_EFFECT.get(w, 0.0) for w in note.split()) + rng.gauss(0, 0.2))
    return {
        "size": size,
        "weight": None if rng.random() < p_missing else weight,
        "city": city,
        "note": None if rng.random() < p_missing else note,
        "target": round(target, 3),
    }


def toy_tabular(n_train: int = 1000, n_val: int = 200, n_test: int = 200, seed: int = 0,
                p_missing: float = 0.05) -> DataSplits:
    """Generate the ``toy-tabular`` splits.

    Args:
        n_train: number of training rows.
        n_val: number of validation rows.
        n_test: number of test rows.
        seed: random seed; the same seed gives the same rows.
        p_missing: probability that ``weight`` (and, independently, ``note``) is missing in a row.
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ROWS:
            raise ParameterError(f"toy-tabular: {name} must be an integer from 0 to {MAX_ROWS}, got {value!r}")
    if not 0.0 <= p_missing <= 1.0:
        raise ParameterError(f"toy-tabular: p_missing must be between 0 and 1, got {p_missing!r}")
    splits = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rng = random.Random(f"toy-tabular-{seed}-{split}")
        splits[split] = [make_row(rng, p_missing) for _ in range(n)]
    columns: dict[str, Any] = {"tabular": ["size", "weight", "city"], "text": "note", "target": "target"}
    return DataSplits(splits, columns=columns, name="toy-tabular")
