"""Loading local pretrained weights into a timm model (never a download, never unpickling)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmkit import ParameterError


def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file, or of a torch state dict loaded with ``weights_only=True``.

    A torch checkpoint that wraps the weights (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped.
    """
    import torch

    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise ParameterError(f"pretrained weights file not found: {p} (a local file is needed: mmkit never downloads)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except Exception as exc:  # noqa: BLE001
            raise ParameterError(f"cannot read safetensors file {p}: {exc}") from exc
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - includes refusal to unpickle arbitrary objects
        raise ParameterError(
            f"cannot read {p} as a torch state dict (loaded with weights_only=True; use a .safetensors "
            f"file or a plain state dict): {type(exc).__name__}: {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ParameterError(f"{p} does not hold a state dict of tensors")
    return dict(obj)


def load_into(model: Any, state: dict[str, Any], path: str, classifier: Any = None) -> None:
    """Load ``state`` into a headless timm ``model``; classifier weights in ``state`` are dropped.

    Raises ParameterError listing missing/unexpected keys and shape mismatches.
    """
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    heads = [classifier] if isinstance(classifier, str) else list(classifier or [])
    expected = model.state_dict()
    state = {k: v for k, v in state.items()
             if k in expected or not any(k.startswith(h + ".") for h in heads)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... ({len(keys)} in all)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (file vs model): {few(shapes)}")
        raise ParameterError(f"pretrained weights {path} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
