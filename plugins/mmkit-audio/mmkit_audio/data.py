"""The ``shapes-audio`` dataset: the ``shapes`` rows plus a sound, and a claim that needs the sound.

Every row is a ``shapes`` row (image of 1-3 coloured shapes, caption, ...) with:

* ``audio``: a short clip (float32 samples at ``sample_rate``; 0.25-0.5 s by default) of one tone
  whose pitch encodes a hidden **sound colour** -- red 440 Hz, green 660 Hz, blue 880 Hz,
  yellow 1100 Hz -- with a weaker second harmonic, random loudness and phase, short fades, and
  white noise. The sound colour is drawn uniformly and **independently of the image**.
* ``sound_color``: that colour.
* ``claim``: ``"the sound is <colour>"``; ``label``: 1 when the claimed colour is the sound colour
  (probability 1/2), else 0.
* ``shape_claim`` / ``shape_label``: the original ``shapes`` claim about the image.

So the default task (``text = claim``, ``label = label``) is at chance for image + text -- nothing in
the image or the claim says what the sound is -- and solvable with audio + text: the model must
recognise the tone's pitch and compare it with the colour named in the claim. Rows are
deterministic given ``seed`` and the split sizes.

The ``shapes`` rows come from the registered ``shapes`` dataset (``mmkit.create``), so this plugin
uses only mmkit's public API and no other plugin's modules; blocking ``shapes`` makes
``shapes-audio`` an error that says so.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

import mmkit

#: Tone frequency (Hz) of each colour (the colours of the shapes dataset).
TONES = {"red": 440.0, "green": 660.0, "blue": 880.0, "yellow": 1100.0}


def tone(freq: float, seconds: float, sample_rate: int, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    """A float32 clip: ``freq`` plus a weaker 2nd harmonic, random amplitude/phase, 10 ms fades, noise."""
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    amp = rng.uniform(0.3, 0.8)
    clip = amp * np.sin(2 * math.pi * freq * t + rng.uniform(0, 2 * math.pi))
    clip += 0.3 * amp * np.sin(2 * math.pi * 2 * freq * t + rng.uniform(0, 2 * math.pi))
    fade = min(n // 2, int(0.01 * sample_rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        clip[:fade] *= ramp
        clip[n - fade:] *= ramp[::-1]
    clip += noise * rng.standard_normal(n)
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def add_sound(row: dict[str, Any], rng: random.Random, sample_rate: int = 16000, min_seconds: float = 0.25,
              max_seconds: float = 0.5, noise: float = 0.05) -> dict[str, Any]:
    """A ``shapes`` row plus a sound drawn with ``rng``, its sound colour and the sound claim (the
    original claim and label are kept as ``shape_claim``/``shape_label``)."""
    row = dict(row)
    colors = sorted(TONES)
    sound = rng.choice(colors)
    claimed = sound if rng.random() < 0.5 else rng.choice([c for c in colors if c != sound])
    np_rng = np.random.default_rng(rng.getrandbits(63))
    seconds = rng.uniform(min_seconds, max_seconds)
    row["shape_claim"], row["shape_label"] = row.pop("claim"), row.pop("label")
    row.update(audio=tone(TONES[sound], seconds, sample_rate, np_rng, noise), sound_color=sound,
               claim=f"the sound is {claimed}", label=int(claimed == sound))
    return row


MAX_SAMPLE_RATE = 192_000
MAX_SECONDS = 60.0
MAX_AUDIO_BYTES = 4 << 30


def _check_sizes(rows: int, sample_rate: int, min_seconds: float, max_seconds: float, noise: float) -> None:
    """Every size checked before anything is generated (a huge sample rate or clip length would
    otherwise fill the memory until the OOM killer ends the process)."""
    if not isinstance(sample_rate, int) or not 1000 <= sample_rate <= MAX_SAMPLE_RATE:
        raise mmkit.ParameterError(f"shapes-audio: sample_rate must be 1000 to {MAX_SAMPLE_RATE} Hz, "
                                   f"got {sample_rate!r}")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (min_seconds, max_seconds, noise)):
        raise mmkit.ParameterError(f"shapes-audio: min_seconds, max_seconds and noise must be finite numbers, got "
                                   f"{min_seconds!r}, {max_seconds!r}, {noise!r}")
    if not 0 < min_seconds <= max_seconds <= MAX_SECONDS:
        raise mmkit.ParameterError(f"shapes-audio: need 0 < min_seconds <= max_seconds <= {MAX_SECONDS:g}, got "
                                   f"{min_seconds}, {max_seconds}")
    if noise < 0:
        raise mmkit.ParameterError(f"shapes-audio: noise must be at least 0, got {noise}")
    total = rows * math.ceil(sample_rate * max_seconds) * 4
    if total > MAX_AUDIO_BYTES:
        raise mmkit.ParameterError(f"shapes-audio: {rows} clips of up to {max_seconds:g} s at {sample_rate} Hz take "
                                   f"up to {total / 2**30:.1f} GiB in memory (at most {MAX_AUDIO_BYTES >> 30} GiB); "
                                   "use fewer rows or shorter clips")


def shapes_audio(n_train: int = 2000, n_val: int = 500, n_test: int = 500, seed: int = 0, image_size: int = 64,
                 sample_rate: int = 16000, min_seconds: float = 0.25, max_seconds: float = 0.5,
                 noise: float = 0.05) -> mmkit.DataSplits:
    """Generate the ``shapes-audio`` splits (see the module docstring for the task).

    Args:
        n_train: number of training rows.
        n_val: number of validation rows.
        n_test: number of test rows.
        seed: random seed; the same seed gives the same rows.
        image_size: side of the square images in pixels.
        sample_rate: sample rate of the clips in Hz (a bare array cell is read at 16 kHz, so keep
            16000 unless the encoder's sample_rate matches).
        min_seconds: shortest clip.
        max_seconds: longest clip.
        noise: standard deviation of the white noise added to each clip.
    """
    _check_sizes(n_train + n_val + n_test if all(isinstance(n, int) for n in (n_train, n_val, n_test)) else 0,
                 sample_rate, min_seconds, max_seconds, noise)
    try:
        shapes = mmkit.create("dataset", "shapes", n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
                              image_size=image_size)
    except mmkit.ComponentNotFoundError as exc:
        raise mmkit.ComponentNotFoundError(f"shapes-audio builds on the 'shapes' dataset: {exc}") from exc
    splits = {}
    for split, rows in shapes.splits.items():
        rng = random.Random(f"shapes-audio-{seed}-{split}")
        splits[split] = [add_sound(row, rng, sample_rate, min_seconds, max_seconds, noise) for row in rows]
    if sample_rate != 16000:  # bare arrays are read at 16 kHz: give the rate with each cell
        for rows in splits.values():
            for row in rows:
                row["audio"] = {"array": row["audio"], "sampling_rate": sample_rate}
    columns = {"image": "image", "audio": "audio", "text": "claim", "label": "label"}
    return mmkit.DataSplits(splits, columns=columns, name="shapes-audio")
