"""``mmkit register``, ``mmkit models [show]``, ``mmkit predict``, ``mmkit eval``, ``mmkit embed``.

Listing and registering import no torch; predict/eval/embed import the predictor inside their bodies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mmkit._internal.cli_types import DEVICE, check_output_file, output_file
from mmkit._internal.errors import MmkitError

SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

_registry_option = click.option(
    "--registry", "registry", type=click.Path(file_okay=False), default=None, metavar="DIR",
    help="Registry folder (default: $MMKIT_REGISTRY, else $XDG_DATA_HOME/mmkit/models or "
         "~/.local/share/mmkit/models).")
_device_option = click.option("--device", type=DEVICE, default="cpu", show_default=True,
                              help="cpu, cuda, cuda:N or auto (a model trained on a GPU runs on the CPU too).")
_overwrite_option = click.option("--overwrite", is_flag=True, help="Replace --out if it exists (after success only).")
_checkpoint_option = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
                                  show_default=True, help="Which checkpoint of a run directory to use.")


def _stderr():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------- register
@click.command("register", context_settings=SETTINGS)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--name", required=True, help="Model name: letters, digits, '.', '_', '-'.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Checkpoint to register (best falls back to last when the run had no validation split).")
@_registry_option
@click.option("--json", "as_json", is_flag=True, help="Print the written card as JSON.")
def register_cmd(run_dir: str, name: str, checkpoint: str, registry: str | None, as_json: bool) -> None:
    """Register a trained RUN_DIR as NAME, with the next free version number.

    \b
    Copies the weights (safetensors), the resolved recipe, the fit state (label maps,
    vocabularies) and the run's metrics into <registry>/NAME/<version>/ and writes card.json with
    the weights' sha256. Load it anywhere as NAME, NAME@<version> or NAME@latest.

    \b
    Examples:
      mmkit register runs/quickstart --name claims
      mmkit register runs/quickstart --name claims --checkpoint last
      mmkit predict claims@1 --input data.jsonl --out predictions.jsonl
    """
    from mmkit._internal import models

    card = models.register(run_dir, name, checkpoint, registry)
    if as_json:
        click.echo(json.dumps(card, indent=2))
        return
    where = models.registry_dir(registry) / name / str(card["version"])
    click.echo(f"registered {name}@{card['version']} ({card['task']}, checkpoint {card['checkpoint']}, "
               f"step {card['step']}) at {where}")
    line = models.metric_line(card.get("metrics", {}))
    if line:
        click.echo(f"  {line}")


# ------------------------------------------------------------------------------------- models
@click.group("models", invoke_without_command=True, context_settings=SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of built-in cards and registered models.")
@_registry_option
@click.pass_context
def models_group(ctx: click.Context, as_json: bool, registry: str | None) -> None:
    """List built-in model cards and registered models.

    \b
    Built-in cards are recipes (no weights): use one with model = "NAME" in a recipe and
    train it. Registered models are trained weights (mmkit register) for predict/eval/embed.

    \b
    Examples:
      mmkit models
      mmkit models --json
      mmkit models show claim-classifier
      mmkit models show claims@2
    """
    ctx.ensure_object(dict)
    ctx.obj["registry"] = registry
    if ctx.invoked_subcommand is not None:
        return
    from mmkit._internal import models

    problems: list[str] = []
    rows = models.list_models(registry, problems)
    for problem in problems:
        click.secho(f"warning: {problem}", fg="yellow", err=True)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="built-in cards (recipes: model = \"NAME\")", box=None, header_style="bold",
                  title_justify="left")
    for col in ("name", "task", "description"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if r["kind"] == "builtin":
            table.add_row(r["name"], str(r["task"]), r["description"])
    console.print(table)
    registered = [r for r in rows if r["kind"] == "registered"]
    table = Table(title=f"registered models ({models.registry_dir(registry)})", box=None, header_style="bold",
                  title_justify="left")
    for col in ("name", "version", "task", "metrics", "created"):
        table.add_column(col, overflow="fold")
    for r in registered:
        table.add_row(str(r["name"]), str(r["version"]), str(r["task"]), models.metric_line(r.get("metrics", {})),
                      str(r.get("created") or "")[:16].replace("T", " "))
    console.print(table)
    if not registered:
        console.print("  none yet: mmkit register RUN_DIR --name NAME")


@models_group.command("show", context_settings=SETTINGS)
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@_registry_option
@click.pass_context
def show_model_cmd(ctx: click.Context, name: str, as_json: bool, registry: str | None) -> None:
    """Show the card of a model: NAME[@VERSION], a built-in card, a model folder or a run directory.

    \b
    Examples:
      mmkit models show claim-classifier     # a built-in card (its recipe)
      mmkit models show claims               # latest registered version
      mmkit models show claims@1 --json
    """
    from mmkit._internal import models

    registry = registry or (ctx.obj or {}).get("registry")
    card = models.show(name, registry)
    if as_json:
        click.echo(json.dumps(card, indent=2, default=str))
        return
    if card.get("kind") == "builtin":
        from mmkit._internal.recipe import dump_toml

        click.echo(f"{card['name']} (built-in card, version {card.get('version')}, task {card.get('task')})")
        click.echo(f"  {card.get('description', '')}")
        click.echo(f"  use it: a recipe with  model = \"{card['name']}\"  (keys of your recipe override the card's)\n")
        recipe = {k: v for k, v in card.items() if k in ("run", "data", "model", "train")}
        click.echo(dump_toml(recipe))
        return
    label = f"{card.get('name')}@{card.get('version')}" if card.get("version") is not None else card.get("name")
    click.echo(f"{label} ({'run directory' if card.get('kind') == 'run' else 'registered'}, task {card.get('task')})")
    for key in ("path", "created", "checkpoint", "step", "source"):
        if card.get(key) is not None:
            click.echo(f"  {key}: {card[key]}")
    comp = card.get("components") or {}
    if comp:
        click.echo(f"  encoders: {comp.get('encoders')}; fusion: {comp.get('fusion')}; head: {comp.get('head')}")
    if card.get("columns"):
        click.echo(f"  input columns: {card['columns']}")
    for digest_file, digest in (card.get("sha256") or {}).items():
        click.echo(f"  sha256 {digest_file}: {digest}")
    metrics = card.get("metrics") or {}
    for split, values in (metrics.get("final") or {}).items():
        if isinstance(values, dict):
            click.echo(f"  final {split}: " + "  ".join(f"{k} {models.fmt_number(v)}" for k, v in values.items()))
    best = metrics.get("best") or {}
    if best.get("metric"):
        click.echo(f"  best: {best['metric']} {models.fmt_number(best.get('value'))} at step {best.get('step')}")


# ------------------------------------------------------------------------------------- helpers
def _progress(total: int | None, label: str, quiet: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = _stderr()
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]:.0f} rows/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False, disable=quiet or not console.is_terminal)


def _report_bad(bad: list[Any], done: int, out: str, quiet: bool = False) -> None:
    if quiet:
        return
    err = _stderr()
    if bad:
        err.print(f"skipped {len(bad)} bad row(s):", markup=False)
        for b in bad[:5]:
            err.print(f"  {b.error}", markup=False)
        if len(bad) > 5:
            err.print(f"  ... and {len(bad) - 5} more", markup=False)
    err.print(f"{done} row(s) -> {out}", markup=False)


# ------------------------------------------------------------------------------------- predict
@click.command("predict", context_settings=SETTINGS)
@click.argument("model")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Rows to predict: .jsonl, .csv or .parquet with the columns the model was trained on.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Write JSON Lines here (default: stdout). Written to a temporary file, renamed when done.")
@_overwrite_option
@click.option("--batch-size", type=click.IntRange(min=1, max=1 << 20), default=32, show_default=True)
@click.option("--skip-bad-rows", is_flag=True, help="Skip (and count) rows that cannot be read instead of stopping.")
@click.option("--allow-missing-columns", is_flag=True,
              help="Accept input without a model column at all (that modality is absent in every row).")
@_device_option
@_checkpoint_option
@_registry_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary on stderr.")
@click.option("--labels", default=None, metavar="A,B,C",
              help="Zero-shot: classify images among these labels (comma-separated) with an image/text model "
                   "(hf-clip); overrides a card's [zero_shot] labels.")
@click.option("--prompt", default=None, metavar="TEXT",
              help="Zero-shot: the text per label, with {label} (default: the card's, else 'a photo of a {label}.').")
def predict_cmd(model: str, input_path: str, out: str | None, overwrite: bool, batch_size: int, skip_bad_rows: bool,
                allow_missing_columns: bool, device: str, checkpoint: str, registry: str | None, quiet: bool,
                labels: str | None, prompt: str | None) -> None:
    """Predict every row of --input with MODEL; one JSON object per row.

    \b
    MODEL is NAME, NAME@VERSION, NAME@latest (the registry), or a path: a registered/saved model
    folder or a run directory (./runs/quickstart). Each output line is {"row": N, ...the head's
    prediction}: "label" and "probs" for classification, "value" for regression, "caption" for
    captioning, embeddings for contrastive. An empty cell is a missing modality (predicted through
    the fusion's missing-modality handling). The input is streamed in batches: memory stays flat
    however long the file is. --out is written only when at least one row was predicted; an existing
    file is replaced only with --overwrite. Non-finite numbers are written as null (strict JSON).

    \b
    Zero-shot classification (no training): with --labels, or a built-in card with a [zero_shot]
    table (clip-local), each image is scored against one text prompt per label by a CLIP/SigLIP
    pair of encoders; each line is {"row": N, "label": ..., "probs": {label: p}}.

    \b
    Examples:
      mmkit predict claims --input data/shapes/test.jsonl --out predictions.jsonl
      mmkit predict ./runs/quickstart --input rows.csv --skip-bad-rows > predictions.jsonl
      mmkit predict claims@2 --input big.jsonl --out p.jsonl --batch-size 256 --device cuda
      mmkit predict clip-local --input images.csv --labels cat,dog --prompt "a photo of a {label}."
    """
    from mmkit._internal.predictor import BadRow, count_records, load

    if out not in (None, "-"):
        check_output_file(out, overwrite=overwrite, inputs=(input_path,))
    total = count_records(input_path)
    predictor: Any
    if labels is not None or prompt is not None or _zero_shot_card(model, registry):
        from mmkit._internal.zeroshot import zero_shot

        names = None if labels is None else [x.strip() for x in labels.split(",") if x.strip()]
        predictor = zero_shot(model, names, prompt, device=device, registry=registry, checkpoint=checkpoint)
    else:
        predictor = load(model, device=device, registry=registry, checkpoint=checkpoint)
    bad: list[BadRow] = []
    if out in (None, "-"):
        done = _predict_rows(predictor, input_path, sys.stdout, total, batch_size, skip_bad_rows, bad,
                             allow_missing_columns, quiet)
    else:
        with output_file(out) as fh:
            done = _predict_rows(predictor, input_path, fh, total, batch_size, skip_bad_rows, bad,
                                 allow_missing_columns, quiet)
            if done == 0:
                _report_bad(bad, done, "nothing written", quiet)
                raise MmkitError(f"{input_path}: no row could be predicted; {out} was not written")
    _report_bad(bad, done, out or "stdout", quiet)
    if done == 0:
        raise MmkitError(f"{input_path}: no row could be predicted")


def _zero_shot_card(model: str, registry: str | None) -> bool:
    """A built-in card with a [zero_shot] table, and no trained model by that name (which would win)."""
    from mmkit._internal import models as mreg

    card = None if mreg.looks_like_path(model) else mreg.builtin_card(model)
    if not card or not card.get("zero_shot"):
        return False
    try:
        mreg.resolve(model, registry)
    except mreg.ModelNotFoundError:
        return True
    return False


def _predict_rows(predictor: Any, input_path: str, fh: Any, total: int, batch_size: int, skip_bad_rows: bool,
                  bad: list[Any], allow_missing_columns: bool, quiet: bool) -> int:
    """Write one strict JSON line per predicted row to ``fh``; the number of rows written."""
    import time

    from mmkit._internal.safeio import dumps_json

    done = 0
    t0 = time.perf_counter()
    with _progress(total, "predict", quiet) as progress:
        task = progress.add_task("predict", total=total, rate=0.0)
        for number, pred in predictor.iter_predict(input_path, batch_size, skip_bad_rows=skip_bad_rows,
                                                   bad_rows=bad, allow_missing_columns=allow_missing_columns):
            fh.write(dumps_json({"row": number, **pred}, ensure_ascii=False) + "\n")
            done += 1
            progress.update(task, completed=done + len(bad), rate=done / max(time.perf_counter() - t0, 1e-9))
    fh.flush()
    return done


# ------------------------------------------------------------------------------------- eval
@click.command("eval", context_settings=SETTINGS)
@click.argument("model")
@click.option("--data", "data", required=True, metavar="FILE_OR_DATASET",
              help="A labelled manifest (.jsonl/.csv/.parquet) or a registered dataset name (e.g. shapes).")
@click.option("--split", default="test", show_default=True, help="Split of a registered dataset.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Dataset option (e.g. -o n_test=1000); the training recipe's options are reused otherwise.")
@click.option("--batch-size", type=click.IntRange(min=1, max=1 << 20), default=32, show_default=True)
@_device_option
@_checkpoint_option
@_registry_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as a JSON object.")
@click.option("--ablate", is_flag=True,
              help="Also score with each modality removed in turn (marked absent) and report the drop; "
                   "with the attention fusion, the mean weight per modality.")
def eval_cmd(model: str, data: str, split: str, options: tuple[str, ...], batch_size: int, device: str,
             checkpoint: str, registry: str | None, as_json: bool, ablate: bool) -> None:
    """Evaluate MODEL on labelled data: the head's metrics (accuracy/F1, RMSE/MAE/R², BLEU/CIDEr, recall@K).

    \b
    Examples:
      mmkit eval claims --data shapes                       # the test split, as trained
      mmkit eval claims --data shapes --split val -o n_val=2000
      mmkit eval claims@1 --data data/shapes/test.jsonl --json
      mmkit eval claims --data shapes --ablate              # what each modality contributes
    """
    from mmkit._internal.predictor import load
    from mmkit._internal.recipe import parse_value

    opts = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="-o/--option")
        opts[key.strip()] = parse_value(value.strip(), f"-o {key.strip()}")
    predictor = load(model, device=device, registry=registry, checkpoint=checkpoint)
    if ablate:
        _eval_ablate(predictor, data, split, opts, batch_size, as_json)
        return
    metrics = predictor.evaluate(data, split=split, batch_size=batch_size, options=opts)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
        return
    name = predictor.card.get("name", model)
    click.echo(f"{name} on {data}" + ("" if Path(data).is_file() else f" ({split})") + ":")
    for key, value in metrics.items():
        click.echo(f"  {key:<24} {value:.4f}")


def _eval_ablate(predictor: Any, data: str, split: str, opts: dict[str, Any], batch_size: int,
                 as_json: bool) -> None:
    """``mmkit eval --ablate``: the modality ablation report of :mod:`mmkit._internal.ablation` on this data."""
    import copy

    from mmkit._internal.ablation import ablate
    from mmkit._internal.cli_compare import print_ablation

    recipe = copy.deepcopy(predictor.recipe)
    if Path(data).is_file():
        recipe.data.update(dataset=None, train=str(Path(data).resolve()), val=None, test=None, split_column=None)
        split = "train"  # the manifest's rows (the split name of a lone manifest)
    else:
        recipe.data.update(dataset=data, options={**recipe.data.get("options", {}), **opts})
    result = ablate(predictor.model, split=split, recipe=recipe, batch_size=batch_size)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_ablation(result)


# ------------------------------------------------------------------------------------- embed
@click.command("embed", context_settings=SETTINGS)
@click.argument("model")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Rows to embed: .jsonl, .csv or .parquet.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Output .npy (float32 [rows, dim]) or .parquet (needs pyarrow).")
@_overwrite_option
@click.option("--modality", default=None,
              help="Embed one modality (its encoder's pooled output) instead of the fused vector.")
@click.option("--batch-size", type=click.IntRange(min=1, max=1 << 20), default=32, show_default=True)
@click.option("--skip-bad-rows", is_flag=True, help="Write NaN rows for unreadable rows instead of stopping.")
@click.option("--allow-missing-columns", is_flag=True, help="Accept input without a model column at all.")
@_device_option
@_checkpoint_option
@_registry_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary on stderr.")
def embed_cmd(model: str, input_path: str, out: str, overwrite: bool, modality: str | None, batch_size: int,
              skip_bad_rows: bool, allow_missing_columns: bool, device: str, checkpoint: str, registry: str | None,
              quiet: bool) -> None:
    """Write one embedding per input row: the fused vector, or one modality's with --modality.

    \b
    Row i of the output is row i of the input. Rows where --modality is absent, and skipped bad
    rows, are NaN. The file is streamed batch by batch (memory stays flat) into a temporary file that
    is renamed to --out only when at least one row was embedded; an existing file is replaced only
    with --overwrite.

    \b
    Examples:
      mmkit embed claims --input data/shapes/test.jsonl --out fused.npy
      mmkit embed clip --input captions.jsonl --out text.npy --modality text
    """
    from mmkit._internal.predictor import BadRow, count_records, load

    suffix = Path(out).suffix.lower()
    if suffix not in (".npy", ".parquet"):
        raise click.BadParameter("use a .npy (or .parquet) file name", param_hint="--out")
    check_output_file(out, overwrite=overwrite, inputs=(input_path,))
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise MmkitError("writing Parquet needs pyarrow: pip install 'mmkit[parquet]' "
                             "(or use --out FILE.npy)") from None
    total = count_records(input_path)
    predictor = load(model, device=device, registry=registry, checkpoint=checkpoint)
    dim = predictor.embedding_dim(modality)
    bad: list[BadRow] = []
    chunks = predictor.iter_embed(input_path, modality, batch_size, skip_bad_rows=skip_bad_rows, bad_rows=bad,
                                  allow_missing_columns=allow_missing_columns)
    with output_file(out, "wb") as fh:
        writer = _write_npy if suffix == ".npy" else _write_parquet
        done = writer(fh, chunks, total, dim, quiet, bad)
        if done == 0:
            _report_bad(bad, done, "nothing written", quiet)
            raise MmkitError(f"{input_path}: no row could be embedded; {out} was not written")
    _report_bad(bad, done, f"{out} ({total} x {dim} float32)", quiet)


def _rows_in_order(chunks: Any, total: int, dim: int, quiet: bool, bad: list[Any]) -> Any:
    """``[n, dim]`` float32 blocks covering rows 1..total in order: embedded rows, NaN for the rest
    (absent modality, skipped bad rows). Yields ``(block, rows embedded so far)``."""
    import time

    import numpy as np

    done, written = 0, 0
    t0 = time.perf_counter()
    with _progress(total, "embed", quiet) as progress:
        task = progress.add_task("embed", total=total, rate=0.0)
        for numbers, chunk in chunks:
            block = np.full((numbers[-1] - written, dim), np.nan, dtype=np.float32)
            block[np.asarray(numbers, dtype=np.int64) - written - 1] = chunk
            written = numbers[-1]
            done += len(numbers)
            if written > total:  # the reader and the count disagree: never write a misplaced row
                raise MmkitError(f"internal error: row {written} of an input counted as {total} rows")
            progress.update(task, completed=done + len(bad), rate=done / max(time.perf_counter() - t0, 1e-9))
            yield block, done
    if written < total:
        yield np.full((total - written, dim), np.nan, dtype=np.float32), done


def _write_npy(fh: Any, chunks: Any, total: int, dim: int, quiet: bool, bad: list[Any]) -> int:
    """Stream a ``.npy`` file: header, then rows in order (plain writes: a memory map of an output
    file dies with SIGBUS when the disk fills up)."""
    import numpy as np

    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
                                              "fortran_order": False, "shape": (total, dim)})
    done = 0
    for block, done in _rows_in_order(chunks, total, dim, quiet, bad):  # noqa: B007 - done: rows written so far
        fh.write(block.astype("<f4", copy=False).tobytes())
    return done


def _write_parquet(fh: Any, chunks: Any, total: int, dim: int, quiet: bool, bad: list[Any]) -> int:
    """Stream a Parquet file (columns ``row``, ``embedding``), one row group per block."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("row", pa.int64()), ("embedding", pa.list_(pa.float32(), dim))])
    done, first = 0, 1
    with pq.ParquetWriter(fh, schema) as writer:
        for block, done in _rows_in_order(chunks, total, dim, quiet, bad):  # noqa: B007 - rows written so far
            column = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), type=pa.float32()), dim)
            rows = pa.array(range(first, first + len(block)), type=pa.int64())
            writer.write_table(pa.table({"row": rows, "embedding": column}, schema=schema))
            first += len(block)
    return done


COMMANDS = [register_cmd, models_group, predict_cmd, eval_cmd, embed_cmd]
