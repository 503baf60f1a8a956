"""The third-party audio plugin (plugins/mmkit-audio, a separate distribution) working with mmkit:
loaded through MMKIT_PLUGINS / -p, listed, used by recipes with WAV manifests, and learning a task
that needs the audio. Its component tests live in plugins/mmkit-audio/tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mmkit
from mmkit._internal.cli import cli
from mmkit._internal.errors import DataError, RecipeError
from mmkit._internal.recipe import dump_toml, load_recipe, read_toml
from mmkit._internal.registry import Registry

PLUGIN_ROOT = Path(__file__).resolve().parents[1] / "plugins" / "mmkit-audio"
RECIPE = PLUGIN_ROOT / "recipes" / "shapes-audio.toml"
MODULE = "mmkit_audio.plugin"


@pytest.fixture
def audio_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin importable from the source tree (as if `pip install -e plugins/mmkit-audio`)."""
    monkeypatch.syspath_prepend(str(PLUGIN_ROOT))
    monkeypatch.delenv("MMKIT_PLUGINS", raising=False)
    monkeypatch.delenv("MMKIT_STRICT_PLUGINS", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    mmkit.reset_registry()
    yield
    mmkit.reset_registry()


def with_audio() -> Registry:
    """Built-ins plus the audio plugin (a no-op addition when it is also pip-installed)."""
    return Registry([MODULE], env=False)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS")}
    env.update(COLUMNS="200", PYTHONPATH=os.pathsep.join([str(PLUGIN_ROOT), env.get("PYTHONPATH", "")]), **extra)
    return env


def _rows(output: str, kind: str) -> dict[str, str]:
    return {line.split()[1]: line for line in output.splitlines() if line.split()[:1] == [kind]}


def test_mmkit_list_modality_shows_audio_when_the_plugin_is_loaded() -> None:
    cmd = [sys.executable, "-m", "mmkit"]
    loaded = subprocess.run(cmd + ["list", "modality"], env=_env(MMKIT_PLUGINS=MODULE), capture_output=True,
                            text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    rows = _rows(loaded.stdout, "modality")
    assert {"audio", "image", "text", "tabular"} <= set(rows)
    assert "Audio clips" in rows["audio"] and "0.1.0" in rows["audio"]
    # blocked (by entry-point name if it is pip-installed, by module name if loaded from MMKIT_PLUGINS)
    blocked = subprocess.run(cmd + ["-p", "no:audio", "-p", f"no:{MODULE}", "list", "modality"],
                             env=_env(MMKIT_PLUGINS=MODULE), capture_output=True, text=True, timeout=120)
    assert blocked.returncode == 0, blocked.stderr
    assert "audio" not in _rows(blocked.stdout, "modality") and "image" in _rows(blocked.stdout, "modality")


def test_the_plugin_via_dash_p_lists_and_shows_its_components(audio_path) -> None:
    result = CliRunner().invoke(cli, ["-p", MODULE, "list"], prog_name="mmkit")
    assert result.exit_code == 0, result.output
    names = {line.split()[1]: line.split()[0] for line in result.stdout.splitlines()[1:] if line.strip()}
    assert names["audio"] == "modality" and names["audio-cnn"] == "encoder" and names["shapes-audio"] == "dataset"
    mmkit.reset_registry()
    shown = CliRunner().invoke(cli, ["-p", MODULE, "show", "audio-cnn", "--json"], prog_name="mmkit")
    assert shown.exit_code == 0, shown.output
    params = {p["name"]: p for p in json.loads(shown.stdout)["parameters"]}
    assert params["n_mels"]["default"] == 40 and params["n_mels"]["type"] == "int" and params["n_mels"]["doc"]


def test_the_recipe_needs_the_plugin_and_validates_with_it(audio_path) -> None:
    recipe = load_recipe(RECIPE, registry=with_audio())
    assert {k: s.type for k, s in recipe.encoders.items()} == {"image": "timm", "audio": "audio-cnn",
                                                               "text": "text-transformer"}
    assert recipe.encoders["audio"].params["n_mels"] == 32 and recipe.fusion.type == "concat"
    blocked = Registry(["no:audio"], env=False)
    with pytest.raises(RecipeError, match=r"data.dataset: unknown dataset 'shapes-audio'"):
        load_recipe(RECIPE, registry=blocked)


WAV_RECIPE = """
[run]
name = "wav"
output_dir = "{out}"

[data]
train = "train.jsonl"
val = "train.jsonl"
columns = {{ audio = "clip", text = "claim", label = "label" }}

[model.encoders.audio]
dim = 16
channels = 16
layers = 1
n_mels = 32

[model.encoders.text]
type = "text-transformer"
dim = 16
layers = 1
heads = 2

[model.fusion]
type = "concat"
dim = 16

[model.head]
type = "classification"

[train]
max_steps = 2
batch_size = 4
"""


def _wav_manifest(folder: Path, missing: bool = False) -> None:
    from mmkit_audio.data import TONES, tone
    from mmkit_audio.modality import write_wav

    (folder / "clips").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, color in enumerate(sorted(TONES) * 2):
        write_wav(folder / "clips" / f"{i}.wav", tone(TONES[color], 0.1 + 0.05 * (i % 3), 16000, rng), 16000)
        rows.append({"clip": f"clips/{i}.wav", "claim": f"the sound is {color}", "label": i % 2})
    rows[3]["clip"] = ""  # an absent clip: the sample still trains on its text
    if missing:
        rows[5]["clip"] = "clips/nope.wav"
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_training_on_a_wav_manifest_uses_the_modalitys_default_encoder(audio_path, tmp_path) -> None:
    torch.set_num_threads(2)
    from mmkit._internal.trainer import train

    _wav_manifest(tmp_path)
    path = tmp_path / "wav.toml"
    path.write_text(WAV_RECIPE.format(out=(tmp_path / "runs").as_posix()))
    recipe = load_recipe(path, registry=with_audio())
    assert recipe.encoders["audio"].type == "audio-cnn"  # from AudioModality.default_encoder
    result = train(recipe, quiet=True, registry=with_audio())
    assert result.summary["steps"] == 2
    assert np.isfinite(result.summary["final"]["val"]["loss"])


def test_a_missing_wav_file_is_an_error_naming_row_and_column(audio_path, tmp_path) -> None:
    from mmkit._internal.trainer import train

    _wav_manifest(tmp_path, missing=True)
    path = tmp_path / "wav.toml"
    path.write_text(WAV_RECIPE.format(out=(tmp_path / "runs").as_posix()))
    with pytest.raises(DataError, match=r"train.jsonl.* row 6 column '?clip'?: audio file not found: .*nope.wav"):
        train(load_recipe(path, registry=with_audio()), quiet=True, registry=with_audio())


@pytest.mark.slow
def test_image_audio_text_beats_image_text_on_the_sound_claim(audio_path, tmp_path) -> None:
    """The shapes-audio claim ("the sound is red") needs the audio: the fused image+audio+text model
    learns it, the same recipe without the audio encoder stays at chance."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: intra-op threads only add overhead
    try:
        from mmkit._internal.trainer import train

        overrides = [f'run.output_dir="{(tmp_path / "runs").as_posix()}"', "data.options.n_train=600",
                     "data.options.n_val=200", "data.options.n_test=0", 'model.encoders.image.model="test_resnet"',
                     "model.encoders.image.freeze=true", "train.epochs=6"]
        full = train(load_recipe(RECIPE, overrides, registry=with_audio()), quiet=True, registry=with_audio())
        doc = read_toml(RECIPE)
        del doc["model"]["encoders"]["audio"]
        no_audio_path = tmp_path / "no-audio.toml"
        no_audio_path.write_text(dump_toml(doc))
        base = train(load_recipe(no_audio_path, overrides + ['run.name="no-audio"'], registry=with_audio()),
                     quiet=True, registry=with_audio())
    finally:
        torch.set_num_threads(threads)
    acc_full = full.summary["final"]["val"]["accuracy"]
    acc_base = base.summary["final"]["val"]["accuracy"]
    print(f"shapes-audio val accuracy: image+audio+text {acc_full:.3f}, image+text {acc_base:.3f}")
    assert acc_full >= 0.9, acc_full
    assert acc_base <= 0.65, acc_base
    assert acc_full - acc_base >= 0.3
