"""Registers the built-in text components (lazily, by import string)."""

import mmkit
