"""Command-line option types and output-file rules shared by mmkit's commands.

Bad option values are click usage errors (``Error: Invalid value for '--device': ...``, exit 2)
raised before any model is loaded. Output files follow one rule: an existing file is replaced only
with ``--overwrite``, never the input, and only once the command has succeeded (atomic rename).
Nothing here imports torch at module level.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from mmkit._internal.errors import MmkitError
from mmkit._internal.safeio import atomic_file, name_max

_DEVICE = re.compile(r"(cpu|auto|mps|cuda)(:(0|[1-9][0-9]{0,2}))?")


class DeviceType(click.ParamType):
    """``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``; a CUDA device that does not exist is refused."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        m = _DEVICE.fullmatch(text)
        if m is None or (m.group(2) and m.group(1) != "cuda"):
            self.fail(f"{text!r} is not a device; use cpu, cuda, cuda:N or auto", param, ctx)
        if m.group(1) == "cuda" and m.group(3) is not None:
            import torch

            count = torch.cuda.device_count()
            if int(m.group(3)) >= count:
                self.fail(f"{text!r}: there {'is' if count == 1 else 'are'} {count} CUDA device(s)"
                          + (f" (cuda:0 to cuda:{count - 1})" if count else ""), param, ctx)
        return text


DEVICE = DeviceType()


def check_output_file(out: str | os.PathLike[str], *, overwrite: bool, inputs: tuple[str | None, ...] = (),
                      option: str = "--out") -> Path:
    """Refuse an output path before any work is done: a folder, an existing file without
    ``--overwrite``, one of the ``inputs``, a name longer than the filesystem allows, or a parent
    that is a file. Raises :class:`click.BadParameter` (``Error: ...``, exit 2)."""
    path = Path(out)
    limit = name_max(path.parent)
    too_long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if too_long:
        raise click.BadParameter(f"the name {too_long[0][:40]}... is longer than this filesystem allows "
                                 f"({limit} bytes)", param_hint=option)
    if path.is_dir():
        raise click.BadParameter(f"{path} is a folder; give a file name", param_hint=option)
    for given in inputs:
        if given is not None and path.exists() and Path(given).exists() and os.path.samefile(path, given):
            raise click.BadParameter(f"{path} is the input file; write the output elsewhere", param_hint=option)
    if path.exists() and not overwrite:
        raise click.BadParameter(f"{path} already exists; pass --overwrite to replace it", param_hint=option)
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise click.BadParameter(f"{parent} is a file, not a folder", param_hint=option)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise click.BadParameter(f"cannot write into {parent}: permission denied", param_hint=option)
            break
    return path


@contextmanager
def output_file(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Write ``path`` atomically (see :func:`mmkit._internal.safeio.atomic_file`), creating missing parent
    folders; on failure the folders it created are removed again and an ``OSError`` becomes an
    :class:`~mmkit.MmkitError` naming the file (``error: ...``, exit 2)."""
    target = Path(path)
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MmkitError(f"cannot create the folder of {target}: {exc.strerror or exc}") from None
    try:
        with atomic_file(target, mode) as fh:
            yield fh
    except BaseException as exc:
        for folder in created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        if isinstance(exc, OSError) and (exc.filename is None or Path(exc.filename).parent == target.parent):
            # (an error naming another file is not ours: it came from reading an input)
            raise MmkitError(f"cannot write {target}: {exc.strerror or exc}; nothing was written") from None
        raise


__all__ = ["DEVICE", "DeviceType", "check_output_file", "output_file"]
