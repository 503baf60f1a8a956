"""Registers the ``shapes`` dataset (lazy: the generator module is imported only when used)."""

import mmkit


@mmkit.hookimpl
def register_datasets(register):
    register("shapes", "mmkit_shapes.generate:shapes",
             summary="Synthetic images of 1-3 coloured shapes with captions, claims and labels")
