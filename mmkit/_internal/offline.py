"""Loading Hugging Face model folders offline: the one mechanism every built-in that reads one uses.

mmkit never contacts a model hub, whatever the environment says. Two guards, used together:

* :func:`local_folder` turns a user's ``path`` into an existing local folder *before* any Hugging
  Face library sees it: a hub id (``bert-base-uncased``, ``org/model``), a URL or an ``hf-hub:``
  name is refused with an error that says how to get a folder instead.
* :func:`hub_offline` is a context manager around every ``from_pretrained``: inside it
  ``huggingface_hub`` is in offline mode (every HTTP request it would make raises), and
  transformers' progress bars and load warnings are quiet. It changes no environment variable and
  restores everything on exit, so a notebook user's own Hugging Face code is not affected.

:func:`check_hf_folder` refuses folders that would run code shipped in the folder (``auto_map``;
``trust_remote_code`` is never set) or whose weights exist only as pickles (``pytorch_model.bin``).

This module imports nothing heavy; ``huggingface_hub``/``transformers`` are imported inside
:func:`hub_offline`.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmkit._internal.errors import ParameterError
from mmkit._internal.safeio import read_json

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HUB_PREFIX = ("hf-hub:", "hf_hub:", "hf:", "hub:")
_LOCK = threading.RLock()
_depth = 0
_saved: dict[str, Any] = {}

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack",
                   "model.ckpt.index")
CODE_CONFIGS = ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
                "image_processor_config.json")


def local_folder(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as an existing local folder (``~`` expanded), or a :class:`ParameterError` naming ``what``.

    Nothing here touches the network: a string that is not an existing folder is an error, so a hub
    id never reaches a library that would try to download it.
    """
    text = os.fspath(path)
    folder = Path(os.path.expanduser(text))
    if folder.is_dir():
        return folder.resolve()
    if _URL.match(text) or text.startswith(_HUB_PREFIX):
        kind = "a URL" if _URL.match(text) else "a model-hub reference"
    elif folder.exists():
        raise ParameterError(f"{what}: path {text!r} is a file, not a model folder")
    else:
        kind = "not an existing folder"
        if re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", text) and not text.startswith((".", "/")):
            kind = "not an existing folder (it looks like a model-hub id)"
    raise ParameterError(
        f"{what}: path {text!r} is {kind}. Models are never downloaded: give a local folder, e.g. one "
        f"written by `model.save_pretrained(FOLDER)` or `huggingface-cli download ID --local-dir FOLDER` "
        f"on a machine with internet access")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    data = read_json(path, error=lambda msg: ParameterError(f"{what}: cannot read {msg}"))  # bounded
    if not isinstance(data, dict):
        raise ParameterError(f"{what}: {path} must hold a JSON object")
    return data


def check_hf_folder(folder: Path, what: str, *, weights: bool = True) -> dict[str, Any]:
    """Refuse a folder that needs remote code or has only pickled weights; return its ``config.json``.

    Args:
        folder: an existing folder (see :func:`local_folder`).
        what: the component, for error messages (``"hf-text"``).
        weights: also require safetensors weights (``model.safetensors`` or a sharded index).
    """
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ParameterError(f"{what}: {folder} has no config.json; it is not a Hugging Face model folder "
                             f"(write one with model.save_pretrained(FOLDER))")
    config: dict[str, Any] = {}
    for name in CODE_CONFIGS:
        file = folder / name
        if not file.is_file():
            continue
        data = _read_json(file, what)
        if name == "config.json":
            config = data
        if data.get("auto_map"):
            raise ParameterError(
                f"{what}: {file} has an auto_map: this folder ships its own Python code, which mmkit never "
                f"runs (trust_remote_code is off). Use a model whose architecture transformers includes")
    if weights and not any((folder / name).is_file() for name in SAFE_WEIGHTS):
        pickled = [name for name in PICKLED_WEIGHTS if (folder / name).is_file()]
        if pickled:
            raise ParameterError(
                f"{what}: {folder} holds its weights only as {', '.join(pickled)}; mmkit loads safetensors "
                f"only (a .bin file is a pickle, and loading it could run code). Convert it where you trust "
                f"the file: AutoModel.from_pretrained(FOLDER).save_pretrained(FOLDER, safe_serialization=True)")
        raise ParameterError(f"{what}: {folder} has no model.safetensors (nor a sharded "
                             f"model.safetensors.index.json)")
    return config


def _enter() -> None:
    global _depth
    with _LOCK:
        _depth += 1
        if _depth > 1:
            return
        import huggingface_hub.constants as hub_constants

        _saved["offline"] = hub_constants.HF_HUB_OFFLINE
        hub_constants.HF_HUB_OFFLINE = True
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover - transformers is a dependency of sentence-transformers
            return
        _saved["verbosity"] = hf_logging.get_verbosity()
        _saved["bars"] = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _exit() -> None:
    global _depth
    with _LOCK:
        _depth -= 1
        if _depth:
            return
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = _saved.pop("offline", hub_constants.HF_HUB_OFFLINE)
        if "verbosity" in _saved:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity(_saved.pop("verbosity"))
            if _saved.pop("bars"):
                hf_logging.enable_progress_bar()


@contextmanager
def hub_offline() -> Iterator[None]:
    """Within the block, Hugging Face libraries cannot reach the network; nothing leaks out of it.

    Sets ``huggingface_hub.constants.HF_HUB_OFFLINE`` (what ``is_offline_mode()`` reads) and quiets
    transformers' logging and progress bars; restores both on exit (re-entrant). ``os.environ`` is
    never touched. Pass ``local_files_only=True`` to ``from_pretrained`` as well.
    """
    _enter()
    try:
        yield
    finally:
        _exit()


__all__ = ["check_hf_folder", "hub_offline", "local_folder"]
