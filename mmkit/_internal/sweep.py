"""Sweeps: train a recipe over a grid of recipe values (and seeds), then compare the runs.

``mmkit run recipe.toml --sweep model.fusion.type=concat,attention --seeds 2 --jobs 2`` trains every
combination into its own run directory under ``<output_dir>/<name>-sweep/``, writes ``sweep.csv`` /
``sweep.json`` (one row per run) and, with several seeds, ``sweep_summary.csv`` / ``.json``
(mean ± std per configuration). Re-running the same command skips finished runs and resumes
interrupted ones, so a sweep survives Ctrl-C, crashes and reboots.

Planning reads and validates every run's recipe before anything trains (no torch import); runs go
in-process (``jobs=1``) or in ``jobs`` subprocesses (``python -m mmkit._internal.sweep SPEC``) that share the
machine's cores.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import tomllib

from mmkit._internal.compare import (
    STAT_COLUMNS,
    RunRecord,
    aggregate,
    default_metric,
    flatten,
    load_run,
    metric_columns,
    run_row,
    to_csv,
)
from mmkit._internal.errors import MmkitError, RecipeError
from mmkit._internal.recipe import Recipe, apply_overrides, build_recipe, dump_toml, parse_value, read_toml
from mmkit._internal.registry import Registry, get_registry
from mmkit._internal.rundir import RunDir
from mmkit._internal.safeio import write_json_atomic, write_text_atomic

ENGINE_ENCODER_KEYS = ("type", "freeze", "lr_mult")


class SweepError(MmkitError):
    """A sweep cannot be planned or run as asked."""


class SweepInterrupted(SweepError):
    """The sweep was stopped (Ctrl-C); re-run the same command to continue it."""


# ---------------------------------------------------------------------------------------- parsing
def split_values(text: str) -> list[str]:
    """Split ``"a,[1,2],{x=1,y=2},'c,d'"`` on the commas outside brackets, braces and quotes."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    current = ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    parts.append(current.strip())
    if quote or depth:
        raise SweepError(f"--sweep value {text!r}: unbalanced brackets or quotes")
    return parts


def parse_sweep(items: Iterable[str]) -> dict[str, list[str]]:
    """``["model.fusion.type=concat,attention", "train.lr=1e-3,3e-4"]`` -> ``{key: [value text, ...]}``.

    Each value stays TOML text (it is parsed with :func:`~mmkit._internal.recipe.parse_value` when applied);
    empty values and repeated keys or values are errors.
    """
    axes: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise SweepError(f"--sweep {item!r}: expected KEY=V1,V2,..., e.g. model.fusion.type=concat,attention")
        if key in axes:
            raise SweepError(f"--sweep {key}: given twice; list all its values in one --sweep")
        tokens = split_values(values)
        if any(not t for t in tokens):
            raise SweepError(f"--sweep {item!r}: empty value")
        parsed = [json.dumps(parse_value(t), sort_keys=True, default=str) for t in tokens]
        if len(set(parsed)) != len(parsed):
            raise SweepError(f"--sweep {key}: a value is repeated ({values})")
        axes[key] = tokens
    return axes


def _safe(text: str, limit: int = 40) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-.") or "x"
    return cleaned[:limit]


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """``model.fusion.type`` -> ``fusion.type`` (its last two parts), unless two keys would clash."""
    short = {k: ".".join(k.split(".")[-2:]) for k in keys}
    if len(set(short.values())) != len(short):
        return {k: k for k in keys}
    return short


# --------------------------------------------------------------------------------------- planning
@dataclass
class SweepPoint:
    """One run of the sweep: its run name, the swept values (as TOML text and parsed) and seed."""

    name: str
    assign: dict[str, str]
    values: dict[str, Any]
    seed: int
    dropped: list[str] = field(default_factory=list)  # keys removed because the swept type lacks them

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.name, "values": self.values, "seed": self.seed, "dropped": self.dropped}


@dataclass
class SweepPlan:
    """Every run of a sweep, validated, and where they go."""

    recipe_path: Path
    overrides: list[str]
    axes: dict[str, list[str]]
    seeds: int
    sweep_dir: Path
    points: list[SweepPoint]
    recipes: dict[str, Recipe]

    @property
    def keys(self) -> list[str]:
        return list(self.axes)

    def to_dict(self) -> dict[str, Any]:
        return {"recipe": str(self.recipe_path), "overrides": self.overrides, "sweep": self.axes,
                "seeds": self.seeds, "runs": [p.to_dict() for p in self.points]}


