"""The audio plugin's components: mel features against hand computations, WAV reading, the modality,
encoder and plugin contracts (mmkit.testing), and the shapes-audio data."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import mmkit
from mmkit import DataError, ParameterError
from mmkit.testing import check_encoder, check_modality, check_plugin_module, check_public_imports

import mmkit_audio.plugin
from mmkit_audio.data import TONES, shapes_audio
from mmkit_audio.encoder import AudioCNNEncoder
from mmkit_audio.features import hz_to_mel, log_mel, mel_centers, mel_filterbank, mel_to_hz, resample
from mmkit_audio.modality import AudioClip, AudioModality, read_wav, write_wav

torch.set_num_threads(1)  # tiny models: one thread is fastest on a shared machine
SR = 16000


def sine(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * math.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


# ------------------------------------------------------------------------------------ the plugin
def test_plugin_module_is_light_and_registers_documented_components():
    registry = check_plugin_module("mmkit_audio.plugin")
    assert {(c.kind, c.name) for c in registry.list()} == {
        ("modality", "audio"), ("encoder", "audio-cnn"), ("dataset", "shapes-audio")}


def test_the_package_uses_only_mmkits_public_api():
    check_public_imports(Path(mmkit_audio.plugin.__file__).parent, "mmkit_audio")


def test_components_build_through_the_registry(mmkit_registry):
    mmkit_registry.register_plugin(mmkit_audio.plugin)
    encoder = mmkit_registry.create("encoder", "audio-cnn", dim=16, n_mels=32)
    assert isinstance(encoder, AudioCNNEncoder) and encoder.dim == 16 and encoder.modality == "audio"
    assert mmkit_registry.get("modality", "audio").load().default_encoder == "audio-cnn"
    with pytest.raises(ParameterError, match="kernel_size must be a positive odd number"):
        mmkit_registry.create("encoder", "audio-cnn", kernel_size=4)
    with pytest.raises(ParameterError, match="f_max"):
        mmkit_registry.create("encoder", "audio-cnn", f_max=9000.0)


# ------------------------------------------------------------------------------------ features
def test_mel_scale_hand_values():
    assert hz_to_mel(700.0) == pytest.approx(2595 * math.log10(2))
    assert hz_to_mel(0.0) == 0.0
    assert mel_to_hz(hz_to_mel(1234.5)) == pytest.approx(1234.5)
    centers = mel_centers(10, SR)
    assert centers[0] == pytest.approx(0.0) and centers[-1] == pytest.approx(SR / 2)
    steps = torch.diff(hz_to_mel(centers))
    assert torch.allclose(steps, steps[0].expand_as(steps))  # equally spaced in mel


def test_mel_filters_are_triangles_that_sum_to_one_between_the_first_and_last_centre():
    n_fft, n_mels = 512, 24
    fb = mel_filterbank(n_fft, n_mels, SR)
    assert fb.shape == (n_fft // 2 + 1, n_mels) and fb.dtype == torch.float32
    assert float(fb.min()) >= 0 and float(fb.max()) <= 1.0
    freqs = torch.linspace(0, SR / 2, n_fft // 2 + 1, dtype=torch.float64)
    centers = mel_centers(n_mels, SR)
    inside = (freqs >= centers[1]) & (freqs <= centers[-2])
    assert torch.allclose(fb[inside].sum(1).double(), torch.ones(int(inside.sum()), dtype=torch.float64), atol=1e-5)
    m = 10  # filter m peaks at its centre, centers[m + 1] (centers[0] and centers[-1] are the outer edges)
    peak_bin = int(fb[:, m].argmax())
    assert abs(float(freqs[peak_bin]) - float(centers[m + 1])) <= SR / n_fft


def test_log_mel_equals_a_hand_computed_frame():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(4000).astype(np.float32) * 0.1
    n_fft, hop, n_mels = 256, 100, 20
    out = log_mel(torch.from_numpy(x), SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    assert out.shape == (1 + len(x) // hop, n_mels)
    # frame t covers x[t*hop - n_fft/2 : t*hop + n_fft/2] (zero-padded), periodic Hann window
    t = 7
    padded = np.concatenate([np.zeros(n_fft // 2), x, np.zeros(n_fft // 2)])
    frame = padded[t * hop: t * hop + n_fft] * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft))
    power = np.abs(np.fft.rfft(frame)) ** 2
    expected = np.log(mel_filterbank(n_fft, n_mels, SR).double().numpy().T @ power + 1e-6)
    assert np.allclose(out[t].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0])
def test_a_tone_is_loudest_in_the_mel_band_around_its_frequency(freq):
    out = log_mel(torch.from_numpy(sine(freq, 0.3)), SR, n_fft=512, hop_length=160, n_mels=40)
    band = int(out[5:-5].mean(0).argmax())
    centers = mel_centers(40, SR)[1:-1]
    assert int(torch.argmin((centers - freq).abs())) in (band - 1, band, band + 1)


def test_resample_keeps_duration_and_pitch():
    x = torch.from_numpy(sine(500.0, 0.5, sr=8000))
    y = resample(x, 8000, SR)
    assert y.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(y.numpy()))
    assert abs(np.argmax(spectrum) * SR / len(y) - 500.0) <= 2.0


# ------------------------------------------------------------------------------------ WAV + modality
def _write_pcm(path: Path, frames: np.ndarray, width: int, rate: int = SR) -> None:
    """frames: int array [n, channels] in the width's integer range."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(frames.shape[1])
        wav.setsampwidth(width)
        wav.setframerate(rate)
        if width == 1:
            data = (frames + 128).astype(np.uint8).tobytes()
        elif width == 3:
            ints = frames.astype("<i4").reshape(-1)
            data = b"".join(struct.pack("<i", int(v))[:3] for v in ints)
        else:
            data = frames.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
        wav.writeframes(data)


