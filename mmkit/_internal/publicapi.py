"""Which names are mmkit's public API, and a static check that a plugin's source uses nothing else.

The public API is the names in the ``__all__`` of each module in :data:`PUBLIC_MODULES`; every other
mmkit module is internal. :func:`public_api_violations` reads Python source with :mod:`ast` (nothing
is imported) and reports each import or ``mmkit.X`` attribute use outside that API, and each import
of another plugin's package. ``mmkit.testing.check_public_imports`` runs it on a plugin's files.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

#: The modules of the public API (the one list a module rename has to keep up to date).
PUBLIC_MODULES: tuple[str, ...] = ("mmkit", "mmkit.testing", "mmkit.testing_plugin")


def public_names(module: str) -> frozenset[str]:
    """The public names of a public module: its ``__all__``, plus its public submodules."""
    names = set(importlib.import_module(module).__all__)
    names |= {m[len(module) + 1:] for m in PUBLIC_MODULES if m.startswith(module + ".") and "." not in
              m[len(module) + 1:]}
    return frozenset(names)


@dataclass(frozen=True)
class Violation:
    """One use of a non-public name: where, what, and what to use instead."""

    file: str
    line: int
    what: str
    hint: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}; {self.hint}"


class _Checker(ast.NodeVisitor):
    def __init__(self, file: str, own: str | None) -> None:
        self.file, self.own = file, own
        self.found: list[Violation] = []
        self.aliases: dict[str, str] = {}  # local name -> public module it is bound to

    def _add(self, node: ast.AST, what: str, hint: str) -> None:
        self.found.append(Violation(self.file, getattr(node, "lineno", 0), what, hint))

    def _module(self, node: ast.AST, module: str) -> bool:
        """True when ``module`` may be imported at all (reports it otherwise)."""
        top = module.split(".")[0]
        if top == "mmkit" and module not in PUBLIC_MODULES:
            self._add(node, f"imports {module}, an internal module of mmkit",
                      f"use the public API: {', '.join(PUBLIC_MODULES)}")
            return False
        if top.startswith("mmkit_") and top != self.own:
            self._add(node, f"imports {module}, a module of another plugin ({top})",
                      "use that plugin's components through the registry (mmkit.create, mmkit.get_registry)")
            return False
        return True

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not self._module(node, alias.name) or alias.name not in PUBLIC_MODULES:
                continue
            if alias.asname:  # import mmkit.testing as kit -> kit is mmkit.testing
                self.aliases[alias.asname] = alias.name
            else:  # import mmkit / import mmkit.testing -> binds mmkit
                self.aliases["mmkit"] = "mmkit"

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        module, top = node.module, node.module.split(".")[0]
        if top.startswith("mmkit_"):
            self._module(node, module)
        elif top == "mmkit" and module not in PUBLIC_MODULES:
            for alias in node.names:
                self._add(node, f"imports {alias.name} from {module}, an internal module of mmkit", _hint(alias.name))
        elif top == "mmkit":
            allowed = public_names(module)
            for alias in node.names:
                if f"{module}.{alias.name}" in PUBLIC_MODULES:
                    self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
                elif alias.name not in allowed:
                    self._add(node, f"imports {alias.name} from {module}, which does not export it",
                              _hint(alias.name))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts: list[str] = []
        value: ast.AST = node
        while isinstance(value, ast.Attribute):
            parts.insert(0, value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in self.aliases:
            module = self.aliases[value.id]
            while parts and f"{module}.{parts[0]}" in PUBLIC_MODULES:
                module = f"{module}.{parts.pop(0)}"
            if parts and parts[0] not in public_names(module):
                self._add(node, f"uses {module}.{parts[0]}, which is not public", _hint(parts[0]))
            return  # the chain is checked; do not visit its inner attributes again
        self.generic_visit(node)


def _hint(name: str) -> str:
    for module in PUBLIC_MODULES:
        if name in public_names(module):
            return f"it is public as {module}.{name}"
    return "it is internal: ask for it to be added to the public API (mmkit.__all__) instead of importing it"


def public_api_violations(source: str, file: str = "<source>", own_package: str | None = None) -> list[Violation]:
    """Every use of mmkit outside its public API in ``source``, and every import of a plugin package
    (``mmkit_*``) other than ``own_package``."""
    checker = _Checker(file, own_package)
    checker.visit(ast.parse(source, filename=file))
    return checker.found


def files_violations(paths: Iterable[str | Path], own_package: str | None = None) -> list[Violation]:
    """:func:`public_api_violations` of every ``.py`` file in ``paths`` (files or folders)."""
    out: list[Violation] = []
    for path in map(Path, paths):
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            out += public_api_violations(file.read_text(encoding="utf-8"), str(file), own_package)
    return out
