"""``mmkit new-plugin``: write a ready-to-install plugin package from templates.

The generated package ``mmkit-NAME/`` has a ``pyproject.toml`` registering ``mmkit_NAME.plugin``
in the ``mmkit`` entry-point group, a light plugin module (hooks only, registration by import
string), a component skeleton that passes :mod:`mmkit.testing`, a test file and a README. The
templates are plain strings in this module (``$placeholders``, :class:`string.Template`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from mmkit.errors import MmkitError

KINDS = ("encoder", "fusion", "head", "modality")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(MmkitError):
    """The plugin cannot be generated (invalid name, existing folder)."""


@dataclass(frozen=True)
class PluginNames:
    """The names derived from ``NAME``."""

    name: str  # component and entry-point name, as given (lowercase, '-' allowed)
    module: str  # the Python package: mmkit_NAME with '-' -> '_'
    dist: str  # distribution and folder name: mmkit-NAME
    cls: str  # CamelCase stem of the class names

    @classmethod
    def from_name(cls, name: str) -> "PluginNames":
        stem = name.replace("-", "_")
        if not NAME_PATTERN.fullmatch(stem) or stem.endswith("_") or "__" in stem:
            raise ScaffoldError(
                f"invalid plugin name {name!r}: use lowercase letters, digits, '_' or '-', starting with a letter "
                "(e.g. 'gated', 'audio-cnn')")
        return cls(name, f"mmkit_{stem}", f"mmkit-{name}", "".join(p.capitalize() for p in stem.split("_")))


def plugin_files(name: str, kind: str = "encoder", mmkit_version: str | None = None) -> dict[str, str]:
    """Relative path -> content of every file of the package for ``name`` and ``kind``."""
    if kind not in KINDS:
        raise ScaffoldError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    names = PluginNames.from_name(name)
    if mmkit_version is None:
        from mmkit import __version__ as mmkit_version
    values = {
        "name": names.name, "module": names.module, "dist": names.dist, "cls": names.cls, "kind": kind,
        "mmkit_version": mmkit_version, "summary": SUMMARIES[kind],
        "hook": HOOKS[kind], "component_file": COMPONENT_FILES[kind], "class_name": names.cls + CLASS_SUFFIX[kind],
    }
    m = names.module
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{m}/__init__.py": INIT,
        f"{m}/plugin.py": PLUGIN_MODALITY if kind == "modality" else PLUGIN,
        f"{m}/{COMPONENT_FILES[kind]}.py": COMPONENTS[kind],
        f"tests/test_{m}.py": TESTS[kind],
    }
    if kind == "modality":
        files[f"{m}/encoder.py"] = MODALITY_ENCODER
    return {path: Template(text).substitute(values) for path, text in files.items()}


def create_plugin(name: str, kind: str = "encoder", directory: str | Path = ".") -> Path:
    """Write the package ``mmkit-NAME/`` into ``directory``; refuses to touch an existing folder."""
    files = plugin_files(name, kind)
    root = Path(directory) / PluginNames.from_name(name).dist
    if root.exists():
        raise ScaffoldError(f"{root} already exists; nothing was written (choose another name or --dir)")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------ templates
SUMMARIES = {
    "encoder": "Byte-level text encoder (tokens + masked-mean pooled vector)",
    "fusion": "Gated mean of the present modalities' projected vectors",
    "head": "Linear classifier over integer labels; accuracy",
    "modality": "Sequences of numbers (a list in the cell, or a text file of numbers)",
}
HOOKS = {"encoder": "register_encoders", "fusion": "register_fusions", "head": "register_heads",
         "modality": "register_modalities"}
COMPONENT_FILES = {"encoder": "encoder", "fusion": "fusion", "head": "head", "modality": "modality"}
CLASS_SUFFIX = {"encoder": "Encoder", "fusion": "Fusion", "head": "Head", "modality": "Modality"}

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "mmkit plugin $name: $summary"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["mmkit>=$mmkit_version"]

[project.optional-dependencies]
test = ["pytest>=8"]

# mmkit finds the plugin through this entry point: plugin name "$name", module $module.plugin
[project.entry-points.mmkit]
$name = "$module.plugin"

[tool.setuptools]
packages = ["$module"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

INIT = '''\
"""$dist: an mmkit plugin. Keep this file light: no torch import here."""

__version__ = "0.1.0"
'''

PLUGIN = '''\
"""The hooks of plugin $name. Components are registered by import string, so loading the plugin
(``mmkit list``) imports nothing but mmkit; the component module is imported when a recipe builds it."""

import mmkit

from $module import __version__  # shown by `mmkit list` when loaded with -p / MMKIT_PLUGINS


@mmkit.hookimpl
def $hook(register):
    register("$name", "$module.$component_file:$class_name", summary="$summary")
'''

PLUGIN_MODALITY = '''\
"""The hooks of plugin $name: the ``$name`` modality and its default encoder ``$name-mlp``.
Components are registered by import string, so loading the plugin imports nothing but mmkit."""

import mmkit

from $module import __version__  # shown by `mmkit list` when loaded with -p / MMKIT_PLUGINS


@mmkit.hookimpl
def register_modalities(register):
    register("$name", "$module.modality:${cls}Modality", summary="$summary")


@mmkit.hookimpl
def register_encoders(register):
    register("$name-mlp", "$module.encoder:${cls}Encoder",
             summary="Per-value MLP tokens of a $name sequence, masked-mean pooled")
'''

ENCODER = '''\
"""The ``$name`` encoder: UTF-8 bytes -> embeddings -> a small MLP; pooled = masked mean.

