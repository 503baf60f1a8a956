"""``mmkit data``: commands for datasets and manifests.

``mmkit data export DATASET --out DIR`` writes a registered dataset as manifests (``train.jsonl``,
``val.jsonl``, ``test.jsonl``) with PIL images saved as PNG files under ``DIR/images/SPLIT/`` and
referenced by relative paths, so the export loads back like any user data. No torch is imported.
"""

from __future__ import annotations

import ast
import inspect
import json
import math
from pathlib import Path
from typing import Any, Callable

import click

from mmkit.errors import DataError, MmkitError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def split_sizes(n: int, sizes: str | None) -> tuple[int, int, int]:
    """Rows per split: ``sizes`` as ``"800,100,100"`` (counts) or ``"0.8,0.1,0.1"`` (fractions of
    ``n``); None splits ``n`` 80/10/10."""
    if sizes:
        parts = [p.strip() for p in sizes.split(",")]
        if len(parts) != 3:
            raise click.BadParameter(f"give three sizes (train,val,test), got {sizes!r}", param_hint="--split-sizes")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise click.BadParameter(f"sizes must be numbers, got {sizes!r}", param_hint="--split-sizes") from None
        if any(v < 0 for v in values):
            raise click.BadParameter("sizes must not be negative", param_hint="--split-sizes")
        if all(v.is_integer() for v in values) and any(v > 1 for v in values):
            return tuple(int(v) for v in values)  # type: ignore[return-value]
        fractions = values
    else:
        fractions = list(DEFAULT_FRACTIONS)
    total = sum(fractions) or 1.0
    val = int(round(n * fractions[1] / total))
    test = int(round(n * fractions[2] / total))
    return max(n - val - test, 0), val, test


def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {text!r}", param_hint="-o/--option")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return key.strip(), parsed


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item(), where)
        except (ValueError, RuntimeError):
            pass
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist(), where)
    raise DataError(f"{where}: cannot write a {type(value).__name__} value to JSON")


def dataset_arguments(fn: Callable[..., Any], sizes: tuple[int, int, int], seed: int | None,
                      options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a dataset callable: split sizes and seed where it takes them."""
    try:
        accepted = set(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        accepted = set()
    kwargs: dict[str, Any] = {}
    for key, value in zip(("n_train", "n_val", "n_test"), sizes):
        if key in accepted:
            kwargs[key] = value
    if seed is not None and "seed" in accepted:
        kwargs["seed"] = seed
    kwargs.update(options)
    return kwargs


def export_splits(data: Any, out: Path, progress: Any = None) -> dict[str, int]:
    """Write ``data`` (DataSplits) into ``out``: PNG files + one ``SPLIT.jsonl`` per non-empty split.

    Returns rows written per split.
    """
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rows in data.splits.items():
        if not rows:
            continue
        task = progress.add_task(f"{split}", total=len(rows)) if progress is not None else None
        image_dir = out / "images" / split
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                record = {}
                images = [k for k, v in row.items() if isinstance(v, Image.Image)]
                for key, value in row.items():
                    if isinstance(value, Image.Image):
                        image_dir.mkdir(parents=True, exist_ok=True)
                        name = f"{i:06d}.png" if len(images) == 1 else f"{i:06d}_{key}.png"
                        value.save(image_dir / name, format="PNG")
                        record[key] = f"images/{split}/{name}"
                    else:
                        record[key] = _jsonable(value, f"{split} row {i + 1} column {key}")
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                if task is not None:
                    progress.advance(task)
        counts[split] = len(rows)
    return counts


@click.group("data", context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Datasets and manifests.

    \b
    Examples:
      mmkit data export shapes --n 2000 --out data/shapes
      mmkit data export toy-tabular --split-sizes 800,100,100 --out data/toy
    """


@data.command("export")
@click.argument("dataset")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write the manifests and images to.")
@click.option("--n", "n", type=int, default=1000, show_default=True,
              help="Total number of rows (split 80/10/10 unless --split-sizes says otherwise).")
@click.option("--seed", type=int, default=None, help="Random seed passed to the dataset (default: the dataset's).")
@click.option("--split-sizes", "sizes", default=None, metavar="TRAIN,VAL,TEST",
              help="Rows per split as counts (800,100,100) or fractions of --n (0.8,0.1,0.1).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Extra dataset argument, e.g. -o image_size=32 (repeatable).")
def export_cmd(dataset: str, out: Path, n: int, seed: int | None, sizes: str | None, options: tuple[str, ...]) -> None:
    """Write the registered DATASET as JSONL manifests with PNG images (relative paths).

    \b
    Examples:
      mmkit data export shapes --n 200 --out data/shapes --seed 1
      mmkit data export shapes --split-sizes 1000,200,200 -o image_size=32 --out data/shapes32
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmkit.registry import get_registry

    if n < 0:
        raise click.BadParameter("must not be negative", param_hint="--n")
    info = get_registry().get("dataset", dataset)
    fn = info.load()
    kwargs = dataset_arguments(fn, split_sizes(n, sizes), seed, dict(_parse_option(o) for o in options))
    try:
        splits = fn(**kwargs)
    except TypeError as exc:
        raise MmkitError(f"dataset {dataset!r}: {exc}") from exc
    columns = getattr(splits, "columns", {}) or {}
    with Progress(TextColumn("{task.description:>5}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        counts = export_splits(splits, out, progress)
    written = ", ".join(f"{s}.jsonl ({c} rows)" for s, c in counts.items())
    click.echo(f"wrote {written} to {out}")
    if columns:
        mapping = ", ".join(f"{k} = {json.dumps(v)}" for k, v in columns.items())
        files = "\n".join(f'{s} = "{out / (s + ".jsonl")}"' for s in counts)
        click.echo(f"recipe:\n[data]\n{files}\ncolumns = {{ {mapping} }}")
