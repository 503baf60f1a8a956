"""``mmkit new-plugin``: write a ready-to-install plugin package from templates.

The generated package ``mmkit-NAME/`` has a ``pyproject.toml`` registering ``mmkit_NAME.plugin``
in the ``mmkit`` entry-point group, a light plugin module (hooks only, registration by import
string), one component skeleton per kind that passes :mod:`mmkit.testing`, a test file and a README.
Several kinds go into one package (``--kind modality,encoder=gru,fusion=gated``), and a kind can be
added to an existing package later (``--add``). The templates are plain strings in this module
(``$placeholders``, :class:`string.Template`) and use only mmkit's public API.
"""

from __future__ import annotations

import ast
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Iterable

from mmkit._internal.errors import MmkitError
from mmkit._internal.hookspecs import KIND_HOOKS

#: Kinds that have a template, in the order they are generated (a modality's encoder follows it).
KINDS = ("modality", "encoder", "fusion", "head")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(MmkitError):
    """The plugin cannot be generated (invalid name, existing folder)."""


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").split("_"))


def _check_name(name: str, what: str = "plugin name") -> str:
    stem = name.replace("-", "_")
    if not NAME_PATTERN.fullmatch(stem) or stem.endswith("_") or "__" in stem:
        raise ScaffoldError(f"invalid {what} {name!r}: use lowercase letters, digits, '_' or '-', starting with "
                            "a letter (e.g. 'gated', 'audio-cnn')")
    return stem


@dataclass(frozen=True)
class PluginNames:
    """The names derived from ``NAME``."""

    name: str  # entry-point (plugin) name and default component name, as given (lowercase, '-' allowed)
    module: str  # the Python package: mmkit_NAME with '-' -> '_'
    dist: str  # distribution and folder name: mmkit-NAME
    cls: str  # CamelCase stem of the class names

    @classmethod
    def from_name(cls, name: str) -> "PluginNames":
        stem = _check_name(name)
        return cls(name, f"mmkit_{stem}", f"mmkit-{name}", _camel(stem))


@dataclass(frozen=True)
class Part:
    """One generated component: its kind, its registered name and its class."""

    kind: str
    name: str

    @property
    def class_name(self) -> str:
        return _camel(self.name) + CLASS_SUFFIX[self.kind]


def parse_kinds(spec: str | Iterable[str], default_name: str) -> list[Part]:
    """``"modality,encoder=gru,fusion"`` (or a list of such items) -> the parts to generate, in
    :data:`KINDS` order. A component is called ``default_name`` unless ``KIND=NAME`` says otherwise;
    a modality brings an encoder for it."""
    items = [spec] if isinstance(spec, str) else list(spec)
    names: dict[str, str] = {}
    for item in (x.strip() for chunk in items for x in chunk.split(",")):
        if not item:
            continue
        kind, _, name = item.partition("=")
        kind, name = kind.strip(), name.strip() or default_name
        if kind not in KINDS:
            raise ScaffoldError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)} (KIND or KIND=NAME, "
                                "comma-separated)")
        if kind in names:
            raise ScaffoldError(f"kind {kind!r} is given twice; a generated package has one component per kind")
        _check_name(name, f"{kind} name")
        names[kind] = name
    if not names:
        raise ScaffoldError(f"no kind given; choose from {', '.join(KINDS)}")
    if "modality" in names:
        names.setdefault("encoder", default_name)
    return [Part(k, names[k]) for k in KINDS if k in names]


def plugin_files(name: str, kind: str | Iterable[str] = "encoder", mmkit_version: str | None = None) -> dict[str, str]:
    """Relative path -> content of every file of a new package for ``name`` and ``kind`` (one kind,
    ``"modality,encoder=gru"``, or a list)."""
    names = PluginNames.from_name(name)
    parts = parse_kinds(kind, name)
    if mmkit_version is None:
        from mmkit import __version__ as mmkit_version
    modality = next((p.name for p in parts if p.kind == "modality"), None)
    values = _values(names, parts, mmkit_version, modality)
    m = names.module
    files = {"pyproject.toml": PYPROJECT, "README.md": README, f"{m}/__init__.py": INIT,
             f"{m}/plugin.py": PLUGIN + "".join(_hook(p, m, modality) for p in parts),
             f"tests/test_{m}.py": TEST_HEADER + "".join(_tests(p, modality, m) for p in parts)}
    out = {path: Template(text).substitute(values) for path, text in files.items()}
    out.update(_component_files(names, parts, modality))
    return out


