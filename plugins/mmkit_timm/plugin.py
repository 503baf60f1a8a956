"""Registers the built-in timm components (lazily, by import string)."""

import mmkit
