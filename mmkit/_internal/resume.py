"""Resume that refuses silent changes (torch-free).

A run directory's ``history.jsonl`` (:class:`mmkit._internal.rundir.RunDir`) holds one record per start and
per resume: the command's ``--set`` overrides (so the resume hint repeats them exactly), the size
and SHA-256 of each data manifest, and the keys a resume changed. ``--resume`` compares the whole
resolved recipe (run seed, data, model, train, plugins) with the run's ``recipe.resolved.toml`` and
the manifests with the last record; any difference outside :data:`SAFE_KEYS` is refused with a
diff naming each key with its old and new value. Safe keys change only how long training goes on or
what is logged, never what a step computes, and each change is recorded in the history.
"""

from __future__ import annotations

import hashlib
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from mmkit._internal.errors import RecipeError
from mmkit._internal.rundir import RunDir
from mmkit._internal.safeio import sha256_file

#: keys a resume may change: how long to train, how often to evaluate/save/log, what is logged, when
#: to stop early. Everything else (lr, optimizer, seed, data, model, precision...) changes what the
#: remaining steps compute and is refused.
SAFE_KEYS = frozenset({"train.max_steps", "train.epochs", "train.eval_every", "train.checkpoint_every",
                       "train.log_every", "train.tensorboard", "train.callbacks", "train.early_stopping"})
#: keys that name the run directory itself (its folder may carry a -2 suffix the recipe lacks)
IGNORED_KEYS = frozenset({"run.name", "run.output_dir"})
_MISSING = "(absent)"


@dataclass(frozen=True)
class Change:
    """One differing key of the resolved recipe (or data manifest) with its old and new value."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "old": self.old, "new": self.new}


def _show(value: Any) -> str:
    return value if value is _MISSING or " x " in str(value) else repr(value)


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (lists are leaves)."""
    if not isinstance(doc, Mapping):
        return {prefix: doc}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, path) if isinstance(value, Mapping) and value else {path: value})
    return out


