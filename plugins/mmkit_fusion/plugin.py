"""Registers the built-in fusion components (lazily, by import string)."""

import mmkit
