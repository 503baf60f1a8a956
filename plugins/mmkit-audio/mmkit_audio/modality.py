"""The ``audio`` modality: a cell becomes an :class:`AudioClip` (mono float32 samples + sample rate).

A cell may be

* a path to a PCM WAV file (8/16/24/32-bit, any channel count), relative to the manifest's folder,
  read with the standard library's :mod:`wave`; channels are averaged to mono;
* WAV bytes, or a ``{"path": ...}`` / ``{"bytes": ...}`` dict;
* ``{"array": samples, "sampling_rate": rate}`` (the Hugging Face ``datasets`` layout);
* an in-memory array (list, NumPy array, tensor) of samples at :data:`DEFAULT_SAMPLE_RATE`
  (a 2-D array is averaged over its channel axis, the shorter one);
* an :class:`AudioClip`.

An empty cell (None, "", NaN) is an absent sample; a path to a file that does not exist, an
unreadable file, an empty clip or non-finite samples raise :class:`mmkit.DataError`.
No torch here: loading runs in DataLoader workers and in listing-free code paths.
"""

from __future__ import annotations

import io
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmkit import DataError, Modality

#: Sample rate assumed for a bare array in a cell.
DEFAULT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class AudioClip:
    """A loaded clip: ``samples`` is a 1-D float32 array in about [-1, 1]; ``sample_rate`` in Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, AudioClip) and self.sample_rate == other.sample_rate
                and np.array_equal(self.samples, other.samples))

    __hash__ = None  # type: ignore[assignment]


def _pcm_to_float(frames: bytes, width: int, channels: int) -> np.ndarray:
    if width == 1:
        data = (np.frombuffer(frames, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = (np.frombuffer(frames, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    else:
        raise DataError(f"unsupported WAV sample width: {width} bytes")
    return data.reshape(-1, channels).mean(axis=1).astype(np.float32)


def read_wav(source: Any, what: str | None = None) -> AudioClip:
    """Read a PCM WAV file (a path or a binary file object) as a mono :class:`AudioClip`."""
    what = what or str(source)
    try:
        with wave.open(source if not isinstance(source, os.PathLike) else os.fspath(source), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except FileNotFoundError as exc:
        raise DataError(f"audio file not found: {what}") from exc
    except (wave.Error, EOFError, OSError) as exc:
        raise DataError(f"cannot read WAV {what}: {exc} (PCM WAV only; convert other formats first)") from exc
    return _checked(AudioClip(_pcm_to_float(frames, width, channels), int(rate)), what)


def write_wav(path: str | Path, samples: Any, sample_rate: int = DEFAULT_SAMPLE_RATE) -> Path:
    """Write mono float samples in [-1, 1] as a 16-bit PCM WAV file (clipped)."""
    data = np.clip(np.asarray(samples, dtype=np.float64).reshape(-1), -1.0, 1.0)
    pcm = np.round(data * 32767.0).astype("<i2")
    path = Path(path)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    return path


def _checked(clip: AudioClip, what: str) -> AudioClip:
    if clip.samples.size == 0:
        raise DataError(f"audio {what} has no samples")
    if not np.isfinite(clip.samples).all():
        raise DataError(f"audio {what} has NaN or infinite samples")
    if clip.sample_rate <= 0:
        raise DataError(f"audio {what} has an invalid sample rate {clip.sample_rate}")
    return clip


def to_mono_array(value: Any, what: str = "(array in the cell)") -> np.ndarray:
    """An in-memory clip (list, NumPy array, tensor; 1-D or [channels, n] / [n, channels]) as float32 mono."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        data = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"audio {what}: not an array of numbers ({exc})") from exc
    if data.ndim == 2:
        data = data.mean(axis=int(np.argmin(data.shape)))
    if data.ndim != 1:
        raise DataError(f"audio {what}: expected 1-D samples or [channels, samples], got shape {data.shape}")
    return data.astype(np.float32, copy=False)


class AudioModality(Modality):
    """Audio clips: PCM WAV files (paths relative to the manifest), WAV bytes, or in-memory arrays
    (16 kHz unless given as ``{"array": ..., "sampling_rate": ...}``), loaded as mono float32."""

    name = "audio"
    default_encoder = "audio-cnn"

    def load(self, value: Any, base_dir: Path | None = None) -> AudioClip:
        if isinstance(value, AudioClip):
            return _checked(value, "(clip in the cell)")
        if isinstance(value, dict):
            if value.get("array") is not None:
                rate = int(value.get("sampling_rate") or value.get("sample_rate") or DEFAULT_SAMPLE_RATE)
                return _checked(AudioClip(to_mono_array(value["array"]), rate), "(array in the cell)")
            if value.get("bytes") is not None:
                value = value["bytes"]
            elif value.get("path"):
                value = value["path"]
            else:
                raise DataError(f"an audio cell given as a dict needs 'array', 'bytes' or 'path', got {sorted(value)}")
        if isinstance(value, (bytes, bytearray, memoryview)):
            return read_wav(io.BytesIO(bytes(value)), "(WAV bytes in the cell)")
        if isinstance(value, (str, os.PathLike)):
            path = self.resolve_path(value, base_dir)
            return read_wav(path, str(path))
        if isinstance(value, (list, tuple, np.ndarray)) or hasattr(value, "detach"):
            return _checked(AudioClip(to_mono_array(value), DEFAULT_SAMPLE_RATE), "(array in the cell)")
        raise DataError("an audio cell must be a WAV path, WAV bytes or an array of samples, "
                        f"got {type(value).__name__}")
