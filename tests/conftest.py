"""Shared fixtures. Keep this file small: fixtures used by one test file belong in that file."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

import mmkit


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch):
    """A fresh process-wide registry, with no MMKIT_PLUGINS / MMKIT_STRICT_PLUGINS from the caller's shell.

    ``get_registry()`` caches the registry it builds; tests that load plugins or change the plugin
    environment use this so that nothing leaks into the next test.
    """
    monkeypatch.delenv("MMKIT_PLUGINS", raising=False)
    monkeypatch.delenv("MMKIT_STRICT_PLUGINS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: no folding inside the messages we assert on
    mmkit.reset_registry()
    yield
    mmkit.reset_registry()


@pytest.fixture
def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], str]:
    """Write a throwaway module ``NAME.py`` into ``tmp_path`` (which is put on ``sys.path``).

    Returns the module name. Modules are dropped from ``sys.modules`` afterwards, so every test gets
    its own. Subprocess tests can put ``tmp_path`` on ``PYTHONPATH``.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


_HOOKS = {"encoder": "register_encoders", "fusion": "register_fusions", "head": "register_heads",
          "modality": "register_modalities", "dataset": "register_datasets"}


@pytest.fixture
def write_plugin(write_module) -> Callable[..., str]:
    """Write a throwaway plugin module registering ``components`` = ``{kind: {name: "module:Object"}}``.

    ``version`` becomes the module's ``__version__``; ``extra`` is appended source (more hooks, a
    ``raise`` ...). Returns the module name, usable with ``-p`` or ``MMKIT_PLUGINS``.
    """

    def write(name: str, components: dict[str, dict[str, str]] | None = None, *,
              version: str = "1.0.0", extra: str = "") -> str:
        lines = ["import mmkit", f"__version__ = {version!r}", ""]
        for kind, entries in (components or {}).items():
            lines += ["@mmkit.hookimpl", f"def {_HOOKS[kind]}(register):"]
            lines += [f"    register({n!r}, {t!r}, summary={f'{n} from {name}'!r})" for n, t in entries.items()]
            lines.append("")
        return write_module(name, "\n".join(lines) + "\n" + textwrap.dedent(extra))

    return write
