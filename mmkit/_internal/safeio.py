"""Bounded reading and atomic writing: the one place mmkit parses JSON/TOML handed to it and writes
output files.

Readers turn hostile input into an error (the caller's :class:`~mmkit.MmkitError` subclass)
that names the file and line, where the standard parsers would raise ``RecursionError``/``ValueError``
or run out of memory:

* nesting deeper than :data:`MAX_DEPTH` arrays/tables/objects;
* integers of more than :data:`MAX_INT_DIGITS` digits (Python refuses to convert 4300+ digits);
* TOML keys of more than :data:`MAX_KEY_PARTS` dotted parts (tomllib's memory grows with their square:
  40,000 parts take 6 GB);
* files larger than their limit (:data:`MAX_TOML_BYTES`, :data:`MAX_JSON_BYTES`).

Writers write a temporary file next to the target, flush and fsync it, and ``os.replace`` it into
place only when everything succeeded; the temporary file is removed on every failure path (Ctrl-C
included). JSON is written strictly: NaN and infinities become ``null``.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import tomllib

from mmkit._internal.errors import MmkitError

MAX_DEPTH = 64
MAX_INT_DIGITS = 1000
MAX_KEY_PARTS = 64
MAX_TOML_BYTES = 1 << 20
MAX_JSON_BYTES = 256 << 20

ErrorType = Callable[[str], MmkitError]


def _where(source: str, line: int | None) -> str:
    return f"{source} line {line}" if line else source


# ------------------------------------------------------------------------------------------ JSON
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _json_depth_error(text: str) -> tuple[int, int] | None:
    """(position, depth) where nesting first exceeds MAX_DEPTH, or None (strings are skipped)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return None
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return m.start(), depth
        elif tok in "]}":
            depth -= 1
    return None


class _Refused(Exception):
    """Raised by the json hooks; turned into the caller's error with the location."""


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"a {digits}-digit integer is too large (at most {MAX_INT_DIGITS} digits)")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:40]} is beyond the range of a float")
    return value


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not valid JSON (write null for a missing value)")


def loads_json(text: str, source: str, *, line: int | None = None, where: str | None = None,
               finite: bool = False, error: ErrorType = MmkitError) -> Any:
    """Parse JSON ``text`` from ``source`` (``line``: the file line it starts on, for JSON Lines;
    ``where``: the whole location prefix of error messages instead, e.g. ``FILE line 3 (row 2)``).

    ``finite`` refuses NaN, Infinity and numbers beyond float range (strict JSON, for files mmkit
    wrote itself: cards, fit state, summaries). Any problem is ``error("SOURCE line N: ...")``.
    """
    def at(offset: int | None) -> str:
        if where is not None:
            return where
        return _where(source, None if offset is None else (line or 1) + offset - 1)

    deep = _json_depth_error(text)
    if deep is not None:
        raise error(f"{at(text.count(chr(10), 0, deep[0]) + 1)}: nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_finite_float if finite else float,
                          parse_constant=_no_constant if finite else None)
    except json.JSONDecodeError as exc:
        raise error(f"{at(exc.lineno)}: invalid JSON: {exc.msg} (column {exc.colno})") from None
    except _Refused as exc:
        raise error(f"{at(line and 1)}: {exc}") from None
    except RecursionError:  # a guard: the depth check above should have caught it
        raise error(f"{at(line and 1)}: nested too deeply") from None


def read_json(path: str | Path, *, finite: bool = False, error: ErrorType = MmkitError,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON value in the file ``path`` (UTF-8), bounded as :func:`loads_json`; unreadable files,
    non-UTF-8 text and files over ``max_bytes`` are ``error`` naming the file."""
    path = Path(path)
    text = read_text(path, max_bytes=max_bytes, error=error)
    return loads_json(text, str(path), finite=finite, error=error)


def read_text(path: Path, *, max_bytes: int, error: ErrorType = MmkitError) -> str:
    """UTF-8 text of ``path`` (a BOM is dropped), refusing files larger than ``max_bytes``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise error(f"{path}: larger than {max_bytes} bytes; refusing to read it")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{path} line {line}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 4]!r})"
                    ) from None


def strict_json(value: Any) -> Any:
    """``value`` with every NaN/infinite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def dumps_json(value: Any, **kw: Any) -> str:
    """Strict JSON text of ``value`` (NaN/inf -> null; ``default=str`` for other objects)."""
    kw.setdefault("default", str)
    return json.dumps(strict_json(value), allow_nan=False, **kw)


# ------------------------------------------------------------------------------------------ TOML
_TOML_SPECIAL = re.compile(r"""["'#\[\]{}.=,\n]|[0-9_]+""")
_BASIC_BODY = re.compile(r'[^"\\]*(?:\\[\s\S][^"\\]*)*')
_BASIC_LINE = re.compile(r'"(?:[^"\\\n]|\\.)*"')


