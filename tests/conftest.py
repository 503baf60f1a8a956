"""Shared fixtures. Keep this file small: fixtures used by one test file belong in that file."""

from __future__ import annotations

import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Callable

import pytest

import mmkit
from mmkit._internal.hookspecs import KIND_HOOKS
from mmkit._internal.recipe import apply_overrides, dump_toml


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


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Whatever a test sets with ``torch.set_num_threads`` is undone after it: no test (or module)
    leaks its thread count into the next; the session keeps what OMP_NUM_THREADS chose."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def torch_threads() -> Callable[[int], None]:
    """``torch_threads(n)``: run the rest of this test with ``n`` intra-op threads (restored after it by
    the autouse fixture above). For the few tests that measure or need a thread count."""

    def set_threads(n: int) -> None:
        import torch

        torch.set_num_threads(n)

    return set_threads


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
            lines += ["@mmkit.hookimpl", f"def {KIND_HOOKS[kind]}(register):"]
            lines += [f"    register({n!r}, {t!r}, summary={f'{n} from {name}'!r})" for n, t in entries.items()]
            lines.append("")
        return write_module(name, "\n".join(lines) + "\n" + textwrap.dedent(extra))

    return write


# The tiny training recipe the engine, sweep, predictor, ablation and reliability tests share: timm
# test_resnet at 32 px + text-transformer dim 16 + a dim-16 fusion + classification, a few steps on
# the `shapes` dataset. Each test file states its variation as `--set`-style overrides.
TINY_RECIPE = """
[run]
name = "tiny"
seed = 3

[data]
dataset = "shapes"
options = { n_train = 32, n_val = 16, n_test = 8, image_size = 32 }

[model.encoders.image]
type = "timm"
model = "test_resnet"

[model.encoders.text]
type = "text-transformer"
dim = 16
layers = 1
heads = 2

[model.fusion]
type = "transformer"
dim = 16
layers = 1
heads = 2

[model.head]
type = "classification"

[train]
max_steps = 4
batch_size = 8
lr = 1e-3
# set, not "auto": auto backs off to 1 thread when a probe finds the cores busy, so on a loaded machine two
# runs that a test compares bitwise could choose different counts (float reductions then differ in the last bit)
threads = 1
"""


@pytest.fixture(scope="session")
def write_tiny_recipe() -> Callable[..., Path]:
    """Write ``TINY_RECIPE`` to ``path`` with ``overrides`` applied, as ``load_recipe``/``--set`` would.

    ``run.output_dir`` is ``path.parent / "runs"``. Overrides use the ``a.b.c=value`` syntax; a whole
    table replaces the template's (``'model.fusion={ type = "concat", dim = 16 }'``). Returns ``path``.
    """

    def write(path: Path, *overrides: str) -> Path:
        doc = tomllib.loads(TINY_RECIPE)
        doc["run"]["output_dir"] = (path.parent / "runs").as_posix()
        path.write_text(dump_toml(apply_overrides(doc, overrides)), encoding="utf-8")
        return path

    return write
