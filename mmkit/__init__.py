"""mmkit: a plugin-based toolkit for multimodal deep learning in PyTorch.

**The public API** is what this package exports (``mmkit.__all__``) plus :mod:`mmkit.testing` (the
contract kit) and its pytest fixture module :mod:`mmkit.testing_plugin`. Every other module is
internal and may change in any release; plugins, the built-in ones included, use only the public
names (a test enforces it). See docs/plugins.md for the stability policy.

Training from Python: ``mmkit.fit(recipe, train=dataframe, val=..., train__lr=1e-3)`` returns a
:class:`TrainedModel` (``predict``, ``predict_proba``, ``evaluate``, ``embed``, ``save``), the type
``mmkit.load`` returns too (docs/python.md).

Importing ``mmkit`` is cheap: it never imports torch. The interfaces (``Encoder``, ``Fusion``,
``Head``, ``Embedding``, ...) are loaded on first access (PEP 562), which imports torch::

    >>> import mmkit
    >>> [c.name for c in mmkit.list_components("fusion")]  # doctest: +SKIP
    ['attention', 'autoencoder', 'concat', 'cross-attention', 'transformer']
    >>> class MyFusion(mmkit.Fusion): ...  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mmkit._internal.callbacks import Callback
from mmkit._internal.errors import (
    ComponentNotFoundError,
    DataError,
    DuplicateComponentError,
    MmkitError,
    ParameterError,
    PluginError,
    RecipeError,
)
from mmkit._internal.hookspecs import KINDS, hookimpl
from mmkit._internal.registry import ComponentInfo, Registry, get_registry, reset_registry

__version__ = "0.1.0"

#: Public names loaded on first access: name -> the (internal) module that defines it.
_LAZY: dict[str, str] = {
    # the component interfaces and the tensor bundles between them (import torch)
    "Batch": "mmkit._internal.interfaces",
    "Component": "mmkit._internal.interfaces",
    "Embedding": "mmkit._internal.interfaces",
    "Encoder": "mmkit._internal.interfaces",
    "Fused": "mmkit._internal.interfaces",
    "Fusion": "mmkit._internal.interfaces",
    "Head": "mmkit._internal.interfaces",
    "Metrics": "mmkit._internal.interfaces",
    "Output": "mmkit._internal.interfaces",
    "Retrieval": "mmkit._internal.interfaces",
    "empty_embedding": "mmkit._internal.interfaces",
    "scatter_embedding": "mmkit._internal.interfaces",
    # modalities, datasets and tokenizers (standard library only)
    "Modality": "mmkit._internal.modality",
    "DataSplits": "mmkit._internal.datasets",
    "WordTokenizer": "mmkit._internal.tokenize",
    "WordPieceTokenizer": "mmkit._internal.tokenize",
    "bundled_minilm_path": "mmkit._internal.tokenize",
    "make_tokenizer": "mmkit._internal.tokenize",
    "tokenizer_from_state": "mmkit._internal.tokenize",
    # the notebook API: train on in-memory data, get a model back (imports torch)
    "fit": "mmkit._internal.fitting",
    "TrainedModel": "mmkit._internal.fitting",
    # what an image/text encoder pair declares for zero-shot classification (imports torch)
    "ZeroShot": "mmkit._internal.zeroshot",
    # loading local Hugging Face folders offline (standard library only until a load)
    "check_hf_folder": "mmkit._internal.offline",
    "hub_offline": "mmkit._internal.offline",
    "local_folder": "mmkit._internal.offline",
}

#: Public submodules reachable as attributes without an explicit import (``mmkit.testing.check_encoder``).
_SUBMODULES = ("testing",)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these load lazily
    from mmkit import testing as testing
    from mmkit._internal.datasets import DataSplits
    from mmkit._internal.interfaces import (
        Batch,
        Component,
        Embedding,
        Encoder,
        Fused,
        Fusion,
        Head,
        Metrics,
        Output,
        Retrieval,
        empty_embedding,
        scatter_embedding,
    )
    from mmkit._internal.fitting import TrainedModel, fit
    from mmkit._internal.modality import Modality
    from mmkit._internal.zeroshot import ZeroShot
    from mmkit._internal.offline import check_hf_folder, hub_offline, local_folder
    from mmkit._internal.tokenize import (
        WordPieceTokenizer,
        WordTokenizer,
        bundled_minilm_path,
        make_tokenizer,
        tokenizer_from_state,
    )


def __getattr__(name: str) -> Any:
    """PEP 562: import a public name's module on first access, then cache the name here."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'mmkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


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


def load(name_or_path: str, **kw: Any) -> TrainedModel:
    """Load a trained model for inference (``NAME``, ``NAME@3``, a model folder or a run directory):
    a :class:`TrainedModel` (what :func:`fit` returns) with ``predict``, ``predict_proba``, ``embed``,
    ``search``, ``evaluate``, ``save``. Keyword arguments (``device``, ``registry``, ``checkpoint``)
    go to the loader."""
    from mmkit._internal.fitting import load as _load

    return _load(name_or_path, **kw)


__all__ = [
    # registry and Python API (torch-free)
    "KINDS",
    "Callback",
    "ComponentInfo",
    "Registry",
    "__version__",
    "create",
    "describe",
    "get_registry",
    "hookimpl",
    "list_components",
    "load",
    "reset_registry",
    # the notebook API (lazy: imports torch)
    "fit",
    "TrainedModel",
    "ZeroShot",
    # errors
    "ComponentNotFoundError",
    "DataError",
    "DuplicateComponentError",
    "MmkitError",
    "ParameterError",
    "PluginError",
    "RecipeError",
    # interfaces, modalities, datasets, tokenizers (lazy: the first access imports them)
    "Batch",
    "Component",
    "Embedding",
    "Encoder",
    "Fused",
    "Fusion",
    "Head",
    "Metrics",
    "Output",
    "Retrieval",
    "empty_embedding",
    "scatter_embedding",
    "Modality",
    "DataSplits",
    "WordTokenizer",
    "WordPieceTokenizer",
    "bundled_minilm_path",
    "make_tokenizer",
    "tokenizer_from_state",
    "check_hf_folder",
    "hub_offline",
    "local_folder",
]
