"""Registers the built-in tabular components (lazily, by import string)."""

import mmkit


@mmkit.hookimpl
def register_encoders(register):
    register("tabular-mlp", "mmkit_tabular.encoder:TabularMLPEncoder",
             summary="Numeric + categorical columns: one token per column, MLP-pooled")


@mmkit.hookimpl
def register_modalities(register):
    register("tabular", "mmkit_tabular.modality:TabularModality",
             summary="A row of named values ({column: value}) or a list of numbers")


@mmkit.hookimpl
def register_datasets(register):
    register("toy-tabular", "mmkit_tabular.toy:toy_tabular",
             summary="Synthetic regression: numeric, categorical and text columns -> target")
