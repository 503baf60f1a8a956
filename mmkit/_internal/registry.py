"""The component registry: plugins (pluggy, entry-point group ``mmkit``) register components lazily.

A registration is a name, a kind, an import string and a one-line summary, with the plugin that
made it and that plugin's version. Nothing heavy is imported until a component is built.

Every hook is called through the plugin manager, once per implementing plugin (a subset hook caller
holding that plugin's implementation plus the wrappers of plugins that only wrap the hook), so the
core knows which plugin made each registration, a failing plugin is isolated, and pluggy's
``tryfirst``/``trylast``, ``firstresult``, wrappers, tracing and call monitoring all apply.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import fnmatch
import importlib
import importlib.metadata
import os
import re
import sys
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

import pluggy

from mmkit._internal import hookspecs
from mmkit._internal.errors import (
    ComponentNotFoundError,
    DuplicateComponentError,
    MmkitError,
    ParameterError,
    PluginError,
)
from mmkit._internal.hookspecs import KIND_HOOKS, KINDS
from mmkit._internal.params import ParamInfo, read_params, validate_params

__all__ = ["KINDS", "KIND_HOOKS", "ComponentInfo", "PluginInfo", "Registrar", "Registry", "get_registry",
           "reset_registry"]


@dataclass(frozen=True)
class ComponentInfo:
    """What the registry knows of a component without importing it."""

    kind: str
    name: str
    target: str  # "package.module:Class"
    plugin: str
    version: str
    summary: str = ""
    fixed_params: dict[str, Any] = field(default_factory=dict)
    params: tuple[ParamInfo, ...] | None = None  # filled by describe()

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"

    def load(self) -> Any:
        """Import and return the registered object (this is where heavy imports happen)."""
        module_name, _, qualname = self.target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except BaseException as exc:  # noqa: BLE001 - reported with the plugin's name (sys.exit included)
            raise PluginError(
                f"{self.kind} {self.name!r} of plugin {self.plugin!r} cannot be imported from "
                f"{self.target!r}: {_describe_error(_contained(exc))}"
            ) from exc
        return obj

    def to_dict(self, with_params: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "version": self.version,
            "summary": self.summary,
            "target": self.target,
        }
        if with_params and self.params is not None:
            out["parameters"] = [p.to_dict() for p in self.params]
        return out


@dataclass
class PluginInfo:
    """A loaded (or failed) plugin. ``errors`` keeps every problem it had (import, each hook)."""

    name: str
    version: str
    module: str
    source: str  # "entry point", "-p/MMKIT_PLUGINS", "python"
    hooks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    traceback: str | None = None  # of the first error

    @property
    def error(self) -> str | None:
        """All errors in one line, or None for a plugin that loaded cleanly."""
        return "; ".join(self.errors) if self.errors else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "module": self.module, "source": self.source,
                "hooks": self.hooks, "error": self.error, "errors": list(self.errors)}


def _strict() -> bool:
    return os.environ.get("MMKIT_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _split_env(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _contained(exc: BaseException) -> BaseException:
    """``exc`` if a plugin's failure may be isolated (any exception, ``sys.exit`` included); Ctrl-C
    and generator teardown propagate."""
    if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
        raise exc
    return exc


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


MAX_NAME = 100


def valid_name(name: Any) -> bool:
    """A component name: 1 to :data:`MAX_NAME` printable characters without whitespace or ``:`` (it is
    written in recipes, on command lines and in ``plugin:name``)."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME and name.isprintable()
            and not any(c.isspace() or c == ":" for c in name))


def _norm_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Registrar:
    """The ``register`` callback a registration hook receives, bound to one plugin and one kind.

    ``register(name, target, *, summary="")`` records a component and returns its
    :class:`ComponentInfo`. ``plugin``, ``kind`` and ``registered`` (what this call registered so far)
    let a hook wrapper observe registrations::

        @mmkit.hookimpl(wrapper=True)
        def register_encoders(register):
            result = yield
            print(register.plugin, [c.name for c in register.registered])
            return result
    """

    def __init__(self, registry: "Registry", kind: str, plugin: str, version: str) -> None:
        self._registry = registry
        self.kind = kind
        self.plugin = plugin
        self.version = version
        self.registered: list[ComponentInfo] = []

    def __call__(self, name: str, target: str, *, summary: str = "") -> ComponentInfo | None:
        """Record a component; an invalid registration is reported as the plugin's error (every one
        is kept; the plugin's other registrations go on) and returns None."""
        kind, plugin = self.kind, self.plugin
        problem = None
        if not valid_name(name):
            problem = (f"plugin {plugin!r} registered an invalid {kind} name {name!r} (1 to {MAX_NAME} printable "
                       "characters, no whitespace or ':')")
        elif not isinstance(target, str) or ":" not in target or not target.isprintable():
            problem = f"plugin {plugin!r}: {kind} {name!r} needs an import string 'module:Object', got {target!r}"
        if problem is not None:
            self._registry._fail(plugin, plugin, self.version, "registration", PluginError(problem))
            return None
        info = ComponentInfo(kind, name, target, plugin, self.version, summary if isinstance(summary, str) else "")
        self._registry._add_component(info)
        self.registered.append(info)
        return info

    def __repr__(self) -> str:
        return f"<register {self.kind}s of plugin {self.plugin!r}>"


