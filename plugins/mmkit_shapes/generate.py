"""The ``shapes`` dataset: 1-3 coloured shapes in a 2x2 grid, with text about them.

Each row has:

* ``image``: a PIL RGB image (``image_size`` px, default 64).
* ``caption``: the true description in reading order, e.g. ``"a red circle left of a blue square"``.
* ``claim``: ``"there is a green triangle"``, true with probability 1/2; ``label`` is 1 when true.
  Image-only and text-only models are at chance on the claim task; a fused model can solve it.
* ``first_shape`` / ``first_color``: class of the first shape in reading order (top-left first).
* ``n_shapes``: how many shapes are drawn.

Rows are deterministic given ``seed`` and the split sizes. The sizes are checked before anything is
drawn (the images are held in memory): ``image_size`` from 8 to 1024 px, at most 1,000,000 rows per
split and 4 GiB of pixels in all.
"""

from __future__ import annotations

import random
from typing import Any

from mmkit import DataSplits, ParameterError

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))  # (row, col) of a 2x2 grid, in reading order
IMAGE_SIZES = (8, 1024)
MAX_ROWS = 1_000_000
MAX_PIXEL_BYTES = 4 << 30


def check_sizes(sizes: dict[str, object], image_size: object) -> None:
    """Refuse split sizes and an image size that are not ints in range, before any image is drawn."""
    for name, value in {**sizes, "image_size": image_size}.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParameterError(f"shapes: {name} must be an integer, got {type(value).__name__} {value!r}")
    for name, value in sizes.items():
        if not 0 <= value <= MAX_ROWS:  # type: ignore[operator]
            raise ParameterError(f"shapes: {name} must be between 0 and {MAX_ROWS}, got {value}")
    if not IMAGE_SIZES[0] <= image_size <= IMAGE_SIZES[1]:  # type: ignore[operator]
        raise ParameterError(f"shapes: image_size must be between {IMAGE_SIZES[0]} and {IMAGE_SIZES[1]} px, "
                             f"got {image_size}")
    total = sum(sizes.values()) * image_size ** 2 * 3  # type: ignore[operator]
    if total > MAX_PIXEL_BYTES:
        raise ParameterError(f"shapes: {sum(sizes.values())} images of {image_size} px would hold "  # type: ignore[arg-type]
                             f"{total / 2**30:.1f} GiB in memory (at most {MAX_PIXEL_BYTES >> 30} GiB); "
                             f"use fewer rows or smaller images")


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
        image_size: side of the square images in pixels (8 to 1024).
    """
    check_sizes({"n_train": n_train, "n_val": n_val, "n_test": n_test}, image_size)
    splits = {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rng = random.Random(f"shapes-{seed}-{split}")
        splits[split] = [make_row(rng, image_size) for _ in range(n)]
    return DataSplits(splits, columns={"image": "image", "text": "claim", "label": "label"}, name="shapes")
