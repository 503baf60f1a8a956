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
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "mmkit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoders: ``nn.Module`` subclasses of :class:`mmkit.interfaces.Encoder` that turn one
    modality's raw values into an :class:`~mmkit.interfaces.Embedding`."""


@hookspec
def register_fusions(register: Register) -> None:
    """Register fusions: subclasses of :class:`mmkit.interfaces.Fusion` that combine
    ``{modality: Embedding}`` into one :class:`~mmkit.interfaces.Fused`."""


@hookspec
def register_heads(register: Register) -> None:
    """Register heads: subclasses of :class:`mmkit.interfaces.Head` that own a task's loss,
    predictions and metrics."""


@hookspec
def register_modalities(register: Register) -> None:
    """Register modalities: subclasses of :class:`mmkit.modality.Modality` that say how a raw cell
    (a path, a string, a list of numbers) is loaded, when it counts as absent, and which encoder is
    the default for it."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets: callables returning :class:`mmkit.datasets.DataSplits`, usable in a recipe
    as ``[data] dataset = "NAME"``."""


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