def test_wav_round_trip_and_sample_widths(tmp_path):
    x = sine(440.0, 0.05)
    clip = read_wav(write_wav(tmp_path / "a.wav", x, SR))
    assert clip.sample_rate == SR and clip.samples.dtype == np.float32
    assert np.abs(clip.samples - x).max() <= 1 / 32767
    left, right = np.array([0, 64, -64, 127]), np.array([0, -64, 64, -128])
    for width, scale in ((1, 1), (3, 1 << 16), (4, 1 << 24)):
        _write_pcm(tmp_path / f"w{width}.wav", np.stack([left, right], 1) * scale, width, 8000)
        got = read_wav(tmp_path / f"w{width}.wav")
        assert got.sample_rate == 8000
        assert np.allclose(got.samples, (left + right) / 2 / 128, atol=1e-6), width  # stereo -> mono


def test_unreadable_and_float_wavs_are_data_errors(tmp_path):
    header = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 3, 1, SR, SR * 4, 4, 32)
    (tmp_path / "float.wav").write_bytes(header + b"data" + struct.pack("<I", 0))
    with pytest.raises(DataError, match="cannot read WAV .*float.wav.*PCM WAV only"):
        AudioModality().load("float.wav", tmp_path)
    (tmp_path / "text.wav").write_text("not a wav")
    with pytest.raises(DataError, match="cannot read WAV"):
        AudioModality().load("text.wav", tmp_path)
    write_wav(tmp_path / "empty.wav", [], SR)
    with pytest.raises(DataError, match="has no samples"):
        AudioModality().load("empty.wav", tmp_path)
    with pytest.raises(DataError, match=r"audio file not found: .*missing.wav \(resolved against"):
        AudioModality().load("missing.wav", tmp_path)
    with pytest.raises(DataError, match="NaN"):
        AudioModality().load(np.array([0.0, float("nan")]))


def test_modality_contract_on_every_kind_of_cell(tmp_path):
    write_wav(tmp_path / "clip.wav", sine(660.0, 0.1), SR)
    wav_bytes = (tmp_path / "clip.wav").read_bytes()
    cells = ["clip.wav", {"path": "clip.wav"}, wav_bytes, np.zeros(160, dtype=np.float64), [0.1] * 10,
             {"array": np.ones((2, 80)), "sampling_rate": 8000}, torch.zeros(50)]
    clips = check_modality(AudioModality, cells, tmp_path)
    assert all(isinstance(c, AudioClip) and c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in clips)
    assert [c.sample_rate for c in clips] == [SR, SR, SR, SR, SR, 8000, SR]
    assert clips[0] == clips[1] == clips[2] and len(clips[5].samples) == 80


