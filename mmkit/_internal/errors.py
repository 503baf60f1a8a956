"""Exceptions raised by mmkit. Every one names what is wrong (key, file, row, plugin)."""

from __future__ import annotations


class MmkitError(Exception):
    """Base class: a user-facing error whose message is enough to act on."""


class PluginError(MmkitError):
    """A plugin failed to load or registered something invalid."""


class ComponentNotFoundError(MmkitError, LookupError):
    """No component of that kind and name is registered."""


class DuplicateComponentError(MmkitError):
    """Two plugins registered the same name within one kind."""


class ParameterError(MmkitError, ValueError):
    """A component was given an unknown or ill-typed parameter."""


class RecipeError(MmkitError, ValueError):
    """A recipe is invalid; the message names the file and the key path."""


class DataError(MmkitError, ValueError):
    """Input data is invalid; the message names the file, row and column."""
