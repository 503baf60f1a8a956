"""The component registry through the Python API: plugin loading, provenance, broken plugins,
duplicates, blocking, unknown names, parameters read from source, validation and prefixed names."""

from __future__ import annotations

import sys

import pytest

import mmkit
from mmkit._internal.errors import ComponentNotFoundError, DuplicateComponentError, ParameterError, PluginError
from mmkit._internal.params import parse_docstring_args, value_matches
from mmkit._internal.registry import Registry

pytestmark = pytest.mark.usefixtures("clean_registry")

# A component module that must never be imported by listing, describe or show.
UNIMPORTABLE_IMPL = '''
raise RuntimeError("tp_unimportable must not be imported by describe/show")

from typing import Literal


class GatedFusion:
    """Gated sum of the modality embeddings.

    A longer description that is not the summary.

    Args:
        dim: width of the fused vector.
        dropout: dropout probability,
            applied after the gate.
        mode: how the gates combine.
    """

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool], dim: int = 64,
                 dropout: float = 0.1, mode: Literal["sum", "max"] = "sum", *, layers: int) -> None:
        pass


def toy_dataset(n_train: int = 10, seed: int = 0):
    """A toy dataset.

    Args:
        n_train: rows in the training split.
        seed: random seed.
    """
'''

# The same kind of component, importable, to build it.
IMPORTABLE_IMPL = '''
class Scaler:
    """Multiplies by a factor.

    Args:
        factor: the factor.
        name: a label.
        variant: which variant (fixed by a prefixed name).
    """

    def __init__(self, input_dim: int = 0, factor: float = 1.0, name: str = "s", variant: str = "base") -> None:
        self.input_dim, self.factor, self.name, self.variant = input_dim, factor, name, variant
'''


# ---------------------------------------------------------------------------- loading and provenance

def test_builtin_dataset_is_listed_with_its_distribution_version():
    [shapes] = mmkit.list_components("dataset", "shapes")
    assert (shapes.plugin, shapes.target) == ("shapes", "mmkit_shapes.generate:shapes")
    assert shapes.version == mmkit.__version__
    assert "shapes" in shapes.summary


def test_plugin_from_env_var_registers_with_provenance(write_plugin, monkeypatch):
    write_plugin("tp_env", {"fusion": {"tp-gated": "tp_env_impl:Gated"}, "head": {"tp-tagger": "tp_env_impl:Tagger"}},
                 version="1.2.3")
    monkeypatch.setenv("MMKIT_PLUGINS", " tp_env ,")
    mmkit.reset_registry()
    [gated] = mmkit.list_components("fusion", "tp-gated")
    assert (gated.plugin, gated.version, gated.target) == ("tp_env", "1.2.3", "tp_env_impl:Gated")
    assert gated.summary == "tp-gated from tp_env"
    assert gated.qualified_name == "tp_env:tp-gated"
    assert [c.name for c in mmkit.list_components("head", "tp-tag*")] == ["tp-tagger"]
    info = mmkit.get_registry().plugins["tp_env"]
    assert info.error is None and info.version == "1.2.3"
    assert info.hooks == ["register_fusions", "register_heads"]
    # the built-ins are still there, and the component module was not imported by listing
    assert mmkit.list_components("dataset", "shapes")
    assert "tp_env_impl" not in sys.modules


def test_plugin_given_explicitly_like_dash_p(write_plugin):
    write_plugin("tp_dashp", {"encoder": {"tp-bag": "tp_dashp_impl:Bag"}}, version="0.9")
    registry = mmkit.get_registry(["tp_dashp"])
    assert registry.get("encoder", "tp-bag").version == "0.9"
    assert mmkit.list_components("encoder", "tp_dashp:*")[0].name == "tp-bag"  # patterns match plugin:name too
    mmkit.reset_registry()
    assert not mmkit.list_components("encoder", "tp-bag")  # not loaded without -p


def test_dash_p_of_a_module_that_is_already_an_entry_point_is_not_an_error():
    registry = Registry(["mmkit_shapes.plugin"], env=False)
    assert registry.failed_plugins() == {}
    assert [c.plugin for c in registry.list("dataset", "shapes")] == ["shapes"]


# ---------------------------------------------------------------------------- broken plugins

