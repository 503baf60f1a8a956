"""Built-in text plugin."""

__version__ = "0.1.0"