def normalized(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe document as its TOML round trip reads it (None dropped, tuples as lists)."""
    from mmkit._internal.recipe import dump_toml

    return tomllib.loads(dump_toml(dict(doc)))


def _defaults() -> dict[str, Any]:
    """``section.key`` -> default of the [run], [data] and [train] keys (a run recorded before a key
    existed has it at its default)."""
    from mmkit._internal.recipe import DATA_PARAMS, RUN_PARAMS, TRAIN_PARAMS

    return {f"{section}.{p.name}": p.default for section, params in
            (("run", RUN_PARAMS), ("data", DATA_PARAMS), ("train", TRAIN_PARAMS)) for p in params}


def diff_recipes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every key whose value differs between two resolved recipes (run.name/output_dir ignored; a key
    missing from the old one counts as its default)."""
    a, b = _flatten(old), _flatten(new)
    defaults = _defaults()
    for key, value in defaults.items():
        if key not in a and key in b and b[key] == value:
            a[key] = value
    return [Change(k, a.get(k, _MISSING), b.get(k, _MISSING)) for k in sorted(set(a) | set(b))
            if k not in IGNORED_KEYS and a.get(k, _MISSING) != b.get(k, _MISSING)]


def split_changes(changes: Sequence[Change], old_world: int, new_world: int) -> tuple[list[Change], list[Change]]:
    """``(refused, allowed)``. ``train.batch_size`` is allowed when the global batch (per-process
    batch x world size) stays the same, e.g. a 2-process run with 4 resumed in 1 process with 8."""
    refused: list[Change] = []
    allowed: list[Change] = []
    for c in changes:
        same_global = (c.key == "train.batch_size" and isinstance(c.old, int) and isinstance(c.new, int)
                       and c.old * old_world == c.new * new_world)
        (allowed if c.key in SAFE_KEYS or same_global else refused).append(c)
    return refused, allowed


GLOBAL_BATCH = "global batch (train.batch_size x processes)"


def global_batch_change(old: Mapping[str, Any], new: Mapping[str, Any], old_world: int,
                        new_world: int) -> list[Change]:
    """Resuming in another number of processes with the same per-process batch changes the global
    batch (and so every remaining step): a difference, unless ``train.batch_size`` compensates."""
    a, b = old.get("train", {}).get("batch_size"), new.get("train", {}).get("batch_size")
    if a != b or not isinstance(a, int) or old_world == new_world:
        return []  # a changed batch_size is judged by split_changes
    return [Change(GLOBAL_BATCH, f"{a} x {old_world}", f"{b} x {new_world}")]


# ------------------------------------------------------------------------------------- data manifests
def _file_digest(path: Path) -> tuple[int, str]:
    return path.stat().st_size, sha256_file(path)


def manifest_fingerprints(data: Mapping[str, Any], base_dir: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of each split's manifest file (a folder: of its files, in name order).
    Registered datasets have none (their options are part of the recipe); a path that is a pattern
    rather than a file or folder (sharded data) is fingerprinted by its name only."""
    out: dict[str, dict[str, Any]] = {}
    for split in ("train", "val", "test"):
        if not data.get(split):
            continue
        path = (base_dir / str(data[split])).resolve()
        if path.is_file():
            size, digest = _file_digest(path)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            parts = [(str(p.relative_to(path)), *_file_digest(p)) for p in files]
            size = sum(p[1] for p in parts)
            digest = hashlib.sha256(repr(parts).encode()).hexdigest()
        else:
            continue
        out[split] = {"path": str(path), "size": size, "sha256": digest}
    return out


def diff_manifests(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """A manifest whose size or content changed since the run started is a difference."""
    out = []
    for split in sorted(set(old) | set(new)):
        a, b = old.get(split) or {}, new.get(split) or {}
        for key in ("size", "sha256"):
            if a.get(key) != b.get(key):
                out.append(Change(f"data manifest {split} ({b.get('path') or a.get('path')}) {key}",
                                  a.get(key, _MISSING), b.get(key, _MISSING)))
    return out


# ------------------------------------------------------------------------------------- the check
def recorded_lr_mults(recorded: Mapping[str, Any]) -> dict[str, float]:
    """``{encoder: lr_mult}`` for the encoders whose ``lr_mult`` a run's resolved recipe records as a number.

    A recipe that leaves ``lr_mult`` at ``"auto"`` continues such a run with the recorded number: a run
    made before ``"auto"`` existed recorded 1.0, and its own setting is what a resume must keep.
    """
    encoders = recorded.get("model", {}).get("encoders", {})
    return {name: float(table["lr_mult"]) for name, table in encoders.items()
            if isinstance(table, Mapping) and isinstance(table.get("lr_mult"), (int, float))
            and not isinstance(table.get("lr_mult"), bool)}


def adopt_recorded_lr_mults(recipe: Any, recorded: Mapping[str, Any]) -> None:
    """Give every encoder whose ``lr_mult`` is ``"auto"`` the number the run recorded (see above)."""
    for name, mult in recorded_lr_mults(recorded).items():
        spec = recipe.encoders.get(name)
        if spec is not None and spec.lr_mult == "auto":
            spec.lr_mult = mult


def check_resume(run: RunDir, new_doc: Mapping[str, Any], manifests: Mapping[str, Any], *, old_world: int,
                 new_world: int) -> list[Change]:
    """Refuse (RecipeError with the diff) a resume whose recipe or data differs from the run's in a
    key that is not safe; return the safe changes (to record)."""
    old, new = normalized(run.read_recipe()), normalized(new_doc)
    changes = diff_recipes(old, new) + global_batch_change(old, new, old_world, new_world)
    starts = [r for r in run.read_history() if isinstance(r.get("manifests"), Mapping)]
    if starts:
        changes += diff_manifests(starts[-1]["manifests"], manifests)
    refused, allowed = split_changes(changes, old_world, new_world)
    if refused:
        lines = "\n  ".join(str(c) for c in refused[:30])
        more = f"\n  ... and {len(refused) - 30} more" if len(refused) > 30 else ""
        safe = ", ".join(sorted(SAFE_KEYS))
        raise RecipeError(f"{run.path}: cannot resume: the recipe or data differs from the run's "
                          f"(key: old -> new):\n  {lines}{more}\nResume with the run's settings (see "
                          f"{run.recipe.name}; with another number of processes, scale train.batch_size to "
                          f"keep the global batch), or start a new run; keys a resume may change: {safe}")
    return allowed


def history_record(event: str, step: int, overrides: Sequence[str], manifests: Mapping[str, Any],
                   changes: Sequence[Change] = (), world: int = 1) -> dict[str, Any]:
    """One ``history.jsonl`` record: a start or a resume of the run."""
    return {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "step": step, "world_size": world,
            "overrides": list(overrides), "manifests": dict(manifests), "changes": [c.to_dict() for c in changes]}


def resume_command(source: str, run_name: str, overrides: Sequence[str], nproc: int = 0) -> str:
    """The command that resumes this run: the recipe, ``--nproc`` (when > 0), the command's own
    ``--set`` overrides (in their order, shell-quoted) and the run directory's actual name."""
    parts = ["mmkit", "run", source, "--resume"] + (["--nproc", str(nproc)] if nproc > 0 else [])
    for item in overrides:
        if not item.split("=", 1)[0].strip() == "run.name":
            parts += ["--set", item]
    parts += ["--set", f"run.name={run_name}"]
    return " ".join(shlex.quote(p) for p in parts)


__all__ = ["IGNORED_KEYS", "SAFE_KEYS", "Change", "check_resume", "diff_manifests", "diff_recipes",
           "history_record", "manifest_fingerprints", "resume_command", "split_changes"]