def _values(names: PluginNames, parts: list[Part], mmkit_version: str, modality: str | None) -> dict[str, str]:
    listing = "\n".join(f"- {p.kind} `{p.name}` (`{names.module}/{p.kind}.py`): {_summary(p, modality)}"
                        for p in parts)
    return {"name": names.name, "module": names.module, "dist": names.dist, "mmkit_version": mmkit_version,
            "kinds": ",".join(p.kind if p.name == names.name else f"{p.kind}={p.name}" for p in parts),
            "summary": "; ".join(f"{p.kind} {p.name}" for p in parts), "components": listing,
            "first": parts[0].name}


def _summary(part: Part, modality: str | None) -> str:
    if part.kind == "encoder" and modality:
        return f"Per-value MLP tokens of a {modality} sequence, masked-mean pooled"
    return SUMMARIES[part.kind]


def _hook(part: Part, module: str, modality: str | None = None) -> str:
    return Template(HOOK).substitute(hook=KIND_HOOKS[part.kind], name=part.name, module=module, kind=part.kind,
                                     class_name=part.class_name, summary=_summary(part, modality))


def _tests(part: Part, modality: str | None, module: str) -> str:
    template = TESTS["sequence-encoder" if part.kind == "encoder" and modality else part.kind]
    return Template(template).substitute(name=part.name, modality=modality or "text", module=module)


def _component_files(names: PluginNames, parts: list[Part], modality: str | None) -> dict[str, str]:
    encoder = next((p.name for p in parts if p.kind == "encoder"), "")
    out = {}
    for part in parts:
        template = SEQUENCE_ENCODER if part.kind == "encoder" and modality else COMPONENTS[part.kind]
        out[f"{names.module}/{part.kind}.py"] = Template(template).substitute(
            name=part.name, class_name=part.class_name, cls=_camel(part.name), modality=modality or "text",
            encoder=encoder)
    return out


def create_plugin(name: str, kind: str | Iterable[str] = "encoder", directory: str | Path = ".") -> Path:
    """Write the package ``mmkit-NAME/`` into ``directory``; refuses to touch an existing folder."""
    files = plugin_files(name, kind)
    root = Path(directory) / PluginNames.from_name(name).dist
    if root.exists():
        raise ScaffoldError(f"{root} already exists; nothing was written (choose another name or --dir, or add "
                            "kinds to it with --add)")
    for rel, text in files.items():
        _write(root / rel, text)
    return root


def add_to_plugin(name: str, kind: str | Iterable[str], directory: str | Path = ".") -> tuple[Path, list[str]]:
    """Add components of new kinds to the existing package ``DIR/mmkit-NAME``: their modules, a hook
    each in the plugin module and their tests. Nothing is overwritten; everything is checked before
    anything is written. Returns the package folder and the files written or extended."""
    names = PluginNames.from_name(name)
    root = Path(directory) / names.dist
    m = names.module
    plugin_py, test_py = root / m / "plugin.py", root / "tests" / f"test_{m}.py"
    if not plugin_py.is_file():
        raise ScaffoldError(f"{plugin_py} does not exist; create the package first (without --add)")
    parts = parse_kinds(kind, name)
    modality = next((p.name for p in parts if p.kind == "modality"), None) or _existing_modality(root / m)
    plugin_text = plugin_py.read_text(encoding="utf-8")
    for part in parts:
        hook, module_file = KIND_HOOKS[part.kind], root / m / f"{part.kind}.py"
        if re.search(rf"^def {hook}\(", plugin_text, re.M) or module_file.exists():
            raise ScaffoldError(f"{names.dist} already has a {part.kind} ({hook} in {plugin_py.name} or "
                                f"{module_file.name}); nothing was written")
    writes = {root / rel: text for rel, text in _component_files(names, parts, modality).items()}
    writes[plugin_py] = plugin_text.rstrip("\n") + "\n" + "".join(_hook(p, m, modality) for p in parts)
    if test_py.is_file():
        writes[test_py] = test_py.read_text(encoding="utf-8").rstrip("\n") + "\n\n\n" + "".join(
            _tests(p, modality, m) for p in parts).lstrip("\n")
    for path, text in writes.items():
        _write(path, text)
    return root, sorted(str(p.relative_to(root)) for p in writes)


