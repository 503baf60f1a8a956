"""mmkit-audio: the ``audio`` modality, the ``audio-cnn`` encoder and the ``shapes-audio`` dataset.

Kept light: importing the package (or its plugin module) imports neither torch nor numpy.
"""

__version__ = "0.1.0"
