"""Built-in heads plugin."""

__version__ = "0.1.0"
