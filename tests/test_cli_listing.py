"""The listing commands of the CLI: ``mmkit list``, ``mmkit show``, ``mmkit plugins`` and ``--help``.

In-process with click's CliRunner; the registry is rebuilt for every test (``clean_registry``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import mmkit
from mmkit._internal.cli import cli

pytestmark = pytest.mark.usefixtures("clean_registry")

SOURCE_ONLY_IMPL = '''
raise RuntimeError("tp_cli_impl must not be imported by mmkit show")

from typing import Literal


class GatedFusion:
    """Gated sum of the modality embeddings.

    Args:
        dim: width of the fused vector.
        mode: how the gates combine.
        hidden: optional hidden width.
    """

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool], *, layers: int,
                 dim: int = 64, mode: Literal["sum", "max"] = "sum", hidden: int | None = None) -> None:
        pass
'''


def invoke(*args: str, env: dict[str, str] | None = None):
    """Run ``mmkit ARGS`` in-process; a fresh registry each time, like a new process."""
    mmkit.reset_registry()
    return CliRunner().invoke(cli, list(args), env=env, prog_name="mmkit")


# ---------------------------------------------------------------------------- mmkit list

def test_list_shows_builtins_as_a_table():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if " shapes " in f" {line} ")
    assert row.split()[:4] == ["dataset", "shapes", "shapes", mmkit.__version__]
    assert result.stderr == ""


def test_list_json_has_the_documented_fields():
    result = invoke("list", "--json")
    assert result.exit_code == 0, result.output
    items = json.loads(result.stdout)
    shapes = next(i for i in items if i["name"] == "shapes")
    assert set(shapes) == {"kind", "name", "plugin", "version", "summary"}
    assert (shapes["kind"], shapes["plugin"], shapes["version"]) == ("dataset", "shapes", mmkit.__version__)


def test_list_filters_by_kind_and_pattern(write_plugin):
    write_plugin("tp_many", {"fusion": {"tp-gated": "m:A", "tp-gated-deep": "m:B", "tp-sum": "m:C"},
                             "head": {"tp-gated": "m:D"}})
    def names(*a: str) -> list[tuple[str, str]]:
        return [(i["kind"], i["name"]) for i in json.loads(invoke("-p", "tp_many", "list", *a, "--json").stdout)]

    assert names("fusion", "tp-gated*") == [("fusion", "tp-gated"), ("fusion", "tp-gated-deep")]
    assert names("fusion", "tp_many:*") == [("fusion", "tp-gated"), ("fusion", "tp-gated-deep"), ("fusion", "tp-sum")]
    assert ("head", "tp-gated") in names() and ("dataset", "shapes") in names()
    assert names("fusion", "tp_many:tp-s*") == [("fusion", "tp-sum")]
    empty = invoke("list", "dataset", "nothing*")
    assert empty.exit_code == 0 and "no datasets match 'nothing*'" in empty.stdout
    bad_kind = invoke("list", "fusoin")
    assert bad_kind.exit_code == 2 and "fusoin" in bad_kind.stderr


def test_markdown_listing():
    result = invoke("list", "dataset", "--markdown")
    assert result.stdout.splitlines()[0] == "| kind | name | plugin | summary |"
    assert result.stdout.splitlines()[2].startswith(f"| dataset | `shapes` | shapes {mmkit.__version__} |")


# ---------------------------------------------------------------------------- loading plugins

def test_dash_p_and_env_var_load_a_plugin_with_provenance(write_plugin, monkeypatch):
    write_plugin("tp_cli_good", {"fusion": {"tp-gated": "tp_cli_good_impl:Gated"}}, version="2.5.0")
    expected = {"kind": "fusion", "name": "tp-gated", "plugin": "tp_cli_good", "version": "2.5.0",
                "summary": "tp-gated from tp_cli_good"}
    assert json.loads(invoke("-p", "tp_cli_good", "list", "fusion", "tp-*", "--json").stdout) == [expected]
    assert json.loads(invoke("list", "fusion", "tp-*", "--json", env={"MMKIT_PLUGINS": "tp_cli_good"}).stdout) == [
        expected]
    assert json.loads(invoke("list", "fusion", "tp-*", "--json").stdout) == []  # neither given: not loaded
    plugins = json.loads(invoke("-p", "tp_cli_good", "plugins", "--json").stdout)
    mine = next(p for p in plugins if p["name"] == "tp_cli_good")
    assert (mine["version"], mine["hooks"], mine["error"]) == ("2.5.0", ["register_fusions"], None)


def test_broken_plugin_is_named_and_the_rest_still_lists(write_module):
    write_module("tp_cli_broken", "raise RuntimeError('kaput at import')\n")
    listed = invoke("-p", "tp_cli_broken", "list")
    assert listed.exit_code == 0
    assert "shapes" in listed.stdout
    assert "plugin 'tp_cli_broken' failed to load: RuntimeError: kaput at import" in listed.stderr
    as_json = invoke("-p", "tp_cli_broken", "list", "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)  # the warning goes to stderr only
    table = invoke("-p", "tp_cli_broken", "plugins")
    row = next(line for line in table.stdout.splitlines() if line.strip().startswith("tp_cli_broken"))
    assert "failed: RuntimeError: kaput at import" in row
    plugins = {p["name"]: p for p in json.loads(invoke("-p", "tp_cli_broken", "plugins", "--json").stdout)}
    assert plugins["tp_cli_broken"]["error"] == "RuntimeError: kaput at import"
    assert plugins["shapes"]["error"] is None


def test_strict_mode_makes_a_broken_plugin_fatal(write_module):
    write_module("tp_cli_strict", "raise RuntimeError('kaput')\n")
    result = invoke("list", env={"MMKIT_PLUGINS": "tp_cli_strict", "MMKIT_STRICT_PLUGINS": "1"})
    assert result.exit_code != 0
    assert "tp_cli_strict" in result.stderr and "kaput" in result.stderr
    assert "shapes" not in result.stdout


def test_register_hook_error_is_reported_with_the_plugin_name(write_plugin):
    write_plugin("tp_cli_hook", extra='''
        @mmkit.hookimpl
        def register_heads(register):
            raise KeyError("labels")
    ''')
    result = invoke("-p", "tp_cli_hook", "list")
    assert result.exit_code == 0
    assert "plugin 'tp_cli_hook' failed to load: register_heads raised KeyError: 'labels'" in result.stderr


def test_strict_mode_in_a_real_process(tmp_path):
    (tmp_path / "tp_proc_broken.py").write_text("raise RuntimeError('kaput in a process')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "MMKIT_PLUGINS": "tp_proc_broken"}
    lenient = subprocess.run([sys.executable, "-m", "mmkit", "list"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert lenient.returncode == 0 and "shapes" in lenient.stdout
    assert "tp_proc_broken" in lenient.stderr and "kaput in a process" in lenient.stderr
    strict = subprocess.run([sys.executable, "-m", "mmkit", "list"], env={**env, "MMKIT_STRICT_PLUGINS": "1"},
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode != 0
    assert "tp_proc_broken" in strict.stderr and "kaput in a process" in strict.stderr


# ---------------------------------------------------------------------------- duplicates and blocking

def test_duplicates_list_with_a_warning_and_show_needs_a_prefix(write_plugin, write_module):
    write_module("tp_cli_impl", SOURCE_ONLY_IMPL)
    write_plugin("tp_dup_a", {"fusion": {"tp-gated": "tp_cli_impl:GatedFusion"}})
    write_plugin("tp_dup_b", {"fusion": {"tp-gated": "tp_cli_impl:GatedFusion"}})
    args = ("-p", "tp_dup_a", "-p", "tp_dup_b")
    listed = invoke(*args, "list", "fusion", "tp-gated", "--json")
    assert listed.exit_code == 0
    assert [i["plugin"] for i in json.loads(listed.stdout)] == ["tp_dup_a", "tp_dup_b"]
    assert "warning: fusion 'tp-gated' is registered by plugins 'tp_dup_a' and 'tp_dup_b'" in listed.stderr
    ambiguous = invoke(*args, "show", "tp-gated")
    assert ambiguous.exit_code == 2
    assert "'tp_dup_a'" in ambiguous.stderr and "'tp_dup_b'" in ambiguous.stderr
    chosen = invoke(*args, "show", "tp_dup_b:tp-gated", "--json")
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout)["plugin"] == "tp_dup_b"


def test_blocking_a_builtin_and_replacing_it(write_plugin):
    blocked = invoke("-p", "no:shapes", "list", "--json")
    assert all(i["name"] != "shapes" for i in json.loads(blocked.stdout))
    plugins = invoke("-p", "no:shapes", "plugins")
    assert "blocked: shapes" in plugins.stdout
    assert not any(line.split()[:1] == ["shapes"] for line in plugins.stdout.splitlines())
    write_plugin("tp_my_shapes", {"dataset": {"shapes": "tp_my_shapes_impl:shapes"}}, version="7.0")
    replaced = invoke("-p", "no:shapes", "-p", "tp_my_shapes", "list", "dataset", "shapes", "--json")
    assert [(i["name"], i["plugin"], i["version"]) for i in json.loads(replaced.stdout)] == [
        ("shapes", "tp_my_shapes", "7.0")]
    assert replaced.stderr == ""  # no duplicate warning: the built-in is gone


# ---------------------------------------------------------------------------- mmkit show

def test_show_reads_parameters_from_source(write_plugin, write_module):
    write_module("tp_cli_impl", SOURCE_ONLY_IMPL)
    write_plugin("tp_show", {"fusion": {"tp-gated": "tp_cli_impl:GatedFusion"}}, version="0.3")
    result = invoke("-p", "tp_show", "show", "tp-gated")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "gated (fusion) from plugin tp_show 0.3" in out
    rows = {line.split()[0]: line.strip().split(None, 3)[1:] for line in out.splitlines()[4:] if line.strip()}
    assert rows["dim"] == ["int", "64", "width of the fused vector."]
    assert rows["layers"][:2] == ["int", "(required)"]
    assert rows["mode"][0].startswith("Literal[")
    assert "input_dims" not in out and "token_inputs" not in out
    assert "tp_cli_impl" not in sys.modules


def test_show_json_is_valid_json_with_a_schema(write_plugin, write_module):
    write_module("tp_cli_impl", SOURCE_ONLY_IMPL)
    write_plugin("tp_show_json", {"fusion": {"tp-gated": "tp_cli_impl:GatedFusion"}})
    result = invoke("-p", "tp_show_json", "show", "tp-gated", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["kind"], data["name"], data["plugin"], data["target"]) == (
        "fusion", "tp-gated", "tp_show_json", "tp_cli_impl:GatedFusion")
    assert [p["name"] for p in data["parameters"]] == ["layers", "dim", "mode", "hidden"]
    schema = data["schema"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["layers"]
    props = schema["properties"]
    assert props["dim"] == {"type": "integer", "description": "width of the fused vector.", "default": 64}
    assert props["mode"]["enum"] == ["sum", "max"]
    assert props["hidden"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert props["hidden"]["default"] is None
    assert "tp_cli_impl" not in sys.modules


def test_show_builtin_dataset_and_its_parameters():
    data = json.loads(invoke("show", "shapes", "--json").stdout)
    assert data["kind"] == "dataset"
    params = {p["name"]: p for p in data["parameters"]}
    assert params["seed"]["type"] == "int" and params["n_train"]["default"] == 2000


def test_show_ambiguous_across_kinds_lists_the_kinds(write_plugin, write_module):
    write_module("tp_cli_impl", SOURCE_ONLY_IMPL)
    write_plugin("tp_twin", {"fusion": {"tp-twin": "tp_cli_impl:GatedFusion"},
                             "head": {"tp-twin": "tp_cli_impl:GatedFusion"}})
    ambiguous = invoke("-p", "tp_twin", "show", "tp-twin")
    assert ambiguous.exit_code == 2
    assert "several kinds (fusion, head)" in ambiguous.stderr and "--kind" in ambiguous.stderr
    chosen = invoke("-p", "tp_twin", "show", "tp-twin", "--kind", "head", "--json")
    assert chosen.exit_code == 0 and json.loads(chosen.stdout)["kind"] == "head"


def test_show_unknown_name_suggests_the_near_miss_and_names_failed_plugins(write_module):
    result = invoke("show", "shapse")
    assert result.exit_code == 2
    assert "unknown component 'shapse'; did you mean dataset 'shapes'?" in result.stderr
    write_module("tp_cli_gone", "raise ImportError('missing dependency foo')\n")
    result = invoke("-p", "tp_cli_gone", "show", "shapse")
    assert "plugins that failed to load: tp_cli_gone (ImportError: missing dependency foo)" in result.stderr


# ---------------------------------------------------------------------------- help

def _all_commands() -> list[str]:
    with click.Context(cli) as ctx:
        return cli.list_commands(ctx)


def test_every_command_help_shows_an_example():
    commands = _all_commands()
    assert {"list", "show", "plugins"} <= set(commands)
    for argv in [["--help"]] + [[name, "--help"] for name in commands]:
        result = invoke(*argv)
        assert result.exit_code == 0, (argv, result.output)
        assert "Example" in result.stdout and "mmkit " in result.stdout, f"`mmkit {' '.join(argv)}` shows no example"


def test_version_option():
    result = invoke("--version")
    assert result.exit_code == 0 and mmkit.__version__ in result.stdout


def test_plugin_commands_are_added(write_plugin):
    write_plugin("tp_cmd", extra='''
        import click

        @click.command("hello")
        def hello():
            """Say hello.

            Example: mmkit hello
            """
            click.echo("hello from a plugin")

        @mmkit.hookimpl
        def register_commands(cli):
            cli.add_command(hello)
    ''')
    for argv, env in [(["hello"], {"MMKIT_PLUGINS": "tp_cmd"}), (["-p", "tp_cmd", "hello"], None)]:
        result = invoke(*argv, env=env)
        assert result.exit_code == 0, (argv, result.output)
        assert result.stdout == "hello from a plugin\n"
    assert "hello" in invoke("-p", "tp_cmd", "--help").stdout
    assert invoke("hello").exit_code == 2  # not loaded: no such command


def test_broken_register_commands_hook_is_named_and_other_commands_work(write_plugin):
    write_plugin("tp_cmd_broken", extra='''
        @mmkit.hookimpl
        def register_commands(cli):
            raise RuntimeError("no commands today")
    ''')
    result = invoke("-p", "tp_cmd_broken", "--help")
    assert result.exit_code == 0 and "list" in result.stdout
    assert "plugin 'tp_cmd_broken' failed in register_commands: RuntimeError: no commands today" in result.stderr
    assert invoke("-p", "tp_cmd_broken", "list", "--json").exit_code == 0
