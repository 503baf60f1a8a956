"""The hooks of the audio plugin. Everything is registered by import string: ``mmkit list`` loads this
module and nothing else of the package (no torch, no numpy)."""

import mmkit

from mmkit_audio import __version__  # noqa: F401 - `mmkit list` shows it (with -p / MMKIT_PLUGINS)


@mmkit.hookimpl
def register_modalities(register):
    register("audio", "mmkit_audio.modality:AudioModality",
             summary="Audio clips: PCM WAV files (standard-library wave) or in-memory arrays, as mono float32")


@mmkit.hookimpl
def register_encoders(register):
    register("audio-cnn", "mmkit_audio.encoder:AudioCNNEncoder",
             summary="Log-mel spectrogram + small 1-D CNN over time: frame tokens and a masked-pooled vector")


@mmkit.hookimpl
def register_datasets(register):
    register("shapes-audio", "mmkit_audio.data:shapes_audio",
             summary="The shapes images plus a tone clip of a hidden colour; claim 'the sound is red' needs the audio")
