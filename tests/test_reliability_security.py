"""Untrusted files: loading a model never executes code from a file, corrupt weight files give clear
errors, names cannot leave the registry or card folders, scaffolding never overwrites.

The malicious payload is a real one: a pickle whose ``__reduce__`` calls ``open(marker, "w")``. A
positive control shows it creates the marker when unpickled the unsafe way; every mmkit loader must
refuse it and leave no marker. Already covered elsewhere: tampered registered weights fail their
sha256 (tests/test_predictor.py::test_tampered_weights_fail_with_checksum_error_naming_the_file), a card
without sha256 is refused and unsafe model names are rejected (tests/test_models_registry.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch

from mmkit._internal import checkpoint as ckpt
from mmkit._internal import models as mreg
from mmkit._internal.errors import MmkitError, ParameterError



class Payload:
    """Unpickling this calls ``open(marker, "w")``: code execution from a data file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.marker, "w")


def _malicious_pt(path: Path, marker: Path, wrap: Any = None) -> Path:
    """A torch file whose unpickling creates ``marker`` (wrapped like a state dict or optimizer state)."""
    obj = Payload(marker) if wrap is None else wrap(Payload(marker))
    torch.save(obj, path)
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def test_the_payload_is_live_when_unpickled_unsafely(tmp_path: Path, marker: Path) -> None:
    """Positive control: the file really runs code under torch.load(weights_only=False)."""
    path = _malicious_pt(tmp_path / "x.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------------------------------- checkpoints
TINY = """
[run]
name = "sec"
output_dir = "{out}"

[data]
dataset = "shapes"
options = {{ n_train = 16, n_val = 8, n_test = 0, image_size = 32 }}

[model.encoders.image]
type = "timm"
model = "test_resnet"

[model.fusion]
type = "concat"
dim = 8

[model.head]
type = "classification"

[train]
max_steps = 2
batch_size = 8
checkpoint_every = 1
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    root = tmp_path_factory.mktemp("sec")
    (root / "r.toml").write_text(TINY.format(out=(root / "runs").as_posix()), encoding="utf-8")
    result = train(load_recipe(root / "r.toml", ["train.max_steps=1"]), quiet=True)
    return result.run_dir


def _copy_run(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    (dest / ".lock").unlink(missing_ok=True)
    return dest


def test_malicious_training_state_is_refused(tmp_path: Path, marker: Path) -> None:
    folder = tmp_path / "ck"
    ckpt.save_checkpoint(folder, "last", torch.nn.Linear(2, 2), {"step": 1})
    _malicious_pt(folder / "last" / ckpt.TRAINING_STATE, marker, wrap=lambda p: {"optimizer": {"state": p}})
    with pytest.raises(ckpt.CheckpointError, match=r"training_state\.pt: refused or unreadable .*only plain tensors"):
        ckpt.read_training_state(folder / "last")
    assert not marker.exists()


def test_resume_from_a_checkpoint_with_a_malicious_training_state_is_refused(
        trained: Path, tmp_path: Path, marker: Path) -> None:
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import load_recipe

    run = _copy_run(trained, tmp_path / "runs" / "sec")
    _malicious_pt(run / "checkpoints" / "last" / ckpt.TRAINING_STATE, marker, wrap=lambda p: {"optimizer": p})
    recipe = load_recipe(trained.parent.parent / "r.toml", [f"run.output_dir={(tmp_path / 'runs').as_posix()}"])
    with pytest.raises(ckpt.CheckpointError, match="refused or unreadable"):
        train(recipe, mode="resume", quiet=True)
    assert not marker.exists()


@pytest.mark.parametrize("content", ["pickle", "bad-header-length", "bad-header-json", "truncated"])
def test_corrupt_or_pickled_model_safetensors_is_a_clear_error(trained: Path, tmp_path: Path, marker: Path,
                                                               content: str) -> None:
    """``mmkit.load`` of a run directory whose weights file was replaced: an error naming the file."""
    import mmkit

    run = _copy_run(trained, tmp_path / "copy")
    weights = mreg.resolve(run).weights  # checkpoints/best, else last
    good = weights.read_bytes()
    if content == "pickle":
        _malicious_pt(weights, marker, wrap=lambda p: {"fusion.proj.image.weight": p})
    elif content == "bad-header-length":
        weights.write_bytes(struct.pack("<Q", 1 << 60) + good[8:])
    elif content == "bad-header-json":
        n = struct.unpack("<Q", good[:8])[0]
        weights.write_bytes(good[:8] + b"{" * n + good[8 + n:])
    else:
        weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: cannot load weights"):
        mmkit.load(run)
    assert not marker.exists()


# ------------------------------------------------------------------------------------- pretrained weights
@pytest.mark.parametrize("wrap", [None, lambda p: {"conv1.weight": p}, lambda p: {"state_dict": {"fc.bias": p}}],
                         ids=["bare", "state-dict", "wrapped"])
def test_malicious_pretrained_pt_for_timm_is_refused(tmp_path: Path, marker: Path, wrap: Any) -> None:
    import mmkit

    path = _malicious_pt(tmp_path / "weights.pt", marker, wrap=wrap)
    with pytest.raises(ParameterError, match=r"weights\.pt as a torch state dict \(loaded with weights_only=True"):
        mmkit.create("encoder", "timm", model="test_resnet", pretrained=str(path))
    assert not marker.exists()


@pytest.mark.parametrize("header", [
    struct.pack("<Q", 1 << 62) + b"{}",  # claims an exabyte-sized header
    struct.pack("<Q", 12) + b'{"a": [1, 2',  # broken JSON
    struct.pack("<Q", 80) + b'{"w": {"dtype": "F32", "shape": [1000000, 1000000], "data_offsets": [0, 4]}}',
    b"\x01\x02",  # shorter than the 8-byte length prefix
])
def test_safetensors_with_a_bad_header_is_a_clear_error(tmp_path: Path, header: bytes) -> None:
    import mmkit

    path = tmp_path / "weights.safetensors"
    path.write_bytes(header)
    with pytest.raises(ParameterError, match=r"cannot read safetensors file .*weights\.safetensors"):
        mmkit.create("encoder", "timm", model="test_resnet", pretrained=str(path))
    with pytest.raises(ckpt.CheckpointError, match=r"weights\.safetensors: cannot load weights"):
        ckpt.load_weights(torch.nn.Linear(2, 2), path)


@pytest.mark.slow
def test_sentence_transformer_folder_never_runs_its_code(tmp_path: Path, marker: Path) -> None:
    """A model folder (as a recipe's ``path``) holding a pickled pytorch_model.bin, or a modules.json that
    names a class outside sentence-transformers: refused, nothing executed."""
    import mmkit
    from mmkit._internal.tokenize import bundled_minilm_path

    source = Path(bundled_minilm_path())
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for item in source.iterdir():
        if item.name != "model.safetensors":
            (pickled / item.name).symlink_to(item)
    _malicious_pt(pickled / "pytorch_model.bin", marker, wrap=lambda p: {"embeddings.word_embeddings.weight": p})
    with pytest.raises(ParameterError, match=r"sentence-transformer: cannot load a model from .*pickled"):
        mmkit.create("encoder", "sentence-transformer", path=str(pickled))
    assert not marker.exists()

    custom = tmp_path / "custom"
    custom.mkdir()
    for item in source.iterdir():
        if item.name != "modules.json":
            (custom / item.name).symlink_to(item)
    (custom / "evil_module.py").write_text(f"open({str(marker)!r}, 'w')\nclass Evil:\n    pass\n")
    (custom / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "evil_module.Evil"}]))
    with pytest.raises(ParameterError, match="trust_remote_code|not part of Sentence Transformers"):
        mmkit.create("encoder", "sentence-transformer", path=str(custom))
    assert not marker.exists()


# ------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("ref", ["x@..", "x@../../outside", "..", "...", "x@1/../../outside", "/", "x@",
                                 "x@latest/../..", "outside@1"])
def test_model_references_cannot_reach_outside_the_registry(tmp_path: Path, ref: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered-looking model planted next to the registry is never found through a name."""
    registry = tmp_path / "reg"
    registry.mkdir()
    planted = tmp_path / "outside" / "1"
    planted.mkdir(parents=True)
    card = {"name": "outside", "version": 1, "sha256": {"model.safetensors": "0"}}
    (planted / "card.json").write_text(json.dumps(card))
    (planted / "model.safetensors").write_bytes(b"x")
    monkeypatch.chdir(registry)  # relative paths would resolve against the registry folder
    with pytest.raises(MmkitError):
        mreg.resolve(ref, registry)


@pytest.mark.parametrize("name", ["/etc/evil", "NAME@../x", "x/../../y", "nul\0byte", "tab\tname",
                                  "newline\n"])
def test_register_refuses_names_that_are_paths(tmp_path: Path, name: str) -> None:
    """Complements tests/test_models_registry.py::test_unsafe_names_are_rejected."""
    registry = tmp_path / "reg"
    with pytest.raises(MmkitError, match="invalid model name"):
        mreg.register(tmp_path / "no-run", name, registry=registry)
    assert not registry.exists() or not any(registry.iterdir())


# ------------------------------------------------------------------------------------- scaffolding
def _new_plugin_command() -> Any:
    try:
        from mmkit._internal.cli_scaffold import new_plugin
    except ImportError:
        pytest.skip("mmkit new-plugin (mmkit/_internal/cli_scaffold.py) is not written yet")
    return new_plugin


def test_new_plugin_never_overwrites_an_existing_folder(tmp_path: Path) -> None:
    from click.testing import CliRunner

    command = _new_plugin_command()
    runner = CliRunner()
    first = runner.invoke(command, ["gated", "--kind", "fusion", "--dir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    root = tmp_path / "mmkit-gated"
    edited = root / "README.md"
    edited.write_text("my own notes\n", encoding="utf-8")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    second = runner.invoke(command, ["gated", "--kind", "encoder", "--dir", str(tmp_path)])
    assert second.exit_code == 2
    assert "already exists; nothing was written" in second.output
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["../evil", "/tmp/evil", "a/b", "..", "Evil", "x\n"])
def test_new_plugin_refuses_names_that_are_paths(tmp_path: Path, name: str) -> None:
    from click.testing import CliRunner

    command = _new_plugin_command()
    work = tmp_path / "work"
    work.mkdir()
    result = CliRunner().invoke(command, [name, "--dir", str(work)])
    assert result.exit_code == 2 and "invalid plugin name" in result.output
    assert not any(tmp_path.rglob("pyproject.toml"))
