"""A memory budget for building components: sizes are checked before anything is allocated.

A recipe value such as ``model.fusion.dim = 1000000000`` or a 60,000-wide transformer passes
validation (it is an int) and makes the constructor allocate hundreds of gigabytes; with memory
overcommit each allocation succeeds and the process is killed by the kernel's OOM killer when the
initialisation touches the pages. :func:`allocation_budget` watches the tensor factories a
constructor calls (``torch.empty``, ``zeros``, ...; ``nn.Linear``, ``nn.Embedding``, convolutions and
timm models all allocate through them) and raises :class:`~mmkit.ParameterError` *before* the
allocation that would take the running total past the memory available.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from mmkit._internal.errors import ParameterError
from mmkit._internal.sysmem import available_bytes

_FACTORIES = {torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
              torch.empty_strided}


def _requested(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Bytes a factory call will allocate on the CPU or a GPU (0 on the meta device or when unknown)."""
    device = kwargs.get("device")
    if device is not None and torch.device(device).type == "meta":
        return 0
    shape: Any = args
    if func is torch.full or func is torch.empty_strided:
        shape = args[:1]
    elif func is torch.randint:
        shape = [a for a in args if isinstance(a, (tuple, list, torch.Size))][:1]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
        shape = tuple(shape[0])
    if "size" in kwargs:
        shape = tuple(kwargs["size"])
    try:
        numel = math.prod(int(s) for s in shape)
    except (TypeError, ValueError):
        return 0
    dtype = kwargs.get("dtype") or torch.get_default_dtype()
    return numel * (dtype.itemsize if isinstance(dtype, torch.dtype) else 4)


class _Budget(TorchFunctionMode):
    def __init__(self, limit: int, what: str) -> None:
        super().__init__()
        self.limit, self.what, self.used = limit, what, 0

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _FACTORIES:
            self.used += _requested(func, args, kwargs)
            if self.used > self.limit:
                raise ParameterError(f"{self.what}: building it needs more than {_gb(self.used)} of memory, and "
                                     f"{_gb(self.limit)} is available; lower its sizes (dim, layers, hidden, "
                                     f"vocabulary ...)")
        return func(*args, **kwargs)


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


@contextmanager
def allocation_budget(what: str, limit: int | None = None) -> Iterator[None]:
    """Refuse (ParameterError naming ``what``) tensor allocations totalling more than ``limit`` bytes
    (default: the memory available now) inside the block."""
    with _Budget(available_bytes() if limit is None else limit, what):
        yield


__all__ = ["allocation_budget", "available_bytes"]
