"""Loading a local Hugging Face folder -- config, weights, tokenizer, image processor -- offline.

Every load goes through :func:`mmkit.local_folder` (a path that is not an existing folder is
an error before transformers sees it), :func:`mmkit.check_hf_folder` (no ``auto_map``, weights
as safetensors) and :func:`mmkit.hub_offline` with ``local_files_only=True`` and
``trust_remote_code=False``. Weights that the folder does not hold (transformers would initialise
them at random with a warning) are an error, except a pooler that the caller can do without.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmkit import check_hf_folder, hub_offline, local_folder, ParameterError

OPTIONAL_WEIGHTS = ("pooler.",)
# a tokenizer needs one of these; without them AutoTokenizer builds an empty vocabulary (every word [UNK])
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")  # a task checkpoint saved without the base model's pooler is still usable


@dataclass
class LoadedModel:
    """A model loaded from a folder: its config, the ``PreTrainedModel`` and what its weights lacked."""

    folder: Path
    config: Any
    model: Any
    untrained: list[str] = field(default_factory=list)  # parameter names left at random (pooler only)

    @property
    def model_type(self) -> str:
        return str(getattr(self.config, "model_type", "?"))


def model_folder(path: str | None, what: str) -> Path:
    """``path`` as a checked local folder; ``None`` is the bundled all-MiniLM-L6-v2."""
    if path is None:
        from mmkit import bundled_minilm_path

        return Path(bundled_minilm_path())
    return local_folder(path, what)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" ... ({len(keys)} in all)" if len(keys) > 6 else "")


def load_model(folder: Path, what: str) -> LoadedModel:
    """``AutoConfig`` + ``AutoModel`` from ``folder`` in float32; refuses missing or mismatched weights."""
    check_hf_folder(folder, what)
    import torch

    with hub_offline():
        from transformers import AutoConfig, AutoModel

        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            model, info = AutoModel.from_pretrained(
                folder, config=config, local_files_only=True, trust_remote_code=False, use_safetensors=True,
                dtype=torch.float32, output_loading_info=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ParameterError(f"{what}: cannot load a model from {folder}: {type(exc).__name__}: {exc}") from exc
    missing = sorted(info.get("missing_keys") or ())
    fatal = [k for k in missing if not any(p in k for p in OPTIONAL_WEIGHTS)]
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or ())
    if fatal or mismatched:
        parts = ([f"missing weights: {_few(fatal)}"] if fatal else []) + (
            [f"shape mismatches: {_few(mismatched)}"] if mismatched else [])
        raise ParameterError(f"{what}: the weights in {folder} do not fit its {config.model_type} config "
                             f"({'; '.join(parts)}); they would be initialised at random")
    model.eval()
    return LoadedModel(folder, config, model, [k for k in missing if k not in fatal])


def _load_auto(auto_class: str, folder: Path, what: str, files: str) -> Any:
    with hub_offline():
        import transformers

        try:
            return getattr(transformers, auto_class).from_pretrained(folder, local_files_only=True,
                                                                     trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ParameterError(f"{what}: cannot load {files} from {folder}: {exc}") from exc


def load_tokenizer(folder: Path, what: str) -> Any:
    """The folder's tokenizer (``AutoTokenizer``), offline, without remote code."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ParameterError(f"{what}: cannot load a tokenizer from {folder}: none of {', '.join(TOKENIZER_FILES)} "
                             f"is there (save one with tokenizer.save_pretrained(FOLDER))")
    return _load_auto("AutoTokenizer", folder, what, "a tokenizer (tokenizer.json or vocabulary files; save one "
                                                     "with tokenizer.save_pretrained(FOLDER))")


def load_image_processor(folder: Path, what: str) -> Any:
    """The folder's image processor (``AutoImageProcessor``): size, resampling, mean and std."""
    return _load_auto("AutoImageProcessor", folder, what, "an image processor (preprocessor_config.json; save "
                                                          "one with processor.save_pretrained(FOLDER))")


def tower(loaded: LoadedModel, name: str, what: str) -> Any:
    """The ``text_model``/``vision_model`` of a two-tower model (CLIP, SigLIP), else the model itself
    when it is a single tower of that kind."""
    sub = getattr(loaded.model, f"{name}_model", None)
    if sub is not None:
        return sub
    config = loaded.config
    if getattr(config, "is_encoder_decoder", False):
        if name == "text":
            return loaded.model.get_encoder()
        raise ParameterError(f"{what}: {loaded.folder} is an encoder-decoder ({loaded.model_type}) model, not an "
                             f"image model")
    other = "vision" if name == "text" else "text"
    if getattr(loaded.model, f"{other}_model", None) is not None or hasattr(config, f"{other}_config"):
        raise ParameterError(f"{what}: {loaded.folder} ({loaded.model_type}) has no {name} tower")
    return loaded.model
