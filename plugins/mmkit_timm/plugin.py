"""Registers the built-in timm components (lazily, by import string)."""

import mmkit

_TARGET = "mmkit_timm.encoder:TimmEncoder"


@mmkit.hookimpl
def register_encoders(register):
    register("timm", _TARGET, summary="Any timm image backbone (CNN or ViT): pooled vector + spatial/patch tokens")


@mmkit.hookimpl
def register_modalities(register):
    register("image", "mmkit_timm.modality:ImageModality",
             summary="Image files (paths relative to the manifest) or PIL images, loaded as RGB")


@mmkit.hookimpl
def resolve_component(kind, name):
    """Serve ``timm:<arch>`` encoder names, e.g. ``timm:convnext_atto``."""
    if kind == "encoder" and name.startswith("timm:") and len(name) > len("timm:"):
        return _TARGET, {"model": name[len("timm:"):]}
    return None
