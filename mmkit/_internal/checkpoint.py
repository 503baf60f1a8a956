"""Checkpoints written atomically: a complete temp folder is renamed into place, so a crash during a
save leaves the previous checkpoint loadable. Weights are safetensors; optimizer state is loaded with
``torch.load(weights_only=True)``; everything else is JSON. Nothing is ever unpickled."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmkit._internal.errors import MmkitError
from mmkit._internal.rundir import STATE, TRAINING_STATE, WEIGHTS, checkpoint_complete
from mmkit._internal.rundir import find_checkpoint as _find
from mmkit._internal.safeio import fsync_dir

__all__ = ["STATE", "TRAINING_STATE", "WEIGHTS", "CheckpointError", "find_checkpoint", "load_weights", "make_tmp",
           "read_state", "read_training_state", "save_checkpoint", "save_weights"]


class CheckpointError(MmkitError):
    """A checkpoint cannot be written or read."""


def _write_json(path: Path, data: Any) -> None:
    from mmkit._internal.safeio import dumps_json

    with open(path, "w", encoding="utf-8") as fh:
        fh.write(dumps_json(data, indent=1))  # strict JSON: a NaN metric is null
        fh.flush()
        os.fsync(fh.fileno())


def save_weights(model: nn.Module, path: Path) -> None:
    """Model weights as safetensors (shared tensors handled)."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights(model: nn.Module, path: Path, strict: bool = True) -> None:
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as exc:  # noqa: BLE001 - a corrupt file must be reported with its path
        raise CheckpointError(f"{path}: cannot load weights: {type(exc).__name__}: {exc}") from exc
    if strict and (missing or unexpected):
        raise CheckpointError(f"{path}: weights do not match the model; missing keys: {sorted(missing)[:10]}, "
                              f"unexpected keys: {sorted(unexpected)[:10]}")


def make_tmp(folder: Path, name: str) -> Path:
    """A new temp folder for checkpoint ``name`` that other processes fill too (sharded optimizer state)
    before :func:`save_checkpoint` completes and renames it."""
    folder.mkdir(parents=True, exist_ok=True)
    _clean_stale(folder, name)
    tmp = folder / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def save_checkpoint(folder: Path, name: str, model: nn.Module, state: dict[str, Any],
                    training_state: dict[str, Any] | None = None, tmp: Path | None = None) -> Path:
    """Write ``folder/name/`` atomically: weights, JSON ``state`` and tensor ``training_state``.
    ``tmp``: a folder from :func:`make_tmp` that already holds other files of the checkpoint."""
    folder.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        _clean_stale(folder, name)
    tmp = tmp or folder / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    final = folder / name
    old: Path | None = None
    try:
        tmp.mkdir(exist_ok=True)
        save_weights(model, tmp / WEIGHTS)
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE)
        _write_json(tmp / STATE, state)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(tmp)
        if final.exists():
            old = folder / f".old-{name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as exc:  # a full disk, or Ctrl-C in the middle of a save
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not final.exists():
            try:
                os.rename(old, final)  # put the previous checkpoint back
            except OSError:
                pass  # find_checkpoint restores it from .old-NAME-*
        if isinstance(exc, Exception):  # OSError, and safetensors' / torch.save's own write errors
            why = exc.strerror or exc if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
            raise CheckpointError(f"could not write checkpoint {final}: {why} "
                                  f"(the previous checkpoint is kept)") from exc
        raise
    return final


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(folder: Path, name: str) -> None:
    """Remove what killed saves left behind, each a full checkpoint's size: temp folders of processes
    that no longer run, and ``.old-NAME-*`` copies once a complete ``NAME`` exists."""
    for tmp in folder.glob(f".tmp-{name}-*"):
        pid = tmp.name[len(f".tmp-{name}-"):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
    if checkpoint_complete(folder / name):
        for old in folder.glob(f".old-{name}-*"):
            shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(folder: Path, name: str) -> Path | None:
    """The complete checkpoint ``name`` in ``folder``; after a crash between the two renames of a
    save, the newest complete previous one (``.old-NAME-*``) is restored first."""
    return _find(folder, name, recover=True)


def read_state(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint's ``state.json`` (bounded: deep nesting or huge numbers are a CheckpointError)."""
    from mmkit._internal.safeio import read_json

    state = read_json(checkpoint / STATE, error=CheckpointError)
    if not isinstance(state, dict):
        raise CheckpointError(f"{checkpoint / STATE}: expected a JSON object, got {type(state).__name__}")
    return state


def read_training_state(checkpoint: Path) -> dict[str, Any] | None:
    path = checkpoint / TRAINING_STATE
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: refused or unreadable (only plain tensors are loaded): {exc}") from exc