def _component_kind(table_key: str) -> str | None:
    parts = table_key.split(".")
    if parts == ["model", "fusion"]:
        return "fusion"
    if parts == ["model", "head"]:
        return "head"
    if len(parts) == 3 and parts[:2] == ["model", "encoders"]:
        return "encoder"
    return None


def _prune_for_type(doc: dict[str, Any], key: str, keep: Iterable[str], registry: Registry) -> list[str]:
    """Sweeping ``model.fusion.type`` over components with different parameters: drop the keys of
    that table the chosen component does not take (``layers`` for ``concat``), so a recipe written
    for one fusion can be swept over all. Keys listed in ``keep`` (swept ones) are never dropped."""
    if not key.endswith(".type"):
        return []
    table_key = key[: -len(".type")]
    kind = _component_kind(table_key)
    node: Any = doc
    for part in table_key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if kind is None or not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return []
    try:
        info = registry.describe(kind, node["type"])
    except MmkitError:
        return []  # build_recipe reports the unknown type with suggestions
    allowed = {p.name for p in info.params or ()} | set(ENGINE_ENCODER_KEYS if kind == "encoder" else ("type",))
    keep = set(keep)
    dropped = []
    for name in list(node):
        if name not in allowed and f"{table_key}.{name}" not in keep:
            del node[name]
            dropped.append(f"{table_key}.{name}")
    return dropped


def point_document(recipe_path: Path, overrides: Sequence[str], assign: Mapping[str, str], *, name: str,
                   output_dir: str, seed: int, registry: Registry) -> tuple[dict[str, Any], list[str]]:
    """The recipe document of one sweep run and the keys pruned from it."""
    doc = apply_overrides(read_toml(recipe_path), overrides)
    doc = apply_overrides(doc, [f"{k}={v}" for k, v in assign.items()], source="--sweep")
    dropped: list[str] = []
    for key in assign:
        dropped += _prune_for_type(doc, key, assign, registry)
    run = doc.setdefault("run", {})
    if not isinstance(run, dict):
        raise RecipeError(f"{recipe_path}: run: expected a table")
    run.update(name=name, output_dir=output_dir, seed=seed)
    return doc, dropped


def point_recipe(recipe_path: Path, overrides: Sequence[str], assign: Mapping[str, str], *, name: str,
                 output_dir: str, seed: int, registry: Registry | None = None) -> tuple[Recipe, list[str]]:
    """The validated recipe of one sweep run (also used by the subprocess worker)."""
    registry = registry or get_registry()
    doc, dropped = point_document(recipe_path, overrides, assign, name=name, output_dir=output_dir, seed=seed,
                                  registry=registry)
    return build_recipe(doc, str(recipe_path), recipe_path.parent, registry), dropped


def plan_sweep(recipe_path: str | Path, overrides: Sequence[str] = (), sweeps: Sequence[str] = (),
               seeds: int = 1, registry: Registry | None = None) -> SweepPlan:
    """Expand the grid and validate every run's recipe (nothing trains, torch is not imported).

    The sweep directory is ``<run.output_dir>/<run.name>-sweep``; seeds are ``run.seed + 0..seeds-1``.
    """
    registry = registry or get_registry()
    recipe_path = Path(recipe_path)
    overrides = list(overrides)
    axes = parse_sweep(sweeps)
    if seeds < 1:
        raise SweepError(f"--seeds must be at least 1, got {seeds}")
    if "run.seed" in axes and seeds > 1:
        raise SweepError("--sweep run.seed=... and --seeds exclude each other; use one of them")
    for key in axes:
        if key in ("run.name", "run.output_dir"):
            raise SweepError(f"--sweep {key}: the sweep names its runs itself; set it with --set instead")
    doc = apply_overrides(read_toml(recipe_path), overrides)
    base = build_recipe(doc, str(recipe_path), recipe_path.parent, registry)
    sweep_dir = Path(base.run["output_dir"]) / f"{base.run['name']}-sweep"
    base_seed = int(base.run["seed"])
    short = _short_keys(list(axes))
    combos = list(itertools.product(*axes.values())) if axes else [()]
    seed_list = [base_seed + i for i in range(seeds)] if "run.seed" not in axes else [None]
    points: list[SweepPoint] = []
    recipes: dict[str, Recipe] = {}
    used: set[str] = set()
    for combo in combos:
        assign = dict(zip(axes, combo))
        for seed in seed_list:
            parts = [f"{short[k]}-{_safe(v)}" for k, v in assign.items()]
            if seed is not None:
                parts.append(f"seed-{seed}")
            name = "_".join(parts)[:180] or "run"
            unique, i = name, 2
            while unique in used:
                unique, i = f"{name}-{i}", i + 1
            used.add(unique)
            run_seed = seed if seed is not None else parse_value(assign["run.seed"])
            if not isinstance(run_seed, int) or isinstance(run_seed, bool):
                raise SweepError(f"--sweep run.seed: expected integers, got {assign['run.seed']!r}")
            recipe, dropped = point_recipe(recipe_path, overrides, assign, name=unique, output_dir=str(sweep_dir),
                                           seed=run_seed, registry=registry)
            values = {k: parse_value(v) for k, v in assign.items()}
            points.append(SweepPoint(unique, assign, values, run_seed, dropped))
            recipes[unique] = recipe
    return SweepPlan(recipe_path, overrides, axes, seeds, sweep_dir, points, recipes)


