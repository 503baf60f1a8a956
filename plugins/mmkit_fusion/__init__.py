"""Built-in fusion plugin."""

__version__ = "0.1.0"
