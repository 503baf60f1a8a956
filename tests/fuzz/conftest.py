"""Fixtures of the fuzzers, and the case counts printed at the end of a run."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from fuzzkit import COUNTS, OUTCOMES

    if COUNTS:
        total = sum(COUNTS.values())
        terminalreporter.write_sep("-", f"mmkit fuzz cases: {total}")
        for name, count in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{name:<44} {count:>7}")
        for name, count in sorted(OUTCOMES.items()):
            terminalreporter.write_line(f"  {name:<42} {count:>7}")


@pytest.fixture
def nightly(request: pytest.FixtureRequest) -> bool:
    """True for the `-m fuzz` (nightly-size) variant of a fuzzer."""
    return request.node.get_closest_marker("fuzz") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Nightly-size fuzzers run only when asked for by name (`-m fuzz`): `-m "not slow"` or `-m slow`
    replace the default `-m "not fuzz"` and would otherwise start minutes of fuzzing."""
    if "fuzz" in (config.getoption("markexpr") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("fuzz") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("fuzz") is not None])
        items[:] = keep