# ---------------------------------------------------------------------------------------- running
@dataclass
class SweepResult:
    """What a sweep invocation did and the rows it wrote."""

    plan: SweepPlan
    rows: list[dict[str, Any]]
    summary_rows: list[dict[str, Any]]
    metric: str
    trained: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def sweep_dir(self) -> Path:
        return self.plan.sweep_dir


def _comparable(recipe_dict: Mapping[str, Any]) -> dict[str, Any]:
    flat = flatten(tomllib.loads(dump_toml(dict(recipe_dict))))
    flat.pop("run.output_dir", None)
    return flat


def _check_same_recipe(run_dir: Path, recipe: Recipe) -> None:
    """A finished or interrupted run in the sweep folder must be the run this plan describes."""
    run = RunDir(run_dir)
    if not run.recipe.is_file():
        return
    from mmkit._internal.resume import recorded_lr_mults

    recorded = run.read_recipe()
    old = _comparable(recorded)
    new = _comparable(recipe.to_dict())
    for name in recorded_lr_mults(recorded):  # "auto" continues with the recorded number (a resume adopts it)
        if new.get(f"model.encoders.{name}.lr_mult") == "auto":
            new[f"model.encoders.{name}.lr_mult"] = old[f"model.encoders.{name}.lr_mult"]
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    if diffs:
        raise SweepError(f"{run_dir} was trained with a different recipe ({'; '.join(diffs[:5])}); "
                         f"give the sweep another name (--set run.name=...) or retrain it with --overwrite")


def run_mode(run_dir: Path, overwrite: bool = False) -> str:
    """``skip`` (finished), ``resume`` (interrupted after a checkpoint), ``overwrite`` (started but
    nothing to resume, or asked to) or ``new``."""
    run = RunDir(run_dir)
    if overwrite:
        return "overwrite"
    if run.finished:
        return "skip"
    if run_dir.is_dir():
        return "resume" if run.resumable else "overwrite"
    return "new"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_sweep(plan: SweepPlan, jobs: int = 1, overwrite: bool = False,
              echo: Callable[[str], None] | None = None) -> SweepResult:
    """Train every run of ``plan`` not finished yet, then write the sweep tables.

    ``jobs > 1`` runs that many subprocesses at once, each with ``cores // jobs`` torch threads.
    A failing run is recorded (``status`` failed, its log in ``logs/``) and the others go on;
    Ctrl-C stops the sweep after the running runs have written a checkpoint
    (:class:`SweepInterrupted`).
    """
    say = echo or (lambda _msg: None)
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(plan.sweep_dir / "sweep_plan.json", plan.to_dict())
    result = SweepResult(plan, [], [], "")
    todo: list[tuple[SweepPoint, str]] = []
    total = len(plan.points)
    for i, point in enumerate(plan.points, 1):
        run_dir = plan.sweep_dir / point.name
        mode = run_mode(run_dir, overwrite)
        if mode in ("skip", "resume"):
            _check_same_recipe(run_dir, plan.recipes[point.name])
        if mode == "skip":
            result.skipped.append(point.name)
            say(f"[{i}/{total}] skip    {point.name} (finished earlier)")
            _log(plan, "skip", point.name)
        else:
            todo.append((point, mode))
    noted: set[str] = set()
    for point in plan.points:
        by_table: dict[str, list[str]] = {}
        for key in point.dropped:
            by_table.setdefault(key.rsplit(".", 1)[0], []).append(key)
        for table, keys in by_table.items():
            note = (f"note: {', '.join(keys)} left out where {table}.type = "
                    f"{point.values.get(table + '.type')!r} (not parameters of it)")
            if note not in noted:
                noted.add(note)
                say(note)
    jobs = max(1, min(jobs, len(todo) or 1))
    try:
        if jobs == 1:
            _run_in_process(plan, todo, result, say)
        else:
            _run_subprocesses(plan, todo, jobs, result, say)
    finally:
        finish(result)
    return result


