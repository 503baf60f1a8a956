"""Plugins cannot take the process down (issue [D] class 7): a plugin that calls ``sys.exit``, raises a
``BaseException`` or registers invalid names is isolated and reported, with every error kept."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mmkit._internal.cli import cli
from mmkit._internal.errors import PluginError
from mmkit._internal.registry import Registry


class Fatal(BaseException):
    """Not an Exception: what a careless plugin might raise."""


def test_invalid_names_are_refused_and_every_registration_error_is_kept(write_plugin):
    write_plugin("tp_names", extra='''
        @mmkit.hookimpl
        def register_fusions(register):
            register("has space", "tp_x:A")
            register("new\\nline", "tp_x:B")
            register("tab\\tname", "tp_x:C")
            register("", "tp_x:D")
            register("x" * 101, "tp_x:E")
            register("fine", "tp_x:F")
            register("bad-target", "no colon")
            register("zero\\u200bwidth", "tp_x:G")
    ''')
    registry = Registry(["tp_names"], env=False)
    errors = registry.plugins["tp_names"].errors
    assert len(errors) == 7, errors
    for shown in ("'has space'", "'new\\nline'", "'tab\\tname'", "''", "'bad-target'", "zero\\u200bwidth"):
        assert any(shown in e for e in errors), (shown, errors)
    assert registry.get("fusion", "fine").target == "tp_x:F", "a valid registration after bad ones is kept"
    assert [c.name for c in registry.list("fusion") if c.plugin == "tp_names"] == ["fine"]


def test_strict_mode_makes_an_invalid_name_fatal(write_plugin, monkeypatch):
    write_plugin("tp_names_strict", {"head": {"two words": "tp_x:H"}})
    monkeypatch.setenv("MMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"invalid head name 'two words'"):
        Registry(["tp_names_strict"], env=False)


def test_base_exceptions_in_hooks_and_at_import_are_isolated(write_plugin, write_module):
    write_plugin("tp_fatal", {"dataset": {"tp-still": "tp_x:still"}}, extra='''
        import tests_fatal_kit

        @mmkit.hookimpl
        def register_fusions(register):
            raise tests_fatal_kit.Fatal("deep trouble")

        @mmkit.hookimpl
        def register_heads(register):
            raise SystemExit(0)
    ''')
    write_module("tests_fatal_kit", "class Fatal(BaseException):\n    pass\n")
    write_module("tp_fatal_import", "import tests_fatal_kit\nraise tests_fatal_kit.Fatal('at import')\n")
    registry = Registry(["tp_fatal", "tp_fatal_import"], env=False)
    errors = registry.plugins["tp_fatal"].errors
    assert "register_fusions raised Fatal: deep trouble" in errors
    assert "register_heads raised SystemExit: it called sys.exit(0)" in errors
    assert registry.get("dataset", "tp-still").plugin == "tp_fatal"
    assert registry.failed_plugins()["tp_fatal_import"] == "Fatal: at import"


def test_ctrl_c_in_a_plugin_is_not_swallowed(write_module):
    write_module("tp_ctrl_c", "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        Registry(["tp_ctrl_c"], env=False)


def test_a_component_that_exits_while_imported_or_built_is_a_plugin_error(write_plugin, write_module):
    write_module("tp_exit_impl", '''
        import sys
        import mmkit

        class Builds(mmkit.Fusion):
            """Exits when built."""

            def __init__(self, input_dims, token_inputs, dim: int = 4):
                super().__init__()
                sys.exit("bye from the constructor")
    ''')
    write_module("tp_exit_module", "import sys\nsys.exit(4)\nclass Never: pass\n")
    write_plugin("tp_exit_components", {"fusion": {"tp-exit-build": "tp_exit_impl:Builds",
                                                   "tp-exit-import": "tp_exit_module:Never"}})
    registry = Registry(["tp_exit_components"], env=False)
    with pytest.raises(PluginError, match=r"tp-exit-build.*tp_exit_components.*SystemExit: it called "
                                          r"sys.exit\('bye from the constructor'\)"):
        registry.create("fusion", "tp-exit-build", context={"input_dims": {"a": 4}, "token_inputs": {"a": False}})
    with pytest.raises(PluginError, match=r"tp-exit-import.*cannot be imported.*SystemExit: it called sys.exit\(4\)"):
        registry.get("fusion", "tp-exit-import").load()


def test_the_cli_reports_every_problem_and_keeps_working(write_plugin, clean_registry, monkeypatch):
    write_plugin("tp_cli_names", {"encoder": {"bad name": "tp_x:A", "tp-good": "tp_x:B"}}, extra='''
        import sys

        @mmkit.hookimpl
        def register_commands(cli):
            sys.exit(9)
    ''')
    result = CliRunner().invoke(cli, ["-p", "tp_cli_names", "plugins"])
    assert result.exit_code == 0, result.output
    assert "invalid encoder name 'bad name'" in result.output
    result = CliRunner().invoke(cli, ["-p", "tp_cli_names", "list", "encoder"])
    assert result.exit_code == 0 and "tp-good" in result.output and "timm" in result.output
    result = CliRunner().invoke(cli, ["-p", "tp_cli_names", "--help"])  # lists the plugins' commands too
    assert result.exit_code == 0 and "Commands:" in result.output
    assert "plugin 'tp_cli_names' failed in register_commands: SystemExit: 9" in result.output
