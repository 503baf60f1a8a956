"""mmkit: a plugin-based toolkit for multimodal deep learning in PyTorch.

Importing ``mmkit`` is cheap: it never imports torch. The interfaces live in
:mod:`mmkit.interfaces` (which does).

    >>> import mmkit
    >>> [c.name for c in mmkit.list_components("fusion")]  # doctest: +SKIP
    ['attention', 'autoencoder', 'concat', 'cross-attention', 'transformer']
"""

from __future__ import annotations

from typing import Any

from mmkit.errors import (
    ComponentNotFoundError,
    DataError,
    DuplicateComponentError,
    MmkitError,
    ParameterError,
    PluginError,
    RecipeError,
)
from mmkit.hookspecs import hookimpl
from mmkit.registry import ComponentInfo, get_registry, reset_registry

__version__ = "0.1.0"


def list_components(kind: str | None = None, pattern: str = "*") -> list[ComponentInfo]:
    """Registered components, optionally of one ``kind`` and matching a glob ``pattern``."""
    return get_registry().list(kind, pattern)


def describe(kind: str, name: str) -> ComponentInfo:
    """A component's info with its parameters (name, type, default, doc). Imports nothing heavy."""
    return get_registry().describe(kind, name)


def create(kind: str, name: str, /, **params: Any) -> Any:
    """Build a registered component after validating ``params`` against its constructor.

    Fusions and heads also take engine-supplied arguments: pass them as ``context={...}``
    (``input_dims`` for a fusion; ``input_dim`` and ``modality_dims`` for a head).
    """
    context = params.pop("context", None)
    return get_registry().create(kind, name, context=context, **params)


def load(name_or_path: str, **kw: Any) -> Any:
    """Load a trained model for inference (``NAME``, ``NAME@3``, a model folder or a run directory):
    a :class:`mmkit.predictor.Predictor` with ``predict``, ``embed``, ``search``, ``evaluate``, ``save``.
    Keyword arguments (``device``, ``registry``, ``checkpoint``) go to :func:`mmkit.predictor.load`."""
    from mmkit.predictor import load as _load

    return _load(name_or_path, **kw)


__all__ = [
    "ComponentInfo",
    "ComponentNotFoundError",
    "DataError",
    "DuplicateComponentError",
    "MmkitError",
    "ParameterError",
    "PluginError",
    "RecipeError",
    "create",
    "describe",
    "get_registry",
    "hookimpl",
    "list_components",
    "load",
    "reset_registry",
]
