"""Run directories: the one module that knows their file names (torch-free).

A run directory, written by ``mmkit run``::

    recipe.resolved.toml            the complete recipe (every default filled in)
    metrics.jsonl                   one JSON record per log line, evaluation, epoch and the final result
    history.jsonl                   one record per start/resume: the command's --set overrides, the data
                                    manifests' size + hash, the keys a resume changed (mmkit._internal.resume)
    summary.json                    written when the run finishes: final/best metrics, speed, sizes
    checkpoints/{last,best}/        model.safetensors, state.json (TrainState + fit state),
                                    training_state.pt (optimizer, grad scaler; plain tensors only);
                                    optimizer/ instead of the optimizer under FSDP (sharded, DCP)
    tensorboard/                    with ``train.tensorboard = true``
    inputs/                         data handed to ``mmkit.fit`` in memory: {train,val,test}.jsonl and
                                    files/ (images that were PIL objects or bytes)
    .lock                           held while a process trains in it

:class:`RunDir` names these paths, finds complete checkpoints (``best`` falling back to ``last``)
and reads ``summary.json`` with a check of its shape. Run directories are never overwritten
silently (:func:`prepare_run_dir`) and are locked while a process trains in them (:class:`RunLock`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmkit._internal.errors import MmkitError
from mmkit._internal.safeio import (
    MAX_TOML_BYTES,
    dumps_json,
    loads_json,
    loads_toml,
    name_max,
    read_json,
    read_text,
    write_json_atomic,
    write_text_atomic,
)

RECIPE = "recipe.resolved.toml"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
HISTORY = "history.jsonl"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
INPUTS = "inputs"
INPUT_FILES = "files"  # inside INPUTS
LOCK = ".lock"
SAMPLE_CACHE = ".sample-cache"  # decoded samples spilled to disk while a run trains (deleted on close)
# inside a checkpoint folder
WEIGHTS = "model.safetensors"
STATE = "state.json"
TRAINING_STATE = "training_state.pt"
OPTIMIZER_SHARDS = "optimizer"  # the optimizer state of a sharded (FSDP) run, torch.distributed.checkpoint
LAST, BEST = "last", "best"


class RunDirError(MmkitError):
    """The run directory cannot be used as asked, or one of its files is malformed."""


# ------------------------------------------------------------------------------------- checkpoints
def checkpoint_complete(path: Path) -> bool:
    """A checkpoint folder with both its weights and its state (a save that finished)."""
    return (path / STATE).is_file() and (path / WEIGHTS).is_file()


def find_checkpoint(folder: Path, name: str, *, recover: bool = False) -> Path | None:
    """The complete checkpoint ``name`` in ``folder``, or None.

    A save renames the previous checkpoint to ``.old-NAME-*`` before moving the new one in; after a
    crash between the two renames the newest complete ``.old-NAME-*`` is the checkpoint. With
    ``recover`` it is renamed back into place (what a writer does before saving again); without,
    it is returned where it lies (read-only use: loading, registering).
    """
    final = folder / name
    if checkpoint_complete(final):
        return final
    olds = sorted((p for p in folder.glob(f".old-{name}-*") if checkpoint_complete(p)),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    if not olds:
        return None
    if not recover:
        return olds[0]
    if not final.exists():
        os.rename(olds[0], final)
    return final if checkpoint_complete(final) else None


def checkpoint_name(path: Path) -> str:
    """``best`` for ``checkpoints/best`` and for a leftover ``checkpoints/.old-best-1a2b``."""
    return path.name.split("-")[1] if path.name.startswith(".old-") else path.name


# ------------------------------------------------------------------------------------- the value
@dataclass(frozen=True)
class RunDir:
    """The paths of one run directory and what can be read from them without torch."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def recipe(self) -> Path:
        return self.path / RECIPE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def inputs(self) -> Path:
        """In-memory data given to ``mmkit.fit``, written here so the run stays self-contained."""
        return self.path / INPUTS

    def input_manifest(self, split: str) -> Path:
        return self.inputs / f"{split}.jsonl"

    @property
    def input_files(self) -> Path:
        return self.inputs / INPUT_FILES

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    def sample_cache_file(self, split: str, rank: int) -> Path:
        """The memory-mapped spill file of a split's decoded-sample cache (one per rank)."""
        return self.path / SAMPLE_CACHE / f"{split}-rank{rank}.bin"

    @staticmethod
    def looks_like_run(path: str | Path) -> bool:
        """A folder with a resolved recipe or a summary (a started or a finished run)."""
        p = Path(path)
        return (p / RECIPE).is_file() or (p / SUMMARY).is_file()

    @staticmethod
    def has_model(path: str | Path) -> bool:
        """A folder a trained model can be loaded from: a resolved recipe and a checkpoints folder."""
        p = Path(path)
        return (p / RECIPE).is_file() and (p / CHECKPOINTS).is_dir()

    @property
    def finished(self) -> bool:
        return self.summary_file.is_file()

    @property
    def resumable(self) -> bool:
        """Started, not finished, and a ``last`` checkpoint to continue from."""
        return not self.finished and self.checkpoint(LAST, fallback=None) is not None

    def checkpoint(self, name: str = BEST, fallback: str | None = LAST, *, recover: bool = False) -> Path | None:
        """The complete checkpoint folder ``name`` (``best`` falls back to ``last`` by default: a run
        without a validation split has no best), or None."""
        if not self.checkpoints.is_dir():
            return None
        found = find_checkpoint(self.checkpoints, name, recover=recover)
        if found is None and fallback and fallback != name:
            found = find_checkpoint(self.checkpoints, fallback, recover=recover)
        return found

    def read_recipe(self) -> dict[str, Any]:
        """The resolved recipe as a TOML document."""
        if not self.recipe.exists():
            raise RunDirError(f"{self.path}: not a run directory (no {RECIPE})")
        return loads_toml(read_text(self.recipe, max_bytes=MAX_TOML_BYTES, error=RunDirError), str(self.recipe),
                          RunDirError)

    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json`` (None while the run is unfinished), its shape checked: an error names the key."""
        if not self.summary_file.is_file():
            return None
        data = read_json(self.summary_file, error=RunDirError)
        check_summary(data, str(self.summary_file))
        return data

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json`` atomically (temp file + rename): it marks the run finished."""
        check_summary(summary, str(self.summary_file))
        write_json_atomic(self.summary_file, summary)  # strict JSON: a NaN metric is null

    def write_recipe(self, text: str) -> None:
        write_text_atomic(self.recipe, text)

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        """One record (``{"step", "epoch", "split", "metrics"}``) appended to ``metrics.jsonl`` (strict
        JSON: a non-finite value is null)."""
        with open(self.metrics, "a", encoding="utf-8") as fh:
            fh.write(dumps_json(record) + "\n")

    def append_history(self, record: Mapping[str, Any]) -> None:
        """One start/resume record appended to ``history.jsonl`` (flushed to disk: a resume reads it)."""
        with open(self.history, "a", encoding="utf-8") as fh:
            fh.write(dumps_json(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read_history(self) -> list[dict[str, Any]]:
        """The records of ``history.jsonl``, oldest first (a line cut short by a crash is skipped)."""
        if not self.history.is_file():
            return []
        out = []
        for line in self.history.read_text(encoding="utf-8").splitlines():
            try:
                rec = loads_json(line, str(self.history))
            except MmkitError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                rec = loads_json(line, str(self.metrics))
            except MmkitError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_metric(value: Any) -> bool:
    """A metric value: a number within float range, or null (a non-finite value, as strict JSON
    writes it)."""
    if value is None:
        return True
    if not _is_number(value):
        return False
    try:
        float(value)
    except OverflowError:  # a 400-digit integer: readers compute with floats
        return False
    return True


def check_summary(data: Any, where: str) -> None:
    """Raise :class:`RunDirError` naming the key when ``data`` is not a summary's shape."""
    if not isinstance(data, Mapping):
        raise RunDirError(f"{where}: expected a JSON object, got {type(data).__name__}")
    final = data.get("final", {})
    if not isinstance(final, Mapping):
        raise RunDirError(f"{where}: final: expected an object of split -> metrics, got {type(final).__name__}")
    for split, values in final.items():
        if not isinstance(values, Mapping) or not all(_is_metric(v) for v in values.values()):
            raise RunDirError(f"{where}: final.{split}: expected an object of metric -> number")
    best = data.get("best", {})
    if not isinstance(best, Mapping):
        raise RunDirError(f"{where}: best: expected an object, got {type(best).__name__}")
    if best and not (isinstance(best.get("metric"), str) and "value" in best and _is_metric(best["value"])):
        raise RunDirError(f"{where}: best: expected 'metric' (a name) and 'value' (a number)")
    for key in ("steps", "epochs", "samples_seen"):
        if key in data and not (isinstance(data[key], int) and not isinstance(data[key], bool)):
            raise RunDirError(f"{where}: {key}: expected an integer, got {data[key]!r}")
    for key in ("samples_per_s", "train_seconds", "wall_seconds"):
        if not _is_metric(data.get(key)):
            raise RunDirError(f"{where}: {key}: expected a number, got {str(data[key])[:40]}")
    params = data.get("params", {})
    if not isinstance(params, Mapping) or not all(_is_metric(v) for v in params.values()):
        raise RunDirError(f"{where}: params: expected an object of name -> number")


# ------------------------------------------------------------------------------------- creating
def prepare_run_dir(output_dir: str | Path, name: str, mode: str = "new") -> tuple[Path, bool]:
    """Return ``(run_dir, renamed)``.

    ``mode``: ``"new"`` creates ``<name>`` or, if it exists, the first free ``<name>-2``, ``<name>-3``…
    (``os.mkdir`` is atomic, so two processes never get the same folder); ``"resume"`` uses the
    existing folder; ``"overwrite"`` deletes and recreates it.
    """
    if not name or "/" in name or name in (".", ".."):
        raise RunDirError(f"run.name {name!r}: must be a plain folder name")
    parent = Path(output_dir)
    path = parent / name
    try:
        return _prepare(parent, path, name, mode)
    except OSError as exc:  # output_dir is a file, unwritable, a name too long, a full disk ...
        where = exc.filename if exc.filename is not None else path
        raise RunDirError(f"cannot create the run directory {path} (run.output_dir / run.name): {where}: "
                          f"{exc.strerror or exc}") from None


def _prepare(parent: Path, path: Path, name: str, mode: str) -> tuple[Path, bool]:
    limit = name_max(parent)
    if len(os.fsencode(name)) + 6 > limit:  # room for a -NNNN suffix; checked before anything is created
        raise RunDirError(f"cannot create the run directory {parent / name[:40]}...: run.name is longer than "
                          f"this filesystem allows ({limit} bytes)")
    parent.mkdir(parents=True, exist_ok=True)
    if mode == "resume":
        if not path.is_dir():
            raise RunDirError(f"{path}: nothing to resume (no such run directory)")
        return path, False
    if mode == "overwrite" and (path.exists() or path.is_symlink()):
        if path.is_symlink() or not path.is_dir():  # never delete what a link points to, or a file
            raise RunDirError(f"{path}: not a run directory (a {'link' if path.is_symlink() else 'file'}); "
                              "--overwrite replaces only run directories")
        entries = {p.name for p in path.iterdir()}
        if entries and not entries & {RECIPE, SUMMARY, METRICS, CHECKPOINTS, LOCK}:
            raise RunDirError(f"{path}: not a run directory (none of {RECIPE}, {METRICS}, {CHECKPOINTS}/); "
                              "--overwrite replaces only run directories")
        with RunLock(path):  # refuses while another process trains in it
            shutil.rmtree(path)
    for i in range(1, 10_000):
        candidate = path if i == 1 else parent / f"{name}-{i}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        return candidate, candidate != path
    raise RunDirError(f"{parent}: too many runs named {name!r}")


class RunLock:
    """An exclusive ``fcntl`` lock on ``<run_dir>/.lock`` held for the duration of a run."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self._fh: Any = None

    def __enter__(self) -> RunLock:  # noqa: PYI034 - a final class
        import fcntl

        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            raise RunDirError(f"{self.path.parent}: another mmkit process is using this run directory") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
