"""Comparing finished runs: one row per run with the recipe keys that differ and every final metric.

A run directory (:class:`mmkit._internal.rundir.RunDir`) holds the resolved recipe and, once finished, a
summary; a sweep directory holds run directories. Nothing here imports torch, so ``mmkit compare`` is instant.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from mmkit._internal.errors import MmkitError
from mmkit._internal.rundir import RunDir, RunDirError
from mmkit._internal.safeio import read_json

#: Recipe keys that always differ between runs and say nothing about the configuration.
IGNORED_KEYS = ("run.name", "run.output_dir")
#: Metric names (last dotted part) for which lower is better; every other metric is maximised.
LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "perplexity", "wer", "cer")
STAT_COLUMNS = ("params.trainable", "samples_per_s", "wall_seconds")


class CompareError(MmkitError):
    """Runs cannot be found or read."""


@dataclass
class RunRecord:
    """What is known about one run directory."""

    path: Path
    recipe: dict[str, Any]  # flattened dotted keys of recipe.resolved.toml
    summary: dict[str, Any] | None = None
    error: str | None = None  # why the run failed, when known (sweeps record it)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> str:
        if self.error:
            return "failed"
        return "done" if self.summary is not None else "unfinished"

    @property
    def metrics(self) -> dict[str, float]:
        """Final metrics as ``{"val.accuracy": ..., "test.loss": ...}`` (empty until finished)."""
        final = (self.summary or {}).get("final", {})
        return {f"{split}.{k}": v for split, values in final.items() for k, v in values.items()}

    @property
    def monitor(self) -> str | None:
        """``val.<metric>`` the run chose its best checkpoint by (the head's default unless set)."""
        best = (self.summary or {}).get("best") or {}
        return f"val.{best['metric']}" if best.get("metric") else None


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> ``{"model.fusion.type": "concat", ...}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        dotted = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, dotted + "."))
        else:
            out[dotted] = item
    return out


def is_run_dir(path: Path) -> bool:
    return RunDir.looks_like_run(path)


def load_run(path: str | Path) -> RunRecord:
    """Read a run directory (an unfinished run has ``summary`` None)."""
    run = RunDir(Path(path))
    try:
        recipe = flatten(run.read_recipe()) if run.recipe.is_file() else {}
        summary = run.read_summary()
    except RunDirError as exc:
        raise CompareError(str(exc)) from exc
    if not recipe and summary is None:
        raise CompareError(f"{run.path}: not a run directory (no resolved recipe or summary)")
    return RunRecord(run.path, recipe, summary)


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named by ``paths``: each is a run directory or a folder of them (a sweep).

    A sweep's runs come in the order of its ``sweep.json`` when it has one, else sorted by name.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise CompareError(f"{path}: no such directory")
        if is_run_dir(path):
            found.append(path)
            continue
        runs = sweep_runs(path)
        if not runs:
            raise CompareError(f"{path}: neither a run directory nor a folder of runs (a sweep)")
        found.extend(runs)
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def sweep_runs(folder: Path) -> list[Path]:
    ordered: list[Path] = []
    index = folder / "sweep.json"
    if index.is_file():
        try:
            rows = read_json(index)  # bounded: a hostile sweep.json is ignored, not a traceback
            ordered = [folder / r["run"] for r in rows if (folder / r["run"]).is_dir()]
        except (MmkitError, OSError, KeyError, TypeError, ValueError):
            ordered = []
    rest = sorted(p for p in folder.iterdir() if p.is_dir() and is_run_dir(p) and p not in ordered)
    return ordered + rest


def load_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    return [load_run(p) for p in find_runs(paths)]


def differing_keys(records: Sequence[RunRecord], ignore: Sequence[str] = IGNORED_KEYS) -> list[str]:
    """Recipe keys whose value is not the same in every run (a key missing from one counts).

    A component's parameter that only differs because its ``type`` differs (``fusion.gate_hidden``
    exists for ``attention`` only, with the same value in every attention run) is left out: the
    ``type`` column already says it.
    """
    keys: list[str] = []
    for r in records:
        keys += [k for k in r.recipe if k not in keys]
    missing = object()
    out = []
    for k in keys:
        if k in ignore:
            continue
        values = [r.recipe.get(k, missing) for r in records]
        if any(v != values[0] for v in values[1:]):
            out.append(k)
    return [k for k in out if not _implied_by_type(k, out, records)]


def _implied_by_type(key: str, differing: Sequence[str], records: Sequence[RunRecord]) -> bool:
    table, _, name = key.rpartition(".")
    type_key = f"{table}.type"
    if name == "type" or type_key not in differing:
        return False
    by_type: dict[str, set[str]] = {}
    for r in records:
        by_type.setdefault(json.dumps(r.recipe.get(type_key), default=str), set()).add(
            json.dumps(r.recipe.get(key), default=str))
    return all(len(v) == 1 for v in by_type.values())


