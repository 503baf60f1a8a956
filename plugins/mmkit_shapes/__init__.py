"""Built-in dataset plugin: ``shapes``, a synthetic multimodal dataset generated from a seed."""

__version__ = "0.1.0"
