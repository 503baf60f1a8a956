"""Run directories: never overwritten silently, locked while a process trains in them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from mmkit.errors import MmkitError


class RunDirError(MmkitError):
    """The run directory cannot be used as asked."""


def prepare_run_dir(output_dir: str | Path, name: str, mode: str = "new") -> tuple[Path, bool]:
    """Return ``(run_dir, renamed)``.

    ``mode``: ``"new"`` creates ``<name>`` or, if it exists, the first free ``<name>-2``, ``<name>-3``…
    (``os.mkdir`` is atomic, so two processes never get the same folder); ``"resume"`` uses the
    existing folder; ``"overwrite"`` deletes and recreates it.
    """
    if not name or "/" in name or name in (".", ".."):
        raise RunDirError(f"run.name {name!r}: must be a plain folder name")
    parent = Path(output_dir)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / name
    if mode == "resume":
        if not path.is_dir():
            raise RunDirError(f"{path}: nothing to resume (no such run directory)")
        return path, False
    if mode == "overwrite" and path.exists():
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
        self.path = run_dir / ".lock"
        self._fh = None

    def __enter__(self) -> "RunLock":
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