def lower_is_better(metric: str) -> bool:
    last = metric.rsplit(".", 1)[-1].lower()
    return last in LOWER_IS_BETTER or "loss" in last


def default_metric(records: Sequence[RunRecord]) -> str:
    """The head's monitor of the first finished run (``val.accuracy`` for a classifier), else ``val.loss``."""
    for r in records:
        if r.monitor:
            return r.monitor
    for r in records:
        chosen = r.recipe.get("train.monitor")
        if isinstance(chosen, str) and chosen != "auto":
            return chosen if chosen.startswith(("val.", "test.")) else f"val.{chosen}"
    names = [m for r in records for m in r.metrics if m.startswith("val.")]
    return next((m for m in names if not lower_is_better(m)), names[0] if names else "val.loss")


def metric_columns(rows: Sequence[Mapping[str, Any]], skip: Sequence[str]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in skip and k not in cols]
    return cols


def run_row(record: RunRecord, keys: Sequence[str], leading: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One table row: run name, ``keys`` from the recipe, final metrics, size and speed, run dir."""
    s = record.summary or {}
    row: dict[str, Any] = {"run": record.name}
    row.update(leading or {})
    for k in keys:
        row.setdefault(k, record.recipe.get(k))
    row.update(record.metrics)
    row["params.trainable"] = (s.get("params") or {}).get("trainable")
    row["samples_per_s"] = s.get("samples_per_s")
    row["wall_seconds"] = s.get("wall_seconds")
    row["status"] = record.status
    if record.error:
        row["error"] = record.error
    row["run_dir"] = str(record.path)
    return row


def sort_rows(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first by ``metric`` (or ``metric.mean``); rows without it last, in their order."""
    low = lower_is_better(metric)

    def key(row: Mapping[str, Any]) -> tuple[int, float]:
        value = row.get(metric, row.get(f"{metric}.mean"))
        if not isinstance(value, (int, float)) or math.isnan(float(value)):
            return (1, 0.0)
        return (0, value if low else -value)

    return sorted(rows, key=key)


def aggregate(rows: Sequence[Mapping[str, Any]], group_keys: Sequence[str],
              value_columns: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of ``value_columns`` over runs that share ``group_keys``
    (the configurations of a sweep over seeds). Failed/unfinished runs are left out; ``n`` counts
    the runs averaged, ``runs`` the total."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    order: list[str] = []
    for row in rows:
        gid = json.dumps([row.get(k) for k in group_keys], default=str)
        if gid not in groups:
            groups[gid] = []
            order.append(gid)
        groups[gid].append(row)
    out = []
    for gid in order:
        members = groups[gid]
        done = [m for m in members if m.get("status", "done") == "done"]
        agg: dict[str, Any] = {k: members[0].get(k) for k in group_keys}
        agg["n"] = len(done)
        agg["runs"] = len(members)
        for col in value_columns:
            values = [float(m[col]) for m in done if isinstance(m.get(col), (int, float))]
            agg[f"{col}.mean"] = statistics.fmean(values) if values else None
            agg[f"{col}.std"] = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
        out.append(agg)
    return out


# ------------------------------------------------------------------------------------ rendering
def fmt(value: Any, column: str = "") -> str:
    """A cell for humans: 4 decimals for metrics, whole numbers for speed, thousands separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}" if column.startswith("params") else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if column.startswith("samples_per_s"):
            return f"{value:.0f}"
        if column.startswith("wall_seconds"):
            return f"{value:.1f}"
        if column.startswith("params"):
            return f"{value:,.0f}"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def display_rows(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 keys: Sequence[str] = ()) -> list[list[str]]:
    """Rows as strings; an aggregated ``X`` column shows ``mean ± std``; recipe values as written."""
    out = []
    for row in rows:
        cells = []
        for col in columns:
            if col in keys or col == "seed":
                value = row.get(col)
                cells.append("-" if value is None else json.dumps(value) if isinstance(value, (list, dict))
                             else str(value).lower() if isinstance(value, bool) else str(value))
            elif f"{col}.mean" in row and col not in row:
                mean, std = row.get(f"{col}.mean"), row.get(f"{col}.std")
                if mean is None:
                    cells.append("-")
                elif col in STAT_COLUMNS:  # size and speed: the mean says enough
                    cells.append(fmt(mean, col))
                else:
                    cells.append(f"{fmt(mean, col)} ± {fmt(std, col)}")
            else:
                cells.append(fmt(row.get(col), col))
        out.append(cells)
    return out


def to_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], keys: Sequence[str] = ()) -> str:
    lines = ["| " + " | ".join(header(c, keys) for c in columns) + " |", "|" + "---|" * len(columns)]
    for cells in display_rows(rows, columns, keys):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    columns = list(columns or metric_columns(rows, ()))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in row.items()})
    return buf.getvalue()


def console(stderr: bool = False) -> Any:
    """A rich console; when the output is not a terminal (a log, a pipe) tables are not squeezed
    into 80 columns."""
    import os
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, stderr=stderr, width=200 if wide else None)


def rich_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None,
               highlight: str | None = None, keys: Sequence[str] = ()) -> Any:
    from rich.table import Table

    table = Table(title=title, box=None, header_style="bold", pad_edge=False, title_justify="left")
    cells = display_rows(rows, columns, keys)
    for i, col in enumerate(columns):
        numeric = col not in ("run", "status", "run_dir", "error") and col not in keys
        title = header(col, keys)
        widest = max([len(c[i]) for c in cells] + [len(title)])
        spread = any(" ± " in c[i] for c in cells)
        # plain numbers never wrap (mean ± std may break at the ±); recipe values keep a readable
        # width; long run names fold
        table.add_column(title, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=numeric and not spread,
                         min_width=min(widest, 8 if spread else 14 if col in keys else 10),
                         style="bold" if col == highlight else None)
    for row in cells:
        table.add_row(*row)
    return table


def display_columns(rows: Sequence[Mapping[str, Any]], keys: Sequence[str], metric: str,
                    aggregated: bool = False, full: bool = False, run_column: bool = True) -> list[str]:
    """Columns a human sees: the keys, the sort metric, the other validation metrics (the loss
    only when it is the sort metric), the same metric on test, size and speed. ``full`` keeps every
    metric (the CSV/JSON files always have them all)."""
    lead = (["n"] if aggregated else ["run"] if run_column else []) + list(keys)
    found: list[str] = []
    for row in rows:
        for k in row:
            base = k.rsplit(".", 1)[0] if aggregated and (k.endswith(".mean") or k.endswith(".std")) else k
            if base.split(".", 1)[0] in ("val", "test", "train") and base not in found:
                found.append(base)
    if full:
        metrics = sorted(found, key=lambda m: (m != metric, m.split(".", 1)[0] != "val", m))
    else:
        name = metric.split(".", 1)[-1]
        metrics = [metric] if metric in found else []
        metrics += [m for m in found if m.startswith("val.") and m not in metrics and not lower_is_better(m)]
        metrics += [m for m in (f"test.{name}",) if m in found and m not in metrics]
    tail = list(STAT_COLUMNS)
    if not aggregated and any(r.get("status") != "done" for r in rows):
        tail.append("status")
    return lead + metrics + tail


HEADERS = {"params.trainable": "params", "samples_per_s": "samples/s", "wall_seconds": "wall s"}


def header(column: str, keys: Sequence[str] = ()) -> str:
    """A short column title: ``model.fusion.type`` -> ``fusion.type``, ``samples_per_s`` -> ``samples/s``."""
    if column in HEADERS:
        return HEADERS[column]
    if column in keys and column.count(".") >= 2:
        short = ".".join(column.split(".")[-2:])
        if sum(1 for k in keys if ".".join(k.split(".")[-2:]) == short) == 1:
            return short
    return column


@dataclass
class Comparison:
    """Rows for a set of runs, the keys that differ between them, and per-configuration means."""

    metric: str
    keys: list[str]
    rows: list[dict[str, Any]]
    configs: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "keys": self.keys, "runs": self.rows, "configs": self.configs}


def compare(paths: Iterable[str | Path] | None = None, metric: str | None = None,
            records: Sequence[RunRecord] | None = None) -> Comparison:
    """Compare runs (run or sweep directories): rows sorted best-first by ``metric``.

    When runs differ in ``run.seed`` and several share every other differing key, ``configs`` holds
    those configurations' mean ± std over seeds.
    """
    records = list(records) if records is not None else load_runs(paths or ())
    if not records:
        raise CompareError("no runs to compare")
    metric = metric or default_metric(records)
    keys = differing_keys(records)
    rows = sort_rows([run_row(r, keys) for r in records], metric)
    configs: list[dict[str, Any]] = []
    if "run.seed" in keys:
        group = [k for k in keys if k != "run.seed"]
        values = [c for c in metric_columns(rows, ()) if c.split(".", 1)[0] in ("val", "test")] + list(STAT_COLUMNS)
        configs = aggregate(rows, group, values)
        if all(c["runs"] == 1 for c in configs):
            configs = []
        configs = sort_rows(configs, metric)
    return Comparison(metric, keys, rows, configs)
