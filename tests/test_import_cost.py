"""Listing is cheap: ``mmkit --help``, ``list``, ``show`` and ``plugins`` import no torch, timm,
transformers, sentence_transformers, torchmetrics or the caption-metric libraries (checked with
``python -X importtime`` in a fresh process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = {"torch", "timm", "transformers", "sentence_transformers", "torchmetrics", "sacrebleu", "pycocoevalcap"}


def imported_modules(*args: str) -> set[str]:
    """Names of the modules a fresh ``python -X importtime ARGS`` imports (from its stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS")}
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # lines look like "import time:       123 |        456 |     package.module"
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
             if line.startswith("import time:") and line.count("|") == 2}
    names.discard("imported package")  # the header line
    return names


def heavy(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in HEAVY}


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["--help"], ["show", "shapes"],
                                  ["show", "shapes", "--json"], ["plugins"], ["list", "head"],
                                  ["show", "classification"], ["show", "timm"]])
def test_cli_listing_commands_import_nothing_heavy(argv):
    names = imported_modules("-m", "mmkit", *argv)
    assert {"mmkit._internal.cli", "mmkit._internal.registry", "click"} <= names  # the parse found the imports
    assert heavy(names) == set(), f"`mmkit {' '.join(argv)}` imported {sorted(heavy(names))}"


def test_import_mmkit_imports_nothing_heavy():
    names = imported_modules("-c", "import mmkit; mmkit.list_components(); mmkit.describe('dataset', 'shapes')")
    assert "mmkit" in names and "pluggy" in names
    assert heavy(names) == set()


def test_the_check_would_notice_a_heavy_import():
    assert heavy({"torch", "torch.nn", "timm.models", "transformers", "torchvision", "mmkit.torch_utils",
                  "sentence_transformers.util", "transformers_extra"}) == {
        "torch", "torch.nn", "timm.models", "transformers", "sentence_transformers.util"}
