"""Refusing remote references before timm sees them: mmkit never contacts a model hub.

timm fetches from the Hugging Face hub for ``hf-hub:org/name`` model names (even with
``pretrained=False``: the config comes from the hub) and for ``pretrained=True``; a ``timm/...``
name is a hub repository of the timm organisation. These checks run first in the encoder's
constructor, whatever ``HF_HUB_OFFLINE`` says, and name the recipe key.
"""

from __future__ import annotations

import re
from typing import Any

from mmkit import ParameterError

# a URL-like scheme ("hf-hub:", "https:", "local-dir:") -- but not a Windows drive letter ("C:")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]+:")


def local_model_name(model: Any) -> str:
    """``model`` if it is a plain timm architecture name (``resnet18``, ``resnet18.a1_in1k``), else an error.

    Refused: hub prefixes (``hf-hub:``, ``hf_hub:``), any other scheme (``https://``, ``local-dir:``), and
    names with a path separator (``timm/resnet18.a1_in1k`` is a hub repository).
    """
    if not isinstance(model, str) or not model.strip():
        raise ParameterError(f"model = {model!r}: expected a timm architecture name such as 'resnet18'")
    name = model.strip()
    if _SCHEME.match(name) or "/" in name or "\\" in name:
        raise ParameterError(
            f"model = {model!r} refers to a model hub or another remote/external source; mmkit never downloads. "
            "Use a timm architecture name (e.g. 'resnet18', or 'resnet18.a1_in1k' for that tag's preprocessing "
            "config) and give weights as pretrained = 'path/to/weights.safetensors'")
    return name


def local_weights(pretrained: Any) -> str | None:
    """None for ``False``, the path for a local file reference, an error for ``True`` or a remote one."""
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        raise ParameterError(
            "pretrained = true would download weights; mmkit never downloads. Give the path of a local "
            ".safetensors file (or a torch state dict, read with weights_only=True) instead")
    if not isinstance(pretrained, str) or not pretrained.strip():
        raise ParameterError(f"pretrained = {pretrained!r}: expected false or the path of a local weights file")
    text = pretrained.strip()
    if _SCHEME.match(text) and not re.match(r"^[A-Za-z]:[\\/]", text):
        raise ParameterError(
            f"pretrained = {pretrained!r} is a remote reference (a model hub or URL); mmkit never downloads. "
            "Download the weights yourself and give the local .safetensors path")
    return text