# ------------------------------------------------------------------------------------ encoder
def test_encoder_contract_with_clips_of_different_lengths_and_rates():
    clips = [AudioClip(sine(440.0, 0.05), SR), AudioClip(sine(880.0, 0.4), SR), AudioClip(sine(660.0, 0.2, 8000), 8000)]
    encoder = AudioCNNEncoder(dim=16, channels=16, layers=3, n_mels=32, hop_length=160)
    emb = check_encoder(encoder, clips)
    lengths = emb.token_mask.sum(1).tolist()
    assert lengths == [1 + 800 // 160, 1 + 6400 // 160, 1 + 3200 // 160]  # the 8 kHz clip is resampled to 16 kHz
    assert emb.tokens.shape == (3, max(lengths), 16)


def test_gain_jitter_is_training_only_and_seeded():
    clip = AudioClip(sine(440.0, 0.1), SR)
    plain = AudioCNNEncoder(n_mels=32)
    jitter = AudioCNNEncoder(n_mels=32, gain_jitter_db=6.0)
    assert plain.deterministic_train and not jitter.deterministic_train
    assert torch.equal(jitter.preprocess(clip, train=False), plain.preprocess(clip, train=False))
    torch.manual_seed(1)
    a = jitter.preprocess(clip, train=True)
    torch.manual_seed(1)
    assert torch.equal(a, jitter.preprocess(clip, train=True))
    shift = (a - plain.preprocess(clip)).mean()  # a gain g adds 2*ln(g) to every log-power
    assert 0 < abs(float(shift)) <= 2 * math.log(10 ** (6 / 20)) + 1e-3


# ------------------------------------------------------------------------------------ dataset
def test_shapes_audio_rows_tones_and_labels():
    data = shapes_audio(n_train=120, n_val=5, n_test=0, image_size=32)
    assert data.columns == {"image": "image", "audio": "audio", "text": "claim", "label": "label"}
    rows = data.splits["train"]
    again = shapes_audio(n_train=120, n_val=5, n_test=0, image_size=32).splits["train"]
    assert all(np.array_equal(a["audio"], b["audio"]) and a["claim"] == b["claim"] for a, b in zip(rows, again))
    for row in rows[:20]:
        audio = row["audio"]
        assert audio.dtype == np.float32 and 0.25 * SR <= len(audio) <= 0.5 * SR + 1
        spectrum = np.abs(np.fft.rfft(audio))
        assert abs(np.argmax(spectrum) * SR / len(audio) - TONES[row["sound_color"]]) <= 4.0
    for row in rows:
        claimed = row["claim"].removeprefix("the sound is ")
        assert row["label"] == int(claimed == row["sound_color"])
        assert row["shape_claim"].startswith("there is a ") and row["shape_label"] in (0, 1)
    assert 0.35 <= np.mean([r["label"] for r in rows]) <= 0.65
    assert len({r["sound_color"] for r in rows}) == 4
    assert "sampling_rate" in shapes_audio(n_train=2, n_val=0, n_test=0, sample_rate=8000).splits["train"][0]["audio"]


def test_shapes_audio_builds_on_the_registered_shapes_rows():
    shapes = mmkit.create("dataset", "shapes", n_train=4, n_val=0, n_test=0, seed=3, image_size=32)
    audio = shapes_audio(n_train=4, n_val=0, n_test=0, seed=3, image_size=32)
    for plain, sound in zip(shapes.splits["train"], audio.splits["train"]):
        assert sound["caption"] == plain["caption"] and sound["shape_claim"] == plain["claim"]
        assert np.array_equal(np.asarray(sound["image"]), np.asarray(plain["image"]))
    blocked = mmkit.get_registry(["no:shapes"])
    try:
        with pytest.raises(mmkit.ComponentNotFoundError, match=r"shapes-audio builds on the 'shapes' dataset: .*"
                                                               r"registered by plugin 'shapes', which is blocked"):
            shapes_audio(n_train=1, n_val=0, n_test=0)
    finally:
        assert blocked is mmkit.get_registry()
        mmkit.reset_registry()
