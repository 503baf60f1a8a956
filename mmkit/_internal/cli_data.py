"""``mmkit data``: commands for datasets and manifests.

``mmkit data export DATASET --out DIR`` writes a registered dataset as manifests (``train.jsonl``,
``val.jsonl``, ``test.jsonl``) with PIL images saved as PNG files under ``DIR/images/SPLIT/`` and
referenced by relative paths, so the export loads back like any user data. No torch is imported
(except by the ``webdataset`` library, for ``--format webdataset``).

The export never mixes with or overwrites what is already in DIR: it is written into a hidden
folder next to DIR and renamed into place when complete. DIR must be new or empty; ``--overwrite``
replaces an earlier export (a folder holding only the split manifests and ``images/``, or
``SPLIT-NNNNNN.tar``/``.parquet`` shards), never a folder with anything else in it. With ``--format
webdataset`` or ``parquet`` the splits are written as shards (:mod:`mmkit._internal.shard_export`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import click

from mmkit._internal.errors import DataError, MmkitError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
MAX_ROWS = 10**9
EXPORT_ENTRIES = {f"{s}.jsonl" for s in SPLITS} | {"images"}  # what an export writes (and may replace)


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
        if not all(math.isfinite(v) and 0 <= v <= MAX_ROWS for v in values):
            raise click.BadParameter(f"sizes must be numbers from 0 to {MAX_ROWS}, got {sizes!r}",
                                     param_hint="--split-sizes")
        if all(v.is_integer() for v in values) and any(v > 1 for v in values):
            return tuple(int(v) for v in values)  # type: ignore[return-value]
        fractions = values
    else:
        fractions = list(DEFAULT_FRACTIONS)
    total = sum(fractions) or 1.0
    val = round(n * fractions[1] / total)
    test = round(n * fractions[2] / total)
    return max(n - val - test, 0), val, test


def _parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a TOML value (as ``--set`` and ``mmkit eval -o`` do)."""
    from mmkit._internal.recipe import parse_value

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise click.BadParameter(f"expected KEY=VALUE, got {text[:80]!r}", param_hint="-o/--option")
    return key.strip(), parse_value(value.strip(), f"-o {key.strip()}")


def _jsonable(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
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


def dataset_arguments(accepted: set[str], sizes: tuple[int, int, int], seed: int | None,
                      options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for a dataset taking the parameters ``accepted``: split sizes and seed
    where it takes them, then the user's options."""
    kwargs: dict[str, Any] = {}
    for key, value in zip(("n_train", "n_val", "n_test"), sizes):
        if key in accepted:
            kwargs[key] = value
    if seed is not None and "seed" in accepted:
        kwargs["seed"] = seed
    kwargs.update(options)
    return kwargs


def export_splits(data: Any, out: Path, progress: Any = None) -> dict[str, int]:
    """Write ``data`` (DataSplits) into the new or empty folder ``out``: PNG files + one
    ``SPLIT.jsonl`` per non-empty split. Returns rows written per split."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rows in data.splits.items():
        if not rows:
            continue
        if f"{split}.jsonl" not in EXPORT_ENTRIES:
            raise DataError(f"{data.name}: split {split!r} is not one of {', '.join(SPLITS)}")
        task = progress.add_task(f"{split}", total=len(rows)) if progress is not None else None
        image_dir = out / "images" / split
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for i, row in enumerate(rows):
                record = {}
                images = [k for k, v in row.items() if isinstance(v, Image.Image)]
                for key, value in row.items():
                    if isinstance(value, Image.Image):
                        image_dir.mkdir(parents=True, exist_ok=True)
                        name = f"{i:06d}.png" if len(images) == 1 else f"{i:06d}_{_safe(key)}.png"
                        value.save(image_dir / name, format="PNG")
                        record[key] = f"images/{split}/{name}"
                    else:
                        record[key] = _jsonable(value, f"{split} row {i + 1} column {key}")
                f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
                if task is not None:
                    progress.advance(task)
        counts[split] = len(rows)
    return counts


def _safe(key: Any) -> str:
    """A column name usable in a file name (an image column may be called anything)."""
    text = "".join(c if c.isalnum() or c in "-_" else "_" for c in str(key))[:40]
    return text or "image"


def check_export_target(out: Path, overwrite: bool) -> None:
    """Refuse, before anything is generated, an ``--out`` that holds the user's files: a non-empty
    folder needs ``--overwrite``, and even then may hold only an earlier export's entries."""
    from mmkit._internal.safeio import name_max

    limit = name_max(out.parent)
    if any(len(os.fsencode(part)) > limit for part in out.parts):
        raise click.BadParameter(f"a name in {str(out)[:60]}... is longer than this filesystem allows ({limit} "
                                 f"bytes)", param_hint="--out")
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} is a file", param_hint="--out")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return
    from mmkit._internal.shard_export import SHARD_NAME

    foreign = [e for e in entries if e not in EXPORT_ENTRIES and not SHARD_NAME.match(e)]
    if foreign:
        raise click.BadParameter(f"{out} holds files that are not an mmkit export ({', '.join(foreign[:3])}); "
                                 f"choose a new or empty folder (nothing was written)", param_hint="--out")
    if not overwrite:
        raise click.BadParameter(f"{out} is not empty ({', '.join(entries)}); pass --overwrite to replace it, or "
                                 f"choose a new folder (nothing was written)", param_hint="--out")


def write_export(data: Any, out: Path, progress: Any = None, writer: Any = None) -> Any:
    """Export into a hidden folder next to ``out``, then put it in place of ``out`` (whose earlier
    export, if any, is removed only after the new one is complete). Nothing is left behind on failure.
    ``writer(data, folder, progress)`` writes the files (default: :func:`export_splits`)."""
    stage = out.parent / f".{out.name[:40]}.tmp-{uuid.uuid4().hex[:8]}"
    old = out.parent / f".{out.name[:40]}.old-{uuid.uuid4().hex[:8]}"
    created = [p for p in [out.parent, *out.parent.parents] if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        counts = (writer or export_splits)(data, stage, progress)
        if out.is_dir() and any(out.iterdir()):
            os.rename(out, old)
        elif out.is_dir():
            out.rmdir()
        os.rename(stage, out)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if old.exists() and not out.exists():
            os.rename(old, out)  # put the earlier export back
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError):
            raise MmkitError(f"cannot write the export to {out}: {exc.strerror or exc}; nothing was written"
                             ) from None
        raise
    shutil.rmtree(old, ignore_errors=True)
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
              help="New or empty folder to write the manifests and images to.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in --out (never other files).")
