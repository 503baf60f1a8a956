"""Handed-in Hugging Face references never reach the network, and loading a model changes no
environment variable: hub ids are refused before any Hugging Face library sees them, folders that
would run their own code or unpickle weights are refused, offline mode is scoped to the load."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

import mmkit
from mmkit._internal.errors import ParameterError
from mmkit._internal.offline import hub_offline, local_folder

HUB_REFERENCES = ["bert-base-uncased", "org/model", "hf-hub:org/model", "https://huggingface.co/bert-base-uncased"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from mmkit_hf import tiny

    root = tmp_path_factory.mktemp("hf-offline")
    return {"bert": tiny.save_tiny_text(root / "bert"), "vit": tiny.save_tiny_vit(root / "vit"),
            "clip": tiny.save_tiny_clip(root / "clip")}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every attempt to open a network connection is recorded (and fails)."""
    attempts: list[tuple] = []

    def connect(self, address, *args, **kwargs):
        attempts.append(("connect", address))
        raise OSError("network blocked by the test")

    def create_connection(address, *args, **kwargs):
        attempts.append(("create_connection", address))
        raise OSError("network blocked by the test")

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise socket.gaierror("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


@pytest.fixture
def online_env(monkeypatch: pytest.MonkeyPatch):
    """The process as a notebook user has it: no offline variables, huggingface_hub online."""
    import huggingface_hub.constants as hub_constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    return hub_constants


@pytest.mark.parametrize("ref", HUB_REFERENCES)
@pytest.mark.parametrize("name,extra", [("hf-text", {}), ("hf-vision", {}), ("hf-clip", {"tower": "text"}),
                                        ("sentence-transformer", {})])
def test_a_hub_reference_is_refused_without_a_network_attempt(name, extra, ref, no_network, online_env):
    with pytest.raises(ParameterError, match=rf"{name}: path '{ref}' is .*Models are never downloaded"):
        mmkit.create("encoder", name, path=ref, **extra)
    assert no_network == []


def test_the_error_says_what_the_reference_looks_like(tmp_path):
    with pytest.raises(ParameterError, match="looks like a model-hub id"):
        local_folder("bert-base-uncased", "x")
    with pytest.raises(ParameterError, match="is a model-hub reference"):
        local_folder("hf-hub:timm/resnet18", "x")
    with pytest.raises(ParameterError, match="is a URL"):
        local_folder("https://example.com/model", "x")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ParameterError, match="is a file, not a model folder"):
        local_folder(tmp_path / "weights.bin", "x")
    assert local_folder(tmp_path, "x") == tmp_path.resolve()


def test_loading_models_leaves_the_environment_and_hub_mode_unchanged(folders, no_network, online_env):
    import sentence_transformers  # noqa: F401 - its import (scikit-learn's) sets KMP_* variables itself
    import transformers  # noqa: F401

    before = dict(os.environ)
    encoders = [mmkit.create("encoder", "hf-text", path=str(folders["bert"])),
                mmkit.create("encoder", "hf-vision", path=str(folders["vit"])),
                mmkit.create("encoder", "hf-clip", path=str(folders["clip"]), tower="text"),
                mmkit.create("encoder", "sentence-transformer", max_length=8)]
    assert all(e.dim > 0 for e in encoders)
    assert dict(os.environ) == before
    assert online_env.HF_HUB_OFFLINE is False and not online_env.is_offline_mode()
    assert no_network == []


def test_hub_offline_is_scoped_and_blocks_hub_requests(no_network, online_env):
    from huggingface_hub import hf_hub_download

    with hub_offline():
        assert online_env.is_offline_mode()
        with hub_offline():  # re-entrant: the inner exit does not switch offline mode off
            pass
        assert online_env.is_offline_mode()
        with pytest.raises(Exception) as info:
            hf_hub_download("org/model", "config.json")
        assert "offline" in str(info.value).lower() or "cannot find" in str(info.value).lower()
    assert not online_env.is_offline_mode()
    with pytest.raises(RuntimeError), hub_offline():
        raise RuntimeError("restored even on error")
    assert not online_env.is_offline_mode()
    assert no_network == []


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / folder.name
    shutil.copytree(folder, out)
    return out


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_a_folder_that_ships_code_is_refused(folders, tmp_path, file):
    folder = _copy(folders["bert"], tmp_path)
    data = json.loads((folder / file).read_text())
    data["auto_map"] = {"AutoModel": "modeling_evil.EvilModel", "AutoTokenizer": ["tok_evil.Tok", None]}
    (folder / file).write_text(json.dumps(data))
    (folder / "modeling_evil.py").write_text("raise SystemExit('folder code ran')\n")
    with pytest.raises(ParameterError, match=rf"{folder / file} has an auto_map: .* never runs"):
        mmkit.create("encoder", "hf-text", path=str(folder))


def test_pickled_weights_are_refused_unread(folders, tmp_path):
    folder = _copy(folders["bert"], tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ParameterError, match=r"only as pytorch_model\.bin; mmkit loads safetensors only"):
        mmkit.create("encoder", "hf-text", path=str(folder))
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(ParameterError, match="has no model.safetensors"):
        mmkit.create("encoder", "hf-text", path=str(folder))
    with pytest.raises(ParameterError, match="no config.json; it is not a Hugging Face model folder"):
        mmkit.create("encoder", "hf-text", path=str(tmp_path))


def test_a_handed_in_run_directory_naming_a_hub_id_is_refused(folders, tmp_path, write_tiny_recipe, no_network):
    """A run directory whose recipe names a hub id (edited, or written elsewhere) fails to load, offline."""
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    text = f'model.encoders.text={{ type = "hf-text", path = "{folders["bert"].as_posix()}" }}'
    run = train(load_recipe(write_tiny_recipe(tmp_path / "r.toml", text, "train.max_steps=1")), quiet=True).run_dir
    resolved = run / "recipe.resolved.toml"
    resolved.write_text(resolved.read_text().replace(folders["bert"].as_posix(), "bert-base-uncased"))
    with pytest.raises(ParameterError, match="path 'bert-base-uncased' is not an existing folder"):
        mmkit.load(str(run))
    assert no_network == []
