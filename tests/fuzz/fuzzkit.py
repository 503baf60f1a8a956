"""The fuzz harness: run a hypothesis property a chosen number of times, drive the CLI in-process and
check the invariant every entry point must keep:

    an mmkit error (exit code 1 or 2, an ``Error:``/``error:`` line, no traceback) or success,
    and no file the user owns changed (a command's output appears only when it succeeded; no
    temporary file is left behind).

Each fuzzer runs twice: a small derandomized sample in the default suite (seconds) and the
nightly-size run under ``pytest -m fuzz`` (random seeds; counts in ``COUNTS``, printed at the end).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

COUNTS: dict[str, int] = {}  # generated cases per fuzzer
OUTCOMES: dict[str, int] = {}  # how they ended (command and exit code), to show the cases reach the model
TMP_MARKERS = (".tmp", ".old-")  # what mmkit's temporary files and folders are called


def run_property(name: str, strategy: st.SearchStrategy[Any], body: Callable[[Any], None], examples: int,
                 *, nightly: bool) -> None:
    """Run ``body`` on ``examples`` values drawn from ``strategy``; count them under ``name``."""
    COUNTS.setdefault(name, 0)

    def counted(value: Any) -> None:
        COUNTS[name] += 1
        body(value)

    checks = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
              HealthCheck.large_base_example]
    settings(max_examples=examples, database=None, deadline=dt.timedelta(seconds=20), derandomize=not nightly,
             print_blob=nightly, suppress_health_check=checks)(given(strategy)(counted))()


def invoke(cli: Any, args: list[str], cwd: Path) -> Result:
    """Run ``mmkit ARGS`` in-process in ``cwd`` and assert it succeeded or failed cleanly."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, args, catch_exceptions=True)
    finally:
        os.chdir(old)
    exc = result.exception
    shown = " ".join(a[:60] for a in args)
    if exc is not None and not isinstance(exc, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        raise AssertionError(f"mmkit {shown}: traceback instead of an error message:\n{tb}")
    assert result.exit_code in (0, 1, 2), f"mmkit {shown}: exit code {result.exit_code}\n{result.output}"
    if result.exit_code:
        lines = [line for line in result.output.splitlines() if line.startswith(("Error:", "error:"))]
        assert lines, f"mmkit {shown}: exit {result.exit_code} without an error line:\n{result.output[-2000:]}"
        assert "Traceback" not in result.output, result.output
    return result


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 (``dir`` for folders, ``link:TARGET`` for symlinks) of everything under ``folder``."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_untouched(before: dict[str, str], after: dict[str, str], allowed: set[str] = frozenset(),
                     what: str = "") -> None:
    """Nothing in ``before`` changed or vanished; nothing new appeared except ``allowed`` paths."""
    changed = sorted(k for k in before if k not in allowed and after.get(k) != before[k])
    added = sorted(k for k in set(after) - set(before) if k not in allowed)
    leftovers = sorted(k for k in after if any(m in Path(k).name for m in TMP_MARKERS))
    assert not changed, f"{what}: the user's files changed: {changed[:5]}"
    assert not added, f"{what}: files appeared: {added[:5]}"
    assert not leftovers, f"{what}: temporary files left behind: {leftovers[:5]}"


# ------------------------------------------------------------------------------------------ hostile text
def deep(opener: str, closer: str = "") -> st.SearchStrategy[str]:
    """``opener * n`` (+ ``closer * n``) for n around the nesting limits."""
    return st.integers(1, 3000).map(lambda n: opener * n + closer * n)


HUGE_NUMBERS = st.sampled_from(["9" * 5000, "-" + "1" * 1001, "1" * 999, "1e400", "-1e400", "1e-400", "nan", "inf",
                                "-inf", "NaN", "Infinity", "0x" + "f" * 40, "1" + "0" * 30, "9223372036854775808",
                                "4294967296", "-1", "0", "1_000", "1.5", "1e308"])
WEIRD_TEXT = st.sampled_from(["", " ", "\t", "\x00", "\x0c", "\x1c", "\xa0", "\u2028", "\r", "\r\n", "\n\n",
                              "\ufeff", "é", "\U0001f600", "'", '"', "\\", "#", "=", ",", ".", "[", "]", "{", "}",
                              "../../etc/passwd", "/etc/passwd", "~", "hf-hub:org/model", "http://x", "NUL\x00",
                              "a" * 300, "x" * 140_000])
SCALAR_TEXT = st.one_of(HUGE_NUMBERS, WEIRD_TEXT, st.text(max_size=20), deep("["), deep("{", "}"),
                        deep("[", "]"), st.integers().map(str), st.floats().map(repr))