def _existing_modality(package: Path) -> str | None:
    """The ``name`` of the modality class in an existing package's ``modality.py``, if any."""
    path = package / "modality.py"
    if not path.is_file():
        return None
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["name"]:
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    return None


def _write(path: Path, text: str) -> None:
    """Write ``text`` atomically (temp file + rename): an interrupted run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------ templates
SUMMARIES = {
    "encoder": "Byte-level text encoder (tokens + masked-mean pooled vector)",
    "fusion": "Gated mean of the present modalities' projected vectors",
    "head": "Linear classifier over integer labels; accuracy",
    "modality": "Sequences of numbers (a list in the cell, or a text file of numbers)",
}
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
(``mmkit list``) imports nothing but mmkit; a component's module is imported when a recipe builds it."""

import mmkit

from $module import __version__  # noqa: F401 - `mmkit list` shows it (with -p / MMKIT_PLUGINS)
'''

HOOK = '''

@mmkit.hookimpl
def $hook(register):
    register("$name", "$module.$kind:$class_name",
             summary="$summary")
'''

ENCODER = '''\
"""The ``$name`` encoder: UTF-8 bytes -> embeddings -> a small MLP; pooled = masked mean.

Replace the body with your model; keep the contract (see ``mmkit.Encoder``): ``preprocess`` runs in
DataLoader workers, ``collate`` pads the present samples, ``forward`` returns an ``mmkit.Embedding``
whose values for a sample do not depend on the other samples of the batch.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from mmkit import Embedding, Encoder, ParameterError


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

Contract (see ``mmkit.Fusion``): any subset of the modalities may be present per sample, a modality
may be missing from the dict, and absent rows must not influence the output. The constructor takes
``dim`` and ``modality_dropout`` like the built-in fusions, so ``--set model.fusion.type=$name``
swaps it into a recipe written for another fusion.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from mmkit import Embedding, Fused, Fusion, ParameterError


class $class_name(Fusion):
    """Projects each modality's pooled vector to ``dim``, weighs it by a learned sigmoid gate and
    averages over the modalities present in each sample.

    Args:
        dim: width of the fused vector.
        dropout: dropout on the fused vector (training only).
        modality_dropout: probability of hiding each present modality of a sample in training (a
            sample whose modalities would all be hidden keeps them).
    """

    has_tokens = False

    def __init__(self, input_dims: dict[str, int], token_inputs: dict[str, bool] | None = None, dim: int = 128,
                 dropout: float = 0.0, modality_dropout: float = 0.0) -> None:
        super().__init__()
        if dim < 1 or not 0.0 <= modality_dropout < 1.0:
            raise ParameterError(f"$name: need dim >= 1 and 0 <= modality_dropout < 1, "
                                 f"got {dim}, {modality_dropout}")
        self.dim = dim
        self.modality_dropout = modality_dropout
        self.modalities = sorted(input_dims)
        self.proj = nn.ModuleDict({m: nn.Linear(input_dims[m], dim) for m in self.modalities})
        self.gate = nn.ModuleDict({m: nn.Linear(dim, 1) for m in self.modalities})
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def _taking_part(self, embeddings: Mapping[str, Embedding]) -> dict[str, torch.Tensor]:
        """Per modality, the samples that take part: the present ones, less modality dropout in training."""
        keep = {m: e.present for m, e in embeddings.items() if m in self.proj}
        if not (self.training and self.modality_dropout > 0 and keep):
            return keep
        present = torch.stack(list(keep.values()), dim=1)
        kept = present & (torch.rand(present.shape, device=present.device) >= self.modality_dropout)
        kept = torch.where(kept.any(dim=1, keepdim=True), kept, present)
        return {m: kept[:, i] for i, m in enumerate(keep)}

    def forward(self, embeddings: Mapping[str, Embedding]) -> Fused:
        first = next(iter(embeddings.values()))
        batch = first.pooled.shape[0]
        total = first.pooled.new_zeros(batch, self.dim)
        weight = first.pooled.new_zeros(batch, 1)
        for m, keep in self._taking_part(embeddings).items():
            present = keep.unsqueeze(-1).to(total.dtype)
            vec = self.proj[m](embeddings[m].pooled)
            gate = torch.sigmoid(self.gate[m](vec)) * present  # absent rows get weight 0
            total = total + torch.where(present.bool(), gate * vec, torch.zeros_like(vec))
            weight = weight + gate
        pooled = self.norm(self.drop(total / weight.clamp(min=1e-6)))
        return Fused(pooled=pooled, inputs=dict(embeddings))
'''

HEAD = '''\
"""The ``$name`` head: a linear classifier over integer labels ``0 .. num_classes-1``.

