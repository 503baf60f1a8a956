"""Log-mel spectrograms with torch alone: HTK mel scale, triangular filters, ``torch.stft``.

``log_mel`` runs in DataLoader workers (CPU). The filterbank is cached per configuration in a
function (not stored on the encoder), so moving the model to a GPU does not move it away from the
workers.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def hz_to_mel(hz: float | Tensor) -> float | Tensor:
    """HTK mel scale: ``2595 * log10(1 + hz / 700)``."""
    if isinstance(hz, Tensor):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_to_hz(mel: float | Tensor) -> float | Tensor:
    """Inverse of :func:`hz_to_mel`."""
    if isinstance(mel, Tensor):
        return 700.0 * (torch.pow(10.0, mel / 2595.0) - 1.0)
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_centers(n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """The ``n_mels + 2`` edge/centre frequencies (Hz) of the filters, equally spaced in mel."""
    f_max = sample_rate / 2 if f_max is None else f_max
    mels = torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64)
    return mel_to_hz(mels)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """``[n_fft // 2 + 1, n_mels]`` triangular filters: filter ``m`` rises from centre ``m - 1`` to
    centre ``m`` (value 1 there) and falls to 0 at centre ``m + 1`` (unnormalised, like HTK)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
                         f"sample_rate={sample_rate}")
    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    hz = mel_centers(n_mels, sample_rate, f_min, f_max)
    rising = (freqs[:, None] - hz[None, :-2]) / (hz[1:-1] - hz[:-2])[None, :]
    falling = (hz[None, 2:] - freqs[:, None]) / (hz[2:] - hz[1:-1])[None, :]
    return torch.clamp(torch.minimum(rising, falling), min=0.0).to(torch.float32)


@lru_cache(maxsize=16)
def _cached_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float | None) -> Tensor:
    return mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max)


@lru_cache(maxsize=16)
def _cached_window(n_fft: int) -> Tensor:
    return torch.hann_window(n_fft, dtype=torch.float32)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny per-clip ops on one intra-op thread: threading them only adds overhead (a lot when
    the CPU is oversubscribed). DataLoader workers already use one thread; this covers num_workers=0."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def log_mel(samples: Tensor, sample_rate: int, *, n_fft: int = 512, hop_length: int = 160, n_mels: int = 40,
            f_min: float = 0.0, f_max: float | None = None, eps: float = 1e-6) -> Tensor:
    """``[T, n_mels]`` natural-log mel power of a 1-D float clip; ``T = 1 + len(samples) // hop_length``.

    Frames are centred (the clip is zero-padded by ``n_fft // 2`` on both sides), Hann-windowed.
    """
    if samples.dim() != 1:
        raise ValueError(f"log_mel expects a 1-D clip, got shape {tuple(samples.shape)}")
    x = samples.to(torch.float32)
    with one_thread():
        spec = torch.stft(x, n_fft, hop_length=hop_length, win_length=n_fft, window=_cached_window(n_fft),
                          center=True, pad_mode="constant", return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2)  # [F, T]
        mel = _cached_filterbank(n_fft, n_mels, sample_rate, float(f_min), f_max).T @ power  # [n_mels, T]
        return torch.log(mel + eps).T.contiguous()


def resample(samples: Tensor, from_rate: int, to_rate: int) -> Tensor:
    """Linear-interpolation resampling of a 1-D clip (enough for features; no anti-aliasing filter)."""
    if from_rate == to_rate:
        return samples
    n = max(1, round(samples.shape[0] * to_rate / from_rate))
    return F.interpolate(samples[None, None].float(), size=n, mode="linear", align_corners=False)[0, 0]
