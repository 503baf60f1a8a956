"""The component registry: plugins (pluggy, entry-point group ``mmkit``) register components lazily.

A registration is a name, a kind, an import string and a one-line summary, with the plugin that
made it and that plugin's version. Nothing heavy is imported until a component is built.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import os
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import pluggy

from mmkit import hookspecs
from mmkit.errors import (
    ComponentNotFoundError,
    MmkitError,
    DuplicateComponentError,
    ParameterError,
    PluginError,
)
from mmkit.params import ParamInfo, read_params, validate_params

KINDS = ("encoder", "fusion", "head", "modality", "dataset")
_HOOK_OF_KIND = {
    "encoder": "register_encoders",
    "fusion": "register_fusions",
    "head": "register_heads",
    "modality": "register_modalities",
    "dataset": "register_datasets",
}


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
        except Exception as exc:  # noqa: BLE001 - reported with the plugin's name
            raise PluginError(
                f"{self.kind} {self.name!r} of plugin {self.plugin!r} cannot be imported from "
                f"{self.target!r}: {type(exc).__name__}: {exc}"
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
    """A loaded (or failed) plugin."""

    name: str
    version: str
    module: str
    source: str  # "entry point", "MMKIT_PLUGINS", "-p", "python"
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "module": self.module,
                "source": self.source, "hooks": self.hooks, "error": self.error}


def _strict() -> bool:
    return os.environ.get("MMKIT_STRICT_PLUGINS", "").lower() in ("1", "true", "yes")


def _split_env(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class Registry:
    """Plugins and the components they registered.

    Args:
        plugins: extra plugin modules to load (as ``-p MODULE``); ``no:NAME`` blocks a plugin.
        entry_points: load plugins from the ``mmkit`` entry-point group.
        env: read ``MMKIT_PLUGINS`` (comma-separated modules; ``no:NAME`` entries block).
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
        for name in self.blocked:
            self.pm.set_blocked(name)
        if entry_points:
            self._load_entry_points()
        for module in modules:
            self.add_module(module, source="-p/MMKIT_PLUGINS")

    # ------------------------------------------------------------------ loading
    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
            if ep.name in self.blocked or ep.value in self.blocked:
                continue
            dist = getattr(ep, "dist", None)
            version = getattr(dist, "version", None) or "unknown"
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break mmkit
                self._record_failure(ep.name, ep.value, version, "entry point", exc)
                continue
            self.register_plugin(module, name=ep.name, version=version, source="entry point")

    def add_module(self, module_name: str, *, source: str = "python") -> None:
        """Import ``module_name`` and register it as a plugin named after the module."""
        if module_name in self.blocked or module_name in self.plugins:
            return
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001
            self._record_failure(module_name, module_name, "unknown", source, exc)
            return
        if self.pm.is_registered(module):  # e.g. `-p mmkit_shapes.plugin`, already an entry point
            return
        self.register_plugin(module, name=module_name, source=source)

    def _record_failure(self, name: str, module: str, version: str, source: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if _strict():
            raise PluginError(f"plugin {name!r} ({module}) failed to load: {message}") from exc
        info = PluginInfo(name, version, module, source, error=message)
        info.traceback = traceback.format_exc()  # type: ignore[attr-defined]
        self.plugins[name] = info

    def register_plugin(self, plugin: Any, *, name: str | None = None, version: str | None = None,
                        source: str = "python") -> None:
        """Register a plugin object (usually a module) and collect its registrations."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        if name in self.blocked or self.pm.is_blocked(name):
            return
        version = version or str(getattr(plugin, "__version__", "unknown"))
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - e.g. an unknown hook name
            self._record_failure(name, getattr(plugin, "__name__", name), version, source, exc)
            return
        hooks = [h.name for h in self.pm.get_hookcallers(plugin) or []]
        info = PluginInfo(name, version, getattr(plugin, "__name__", name), source, hooks=sorted(hooks))
        self.plugins[name] = info
        for kind, hook_name in _HOOK_OF_KIND.items():
            impls = [i for i in getattr(self.pm.hook, hook_name).get_hookimpls() if i.plugin is plugin]
            for impl in impls:
                try:
                    impl.function(register=self._register_callback(kind, name, version))
                except Exception as exc:  # noqa: BLE001
                    message = f"{hook_name} raised {type(exc).__name__}: {exc}"
                    if _strict():
                        raise PluginError(f"plugin {name!r}: {message}") from exc
                    info.error = message

    def _register_callback(self, kind: str, plugin: str, version: str):
        def register(name: str, target: str, *, summary: str = "") -> None:
            if not isinstance(name, str) or not name or ":" in name:
                raise PluginError(f"plugin {plugin!r} registered an invalid {kind} name {name!r}")
            if not isinstance(target, str) or ":" not in target:
                raise PluginError(
                    f"plugin {plugin!r}: {kind} {name!r} needs an import string 'module:Object', got {target!r}"
                )
            entries = self._components[kind].setdefault(name, [])
            if entries:
                others = ", ".join(repr(e.plugin) for e in entries)
                self.problems.append(
                    f"{kind} {name!r} is registered by plugins {others} and {plugin!r}; "
                    f"address one as '{entries[0].plugin}:{name}' or '{plugin}:{name}', or block one with -p no:PLUGIN"
                )
            entries.append(ComponentInfo(kind, name, target, plugin, version, summary))
        return register

    # ------------------------------------------------------------------ queries
    def failed_plugins(self) -> dict[str, str]:
        return {n: p.error for n, p in self.plugins.items() if p.error}

    def list(self, kind: str | None = None, pattern: str = "*") -> list[ComponentInfo]:
        if kind is not None and kind not in KINDS:
            raise ComponentNotFoundError(_unknown_kind(kind))
        out = []
        for k in (kind,) if kind else KINDS:
            for name in sorted(self._components[k]):
                for info in self._components[k][name]:
                    if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(info.qualified_name, pattern):
                        out.append(info)
        return out

    def kinds_of(self, name: str) -> list[str]:
        return [k for k in KINDS if self._lookup(k, name, raise_missing=False)]

    def _lookup(self, kind: str, name: str, raise_missing: bool = True) -> list[ComponentInfo]:
        entries = self._components[kind].get(name, [])
        if not entries and ":" in name:
            plugin, _, short = name.partition(":")
            entries = [e for e in self._components[kind].get(short, []) if e.plugin == plugin]
            if not entries:
                resolved = self._resolve(kind, name)
                if resolved is not None:
                    return [resolved]
        if not entries and raise_missing:
            raise ComponentNotFoundError(self._not_found_message(kind, name))
        return entries

    def _resolve(self, kind: str, name: str) -> ComponentInfo | None:
        """Ask the ``resolve_component`` hooks (in pluggy's call order) for a prefixed ``name``;
        the first answer wins and is credited to the plugin that gave it."""
        hook = self.pm.hook.resolve_component
        for impl in reversed(hook.get_hookimpls()):
            if impl.hookwrapper or impl.wrapper:
                continue
            kwargs = {k: v for k, v in (("kind", kind), ("name", name)) if k in impl.argnames}
            try:
                answer = impl.function(**kwargs)
                if answer is None:
                    continue
                target, fixed = answer
            except Exception as exc:  # noqa: BLE001 - name the plugin that broke
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: resolve_component({kind!r}, {name!r}) failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            return ComponentInfo(kind, name, target, impl.plugin_name, self._version(impl.plugin_name),
                                 "", dict(fixed))
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

    def _not_found_message(self, kind: str, name: str) -> str:
        names = list(self._components[kind])
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}"
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        else:
            msg += f"; registered {kind}s: {', '.join(sorted(names)) or '(none)'}"
        elsewhere = [k for k in KINDS if k != kind and name in self._components[k]]
        if elsewhere:
            msg += f" ({name!r} is registered as a {' and a '.join(elsewhere)})"
        failed = self.failed_plugins()
        if failed:
            msg += "; plugins that failed to load: " + "; ".join(f"{n} ({e})" for n, e in failed.items())
        return msg

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
        try:
            return cls(**(context or {}), **info.fixed_params, **params)
        except MmkitError as exc:  # a constructor's own check: say whose
            raise type(exc)(f"{kind} {name!r} of plugin {info.plugin!r}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - name the component, its plugin and the values given
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "no parameters"
            error = ParameterError if isinstance(exc, (TypeError, ValueError, ArithmeticError)) else PluginError
            raise error(f"{kind} {name!r} of plugin {info.plugin!r} ({info.target}) failed to build with {shown}: "
                        f"{type(exc).__name__}: {exc}") from exc


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