def _log(plan: SweepPlan, action: str, name: str, detail: str = "") -> None:
    with open(plan.sweep_dir / "sweep.log", "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {action} {name}{(' ' + detail) if detail else ''}\n")


def _done_line(plan: SweepPlan, point: SweepPoint, seconds: float, index: int) -> str:
    try:
        summary = RunDir(plan.sweep_dir / point.name).read_summary() or {}
        record = RunRecord(plan.sweep_dir / point.name, {}, summary)
        metric = record.monitor or default_metric([record])
        value = record.metrics.get(metric)
        shown = f"  {metric} {value:.4f}" if isinstance(value, float) else ""
    except MmkitError:  # an unreadable summary: the line goes without the metric
        shown = ""
    return f"[{index}/{len(plan.points)}] done    {point.name}{shown}  ({seconds:.1f} s)"


def _run_in_process(plan: SweepPlan, todo: list[tuple[SweepPoint, str]], result: SweepResult,
                    say: Callable[[str], None]) -> None:
    import traceback

    from mmkit._internal.trainer import train

    index = {p.name: i for i, p in enumerate(plan.points, 1)}
    for point, mode in todo:
        i = index[point.name]
        verb = "resume " if mode == "resume" else "train  "
        say(f"[{i}/{len(plan.points)}] {verb} {point.name}")
        _log(plan, mode, point.name)
        t0 = time.perf_counter()
        try:
            out = train(plan.recipes[point.name], mode="new" if mode == "new" else mode, quiet=True)
        except Exception as exc:  # noqa: BLE001 - one failing run must not stop the sweep
            message = str(exc) if isinstance(exc, MmkitError) else f"{type(exc).__name__}: {exc}"
            _record_failure(plan, point, message, traceback.format_exc(), result, say, i)
            continue
        if out.interrupted:
            _log(plan, "interrupted", point.name)
            raise SweepInterrupted(f"interrupted during {point.name}; re-run the same command to continue")
        (result.resumed if mode == "resume" else result.trained).append(point.name)
        _log(plan, "done", point.name, f"{time.perf_counter() - t0:.1f}s")
        say(_done_line(plan, point, time.perf_counter() - t0, i))


def _record_failure(plan: SweepPlan, point: SweepPoint, message: str, log_text: str, result: SweepResult,
                    say: Callable[[str], None], index: int) -> None:
    logs = plan.sweep_dir / "logs"
    logs.mkdir(exist_ok=True)
    if log_text:
        (logs / f"{point.name}.log").write_text(log_text, encoding="utf-8")
    result.failed[point.name] = message
    _log(plan, "failed", point.name, message.splitlines()[0] if message else "")
    say(f"[{index}/{len(plan.points)}] FAILED  {point.name}: {message} (log: {logs / (point.name + '.log')})")


def _worker_spec(plan: SweepPlan, point: SweepPoint, mode: str, threads: int) -> dict[str, Any]:
    return {"recipe": str(plan.recipe_path), "overrides": plan.overrides, "assign": point.assign,
            "name": point.name, "output_dir": str(plan.sweep_dir), "seed": point.seed, "mode": mode,
            "threads": threads}


