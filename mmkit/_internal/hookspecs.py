"""The plugin hooks of mmkit (pluggy project name and entry-point group: ``mmkit``).

A plugin is a module with ``@mmkit.hookimpl`` functions. Registration hooks receive a ``register``
callback bound to the plugin that is being called, so the registry records which plugin made each
registration::

    import mmkit

    @mmkit.hookimpl
    def register_fusions(register):
        register("gated", "my_pkg.gated:GatedFusion", summary="Gated sum of modality embeddings")

``register(name, target, *, summary="")`` takes an import string ``"module:Class"``: registration is
lazy, the module is imported only when a recipe builds the component (listing and ``mmkit show``
never import it). Keep the plugin module itself free of heavy imports (torch, timm, transformers).

Every hook is called through pluggy's plugin manager, once per implementing plugin, so pluggy's
semantics hold: ``tryfirst``/``trylast`` order the plugins, ``resolve_component`` is ``firstresult``,
and a hook wrapper (``@mmkit.hookimpl(wrapper=True)``) of a plugin that only wraps a hook wraps every
other plugin's call of it (``register.plugin``, ``register.kind`` and ``register.registered`` say whose
call it is and what it registered). A function named like a hook that is not one (``register_encodrs``)
makes the plugin fail to load; mark a hook meant for another mmkit version
``@mmkit.hookimpl(optionalhook=True)``.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "mmkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., Any]

#: The one table of component kinds: each kind and the hook that registers components of that kind.
#: The registry, the CLI (``mmkit list KIND``), the scaffold and the docs all read it.
KIND_HOOKS: dict[str, str] = {
    "encoder": "register_encoders",
    "fusion": "register_fusions",
    "head": "register_heads",
    "modality": "register_modalities",
    "dataset": "register_datasets",
    "callback": "register_callbacks",
}
KINDS: tuple[str, ...] = tuple(KIND_HOOKS)


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoders: ``nn.Module`` subclasses of :class:`mmkit.Encoder` that turn one
    modality's raw values into an :class:`~mmkit.Embedding`."""


@hookspec
def register_fusions(register: Register) -> None:
    """Register fusions: subclasses of :class:`mmkit.Fusion` that combine
    ``{modality: Embedding}`` into one :class:`~mmkit.Fused`."""


@hookspec
def register_heads(register: Register) -> None:
    """Register heads: subclasses of :class:`mmkit.Head` that own a task's loss,
    predictions and metrics."""


@hookspec
def register_modalities(register: Register) -> None:
    """Register modalities: subclasses of :class:`mmkit.Modality` that say how a raw cell
    (a path, a string, a list of numbers) is loaded, when it counts as absent, and which encoder is
    the default for it."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: callables returning :class:`mmkit.DataSplits`, usable in a recipe
    as ``[data] dataset = "NAME"``."""


@hookspec
def register_callbacks(register: Register) -> None:
    """Register training callbacks: subclasses of :class:`mmkit.Callback` (hooks such as
    ``on_step_end(trainer)`` and ``on_eval_end(trainer, metrics, improved)``), usable in a recipe as
    ``[train] callbacks = ["NAME"]`` or ``[{ type = "NAME", param = value }]``."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add click commands to the ``mmkit`` command group: ``cli.add_command(my_command)``.
    Import heavy libraries inside the command's body, not at module level."""


@hookspec(firstresult=True)
def resolve_component(kind: str, name: str) -> Any:
    """Serve a family of prefixed names without listing each one (``timm:convnext_tiny``).

    Return ``(target, fixed_params)`` -- an import string and the keyword arguments the name implies,
    e.g. ``("mmkit_timm.encoder:TimmEncoder", {"model": "convnext_tiny"})`` -- or ``None`` when the
    name is not yours. The first plugin that answers wins."""
