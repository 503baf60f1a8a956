"""Built-in timm plugin."""

__version__ = "0.1.0"