def _skip_string(text: str, j: int) -> int:
    """End of the TOML string starting at ``j`` (unterminated: end of line; tomllib reports it)."""
    quote = text[j]
    if text.startswith(quote * 3, j):
        k = j + 3
        while True:
            if quote == '"':
                k = _BASIC_BODY.match(text, k).end()  # type: ignore[union-attr]
            else:
                found = text.find("'''", k)
                k = len(text) if found < 0 else found
            if k >= len(text):
                return k
            if text.startswith(quote * 3, k):
                k += 3
                for _ in range(2):  # up to two more quotes end the content
                    if text.startswith(quote, k):
                        k += 1
                return k
            k += 1
    if quote == '"':
        m = _BASIC_LINE.match(text, j)
        if m:
            return m.end()
    end = text.find("\n", j)
    end = len(text) if end < 0 else end
    if quote == "'":
        found = text.find("'", j + 1, end)
        if found >= 0:
            return found + 1
    return end


def check_toml_text(text: str, source: str, error: ErrorType = MmkitError, *, lines: bool = True) -> None:
    """Refuse TOML that would exhaust the parser: deep nesting, long dotted keys, huge integers.

    Errors read ``SOURCE line N: ...`` (``lines=False``: ``SOURCE: ...``, for one-line values)."""
    i, line, depth, parts = 0, 1, 0, 1

    def fail(why: str) -> MmkitError:
        return error(f"{_where(source, line if lines else None)}: {why}")

    while True:
        m = _TOML_SPECIAL.search(text, i)
        if m is None:
            return
        j, tok = m.start(), m.group()
        line += text.count("\n", i, j)
        i = m.end()
        if tok in ('"', "'"):
            i = _skip_string(text, j)
            line += text.count("\n", j, i)
        elif tok == "#":
            end = text.find("\n", j)
            i = len(text) if end < 0 else end
        elif tok in "[{":
            depth, parts = depth + 1, 1
            if depth > MAX_DEPTH:
                raise fail(f"nested more than {MAX_DEPTH} levels deep")
        elif tok in "]}":
            depth, parts = max(depth - 1, 0), 1
        elif tok == ".":
            parts += 1
            if parts > MAX_KEY_PARTS:
                raise fail(f"a dotted key with more than {MAX_KEY_PARTS} parts")
        elif tok in "=,\n":
            parts = 1
            line += tok == "\n"
        elif len(tok.replace("_", "")) > MAX_INT_DIGITS:
            raise fail(f"a {len(tok)}-digit number is too large (at most {MAX_INT_DIGITS} digits)")


def loads_toml(text: str, source: str, error: ErrorType = MmkitError) -> dict[str, Any]:
    """Parse TOML ``text`` from ``source`` after :func:`check_toml_text`; errors name the source."""
    if len(text) > MAX_TOML_BYTES:
        raise error(f"{source}: larger than {MAX_TOML_BYTES} bytes; a recipe is a few kilobytes")
    check_toml_text(text, source, error)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: invalid TOML: {exc}") from None
    except (RecursionError, ValueError, MemoryError) as exc:  # guards: the checks above should catch these
        raise error(f"{source}: cannot parse: {type(exc).__name__}: {str(exc)[:200]}") from None


# ------------------------------------------------------------------------------------------ writing
def name_max(folder: Path) -> int:
    """The longest file name the filesystem of ``folder`` (or its nearest existing parent) allows."""
    probe = folder
    while probe != probe.parent:
        try:
            if probe.exists():
                break
        except OSError:  # a part too long to even look up
            pass
        probe = probe.parent
    try:
        return int(os.pathconf(probe, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _tmp_name(target: Path) -> Path:
    return target.with_name(f".{target.name[:40]}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file in its folder, renamed into place only when the block
    finishes without an exception; the temporary file never stays behind."""
    target = Path(path)
    tmp = _tmp_name(target)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Strict JSON (NaN -> null) written atomically."""
    with atomic_file(path) as fh:
        fh.write(dumps_json(data, indent=indent) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_file(path) as fh:
        fh.write(text)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file, read in chunks (registry checksums, resume fingerprints)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every filesystem supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def os_error(exc: OSError, what: str) -> MmkitError:
    """An :class:`MmkitError` for a failed filesystem operation: what, which file, and why."""
    where = exc.filename if exc.filename is not None else ""
    return MmkitError(f"{what}: {where}{': ' if where else ''}{exc.strerror or exc}")


__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "MAX_JSON_BYTES", "MAX_KEY_PARTS", "MAX_TOML_BYTES", "atomic_file",
           "check_toml_text", "dumps_json", "fsync_dir", "loads_json", "loads_toml", "name_max", "os_error",
           "read_json",
           "read_text", "strict_json", "write_json_atomic", "write_text_atomic"]
