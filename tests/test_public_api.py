"""The public API: what ``mmkit`` exports (lazily: ``import mmkit`` loads no torch) plus ``mmkit.testing``;
built-in plugins use nothing else, and no other plugin's modules."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mmkit
from mmkit._internal.publicapi import PUBLIC_MODULES, public_api_violations, public_names
from mmkit.testing import ContractError, check_public_imports

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"

#: Every built-in plugin package folder and the package it is (its own modules are fine to import).
BUILTIN_PACKAGES = {path: path.name for path in sorted(PLUGINS.glob("mmkit_*"))}
BUILTIN_PACKAGES[PLUGINS / "mmkit-audio"] = "mmkit_audio"  # the separate distribution, its tests included


def test_import_mmkit_loads_no_torch_and_the_interfaces_load_on_first_access():
    code = ("import sys, mmkit; print('torch' in sys.modules); "
            "E = mmkit.Encoder; print(E.__name__, issubclass(E, mmkit.Component), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["False", "Encoder True True"]


def test_every_public_name_resolves_and_dir_lists_them():
    assert len(mmkit.__all__) == len(set(mmkit.__all__))
    for name in mmkit.__all__:
        assert getattr(mmkit, name) is not None, name
    assert set(mmkit.__all__) | {"testing"} <= set(dir(mmkit))
    assert {"Encoder", "Fusion", "Head", "Embedding", "Fused", "Output", "Batch", "Modality", "DataSplits",
            "Retrieval", "hookimpl", "Registry"} <= set(mmkit.__all__)
    assert mmkit.testing.check_encoder is not None  # a public submodule, reachable as an attribute
    with pytest.raises(AttributeError, match="module 'mmkit' has no attribute 'engine_internals'"):
        mmkit.engine_internals  # noqa: B018


def test_builtin_plugins_use_only_public_names_and_no_other_plugins_modules():
    assert len(BUILTIN_PACKAGES) >= 7  # timm, text, tabular, fusion, heads, shapes, audio
    for folder, package in BUILTIN_PACKAGES.items():
        check_public_imports(folder, package)


def test_the_public_names():
    """The list in one place (docs/plugins.md shows it); a change here is an API change."""
    assert PUBLIC_MODULES == ("mmkit", "mmkit.testing", "mmkit.testing_plugin")
    assert sorted(public_names("mmkit")) == sorted([
        "Batch", "Callback", "Component", "ComponentInfo", "ComponentNotFoundError", "DataError", "DataSplits",
        "check_hf_folder", "hub_offline", "local_folder", "fit", "TrainedModel", "ZeroShot",
        "DuplicateComponentError", "Embedding", "Encoder", "Fused", "Fusion", "Head", "KINDS", "Metrics",
        "MmkitError", "Modality", "Output", "ParameterError", "PluginError", "RecipeError", "Registry", "Retrieval",
        "WordPieceTokenizer", "WordTokenizer", "__version__", "bundled_minilm_path", "create", "describe",
        "empty_embedding", "get_registry", "hookimpl", "list_components", "load", "make_tokenizer", "reset_registry",
        "scatter_embedding", "testing", "testing_plugin", "tokenizer_from_state"])
    assert {"check_encoder", "check_fusion", "check_head", "check_modality", "check_plugin_module",
            "check_public_imports", "check_retrieval", "ContractError"} <= public_names("mmkit.testing")
    assert public_names("mmkit.testing_plugin") == {"mmkit_registry"}


SOURCE = '''
import mmkit
import mmkit.testing as kit
import mmkit.engine
from mmkit import Encoder, Embedding, testing
from mmkit import registry
from mmkit._internal.interfaces import Fused
from mmkit.testing import check_encoder, _require
from mmkit_other.helpers import helper
from mmkit_mine.helpers import mine
from . import relative

mmkit.hookimpl
mmkit.engine_state
kit.check_fusion
kit.presence_patterns
mmkit.testing.check_head
mmkit.testing.HEAVY_MODULES
testing.random_embeddings
'''


def test_the_checker_finds_each_non_public_use_and_names_the_public_alternative(tmp_path: Path):
    found = [(v.line, v.what, v.hint) for v in public_api_violations(textwrap.dedent(SOURCE), "x.py", "mmkit_mine")]
    assert [f"{line}: {what}" for line, what, _ in found] == [
        "4: imports mmkit.engine, an internal module of mmkit",
        "6: imports registry from mmkit, which does not export it",
        "7: imports Fused from mmkit._internal.interfaces, an internal module of mmkit",
        "8: imports _require from mmkit.testing, which does not export it",
        "9: imports mmkit_other.helpers, a module of another plugin (mmkit_other)",
        "14: uses mmkit.engine_state, which is not public",
    ]
    hints = [hint for _, _, hint in found]
    assert hints[0] == "use the public API: mmkit, mmkit.testing, mmkit.testing_plugin"
    assert hints[1].startswith("it is internal: ask for it to be added to the public API")
    assert hints[2] == "it is public as mmkit.Fused"
    assert hints[4].startswith("use that plugin's components through the registry")
    path = tmp_path / "plugin_module.py"
    path.write_text("from mmkit._internal.interfaces import Fused\nfrom mmkit._internal.modality import Modality\n")
    with pytest.raises(ContractError, match=r"2 use\(s\) .*\n.*plugin_module.py:1: imports Fused from "
                                            r"mmkit._internal.interfaces, an internal module of mmkit; it is public as "
                                            r"mmkit.Fused\n.*:2: imports Modality"):
        check_public_imports(tmp_path)


@pytest.mark.parametrize("old", ["interfaces", "modality", "datasets", "errors", "tokenize", "registry", "hookspecs"])
def test_a_pre_1_0_module_path_still_imports_with_a_deprecation_warning(old: str) -> None:
    """Plugins written before the API was declared imported these modules; they keep working for
    one minor release and say what to import instead."""
    code = (f"import warnings; warnings.simplefilter('error')\n"
            f"try:\n    import mmkit.{old}\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
            f"warnings.simplefilter('ignore'); import importlib, sys; sys.modules.pop('mmkit.{old}', None)\n"
            f"m = importlib.import_module('mmkit.{old}'); print(sorted(n for n in dir(m) if n[0].isupper())[:3])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"warned: mmkit.{old} is internal since mmkit 0.2" in done.stdout and "from `mmkit`" in done.stdout
    assert done.stdout.splitlines()[-1] != "[]"  # it re-exports the module's names
