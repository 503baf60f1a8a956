"""Registers the built-in text components (lazily, by import string)."""

import mmkit


@mmkit.hookimpl
def register_encoders(register):
    register("sentence-transformer", "mmkit_text.sentence:SentenceTransformerEncoder",
             summary="A local sentence-transformers model (default: bundled all-MiniLM-L6-v2), offline")
    register("text-transformer", "mmkit_text.transformer:TextTransformerEncoder",
             summary="Small Transformer trained from scratch (word or WordPiece tokens)")


@mmkit.hookimpl
def register_modalities(register):
    register("text", "mmkit_text.modality:TextModality", summary="Text strings (bytes decoded as UTF-8)")