Contract (see ``mmkit.Head``): ``fields`` names the target columns, the loss is None without
targets, ``new_metrics`` accumulates over an evaluation, ``decode`` gives JSON rows.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmkit import Batch, DataError, Fused, Head, Metrics, Output, ParameterError


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
file that does not exist is an error (``Modality.resolve_path`` raises it). Only the standard library
is imported here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mmkit import DataError, Modality


class $class_name(Modality):
    """Sequences of numbers: a list in the cell, or a text file of numbers."""

    name = "$name"
    default_encoder = "$encoder"  # used when a recipe's [model.encoders.$name] table has no type

    def load(self, value: Any, base_dir: Path | None = None) -> list[float]:
        if isinstance(value, (list, tuple)):
            return [float(v) for v in value]
        if isinstance(value, (str, os.PathLike)):
            path = self.resolve_path(value, base_dir)  # ~ and relative paths; a missing file is a DataError
            text = path.read_text(encoding="utf-8")
            try:
                return [float(v) for v in re.split(r"[\\s,]+", text.strip()) if v]
            except ValueError as exc:
                raise DataError(f"$name file {path}: {exc}") from exc
        raise DataError(f"a $name cell must be a list of numbers or a file path, got {type(value).__name__}")
'''

SEQUENCE_ENCODER = '''\
"""The ``$name`` encoder of the ``$modality`` modality: one token per value (an MLP of the value),
masked-mean pooled."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from mmkit import Embedding, Encoder, ParameterError


class $class_name(Encoder):
    """Encodes a sequence of numbers: each value becomes a token through a small MLP (with a learned
    position embedding); pooled is the masked mean of the tokens.

    Args:
        dim: width of the tokens and of the pooled vector.
        max_length: sequences are cut to this many values.
    """

    modality = "$modality"  # the modality whose loaded values this encoder reads
    has_tokens = True
    deterministic_train = True

    def __init__(self, dim: int = 64, max_length: int = 512) -> None:
        super().__init__()
        if dim < 1 or max_length < 1:
            raise ParameterError(f"$name: dim and max_length must be positive, got {dim}, {max_length}")
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

TEST_HEADER = '''\
"""Tests of plugin $name, with mmkit's contract kit (mmkit.testing). The ``mmkit_registry`` fixture
(an isolated registry) comes with mmkit, through its pytest plugin."""

from __future__ import annotations

import torch

import mmkit.testing as kit

import $module.plugin

# Tiny models: one torch thread is fastest, and on a shared or busy machine more threads spin-wait
# for each other (mmkit's docs/performance.md); run the suite with OMP_NUM_THREADS=1 as well.
torch.set_num_threads(1)


def test_plugin_module_is_light_and_its_components_are_documented():
    kit.check_plugin_module("$module.plugin")
'''

TESTS = {
    "encoder": '''

def test_encoder_contract(mmkit_registry):
    mmkit_registry.register_plugin($module.plugin)
    encoder = mmkit_registry.create("encoder", "$name", dim=16)
    emb = kit.check_encoder(encoder, ["a short text", "a somewhat longer text to pad against", "x"])
    assert emb.pooled.shape == (3, 16)
''',
    "sequence-encoder": '''

def test_encoder_contract(mmkit_registry):
    mmkit_registry.register_plugin($module.plugin)
    encoder = mmkit_registry.create("encoder", "$name", dim=16)
    assert encoder.modality == "$modality"
    emb = kit.check_encoder(encoder, [[1.0, 2.0, 3.0], [0.5], [4.0, 5.0]])
    assert emb.pooled.shape == (3, 16)
''',
    "fusion": '''

def test_fusion_contract(mmkit_registry):
    mmkit_registry.register_plugin($module.plugin)

    def build(input_dims, token_inputs):
        return mmkit_registry.create("fusion", "$name", context={"input_dims": input_dims,
                                                              "token_inputs": token_inputs}, dim=16)

    fused = kit.check_fusion(build)
    assert fused.pooled.shape == (6, 16)


def test_fusion_modality_dropout_hides_modalities_only_in_training(mmkit_registry):
    mmkit_registry.register_plugin($module.plugin)
    fusion = mmkit_registry.create("fusion", "$name", context={"input_dims": {"a": 4, "b": 4}}, dim=8,
                                   modality_dropout=0.5)
    embs = kit.random_embeddings({"a": 4, "b": 4}, 64)
    fusion.eval()
    with torch.no_grad():
        assert torch.equal(fusion(embs).pooled, fusion(embs).pooled)  # no dropout in eval
        fusion.train()
        torch.manual_seed(0)
        assert not torch.allclose(fusion(embs).pooled, fusion(embs).pooled)
''',
    "head": '''

def test_head_contract(mmkit_registry):
    from mmkit import Batch, Fused

    mmkit_registry.register_plugin($module.plugin)
    head = mmkit_registry.create("head", "$name", context={"input_dim": 16, "modality_dims": {"image": 8}},
                                 num_classes=3)
    rows = [{"label": i % 3} for i in range(6)]
    head.fit(rows)
    targets = head.collate_targets([head.preprocess_target(r) for r in rows])
    present = {"image": torch.ones(6, dtype=torch.bool)}
    fused = Fused(torch.randn(6, 16), inputs=kit.random_embeddings({"image": 8}, 6))
    out = kit.check_head(head, fused, Batch({}, present, targets, torch.arange(6)))
    assert out.preds["logits"].shape == (6, 3)
''',
    "modality": '''

def test_modality_contract(mmkit_registry, tmp_path):
    mmkit_registry.register_plugin($module.plugin)
    (tmp_path / "a.txt").write_text("1.5 2 3\\n4")
    modality = mmkit_registry.get("modality", "$name").load()
    values = kit.check_modality(modality, ["a.txt", [0.5, 1.0]], tmp_path)
    assert values == [[1.5, 2.0, 3.0, 4.0], [0.5, 1.0]]
''',
}

README = '''\
# $dist

An mmkit plugin: $summary.

Generated by `mmkit new-plugin $name --kind $kinds`. The plugin module `$module/plugin.py`
registers the components by import string, so `mmkit list` never imports torch:

$components

Add a kind later, from the folder that holds `$dist/`: `mmkit new-plugin $name --add --kind head`.

## Try it without installing

```bash
PYTHONPATH=. MMKIT_PLUGINS=$module.plugin mmkit list
PYTHONPATH=. MMKIT_PLUGINS=$module.plugin mmkit plugins
```

## Install, test, use

```bash
pip install -e '.[test]'      # the entry point makes mmkit load the plugin automatically
OMP_NUM_THREADS=1 pytest      # the contract kit: mmkit.testing
mmkit list                    # shows the components, from plugin '$name'
mmkit -p no:$name list        # ... and blocks it
```

In a recipe, refer to a component by name (`type = "$first"`) and optionally require the plugin:

```toml
[plugins]
require = ["$dist>=0.1"]
```

## Publish

Bump `version` in `pyproject.toml` and `$module/__init__.py`, then
`python -m build && twine upload dist/*`. See mmkit's `docs/plugins.md` for the author guide.
'''
