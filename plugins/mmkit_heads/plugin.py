"""Registers the built-in heads components (lazily, by import string)."""

import mmkit