Replace the body with your model; keep the contract (see ``mmkit.interfaces.Encoder``):
``preprocess`` runs in DataLoader workers, ``collate`` pads the present samples, ``forward``
returns an :class:`~mmkit.interfaces.Embedding` whose values for a sample do not depend on the
other samples of the batch.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from mmkit.errors import ParameterError
from mmkit.interfaces import Embedding, Encoder


class $class_name(Encoder):
    """Byte-level text encoder: one token per UTF-8 byte, masked-mean pooled.

    Args:
        dim: width of the tokens and of the pooled vector.
        max_length: texts are cut to this many bytes.
        dropout: dropout on the token embeddings (training only).
    """

    modality = "text"  # the modality whose loaded values this encoder reads
    has_tokens = True
    deterministic_train = True  # preprocess(train=True) is deterministic: frozen outputs may be cached

    def __init__(self, dim: int = 64, max_length: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or max_length < 1:
            raise ParameterError(f"$name: dim and max_length must be positive, got {dim}, {max_length}")
        self.dim = dim
        self.max_length = max_length
        self.embed = nn.Embedding(257, dim, padding_idx=0)  # byte b -> id b + 1; 0 is padding
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def preprocess(self, raw: Any, train: bool = False) -> torch.Tensor:
        data = str(raw).encode("utf-8")[: self.max_length] or b" "
        return torch.tensor(list(data), dtype=torch.long) + 1

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=0)
        return {"ids": ids, "mask": ids != 0}

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Embedding:
        mask = inputs["mask"]
        tokens = self.norm(self.mlp(self.embed(inputs["ids"])))
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        present = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        return Embedding(pooled, present, tokens * weights, mask)
'''

FUSION = '''\
"""The ``$name`` fusion: a gated mean of the present modalities' projected pooled vectors.

Contract (see ``mmkit.interfaces.Fusion``): any subset of the modalities may be present per sample,
a modality may be missing from the dict, and absent rows must not influence the output.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from mmkit.errors import ParameterError
from mmkit.interfaces import Embedding, Fused, Fusion


class $class_name(Fusion):
    """Projects each modality's pooled vector to ``dim``, weighs it by a learned sigmoid gate and
    averages over the modalities present in each sample.

    Args:
        dim: width of the fused vector.
        dropout: dropout on the fused vector (training only).
    """

    has_tokens = False

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None, dim: int = 128,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1:
            raise ParameterError(f"$name: dim must be positive, got {dim}")
        self.dim = dim
        self.modalities = sorted(input_dims)
        self.proj = nn.ModuleDict({m: nn.Linear(input_dims[m], dim) for m in self.modalities})
        self.gate = nn.ModuleDict({m: nn.Linear(dim, 1) for m in self.modalities})
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        first = next(iter(embeddings.values()))
        batch = first.pooled.shape[0]
        total = first.pooled.new_zeros(batch, self.dim)
        weight = first.pooled.new_zeros(batch, 1)
        for m in self.modalities:
            if m not in embeddings:
                continue
            e = embeddings[m]
            present = e.present.unsqueeze(-1).to(total.dtype)
            vec = self.proj[m](e.pooled)
            gate = torch.sigmoid(self.gate[m](vec)) * present  # absent rows get weight 0
            total = total + torch.where(present.bool(), gate * vec, torch.zeros_like(vec))
            weight = weight + gate
        pooled = self.norm(self.drop(total / weight.clamp(min=1e-6)))
        return Fused(pooled=pooled, inputs=dict(embeddings))
'''

HEAD = '''\
"""The ``$name`` head: a linear classifier over integer labels ``0 .. num_classes-1``.

Contract (see ``mmkit.interfaces.Head``): ``fields`` names the target columns, the loss is None
without targets, ``new_metrics`` accumulates over an evaluation, ``decode`` gives JSON rows.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit.errors import DataError, ParameterError
from mmkit.interfaces import Batch, Fused, Head, Metrics, Output