def test_plugin_raising_on_import_is_reported_and_the_rest_works(write_module):
    write_module("tp_broken", "import mmkit\nraise RuntimeError('boom at import')\n")
    registry = Registry(["tp_broken"], env=False)
    assert registry.failed_plugins() == {"tp_broken": "RuntimeError: boom at import"}
    assert registry.get("dataset", "shapes").plugin == "shapes"
    with pytest.raises(ComponentNotFoundError, match=r"failed to load: tp_broken \(RuntimeError: boom at import\)"):
        registry.get("dataset", "shapez")


def test_missing_plugin_module_is_reported():
    registry = Registry(["tp_does_not_exist"], env=False)
    assert "ModuleNotFoundError" in registry.failed_plugins()["tp_does_not_exist"]


def test_strict_mode_makes_a_broken_plugin_fatal(write_module, monkeypatch):
    write_module("tp_broken_strict", "raise ImportError('no such backend')\n")
    monkeypatch.setenv("MMKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"tp_broken_strict.*no such backend"):
        Registry(["tp_broken_strict"], env=False)


def test_register_hook_that_raises_is_reported_with_the_plugin_name(write_plugin, monkeypatch):
    write_plugin("tp_badhook", {"dataset": {"tp-fine": "tp_x:tp-fine"}}, extra='''
        @mmkit.hookimpl
        def register_fusions(register):
            raise ValueError("cannot register fusions")
    ''')
    registry = Registry(["tp_badhook"], env=False)
    error = registry.failed_plugins()["tp_badhook"]
    assert "register_fusions" in error and "ValueError: cannot register fusions" in error
    assert registry.get("dataset", "tp-fine").plugin == "tp_badhook"  # its other hooks still ran
    monkeypatch.setenv("MMKIT_STRICT_PLUGINS", "true")
    with pytest.raises(PluginError, match=r"'tp_badhook'.*cannot register fusions"):
        Registry(["tp_badhook"], env=False)


@pytest.mark.parametrize("call, message", [
    ('register("a:b", "m:C")', "invalid fusion name 'a:b'"),
    ('register("ok", "no_colon")', "needs an import string"),
])
def test_invalid_registrations_are_reported(write_plugin, call, message):
    write_plugin("tp_invalid", extra=f'''
        @mmkit.hookimpl
        def register_fusions(register):
            {call}
    ''')
    registry = Registry(["tp_invalid"], env=False)
    assert message in registry.failed_plugins()["tp_invalid"]


# ---------------------------------------------------------------------------- duplicates and blocking

def test_duplicate_names_name_both_plugins_and_plugin_prefix_chooses(write_plugin):
    write_plugin("tp_a", {"fusion": {"tp-gated": "tp_a_impl:Gated"}})
    write_plugin("tp_b", {"fusion": {"tp-gated": "tp_b_impl:Gated"}, "head": {"tp-gated": "tp_b_impl:Head"}})
    registry = Registry(["tp_a", "tp_b"], env=False)
    with pytest.raises(DuplicateComponentError) as err:
        registry.get("fusion", "tp-gated")
    assert "'tp_a'" in str(err.value) and "'tp_b'" in str(err.value) and "'tp_a:tp-gated'" in str(err.value)
    assert registry.get("fusion", "tp_a:tp-gated").target == "tp_a_impl:Gated"
    assert registry.get("fusion", "tp_b:tp-gated").target == "tp_b_impl:Gated"
    assert registry.get("head", "tp-gated").plugin == "tp_b"  # unique per kind: another kind is fine
    assert [c.plugin for c in registry.list("fusion", "tp-gated")] == ["tp_a", "tp_b"]
    assert len(registry.problems) == 1 and "tp_a" in registry.problems[0] and "tp_b" in registry.problems[0]
    with pytest.raises(ComponentNotFoundError):
        registry.get("fusion", "tp_c:tp-gated")


def test_blocking_a_builtin_lets_a_third_party_plugin_take_its_name(write_plugin):
    write_plugin("tp_shapes", {"dataset": {"shapes": "tp_shapes_impl:shapes"}})
    blocked = Registry(["no:shapes"], env=False)
    assert "shapes" in blocked.blocked and "shapes" not in blocked.plugins
    assert blocked.list("dataset", "shapes") == []
    replaced = Registry(["no:shapes", "tp_shapes"], env=False)
    assert replaced.get("dataset", "shapes").plugin == "tp_shapes"
    assert replaced.problems == []


def test_blocking_through_the_env_var(monkeypatch):
    monkeypatch.setenv("MMKIT_PLUGINS", "no:shapes")
    mmkit.reset_registry()
    assert mmkit.list_components("dataset", "shapes") == []


# ---------------------------------------------------------------------------- unknown names

def test_unknown_name_suggests_the_near_miss():
    with pytest.raises(ComponentNotFoundError, match=r"unknown dataset 'shape'; did you mean 'shapes'\?"):
        mmkit.get_registry().get("dataset", "shape")
    with pytest.raises(ComponentNotFoundError, match=r"registered datasets: (.*, )?shapes"):
        mmkit.get_registry().get("dataset", "zzzzzz")


def test_unknown_name_registered_in_another_kind_says_so(write_plugin):
    write_plugin("tp_kind", {"head": {"tp-gated": "tp_kind_impl:Head"}})
    with pytest.raises(ComponentNotFoundError, match=r"'tp-gated' is registered as a head"):
        Registry(["tp_kind"], env=False).get("fusion", "tp-gated")


def test_unknown_kind_suggests_the_near_miss():
    with pytest.raises(ComponentNotFoundError, match=r"did you mean 'fusion'"):
        mmkit.list_components("fusoin")


# ---------------------------------------------------------------------------- parameters from source

def test_describe_reads_parameters_from_source_without_importing(write_plugin, write_module):
    write_module("tp_unimportable", UNIMPORTABLE_IMPL)
    write_plugin("tp_src", {"fusion": {"tp-gated": "tp_unimportable:GatedFusion"},
                            "dataset": {"tp-toy": "tp_unimportable:toy_dataset"}})
    mmkit.get_registry(["tp_src"])
    info = mmkit.describe("fusion", "tp-gated")
    params = {p.name: p for p in info.params}
    assert list(params) == ["dim", "dropout", "mode", "layers"]  # engine context args left out
    assert (params["dim"].type, params["dim"].default, params["dim"].doc) == ("int", 64, "width of the fused vector.")
    assert params["dropout"].doc == "dropout probability, applied after the gate."
    assert params["mode"].type == "Literal['sum', 'max']"
    assert params["layers"].required and not params["dim"].required
    assert info.summary == "tp-gated from tp_src"  # the registered summary wins over the docstring
    toy = mmkit.describe("dataset", "tp-toy")  # a function target, read from source too
    assert [(p.name, p.default, p.doc) for p in toy.params] == [
        ("n_train", 10, "rows in the training split."), ("seed", 0, "random seed.")]
    assert "tp_unimportable" not in sys.modules


def test_describe_follows_a_base_class_in_the_same_module(write_plugin, write_module):
    write_module("tp_inherit", '''
        raise RuntimeError("not importable")

        class Base:
            """Base.

            Args:
                width: the width.
            """

            def __init__(self, width: int = 8) -> None: ...

        class Child(Base):
            """A child without its own constructor."""
    ''')
    write_plugin("tp_inh", {"encoder": {"tp-child": "tp_inherit:Child"}})
    info = Registry(["tp_inh"], env=False).describe("encoder", "tp-child")
    assert [(p.name, p.default, p.doc) for p in info.params] == [("width", 8, "the width.")]
    assert info.summary == "tp-child from tp_inh"


def test_describe_of_a_missing_module_is_a_parameter_error(write_plugin):
    write_plugin("tp_missing", {"encoder": {"tp-ghost": "tp_no_such_module:Ghost"}})
    with pytest.raises(ParameterError, match="tp_no_such_module"):
        Registry(["tp_missing"], env=False).describe("encoder", "tp-ghost")


def test_create_validates_parameters_before_building(write_plugin, write_module):
    write_module("tp_scaler", IMPORTABLE_IMPL)
    write_plugin("tp_create", {"head": {"tp-scaler": "tp_scaler:Scaler"}})
    mmkit.get_registry(["tp_create"])
    with pytest.raises(ParameterError, match=r"factr: unknown key; did you mean factor\?"):
        mmkit.create("head", "tp-scaler", factr=2.0)
    with pytest.raises(ParameterError, match=r"\.name: expected str, got int 3"):
        mmkit.create("head", "tp-scaler", name=3)
    with pytest.raises(ParameterError, match=r"\.factor: expected float, got bool"):
        mmkit.create("head", "tp-scaler", factor=True)
    with pytest.raises(ComponentNotFoundError, match="did you mean 'tp-scaler'"):
        mmkit.create("head", "tp-scalar")
    head = mmkit.create("head", "tp-scaler", factor=2, context={"input_dim": 5})
    assert (head.factor, head.input_dim, head.name) == (2, 5, "s")


def test_resolve_component_hook_serves_prefixed_names(write_plugin, write_module):
    write_module("tp_scaler2", IMPORTABLE_IMPL)
    write_plugin("tp_family", {"head": {"tp-plain": "tp_scaler2:Scaler"}}, version="3.1", extra='''
        @mmkit.hookimpl
        def resolve_component(kind, name):
            prefix, _, variant = name.partition(":")
            if kind == "head" and prefix == "fam" and variant:
                return "tp_scaler2:Scaler", {"variant": variant}
            return None
    ''')
    mmkit.get_registry(["tp_family"])
    info = mmkit.describe("head", "fam:large")
    assert (info.plugin, info.version, info.fixed_params) == ("tp_family", "3.1", {"variant": "large"})
    assert [p.name for p in info.params] == ["factor", "name"]  # fixed params are not recipe keys
    head = mmkit.create("head", "fam:large", factor=0.5)
    assert (head.variant, head.factor) == ("large", 0.5)
    with pytest.raises(ParameterError, match="variant: unknown key"):
        mmkit.create("head", "fam:large", variant="small")
    with pytest.raises(ComponentNotFoundError):
        mmkit.describe("head", "other:large")
    with pytest.raises(ComponentNotFoundError):
        mmkit.describe("fusion", "fam:large")


# ---------------------------------------------------------------------------- annotation checks

@pytest.mark.parametrize("value, annotation, ok", [
    (3, "int", True), (True, "int", False), (3, "float", True), ("x", "float", False),
    (None, "int | None", True), ("a", "Optional[int]", False), ("max", "Literal['sum', 'max']", True),
    ("min", "Literal['sum', 'max']", False), ([1, 2], "list[int]", True), ((1,), "tuple[int, ...]", True),
    ({"a": 1}, "dict[str, int]", True), ([1], "dict[str, int]", False), ("p", "Path", True),
    (object(), "SomeCustomType", True),
])
def test_value_matches(value, annotation, ok):
    assert value_matches(value, annotation) is ok


def test_parse_docstring_args_stops_at_the_next_section():
    doc = """Summary.

    Args:
        a (int): first,
            continued.
        b: second.

    Returns:
        c: not an argument.
    """
    assert parse_docstring_args(doc) == {"a": "first, continued.", "b": "second."}


@pytest.mark.parametrize("annotation, schema", [
    ("int", {"type": "integer"}), ("float | None", {"anyOf": [{"type": "number"}, {"type": "null"}]}),
    ("Optional[str]", {"anyOf": [{"type": "string"}, {"type": "null"}]}),
    ("Union[int, bool]", {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}),
    ("Literal['a', 2]", {"enum": ["a", 2]}), ("dict[str, list[int]]", {"type": "object"}),
    ("torch.Tensor", {}),
])
def test_annotation_schema(annotation, schema):
    from mmkit._internal.schema import annotation_schema

    assert annotation_schema(annotation) == schema


def test_a_resolver_that_raises_is_named(write_plugin):
    write_plugin("tp_bad_resolver", extra='''
        @mmkit.hookimpl
        def resolve_component(kind, name):
            raise RuntimeError("resolver exploded")
    ''')
    registry = Registry(["tp_bad_resolver"], env=False)
    assert registry.get("dataset", "shapes").plugin == "shapes"  # plain names never ask resolvers
    with pytest.raises(PluginError, match=r"'tp_bad_resolver': resolve_component\('head', 'x:y'\).*exploded"):
        registry.get("head", "x:y")