def _run_subprocesses(plan: SweepPlan, todo: list[tuple[SweepPoint, str]], jobs: int, result: SweepResult,
                      say: Callable[[str], None]) -> None:
    threads = max(1, cpu_count() // jobs)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    logs = plan.sweep_dir / "logs"
    logs.mkdir(exist_ok=True)
    index = {p.name: i for i, p in enumerate(plan.points, 1)}
    queue = list(todo)
    running: dict[str, tuple[subprocess.Popen, SweepPoint, str, float, Any]] = {}
    interrupted = False
    try:
        while queue or running:
            while queue and len(running) < jobs:
                point, mode = queue.pop(0)
                log_fh = open(logs / f"{point.name}.log", "w", encoding="utf-8")
                spec = json.dumps(_worker_spec(plan, point, mode, threads))
                proc = subprocess.Popen([sys.executable, "-m", "mmkit._internal.sweep", spec], stdout=log_fh,
                                        stderr=subprocess.STDOUT, env=env)
                running[point.name] = (proc, point, mode, time.perf_counter(), log_fh)
                verb = "resume " if mode == "resume" else "train  "
                say(f"[{index[point.name]}/{len(plan.points)}] {verb} {point.name} (pid {proc.pid})")
                _log(plan, mode, point.name, f"pid {proc.pid}")
            time.sleep(0.2)
            for name, (proc, point, mode, t0, log_fh) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log_fh.close()
                del running[name]
                if rc == 0:
                    (result.resumed if mode == "resume" else result.trained).append(name)
                    _log(plan, "done", name, f"{time.perf_counter() - t0:.1f}s")
                    say(_done_line(plan, point, time.perf_counter() - t0, index[name]))
                elif rc == 130:
                    interrupted = True
                    queue.clear()
                else:
                    tail = (logs / f"{name}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
                    message = next((ln for ln in reversed(tail) if ln.strip()), f"exit code {rc}")
                    _record_failure(plan, point, message, "", result, say, index[name])
    except KeyboardInterrupt:
        interrupted = True
        import signal

        for proc, *_ in running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # the engine writes a last checkpoint and exits
        for proc, point, _mode, _t0, log_fh in running.values():
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log_fh.close()
            _log(plan, "interrupted", point.name)
        running.clear()
    if interrupted:
        raise SweepInterrupted("sweep interrupted; re-run the same command to continue it")


# ---------------------------------------------------------------------------------------- results
def finish(result: SweepResult) -> None:
    """Read every run of the plan and write sweep.csv/json (and the per-configuration summary)."""
    plan = result.plan
    rows = []
    records = []
    for point in plan.points:
        run_dir = plan.sweep_dir / point.name
        try:
            record = load_run(run_dir)
        except MmkitError:
            record = RunRecord(run_dir, {})
        record.error = result.failed.get(point.name)
        records.append(record)
        rows.append(run_row(record, (), leading={**point.values, "seed": point.seed}))
    result.metric = default_metric(records)
    result.rows = rows
    values = [c for c in metric_columns(rows, ()) if c.split(".", 1)[0] in ("val", "test")] + list(STAT_COLUMNS)
    result.summary_rows = aggregate(rows, plan.keys, values)
    head = ["run", *plan.keys, "seed"]
    columns = head + [c for c in metric_columns(rows, ()) if c not in head]
    d = plan.sweep_dir
    write_text_atomic(d / "sweep.csv", to_csv(rows, columns))  # tables: atomic, strict JSON (NaN -> null)
    write_json_atomic(d / "sweep.json", rows)
    if plan.seeds > 1:
        write_text_atomic(d / "sweep_summary.csv", to_csv(result.summary_rows))
        write_json_atomic(d / "sweep_summary.json", result.summary_rows)


def print_result(result: SweepResult, console: Any = None) -> None:
    """The comparison table (per configuration, mean ± std, with several seeds) and what ran."""
    from mmkit._internal.compare import console as make_console
    from mmkit._internal.compare import display_columns, rich_table, sort_rows

    console = console or make_console()
    plan = result.plan
    if plan.seeds > 1:
        rows = sort_rows(result.summary_rows, result.metric)
        columns = display_columns(rows, plan.keys, result.metric, aggregated=True)
        title = f"sweep: {len(plan.points)} runs, mean ± std over {plan.seeds} seeds, best {result.metric} first"
    else:
        rows = sort_rows(result.rows, result.metric)
        columns = display_columns(rows, [*plan.keys, "seed"], result.metric, run_column=False)
        title = f"sweep: {len(plan.points)} runs, best {result.metric} first"
    console.print(rich_table(rows, columns, title=title, highlight=result.metric, keys=plan.keys))
    counts = [f"{len(v)} {k}" for k, v in (("trained", result.trained), ("resumed", result.resumed),
                                           ("skipped (finished earlier)", result.skipped),
                                           ("failed", result.failed)) if v]
    console.print(", ".join(counts) or "nothing to do")
    files = "sweep.csv, sweep.json" + (", sweep_summary.csv, sweep_summary.json" if plan.seeds > 1 else "")
    console.print(f"sweep directory: [bold]{plan.sweep_dir}[/bold] ({files})")
    console.print(f"next: mmkit plot {plan.sweep_dir} --out sweep.png")


# ------------------------------------------------------------------------------------------ worker
def _worker(spec: Mapping[str, Any]) -> int:
    """Train one sweep run in this process (``python -m mmkit._internal.sweep SPEC_JSON``)."""
    import torch

    torch.set_num_threads(int(spec.get("threads") or 1))
    from mmkit._internal.trainer import train

    recipe, _ = point_recipe(Path(spec["recipe"]), spec["overrides"], spec["assign"], name=spec["name"],
                             output_dir=spec["output_dir"], seed=int(spec["seed"]))
    result = train(recipe, mode=spec["mode"], quiet=True)
    return 130 if result.interrupted else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mmkit._internal.sweep SPEC_JSON (internal: one run of a sweep)", file=sys.stderr)
        return 2
    try:
        return _worker(json.loads(args[0]))
    except MmkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
