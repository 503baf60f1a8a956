"""Random number generators: seed them all, and capture/restore them as JSON (for bitwise resume).

Torch's generator states are byte tensors; they are stored base64-encoded so the whole training
state of a checkpoint is one JSON document.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from typing import Any

import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def _encode(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _decode(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


class RngSnapshot:
    """The state of every generator at one moment, cheap to take (serialised only when saved)."""

    def __init__(self) -> None:
        self.torch = torch.get_rng_state()
        cuda_on = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.cuda = torch.cuda.get_rng_state_all() if cuda_on else None
        self.python = random.getstate()
        self.numpy: Any = None
        try:
            import numpy as np

            self.numpy = np.random.get_state()
        except ImportError:  # pragma: no cover
            pass

    def to_dict(self) -> dict[str, Any]:
        v, internal, gauss = self.python
        out: dict[str, Any] = {"torch": _encode(self.torch), "python": [v, list(internal), gauss]}
        if self.cuda is not None:
            out["cuda"] = [_encode(s) for s in self.cuda]
        if self.numpy is not None:
            name, keys, pos, has_gauss, cached = self.numpy
            out["numpy"] = [name, keys.tolist(), pos, has_gauss, cached]
        return out


def restore_rng(state: Mapping[str, Any], cuda: bool = True) -> None:
    """Put back what :meth:`RngSnapshot.to_dict` captured (CUDA states only when ``cuda``)."""
    if "torch" in state:
        torch.set_rng_state(_decode(state["torch"]))
    if cuda and "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode(s) for s in state["cuda"]])
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        import numpy as np

        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