class Registry:
    """Plugins and the components they registered.

    Args:
        plugins: extra plugin modules to load (as ``-p MODULE``); ``no:NAME`` blocks a plugin.
        entry_points: load plugins from the ``mmkit`` entry-point group.
        env: read ``MMKIT_PLUGINS`` (comma-separated modules; ``no:NAME`` entries block).

    All plugins are registered with the plugin manager first, then their registration hooks are
    called in load order, so a hook wrapper in any of them sees every plugin's registrations.
    """

    def __init__(self, plugins: Iterable[str] = (), *, entry_points: bool = True, env: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._components: dict[str, dict[str, list[ComponentInfo]]] = {k: {} for k in KINDS}
        self.problems: list[str] = []  # registration problems (duplicates, bad registrations)
        requested = list(plugins) + (_split_env(os.environ.get("MMKIT_PLUGINS")) if env else [])
        self.blocked = {p[3:] for p in requested if p.startswith("no:")}
        modules = [p for p in requested if not p.startswith("no:")]
        self._blocked_sources: dict[str, Any] = {}  # blocked plugin name -> entry point or module name
        self._blocked_cache: list[ComponentInfo] | None = None
        for name in self.blocked:
            self.pm.set_blocked(name)
        self._deferred: list[str] | None = []  # plugins whose hooks run once every plugin is registered
        if entry_points:
            self._load_entry_points()
        for module in modules:
            if module in self.blocked:
                self._blocked_sources[module] = module
            self.add_module(module, source="-p/MMKIT_PLUGINS")
        deferred, self._deferred = self._deferred, None
        for name in deferred:
            self._collect(name)

    # ------------------------------------------------------------------ loading
    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if ep.name in self.blocked or ep.value in self.blocked:
                self._blocked_sources[ep.name] = ep
                continue
            dist = getattr(ep, "dist", None)
            version = getattr(dist, "version", None) or "unknown"
            try:
                module = ep.load()
            except BaseException as exc:  # noqa: BLE001 - a broken plugin must not break mmkit
                self._fail(ep.name, ep.value, version, "entry point", _contained(exc))
                continue
            self.register_plugin(module, name=ep.name, version=version, source="entry point")

    def add_module(self, module_name: str, *, source: str = "python") -> None:
        """Import ``module_name`` and register it as a plugin named after the module."""
        if module_name in self.blocked or module_name in self.plugins:
            return
        try:
            module = importlib.import_module(module_name)
        except BaseException as exc:  # noqa: BLE001
            self._fail(module_name, module_name, "unknown", source, _contained(exc))
            return
        if self.pm.is_registered(module):  # e.g. `-p mmkit_shapes.plugin`, already an entry point
            return
        self.register_plugin(module, name=module_name, source=source)

    def _fail(self, name: str, module: str, version: str, source: str, exc: BaseException,
              hook: str | None = None) -> None:
        """Record a plugin's failure to load (or a ``hook`` of it raising), kept with its earlier
        ones; fatal under MMKIT_STRICT_PLUGINS."""
        message = _describe_error(exc) if hook is None else f"{hook} raised {_describe_error(exc)}"
        if _strict():
            raise PluginError(f"plugin {name!r} ({module}) failed to load: {message}") from exc
        info = self.plugins.setdefault(name, PluginInfo(name, version, module, source))
        info.errors.append(message)
        if info.traceback is None:
            info.traceback = "".join(traceback.format_exception(exc))

    def register_plugin(self, plugin: Any, *, name: str | None = None, version: str | None = None,
                        source: str = "python") -> None:
        """Register a plugin object (usually a module) and collect its registrations."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if name in self.blocked or self.pm.is_blocked(name):
            return
        version = version or str(getattr(plugin, "__version__", "unknown"))
        module = getattr(plugin, "__name__", name)
        try:
            self.pm.register(plugin, name=name)
        except BaseException as exc:  # noqa: BLE001 - e.g. a hook whose arguments do not match the spec
            self._fail(name, module, version, source, _contained(exc))
            return
        unknown = self._unknown_hooks(plugin)
        if unknown:
            self.pm.unregister(plugin)
            self._fail(name, module, version, source, pluggy.PluginValidationError(plugin, unknown))
            return
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        self.plugins[name] = PluginInfo(name, version, module, source, hooks=hooks)
        if self._deferred is not None:
            self._deferred.append(name)
        else:
            self._collect(name)

    def _unknown_hooks(self, plugin: Any) -> str:
        """pluggy's pending-hook check (``check_pending``) for one plugin, as a message naming the
        misspelt hooks and their closest real names."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError:
            pass
        else:
            return ""
        names = [h.name for h in self.pm.get_hookcallers(plugin) or [] if not h.has_spec()
                 and any(not i.optionalhook for i in h.get_hookimpls() if i.plugin is plugin)]
        if not names:
            return ""
        specs = sorted(n for n in vars(hookspecs) if hasattr(getattr(hookspecs, n), "mmkit_spec"))
        parts = []
        for hook in names:
            close = difflib.get_close_matches(hook, specs, n=1)
            parts.append(f"{hook!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        return (f"unknown hook {', '.join(parts)}; the hooks are {', '.join(specs)} (mark a hook for another "
                "mmkit version with @mmkit.hookimpl(optionalhook=True))")

    def _collect(self, name: str) -> None:
        """Call plugin ``name``'s registration hooks, each with a ``register`` bound to it."""
        info = self.plugins[name]
        plugin = self.pm.get_plugin(name)
        for kind, hook_name in KIND_HOOKS.items():
            if plugin not in self._implementers(hook_name):
                continue
            register = Registrar(self, kind, name, info.version)
            try:
                self._caller(plugin, hook_name)(register=register)
            except BaseException as exc:  # noqa: BLE001 - registrations made before the error are kept
                self._fail(name, info.module, info.version, info.source, _contained(exc), hook_name)

    def _add_component(self, info: ComponentInfo) -> None:
        entries = self._components[info.kind].setdefault(info.name, [])
        if entries:
            others = ", ".join(repr(e.plugin) for e in entries)
            self.problems.append(
                f"{info.kind} {info.name!r} is registered by plugins {others} and {info.plugin!r}; address one as "
                f"'{entries[0].plugin}:{info.name}' or '{info.plugin}:{info.name}', or block one with -p no:PLUGIN"
            )
        entries.append(info)

    # ------------------------------------------------------------------ calling hooks
    def _implementers(self, hook_name: str) -> list[Any]:
        """Plugins with a (non-wrapper) implementation of ``hook_name``, in pluggy's call order."""
        impls = getattr(self.pm.hook, hook_name).get_hookimpls()
        return list(dict.fromkeys(i.plugin for i in reversed(impls) if not (i.wrapper or i.hookwrapper)))

    def _caller(self, plugin: Any, hook_name: str) -> Any:
        """A hook caller over ``plugin``'s implementation plus the wrappers of wrapper-only plugins."""
        others = [p for p in self._implementers(hook_name) if p is not plugin]
        return self.pm.subset_hook_caller(hook_name, others)

    def call_each(self, hook_name: str, **kwargs: Any) -> Iterator[tuple[str, Any, BaseException | None]]:
        """Call ``hook_name`` through the plugin manager once per implementing plugin, in pluggy's call
        order: yields ``(plugin name, result, None)``, or ``(plugin name, None, error)`` when that
        plugin's call raised (the others still run)."""
        for plugin in self._implementers(hook_name):
            name = self.pm.get_name(plugin) or repr(plugin)
            try:
                result = self._caller(plugin, hook_name)(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - isolated per plugin; the caller reports it
                yield name, None, _contained(exc)
                continue
            yield name, result, None

    # ------------------------------------------------------------------ queries
    def failed_plugins(self) -> dict[str, str]:
        return {n: p.error for n, p in self.plugins.items() if p.error}

    def list(self, kind: str | None = None, pattern: str = "*") -> builtins.list[ComponentInfo]:
        if kind is not None and kind not in KINDS:
            raise ComponentNotFoundError(_unknown_kind(kind))
        out = []
        for k in (kind,) if kind else KINDS:
            for name in sorted(self._components[k]):
                for info in self._components[k][name]:
                    if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(info.qualified_name, pattern):
                        out.append(info)
        return out

    def kinds_of(self, name: str) -> builtins.list[str]:
        return [k for k in KINDS if self._lookup(k, name, raise_missing=False)]

    def _lookup(self, kind: str, name: str, raise_missing: bool = True) -> builtins.list[ComponentInfo]:
        entries = self._components[kind].get(name, [])
        if not entries and ":" in name:
            plugin, _, short = name.partition(":")
            entries = [e for e in self._components[kind].get(short, []) if e.plugin == plugin]
            if not entries:
                resolved = self._resolve(kind, name)
                if resolved is not None:
                    return [resolved]
        if not entries and raise_missing:
            raise ComponentNotFoundError(self.not_found_message(kind, name))
        return entries

    def _resolve(self, kind: str, name: str) -> ComponentInfo | None:
        """Ask the ``resolve_component`` hooks (``firstresult``: in pluggy's call order, the first
        answer wins) for a prefixed ``name``; the answer is credited to the plugin that gave it."""
        for plugin, answer, exc in self.call_each("resolve_component", kind=kind, name=name):
            if exc is not None:
                raise PluginError(f"plugin {plugin!r}: resolve_component({kind!r}, {name!r}) failed: "
                                  f"{_describe_error(exc)}") from exc
            if answer is None:
                continue
            try:
                target, fixed = answer
                fixed = dict(fixed)
            except (TypeError, ValueError) as exc:
                raise PluginError(f"plugin {plugin!r}: resolve_component({kind!r}, {name!r}) must return "
                                  f"(target, fixed_params) or None, got {answer!r}") from exc
            return ComponentInfo(kind, name, target, plugin, self._version(plugin), "", fixed)
        return None

    def _version(self, plugin: str) -> str:
        info = self.plugins.get(plugin)
        return info.version if info else "unknown"

    def get(self, kind: str, name: str) -> ComponentInfo:
        """The one component of ``kind`` called ``name`` (or ``plugin:name``)."""
        if kind not in KINDS:
            raise ComponentNotFoundError(_unknown_kind(kind))
        entries = self._lookup(kind, name)
        if len(entries) > 1:
            plugins = " and ".join(repr(e.plugin) for e in entries)
            choices = ", ".join(f"'{e.plugin}:{name}'" for e in entries)
            raise DuplicateComponentError(
                f"{kind} {name!r} is registered by two plugins, {plugins}; use {choices} to choose one, "
                f"or block one with -p no:PLUGIN"
            )
        return entries[0]

    def kind_of(self, name: str) -> str:
        """The one kind ``name`` is registered as; an error listing the kinds when it is several, or
        the closest names across all kinds when it is none."""
        kinds = self.kinds_of(name)
        if not kinds:
            raise ComponentNotFoundError(self.not_found_message(None, name))
        if len(kinds) > 1:
            raise ComponentNotFoundError(f"{name!r} is registered as several kinds ({', '.join(kinds)}); "
                                         "add --kind KIND")
        return kinds[0]

    def not_found_message(self, kind: str | None, name: str) -> str:
        """Why ``name`` (of ``kind``, or of any kind when None) is unknown: the closest registered names,
        the kind it is registered as instead, the blocked plugin that has it, the plugins that failed."""
        short = name.partition(":")[2] or name
        kinds = [kind] if kind else list(KINDS)
        candidates = {(k, n) for k in kinds for n in self._components[k]}
        by_name: dict[str, list[str]] = {}
        for k, n in sorted(candidates):
            by_name.setdefault(n, []).append(k)
        close = difflib.get_close_matches(short, list(by_name), n=3, cutoff=0.5)
        what = kind or "component"
        msg = f"unknown {what} {name!r}"
        if close and kind:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        elif close:
            msg += "; did you mean " + ", ".join(f"{' or '.join(by_name[c])} {c!r}" for c in close) + "?"
        elif kind:
            msg += f"; registered {kind}s: {', '.join(sorted(by_name)) or '(none)'}"
        if kind:
            elsewhere = [k for k in KINDS if k != kind and short in self._components[k]]
            if elsewhere:
                msg += f" ({short!r} is registered as a {' and a '.join(elsewhere)})"
        owners = sorted({c.plugin for c in self.blocked_components() if c.name == short and c.kind in kinds})
        for owner in owners:
            msg += f"; {short!r} is registered by plugin {owner!r}, which is blocked (-p no:{owner})"
        failed = self.failed_plugins()
        if failed:
            msg += "; plugins that failed to load: " + "; ".join(f"{n} ({e})" for n, e in failed.items())
        return msg

    def blocked_components(self) -> builtins.list[ComponentInfo]:
        """What the blocked plugins would register (loaded on demand, into a scratch registry, for error
        messages only; a blocked plugin that fails to load contributes nothing)."""
        if self._blocked_cache is None:
            found: builtins.list[ComponentInfo] = []
            for name, source in sorted(self._blocked_sources.items()):
                try:
                    module = source.load() if hasattr(source, "load") else importlib.import_module(source)
                    scratch = Registry(entry_points=False, env=False)
                    scratch.register_plugin(module, name=name, source="blocked")
                except Exception:  # noqa: BLE001 - only a hint for a message
                    continue
                found += scratch.list()
            self._blocked_cache = found
        return self._blocked_cache

    def requirement_problem(self, distribution: str) -> str | None:
        """Why the plugins of an installed ``distribution`` (a recipe's ``[plugins] require``) are not
        usable here -- blocked, or failed to load -- or None when they are."""
        want = _norm_dist(distribution)
        names = []
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            dist = getattr(ep, "dist", None)
            if dist is not None and _norm_dist(dist.metadata["Name"] or "") == want:
                names.append((ep.name, ep.value))
        for name, value in names:
            if name in self.blocked or value in self.blocked:
                return f"its plugin {name!r} is blocked (-p no:{name} / MMKIT_PLUGINS)"
            info = self.plugins.get(name)
            if info is not None and info.errors:
                return f"its plugin {name!r} failed to load: {info.error}"
        return None

    def describe(self, kind: str, name: str) -> ComponentInfo:
        """Component info with its parameters (read from source, not imported)."""
        info = self.get(kind, name)
        params, doc_summary = read_params(info.target)
        params = [p for p in params if p.name not in info.fixed_params]
        return replace(info, params=tuple(params), summary=info.summary or doc_summary)

    def validate(self, kind: str, name: str, params: dict[str, Any], where: str | None = None) -> ComponentInfo:
        info = self.describe(kind, name)
        validate_params(params, list(info.params or ()), where or f"{kind} {name!r}")
        return info

    def create(self, kind: str, name: str, /, context: dict[str, Any] | None = None, **params: Any) -> Any:
        """Validate ``params`` against the constructor, then build the component.

        ``context`` holds engine-supplied arguments (``input_dims`` …) that are not recipe keys.
        """
        info = self.validate(kind, name, params)
        cls = info.load()
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no parameters"
        try:
            with _budget(f"with {shown}"):  # sizes checked before the memory is allocated
                return cls(**(context or {}), **info.fixed_params, **params)
        except MmkitError as exc:  # a constructor's own check: say whose
            raise type(exc)(f"{kind} {name!r} of plugin {info.plugin!r}: {exc}") from exc
        except BaseException as exc:  # noqa: BLE001 - name the component, its plugin and the values given
            error = ParameterError if isinstance(exc, (TypeError, ValueError, ArithmeticError)) else PluginError
            raise error(f"{kind} {name!r} of plugin {info.plugin!r} ({info.target}) failed to build with {shown}: "
                        f"{_describe_error(_contained(exc))}") from exc


def _budget(what: str) -> Any:
    """The memory budget of :mod:`mmkit._internal.membudget` once torch is loaded (a component that never
    imports torch, e.g. a dataset of rows, builds without one)."""
    if "torch" not in sys.modules:
        return contextlib.nullcontext()
    from mmkit._internal.membudget import allocation_budget

    return allocation_budget(what)


def _unknown_kind(kind: str) -> str:
    close = difflib.get_close_matches(kind, KINDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown kind {kind!r}{hint} (kinds: {', '.join(KINDS)})"


_DEFAULT: Registry | None = None
_DEFAULT_ARGS: tuple[str, ...] = ()


def get_registry(plugins: Iterable[str] | None = None) -> Registry:
    """The process-wide registry, built on first use (``plugins`` given -> rebuilt with them)."""
    global _DEFAULT, _DEFAULT_ARGS
    if plugins is not None and tuple(plugins) != _DEFAULT_ARGS:
        _DEFAULT, _DEFAULT_ARGS = None, tuple(plugins)
    if _DEFAULT is None:
        _DEFAULT = Registry(_DEFAULT_ARGS)
    return _DEFAULT


def reset_registry() -> None:
    """Forget the process-wide registry (e.g. after changing ``MMKIT_PLUGINS``)."""
    global _DEFAULT, _DEFAULT_ARGS
    _DEFAULT, _DEFAULT_ARGS = None, ()
