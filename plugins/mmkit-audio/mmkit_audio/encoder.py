"""The ``audio-cnn`` encoder: log-mel frames -> a small 1-D CNN over time -> frame tokens + pooled.

Clips of different lengths are padded in ``collate`` and masked everywhere: the padded frames are
zeroed before every convolution (so a real frame next to padding sees exactly the zeros it would see
at the end of the clip alone) and excluded from pooling. A clip's output is therefore the same
whatever it is batched with.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from mmkit import Embedding, Encoder, ParameterError
from mmkit_audio.features import log_mel, resample
from mmkit_audio.modality import AudioClip, to_mono_array


class _ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation)
        self.act = nn.GELU()
        self.residual = cin == cout

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:  # x [P, C, T], keep [P, 1, T]
        y = self.act(self.conv(x))
        return (x + y if self.residual else y) * keep


class AudioCNNEncoder(Encoder):
    """Log-mel spectrogram (computed in the DataLoader workers) encoded by a 1-D CNN over time.

    Each frame's mel vector is layer-normed (loudness-invariant spectral shape), then ``layers``
    dilated convolutions with residual connections run over time; each output frame is a token and
    the pooled vector combines the masked mean and masked max of the tokens. Clips at another sample
    rate are resampled (linear interpolation) to ``sample_rate``.

    Args:
        dim: width of the frame tokens and of the pooled vector.
        channels: width of the convolutions.
        layers: number of convolution layers (dilations 1, 2, 4, ...).
        kernel_size: convolution width in frames (odd).
        sample_rate: clips are resampled to this rate (Hz) before the spectrogram.
        n_fft: STFT window length in samples.
        hop_length: samples between frames (160 at 16 kHz = 10 ms).
        n_mels: number of mel bands.
        f_min: lowest filter frequency in Hz.
        f_max: highest filter frequency in Hz; None = sample_rate / 2.
        max_seconds: clips are cut to this many seconds.
        gain_jitter_db: training only: random gain of up to this many dB (0 = no augmentation, and
            then a frozen encoder's outputs can be cached).
        dropout: dropout before the token projection (training only).
    """

    modality = "audio"
    has_tokens = True

    def __init__(self, dim: int = 128, channels: int = 64, layers: int = 3, kernel_size: int = 3,
                 sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160, n_mels: int = 40,
                 f_min: float = 0.0, f_max: float | None = None, max_seconds: float = 10.0,
                 gain_jitter_db: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        for key, value in (("dim", dim), ("channels", channels), ("layers", layers), ("sample_rate", sample_rate),
                           ("n_fft", n_fft), ("hop_length", hop_length), ("n_mels", n_mels)):
            if value < 1:
                raise ParameterError(f"audio-cnn: {key} must be positive, got {value}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ParameterError(f"audio-cnn: kernel_size must be a positive odd number, got {kernel_size}")
        f_top = sample_rate / 2 if f_max is None else f_max
        if not 0 <= f_min < f_top <= sample_rate / 2:
            raise ParameterError(f"audio-cnn: need 0 <= f_min < f_max <= sample_rate / 2 ({sample_rate / 2}), "
                                 f"got f_min={f_min}, f_max={f_max}")
        if max_seconds <= 0 or gain_jitter_db < 0:
            raise ParameterError("audio-cnn: max_seconds must be positive and gain_jitter_db >= 0")
        self.dim = dim
        self.sample_rate = sample_rate
        self.n_fft, self.hop_length, self.n_mels = n_fft, hop_length, n_mels
        self.f_min, self.f_max = float(f_min), f_max
        self.max_samples = int(max_seconds * sample_rate)
        self.gain_jitter_db = gain_jitter_db
        self.deterministic_train = gain_jitter_db == 0
        self.norm_in = nn.LayerNorm(n_mels)
        self.blocks = nn.ModuleList(
            _ConvBlock(n_mels if i == 0 else channels, channels, kernel_size, 2 ** i) for i in range(layers))
        self.drop = nn.Dropout(dropout)
        self.to_tokens = nn.Linear(channels, dim)
        self.to_pooled = nn.Linear(2 * dim, dim)

    # ------------------------------------------------------------------ in DataLoader workers
    def preprocess(self, raw: Any, train: bool = False) -> Tensor:
        """An :class:`AudioClip` (or an array at ``sample_rate``) -> ``[T, n_mels]`` log-mel frames."""
        if not isinstance(raw, AudioClip):  # a bare array: samples at this encoder's sample_rate
            raw = AudioClip(to_mono_array(raw), self.sample_rate)
        x = torch.from_numpy(raw.samples.copy()).float()
        x = resample(x, raw.sample_rate, self.sample_rate)[: self.max_samples]
        if train and self.gain_jitter_db > 0:
            db = (torch.rand(()) * 2 - 1) * self.gain_jitter_db
            x = x * torch.pow(10.0, db / 20.0)
        return log_mel(x, self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels,
                       f_min=self.f_min, f_max=self.f_max)

    def collate(self, items: list[Tensor]) -> dict[str, Tensor]:
        lengths = torch.tensor([it.shape[0] for it in items])
        frames = nn.utils.rnn.pad_sequence(items, batch_first=True)  # [P, T, n_mels], zeros after the end
        mask = torch.arange(frames.shape[1])[None, :] < lengths[:, None]
        return {"frames": frames, "mask": mask}

    # ------------------------------------------------------------------ on the model's device
    def forward(self, inputs: Mapping[str, Tensor]) -> Embedding:
        frames, mask = inputs["frames"], inputs["mask"]
        keep = mask[:, None, :].to(frames.dtype)  # [P, 1, T]
        x = self.norm_in(frames).transpose(1, 2) * keep  # [P, n_mels, T]
        for block in self.blocks:
            x = block(x, keep)
        tokens = self.to_tokens(self.drop(x.transpose(1, 2))) * keep.transpose(1, 2)  # [P, T, dim]
        weights = keep.transpose(1, 2)
        mean = tokens.sum(1) / weights.sum(1).clamp(min=1.0)
        peak = tokens.masked_fill(~mask[..., None], float("-inf")).amax(1)
        pooled = self.to_pooled(torch.cat([mean, peak], dim=-1))
        present = torch.ones(frames.shape[0], dtype=torch.bool, device=frames.device)
        return Embedding(pooled, present, tokens, mask)