@click.option("--n", "n", type=click.IntRange(min=0, max=MAX_ROWS), default=1000, show_default=True,
              help="Total number of rows (split 80/10/10 unless --split-sizes says otherwise).")
@click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=None,
              help="Random seed passed to the dataset (default: the dataset's).")
@click.option("--split-sizes", "sizes", default=None, metavar="TRAIN,VAL,TEST",
              help="Rows per split as counts (800,100,100) or fractions of --n (0.8,0.1,0.1).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Extra dataset argument, a TOML value, e.g. -o image_size=32 (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "webdataset", "parquet"]), default="jsonl",
              show_default=True, help="jsonl manifests + PNG files, WebDataset tar shards, or Parquet shards "
                                      "(the last two stream in training: docs/data.md).")
@click.option("--shard-size", type=click.IntRange(min=1, max=MAX_ROWS), default=1000, show_default=True,
              help="Samples per shard (webdataset, parquet).")
def export_cmd(dataset: str, out: Path, overwrite: bool, n: int, seed: int | None, sizes: str | None,
               options: tuple[str, ...], fmt: str, shard_size: int) -> None:
    """Write the registered DATASET as JSONL manifests with PNG images (relative paths), or as shards.

    \b
    --out must be a new or empty folder; --overwrite replaces an earlier export there (a folder
    holding only train/val/test.jsonl and images/, or SPLIT-NNNNNN.tar/.parquet shards), never
    other files. The export is written next to --out and moved into place when complete, so a
    failure leaves --out as it was. --format webdataset writes tar shards of --shard-size samples
    (KEY.png + KEY.json), --format parquet Parquet files; both stream in training.

    \b
    Examples:
      mmkit data export shapes --n 200 --out data/shapes --seed 1
      mmkit data export shapes --split-sizes 1000,200,200 -o image_size=32 --out data/shapes32
      mmkit data export shapes --n 500 --out data/shapes --overwrite
      mmkit data export shapes --n 4000 --format webdataset --shard-size 500 --out data/shards
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmkit._internal.registry import get_registry

    check_export_target(out, overwrite)
    registry = get_registry()
    info = registry.describe("dataset", dataset)
    accepted = {p.name for p in info.params or ()}
    kwargs = dataset_arguments(accepted, split_sizes(n, sizes), seed, dict(_parse_option(o) for o in options))
    splits = registry.create("dataset", dataset, **kwargs)
    columns = getattr(splits, "columns", {}) or {}
    with Progress(TextColumn("{task.description:>5}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        if fmt != "jsonl":
            _report_shards(splits, out, fmt, write_export(splits, out, progress, _shard_writer(fmt, shard_size)))
            return
        counts = write_export(splits, out, progress)
    written = ", ".join(f"{s}.jsonl ({c} rows)" for s, c in counts.items())
    click.echo(f"wrote {written or 'nothing (every split is empty)'} to {out}")
    if columns and counts:
        mapping = ", ".join(f"{k} = {json.dumps(v)}" for k, v in columns.items())
        files = "\n".join(f'{s} = {json.dumps(str(out / (s + ".jsonl")))}' for s in counts)
        click.echo(f"recipe:\n[data]\n{files}\ncolumns = {{ {mapping} }}")


def _shard_writer(fmt: str, shard_size: int) -> Any:
    from mmkit._internal.shard_export import export_shards

    return lambda data, folder, progress: export_shards(data, folder, fmt, shard_size, progress)


def _report_shards(splits: Any, out: Path, fmt: str, written: dict[str, list[str]]) -> None:
    """What was written and the ``[data]`` table that trains from it."""
    from mmkit._internal.shard_export import pattern, recipe_columns

    what = ", ".join(f"{s}: {len(splits.splits[s])} samples in {len(n)} shard(s)" for s, n in written.items())
    click.echo(f"wrote {what or 'nothing'} to {out}")
    if not written:
        return
    first = splits.splits[next(iter(written))][0]
    columns = recipe_columns(getattr(splits, "columns", {}) or {}, first, fmt)
    files = "\n".join(f'{s} = {json.dumps(str(out / pattern(n)))}' for s, n in written.items())
    mapping = ", ".join(f"{k} = {json.dumps(v)}" for k, v in columns.items())
    click.echo(f"recipe:\n[data]\n{files}\n" + (f"columns = {{ {mapping} }}" if mapping else ""))