class ${cls}Metrics(Metrics):
    """Loss and accuracy; state is plain numbers so ranks can be merged."""

    def __init__(self) -> None:
        super().__init__()
        self.correct = 0
        self.seen = 0

    def update(self, output: Output, batch: Batch) -> None:
        super().update(output, batch)
        if batch.targets is not None:
            preds = output.preds["logits"].argmax(-1).cpu()
            self.correct += int((preds == batch.targets.cpu()).sum())
            self.seen += int(preds.shape[0])

    def merge(self, other: "${cls}Metrics") -> None:
        super().merge(other)
        self.correct += other.correct
        self.seen += other.seen

    def compute(self) -> dict[str, float]:
        out = super().compute()
        if self.seen:
            out["accuracy"] = self.correct / self.seen
        return out


class $class_name(Head):
    """Linear classifier (cross-entropy) over integer labels.

    Args:
        num_classes: number of classes; labels must be integers in ``0 .. num_classes-1``.
        field: the data field holding the label.
        dropout: dropout on the fused vector (training only).
    """

    monitor = "accuracy"
    monitor_mode = "max"

    def __init__(self, input_dim: int, modality_dims: dict[str, int] | None = None, num_classes: int = 2,
                 field: str = "label", dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ParameterError(f"$name: num_classes must be at least 2, got {num_classes}")
        self.num_classes = num_classes
        self.field = field
        self.fields = (field,)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(input_dim, num_classes)

    def preprocess_target(self, raw: Mapping[str, Any]) -> Tensor:
        value = raw[self.field]
        try:
            label = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{self.field}: expected an integer label, got {value!r}") from None
        if not 0 <= label < self.num_classes:
            raise DataError(f"{self.field}: label {label} is outside 0..{self.num_classes - 1}")
        return torch.tensor(label, dtype=torch.long)

    def collate_targets(self, items: list[Tensor]) -> Tensor:
        return torch.stack(items)

    def forward(self, fused: Fused, batch: Batch) -> Output:
        logits = self.out(self.drop(fused.pooled))
        loss = None
        if batch.targets is not None:
            loss = F.cross_entropy(logits.float(), batch.targets.to(logits.device))
        return Output(loss, {"logits": logits})

    def new_metrics(self) -> ${cls}Metrics:
        return ${cls}Metrics()

    def decode(self, preds: Mapping[str, Any]) -> list[dict[str, Any]]:
        probs = preds["logits"].float().softmax(-1)
        return [{self.field: int(p.argmax()), "probs": [round(float(v), 6) for v in p]} for p in probs]
'''

MODALITY = '''\
"""The ``$name`` modality: a sequence of numbers.

A cell is a list of numbers, or a path (relative to the manifest's folder) to a text file of
numbers separated by whitespace or commas. An empty cell means the sample has no $name; a path to a
file that does not exist is an error. Only the standard library is imported here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mmkit.errors import DataError
from mmkit.modality import Modality


class $class_name(Modality):
    """Sequences of numbers: a list in the cell, or a text file of numbers."""

    name = "$name"
    default_encoder = "$name-mlp"

    def load(self, value: Any, base_dir: Path | None = None) -> list[float]:
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        if isinstance(value, (str, os.PathLike)):
            path = Path(value)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.is_file():
                raise DataError(f"$name file not found: {path}")
            text = path.read_text(encoding="utf-8")
            try:
                return [float(v) for v in re.split(r"[\\s,]+", text.strip()) if v]
            except ValueError as exc:
                raise DataError(f"$name file {path}: {exc}") from exc
        raise DataError(f"a $name cell must be a list of numbers or a file path, got {type(value).__name__}")
'''

MODALITY_ENCODER = '''\
"""The ``$name-mlp`` encoder: one token per value (an MLP of the value), masked-mean pooled."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from mmkit.errors import ParameterError
from mmkit.interfaces import Embedding, Encoder


class ${cls}Encoder(Encoder):
    """Encodes a sequence of numbers: each value becomes a token through a small MLP (with a learned
    position embedding); pooled is the masked mean of the tokens.

    Args:
        dim: width of the tokens and of the pooled vector.
        max_length: sequences are cut to this many values.
    """

    modality = "$name"
    has_tokens = True
    deterministic_train = True

    def __init__(self, dim: int = 64, max_length: int = 512) -> None:
        super().__init__()
        if dim < 1 or max_length < 1:
            raise ParameterError(f"$name-mlp: dim and max_length must be positive, got {dim}, {max_length}")
        self.dim = dim
        self.max_length = max_length
        self.value = nn.Sequential(nn.Linear(1, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pos = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def preprocess(self, raw: Any, train: bool = False) -> torch.Tensor:
        values = [float(v) for v in raw][: self.max_length] or [0.0]
        return torch.tensor(values, dtype=torch.float32)

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        lengths = torch.tensor([len(x) for x in items])
        values = nn.utils.rnn.pad_sequence(items, batch_first=True)
        mask = torch.arange(values.shape[1])[None, :] < lengths[:, None]
        return {"values": values, "mask": mask}

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> Embedding:
        values, mask = inputs["values"], inputs["mask"]
        tokens = self.norm(self.value(values.unsqueeze(-1)) + self.pos[: values.shape[1]])
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        present = torch.ones(values.shape[0], dtype=torch.bool, device=values.device)
        return Embedding(pooled, present, tokens * weights, mask)
'''

COMPONENTS = {"encoder": ENCODER, "fusion": FUSION, "head": HEAD, "modality": MODALITY}

_TEST_HEADER = '''\
"""Tests of plugin $name, with mmkit's contract kit (mmkit.testing)."""

from __future__ import annotations

import torch

import mmkit.testing as kit
from mmkit.testing_plugin import mmkit_registry  # noqa: F401 - the isolated-registry fixture

import $module.plugin

torch.set_num_threads(2)


def test_plugin_module_is_light_and_its_components_are_documented():
    kit.check_plugin_module("$module.plugin")


'''

TESTS = {
    "encoder": _TEST_HEADER + '''\
def test_encoder_contract(mmkit_registry):
    mmkit_registry.register_plugin($module.plugin)
    encoder = mmkit_registry.create("encoder", "$name", dim=16)
    emb = kit.check_encoder(encoder, ["a short text", "a somewhat longer text to pad against", "x"])
    assert emb.pooled.shape == (3, 16)
''',
    "fusion": _TEST_HEADER + '''\
def test_fusion_contract(mmkit_registry):
    mmkit_registry.register_plugin($module.plugin)

    def build(input_dims, token_inputs):
        return mmkit_registry.create("fusion", "$name", context={"input_dims": input_dims,
                                                              "token_inputs": token_inputs}, dim=16)

    fused = kit.check_fusion(build)
    assert fused.pooled.shape == (6, 16)
''',
    "head": _TEST_HEADER + '''\
def test_head_contract(mmkit_registry):
    from mmkit.interfaces import Batch, Fused

    mmkit_registry.register_plugin($module.plugin)
    head = mmkit_registry.create("head", "$name", context={"input_dim": 16, "modality_dims": {"image": 8}},
                                 num_classes=3)
    rows = [{"label": i % 3} for i in range(6)]
    targets = head.collate_targets([head.preprocess_target(r) for r in rows])
    present = {"image": torch.ones(6, dtype=torch.bool)}
    fused = Fused(torch.randn(6, 16), inputs=kit.random_embeddings({"image": 8}, 6))
    out = kit.check_head(head, fused, Batch({}, present, targets, torch.arange(6)))
    assert out.preds["logits"].shape == (6, 3)
''',
    "modality": _TEST_HEADER + '''\
def test_modality_contract(mmkit_registry, tmp_path):
    mmkit_registry.register_plugin($module.plugin)
    (tmp_path / "a.txt").write_text("1.5 2 3\\n4")
    modality = mmkit_registry.get("modality", "$name").load()
    values = kit.check_modality(modality, ["a.txt", [0.5, 1.0]], tmp_path)
    assert values == [[1.5, 2.0, 3.0, 4.0], [0.5, 1.0]]


def test_default_encoder_contract(mmkit_registry):
    mmkit_registry.register_plugin($module.plugin)
    encoder = mmkit_registry.create("encoder", "$name-mlp", dim=16)
    assert encoder.modality == "$name"
    emb = kit.check_encoder(encoder, [[1.0, 2.0, 3.0], [0.5], [4.0, 5.0]])
    assert emb.pooled.shape == (3, 16)
''',
}

README = '''\
# $dist

An mmkit plugin: $summary.

Generated by `mmkit new-plugin $name --kind $kind`. The plugin module `$module/plugin.py`
registers the component by import string, so `mmkit list` never imports torch; the component lives
in `$module/$component_file.py`.

## Try it without installing

```bash
PYTHONPATH=. MMKIT_PLUGINS=$module.plugin mmkit list
PYTHONPATH=. MMKIT_PLUGINS=$module.plugin mmkit show $name
```

## Install, test, use

```bash
pip install -e '.[test]'      # the entry point makes mmkit load the plugin automatically
pytest                        # the contract kit: mmkit.testing
mmkit list                    # shows '$name' from plugin '$name'
mmkit -p no:$name list        # ... and blocks it
```

In a recipe, refer to it by name (`type = "$name"`) and optionally require it:

```toml
[plugins]
require = ["$dist>=0.1"]
```

## Publish

Bump `version` in `pyproject.toml` and `$module/__init__.py`, then
`python -m build && twine upload dist/*`. See mmkit's `docs/plugins.md` for the author guide.
'''
