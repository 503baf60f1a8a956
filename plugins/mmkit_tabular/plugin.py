"""Registers the built-in tabular components (lazily, by import string)."""

import mmkit
