"""Hooks are called through pluggy: wrappers see every registration, ``firstresult`` and ``tryfirst``
hold, call monitoring sees the calls, a misspelt hook is an error naming the plugin, and a plugin that
raises (even ``SystemExit``) is isolated with every error kept. Also: the one table of kinds, names
owned by blocked plugins, and ``[plugins] require`` of a blocked plugin."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

import mmkit
from mmkit._internal import hookspecs
from mmkit._internal.errors import ComponentNotFoundError, PluginError, RecipeError
from mmkit._internal.registry import KINDS, Registry

pytestmark = pytest.mark.usefixtures("clean_registry")

SPY = '''
import mmkit

SEEN = []   # (kind, name, plugin) of every registration the wrapper observed
CALLS = []  # (hook, plugin) of every call it wrapped


def _spy(hook):
    def wrapper(register):
        result = yield
        CALLS.append((hook, register.plugin))
        SEEN.extend((c.kind, c.name, c.plugin) for c in register.registered)
        return result
    wrapper.__name__ = hook
    return mmkit.hookimpl(wrapper=True)(wrapper)


for _hook in ("register_encoders", "register_fusions", "register_heads", "register_modalities",
              "register_datasets", "register_callbacks"):
    globals()[_hook] = _spy(_hook)
'''


def test_a_hook_wrapper_observes_every_registration_of_every_plugin(write_plugin, write_module):
    write_plugin("tp_first", {"fusion": {"tp-one": "tp_x:One"}, "dataset": {"tp-data": "tp_x:data"}})
    spy = write_module("tp_spy", SPY)
    write_plugin("tp_last", {"encoder": {"tp-enc": "tp_x:Enc"}})
    registry = Registry(["tp_first", spy, "tp_last"], env=False)  # plus the built-in entry points
    seen = sys.modules[spy].SEEN
    everything = [(c.kind, c.name, c.plugin) for c in registry.list()]
    assert len(everything) > 20 and {"shapes", "fusion", "tp_first", "tp_last"} <= {p for _, _, p in everything}
    assert sorted(seen) == sorted(everything)  # each registration observed exactly once
    # one call per plugin and hook, through pluggy: the plugin order is the load order
    calls = sys.modules[spy].CALLS
    assert ("register_fusions", "tp_first") in calls and ("register_encoders", "tp_last") in calls
    assert len(calls) == len(set(calls))
    assert registry.plugins[spy].hooks == sorted(hookspecs.KIND_HOOKS.values())


def test_an_old_style_hookwrapper_works_too(write_plugin, write_module):
    spy = write_module("tp_oldspy", '''
        import mmkit

        SEEN = []

        @mmkit.hookimpl(hookwrapper=True)
        def register_heads(register):
            outcome = yield
            outcome.get_result()
            SEEN.extend(c.name for c in register.registered)
    ''')
    write_plugin("tp_heads", {"head": {"tp-h1": "tp_x:H1", "tp-h2": "tp_x:H2"}})
    Registry([spy, "tp_heads"], entry_points=False, env=False)
    assert sys.modules[spy].SEEN == ["tp-h1", "tp-h2"]


def test_call_monitoring_sees_registration_hooks_with_the_plugin_bound_register(write_plugin):
    write_plugin("tp_mon", {"fusion": {"tp-mon": "tp_x:Mon"}})
    registry = Registry(entry_points=False, env=False)
    calls = []
    registry.pm.add_hookcall_monitoring(
        lambda hook, impls, kwargs: calls.append((hook, [i.plugin_name for i in impls], repr(kwargs.get("register")))),
        lambda outcome, hook, impls, kwargs: None)
    registry.add_module("tp_mon")
    assert calls == [("register_fusions", ["tp_mon"], "<register fusions of plugin 'tp_mon'>")]


def test_a_misspelt_hook_is_an_error_naming_the_plugin_and_the_hook(write_plugin, monkeypatch):
    write_plugin("tp_typo", extra='''
        @mmkit.hookimpl
        def register_encodrs(register):
            register("tp-lost", "tp_x:Lost")
    ''')
    registry = Registry(["tp_typo"], env=False)
    error = registry.failed_plugins()["tp_typo"]
    assert "unknown hook 'register_encodrs' (did you mean 'register_encoders'?)" in error
    assert registry.list("encoder", "tp-lost") == [] and registry.pm.get_plugin("tp_typo") is None
    assert registry.get("dataset", "shapes").plugin == "shapes"  # the others load
    monkeypatch.setenv("MMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"plugin 'tp_typo' .*unknown hook 'register_encodrs'"):
        Registry(["tp_typo"], env=False)


def test_an_optional_hook_for_another_mmkit_version_is_allowed(write_plugin):
    write_plugin("tp_future", {"head": {"tp-now": "tp_x:Now"}}, extra='''
        @mmkit.hookimpl(optionalhook=True)
        def register_samplers(register):
            register("tp-later", "tp_x:Later")
    ''')
    registry = Registry(["tp_future"], entry_points=False, env=False)
    assert registry.failed_plugins() == {} and registry.get("head", "tp-now").plugin == "tp_future"


RESOLVER = '''
import mmkit

@mmkit.hookimpl{marker}
def resolve_component(kind, name):
    if name.startswith("fam:"):
        return "{target}", {{"variant": "{label}"}}
    return None
'''


def test_resolve_component_is_firstresult_in_pluggy_order_and_credits_the_answering_plugin(write_module):
    write_module("tp_res_a", RESOLVER.format(marker="", target="tp_x:A", label="a"))
    write_module("tp_res_b", RESOLVER.format(marker="", target="tp_x:B", label="b"))
    write_module("tp_res_first", RESOLVER.format(marker="(tryfirst=True)", target="tp_x:F", label="f"))
    write_module("tp_res_none", "import mmkit\n\n@mmkit.hookimpl\ndef resolve_component(kind, name):\n"
                                "    return None\n")
    # pluggy calls the last registered plugin first ...
    info = Registry(["tp_res_a", "tp_res_b", "tp_res_none"], entry_points=False, env=False).get("head", "fam:x")
    assert (info.plugin, info.target, info.fixed_params) == ("tp_res_b", "tp_x:B", {"variant": "b"})
    # ... unless an implementation asks to be first
    info = Registry(["tp_res_first", "tp_res_a"], entry_points=False, env=False).get("head", "fam:x")
    assert (info.plugin, info.target) == ("tp_res_first", "tp_x:F")


def test_a_wrapper_can_change_what_resolve_component_answers(write_module):
    write_module("tp_res_plain", RESOLVER.format(marker="", target="tp_x:A", label="a"))
    write_module("tp_res_wrap", '''
        import mmkit

        @mmkit.hookimpl(wrapper=True)
        def resolve_component(kind, name):
            answer = yield
            return None if answer is None else (answer[0], {**answer[1], "wrapped": True})
    ''')
    info = Registry(["tp_res_plain", "tp_res_wrap"], entry_points=False, env=False).get("head", "fam:x")
    assert (info.plugin, info.fixed_params) == ("tp_res_plain", {"variant": "a", "wrapped": True})


def test_a_plugin_calling_sys_exit_is_isolated_and_every_error_is_kept(write_plugin, write_module):
    write_plugin("tp_exits", {"dataset": {"tp-kept": "tp_x:kept"}}, extra='''
        import sys

        @mmkit.hookimpl
        def register_fusions(register):
            sys.exit(3)

        @mmkit.hookimpl
        def register_heads(register):
            raise ValueError("second problem")
    ''')
    write_module("tp_exit_import", "import sys\nsys.exit('bye')\n")
    registry = Registry(["tp_exits", "tp_exit_import"], env=False)
    info = registry.plugins["tp_exits"]
    assert len(info.errors) == 2
    assert "register_fusions raised SystemExit: it called sys.exit(3)" in info.errors
    assert "register_heads raised ValueError: second problem" in info.errors
    assert registry.get("dataset", "tp-kept").plugin == "tp_exits"  # what it registered before is kept
    assert registry.failed_plugins()["tp_exit_import"] == "SystemExit: it called sys.exit('bye')"
    assert info.to_dict()["errors"] == info.errors


def test_one_table_of_kinds_matches_the_hookspecs():
    specs = {name for name, fn in vars(hookspecs).items() if hasattr(fn, "mmkit_spec")}
    registration = {name for name in specs if "register" in inspect.signature(getattr(hookspecs, name)).parameters}
    assert set(hookspecs.KIND_HOOKS.values()) == registration
    assert KINDS == tuple(hookspecs.KIND_HOOKS) and "callback" in KINDS
    assert hookspecs.KIND_HOOKS["callback"] == "register_callbacks"
    from mmkit._internal import scaffold

    assert set(scaffold.KINDS) <= set(KINDS)


# ---------------------------------------------------------------------------- blocked plugins

def test_an_unknown_name_of_a_blocked_plugin_says_it_is_blocked(write_plugin):
    write_plugin("timeseries", {"encoder": {"gru": "tp_x:Gru"}, "modality": {"series": "tp_x:Series"}})
    registry = Registry(["timeseries", "no:timeseries"], env=False)
    with pytest.raises(ComponentNotFoundError,
                       match=r"'gru' is registered by plugin 'timeseries', which is blocked \(-p no:timeseries\)"):
        registry.get("encoder", "gru")
    with pytest.raises(ComponentNotFoundError, match=r"which is blocked \(-p no:shapes\)"):
        Registry(["no:shapes"], env=False).get("dataset", "shapes")


def test_show_without_kind_picks_the_closest_name_across_kinds():
    from click.testing import CliRunner

    from mmkit._internal.cli import cli

    result = CliRunner().invoke(cli, ["show", "atention"])
    assert result.exit_code == 2
    assert "unknown component 'atention'; did you mean fusion 'attention'" in result.stderr
    blocked = CliRunner().invoke(cli, ["-p", "no:fusion", "show", "attention"])
    assert "'attention' is registered by plugin 'fusion', which is blocked (-p no:fusion)" in blocked.stderr


def test_a_recipe_requiring_a_blocked_plugin_fails(tmp_path: Path):
    from mmkit._internal.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[plugins]\nrequire = ["mmkit>=0.1"]\n\n[data]\ndataset = "shapes"\n\n'
                      '[model.encoders.image]\ntype = "timm"\nmodel = "test_resnet"\n\n'
                      '[model.fusion]\ntype = "concat"\n\n[model.head]\ntype = "classification"\n', encoding="utf-8")
    load_recipe(recipe)  # fine with every plugin loaded
    with pytest.raises(RecipeError, match=r"plugins.require: requires mmkit>=0.1, but its plugin 'fusion' is blocked"):
        load_recipe(recipe, registry=mmkit.get_registry(["no:fusion"]))
