"""Built-in plugin: local Hugging Face ``transformers`` model folders as encoders, loaded offline."""

__version__ = "0.1.0"
