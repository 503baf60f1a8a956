"""The ``shapes`` dataset: 1-3 coloured shapes in a 2x2 grid, with text about them.

Each row has:

* ``image``: a PIL RGB image (``image_size`` px, default 64).
* ``caption``: the true description in reading order, e.g. ``"a red circle left of a blue square"``.
* ``claim``: ``"there is a green triangle"``, true with probability 1/2; ``label`` is 1 when true.
  Image-only and text-only models are at chance on the claim task; a fused model can solve it.
* ``first_shape`` / ``first_color``: class of the first shape in reading order (top-left first).
* ``n_shapes``: how many shapes are drawn.

Rows are deterministic given ``seed`` and the split sizes.
"""

from __future__ import annotations

import random
from typing import Any

from mmkit.datasets import DataSplits

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, col) of a 2x2 grid, in reading order


def _draw(draw: Any, shape: str, color: tuple[int, int, int], box: tuple[float, float, float, float]) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)


def _relation(a: tuple[int, int], b: tuple[int, int]) -> str:
    if a[0] == b[0]:
        return "left of"
    return "above"


def make_row(rng: random.Random, image_size: int = 64) -> dict[str, Any]:
    """One sample drawn with ``rng``."""
    from PIL import Image, ImageDraw

    n = rng.randint(1, 3)
    cells = sorted(rng.sample(CELLS, n))
    objects = [(rng.choice(SHAPES), rng.choice(list(COLORS))) for _ in cells]
    image = Image.new("RGB", (image_size, image_size), (245, 245, 245))
    draw = ImageDraw.Draw(image)
    half = image_size / 2
    for (row, col), (shape, color) in zip(cells, objects):
        size = half * rng.uniform(0.55, 0.8)
        x0 = col * half + rng.uniform(0.05 * half, half - size - 0.05 * half)
        y0 = row * half + rng.uniform(0.05 * half, half - size - 0.05 * half)
        _draw(draw, shape, COLORS[color], (x0, y0, x0 + size, y0 + size))
    words = [f"a {objects[0][1]} {objects[0][0]}"]
    for i in range(1, n):
        words.append(f"{_relation(cells[i - 1], cells[i])} a {objects[i][1]} {objects[i][0]}")
    present = {(color, shape) for shape, color in objects}
    if rng.random() < 0.5:
        color, shape = rng.choice(sorted(present))
        label = 1
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in present]
        color, shape = rng.choice(absent)
        label = 0
    return {
        "image": image,
        "caption": " ".join(words),
        "claim": f"there is a {color} {shape}",
        "label": label,
        "first_shape": objects[0][0],
        "first_color": objects[0][1],
        "n_shapes": n,
    }


def shapes(n_train: int = 2000, n_val: int = 500, n_test: int = 500, seed: int = 0,
           image_size: int = 64) -> DataSplits:
    """Generate the ``shapes`` splits.

    Args:
        n_train: number of training rows.
        n_val: number of validation rows.
        n_test: number of test rows.
        seed: random seed; the same seed gives the same rows.
        image_size: side of the square images in pixels.
    """
    splits = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rng = random.Random(f"shapes-{seed}-{split}")
        splits[split] = [make_row(rng, image_size) for _ in range(n)]
    return DataSplits(splits, columns={"image": "image", "text": "claim", "label": "label"}, name="shapes")
