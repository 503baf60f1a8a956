"""``mmkit new-plugin``: the generated package loads through MMKIT_PLUGINS, is listed, and its own
generated tests (the contract kit) pass; names are validated and nothing is overwritten."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

import mmkit
from mmkit._internal.cli_scaffold import new_plugin
import mmkit.testing as kit
from mmkit._internal.scaffold import KINDS, PluginNames, ScaffoldError, create_plugin, parse_kinds, plugin_files

pytestmark = pytest.mark.usefixtures("clean_registry")


def run_new_plugin(*args: str):
    """``mmkit new-plugin ARGS`` through the mmkit command group (the command alone until it is wired in)."""
    from mmkit._internal.cli import cli

    if "new-plugin" in cli.commands:
        return CliRunner().invoke(cli, ["new-plugin", *args], prog_name="mmkit")
    return CliRunner().invoke(new_plugin, list(args), prog_name="mmkit new-plugin")


def plugin_env(root: Path, module: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS")}
    env.update(PYTHONPATH=os.pathsep.join([str(root), env.get("PYTHONPATH", "")]), MMKIT_PLUGINS=module,
               MMKIT_STRICT_PLUGINS="1", COLUMNS="200")
    return env


def run_generated_tests(roots: list[Path]) -> subprocess.CompletedProcess:
    files = [str(next((r / "tests").glob("test_*.py"))) for r in roots]
    env = {k: v for k, v in os.environ.items() if k not in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(r) for r in roots] + [env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
                           str(roots[0].parent), *files], cwd=roots[0].parent, env=env, capture_output=True,
                          text=True, timeout=300)


def test_new_plugin_is_a_mmkit_command() -> None:
    from mmkit._internal.cli import cli

    assert "new-plugin" in cli.commands, "add mmkit._internal.cli_scaffold.COMMANDS to the mmkit command group"


def test_new_plugin_demo_is_listed(tmp_path: Path) -> None:
    result = run_new_plugin("demo", "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    root = tmp_path / "mmkit-demo"
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "mmkit_demo/__init__.py", "mmkit_demo/plugin.py", "mmkit_demo/encoder.py",
        "tests/test_mmkit_demo.py"}
    assert "PYTHONPATH=" in result.output and "mmkit_demo.plugin" in result.output
    listed = subprocess.run([sys.executable, "-m", "mmkit", "list", "encoder"],
                            env=plugin_env(root, "mmkit_demo.plugin"), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.split()[:2] == ["encoder", "demo"])
    assert row.split()[2:4] == ["mmkit_demo.plugin", "0.1.0"]


def test_three_kinds_in_one_package_pass_their_generated_tests_and_a_kind_can_be_added(tmp_path: Path) -> None:
    """Also covers every template: with the head added and a text-encoder package, all generated tests run."""
    result = run_new_plugin("timeseries", "--kind", "modality,encoder=gru", "--kind", "fusion=gated",
                            "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "modality 'timeseries', encoder 'gru', fusion 'gated'" in result.output
    root = tmp_path / "mmkit-timeseries"
    package = root / "mmkit_timeseries"
    assert sorted(p.name for p in package.glob("*.py")) == ["__init__.py", "encoder.py", "fusion.py", "modality.py",
                                                           "plugin.py"]
    assert "self.resolve_path(value, base_dir)" in (package / "modality.py").read_text()
    assert 'default_encoder = "gru"' in (package / "modality.py").read_text()
    assert 'modality = "timeseries"' in (package / "encoder.py").read_text()
    tests = (root / "tests" / "test_mmkit_timeseries.py").read_text()
    assert "torch.set_num_threads(1)" in tests and "OMP_NUM_THREADS=1" in tests
    kit.check_public_imports(root, "mmkit_timeseries")  # generated code uses only the public API
    added = run_new_plugin("timeseries", "--add", "--kind", "head=label", "--dir", str(tmp_path))
    assert added.exit_code == 0, added.output
    assert "added to" in added.output and "mmkit-timeseries/mmkit_timeseries/head.py" in added.output
    again = run_new_plugin("timeseries", "--add", "--kind", "head", "--dir", str(tmp_path))
    assert again.exit_code == 2 and "already has a head" in again.output and "nothing was written" in again.output
    listed = subprocess.run([sys.executable, "-m", "mmkit", "list", "--json"],
                            env=plugin_env(root, "mmkit_timeseries.plugin"), capture_output=True, text=True,
                            timeout=120)
    assert listed.returncode == 0, listed.stderr
    mine = {(c["kind"], c["name"]) for c in json.loads(listed.stdout) if c["plugin"] == "mmkit_timeseries.plugin"}
    assert mine == {("modality", "timeseries"), ("encoder", "gru"), ("fusion", "gated"), ("head", "label")}
    # with a package of the one template not used above (a text encoder alone), in one pytest run
    assert run_new_plugin("bytes", "--dir", str(tmp_path)).exit_code == 0
    result = run_generated_tests([root, tmp_path / "mmkit-bytes"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "8 passed" in result.stdout  # plugin module, modality, encoder, fusion x2, head; plugin module, encoder


def test_kinds_are_parsed_with_names_and_bad_ones_refused(tmp_path: Path) -> None:
    parts = parse_kinds(["fusion=gated,modality", "head"], "ts")
    assert [(p.kind, p.name, p.class_name) for p in parts] == [
        ("modality", "ts", "TsModality"), ("encoder", "ts", "TsEncoder"), ("fusion", "gated", "GatedFusion"),
        ("head", "ts", "TsHead")]
    for spec, message in [("encoder,encoder=x", "kind 'encoder' is given twice"), ("callback", "unknown kind"),
                          ("fusion=Bad", "invalid fusion name 'Bad'"), ("", "no kind given")]:
        with pytest.raises(ScaffoldError, match=message):
            parse_kinds(spec, "ts")
    missing = run_new_plugin("nothere", "--add", "--kind", "head", "--dir", str(tmp_path))
    assert missing.exit_code == 2 and "create the package first" in missing.output


def test_generated_pyproject_has_the_entry_point_and_the_mmkit_dependency(tmp_path: Path) -> None:
    root = create_plugin("audio-cnn", "fusion", tmp_path)
    assert root.name == "mmkit-audio-cnn" and (root / "mmkit_audio_cnn" / "fusion.py").is_file()
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "mmkit-audio-cnn"
    assert meta["project"]["entry-points"]["mmkit"] == {"audio-cnn": "mmkit_audio_cnn.plugin"}
    assert any(dep.startswith("mmkit>=") for dep in meta["project"]["dependencies"])
    assert meta["tool"]["setuptools"]["packages"] == ["mmkit_audio_cnn"]
    plugin = (root / "mmkit_audio_cnn" / "plugin.py").read_text()
    assert 'register("audio-cnn", "mmkit_audio_cnn.fusion:AudioCnnFusion"' in plugin
    assert "import torch" not in plugin and "import torch" not in (root / "mmkit_audio_cnn" / "__init__.py").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_generated_files_compile_and_register_lightly(tmp_path: Path, kind: str, monkeypatch) -> None:
    files = plugin_files("lite", kind)
    for rel, text in files.items():
        if rel.endswith(".py"):
            compile(text, rel, "exec")
    root = create_plugin("lite", kind, tmp_path)
    monkeypatch.syspath_prepend(str(root))
    registry = mmkit.Registry(["mmkit_lite.plugin"], entry_points=False, env=False)
    assert registry.failed_plugins() == {}
    expected = {("modality", "lite"), ("encoder", "lite")} if kind == "modality" else {(kind, "lite")}
    assert {(c.kind, c.name) for c in registry.list()} == expected
    for c in registry.list():  # every parameter typed and documented, read from source
        assert all(p.type != "Any" and p.doc for p in registry.describe(c.kind, c.name).params)
    for name in [m for m in sys.modules if m == "mmkit_lite" or m.startswith("mmkit_lite.")]:
        del sys.modules[name]


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    root = tmp_path / "mmkit-demo"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    result = run_new_plugin("demo", "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert f"{root} already exists; nothing was written" in result.output
    assert [p.name for p in root.iterdir()] == ["keep.txt"] and (root / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["Demo", "9lives", "my plugin", "_x", "x-", "a__b", "démo", ""])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    result = run_new_plugin(name, "--dir", str(tmp_path))
    assert result.exit_code == 2, result.output
    assert f"invalid plugin name {name!r}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_names_map_to_module_folder_and_classes() -> None:
    assert PluginNames.from_name("my-fusion") == PluginNames("my-fusion", "mmkit_my_fusion", "mmkit-my-fusion",
                                                             "MyFusion")
    assert PluginNames.from_name("x2") == PluginNames("x2", "mmkit_x2", "mmkit-x2", "X2")
    with pytest.raises(ScaffoldError, match="unknown kind 'dataset'"):
        plugin_files("x", "dataset")


def test_a_name_that_is_already_registered_gives_a_warning(tmp_path: Path) -> None:
    result = CliRunner().invoke(new_plugin, ["concat", "--kind", "fusion", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: a fusion named 'concat' is already registered by plugin 'fusion'" in result.stderr


# ---------------------------------------------------------------------------------- generated docs
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _gen_docs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mmkit_gen_docs", DOCS / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plugins_md_documents_every_hook_with_its_current_docstring() -> None:
    gen = _gen_docs()
    text = (DOCS / "plugins.md").read_text(encoding="utf-8")
    hooks = gen.hookspecs()
    registry = mmkit.Registry(entry_points=False, env=False)
    assert {h[0] for h in hooks} == {h.name for h in registry.pm.hook.__dict__.values() if hasattr(h, "spec")}
    for name, signature, _, doc in hooks:
        assert doc and f"#### `{signature}`" in text, f"{name} is not documented; run python docs/gen_docs.py"
        assert gen.markdown_doc(doc) in text, f"the docstring of {name} changed; run python docs/gen_docs.py"
    assert gen.render_plugins_md(text) == text, "docs/plugins.md is out of date; run python docs/gen_docs.py"


def test_components_md_is_generated_from_mmkit_list_with_the_builtins_only() -> None:
    gen = _gen_docs()
    expected = gen.components_md()
    assert "| fusion | `concat` | fusion " in expected and "audio-cnn" not in expected
    assert (DOCS / "components.md").read_text(encoding="utf-8") == expected, \
        "docs/components.md is out of date; run python docs/gen_docs.py"
