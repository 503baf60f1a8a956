"""Recipes: TOML files naming components and training settings, validated before anything is built.

Every error names the file and the key path (``recipe.toml: model.fusion.dimm: unknown key; did you
mean dim?``). Validation reads component parameters from source (no torch import) and fills every
default, so the resolved recipe written to a run directory is complete.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from mmkit._internal.errors import MmkitError, ParameterError, RecipeError
from mmkit._internal.params import ParamInfo, toml_key, validate_params
from mmkit._internal.registry import Registry, get_registry
from mmkit._internal.safeio import MAX_KEY_PARTS

SECTIONS = ("run", "data", "model", "train", "plugins")

RUN_PARAMS = [
    ParamInfo("name", "str", "run", "run name; the run directory is <output_dir>/<name>"),
    ParamInfo("output_dir", "str", "runs", "parent folder of run directories (relative to the working dir)"),
    ParamInfo("seed", "int", 0, "seed for python, numpy, torch and data order"),
]
DATA_PARAMS = [
    ParamInfo("dataset", "str | None", None, "a registered dataset (mmkit list dataset), instead of manifests"),
    ParamInfo("options", "dict", {}, "keyword arguments of the dataset (mmkit show DATASET)"),
    ParamInfo("train", "str | None", None, "training manifest (.csv, .jsonl, .parquet), relative to the recipe"),
    ParamInfo("val", "str | None", None, "validation manifest"),
    ParamInfo("test", "str | None", None, "test manifest"),
    ParamInfo("split_column", "str | None", None, "column holding train/val/test when one manifest has all splits"),
    ParamInfo("columns", "dict", {}, "field -> column (or list of columns for tabular); fields are encoder "
                                     "names and the head's target fields"),
    ParamInfo("stream", "bool | Literal['auto']", "auto", "stream splits instead of reading them into memory; "
                                                          "auto = shard patterns, .tar files and folders stream"),
    ParamInfo("shuffle_buffer", "int", 0, "streamed training split: samples mixed in a shuffle buffer per "
                                          "process (0 = shard order shuffled per epoch only)"),
    ParamInfo("skip_bad_rows", "bool", False, "streamed splits: drop (and count) a bad sample instead of "
                                              "stopping with its error"),
]
TRAIN_PARAMS = [
    ParamInfo("epochs", "int", 10, "passes over the training split (ignored when max_steps > 0)"),
    ParamInfo("max_steps", "int", 0, "optimizer steps to train for; 0 = use epochs"),
    ParamInfo("batch_size", "int", 32, "samples per optimizer micro-batch (per process)"),
    ParamInfo("lr", "float", 3e-4, "peak learning rate"),
    ParamInfo("weight_decay", "float", 0.01, "AdamW/SGD weight decay (never applied to norms and biases)"),
    ParamInfo("optimizer", "Literal['adamw', 'sgd']", "adamw", "optimizer"),
    ParamInfo("momentum", "float", 0.9, "SGD momentum"),
    ParamInfo("schedule", "Literal['cosine', 'linear', 'constant']", "cosine", "decay after warm-up"),
    ParamInfo("warmup_steps", "int | Literal['auto']", "auto", "linear warm-up steps; auto = min(100, 25% of steps)"),
    ParamInfo("grad_accum", "int", 1, "micro-batches per optimizer step"),
    ParamInfo("grad_clip", "float", 1.0, "max global gradient norm; 0 = off"),
    ParamInfo("precision", "Literal['auto', 'fp32', 'bf16', 'fp16']", "auto",
              "auto = bf16 autocast on GPUs that support it, fp32 on CPU"),
    ParamInfo("device", "Literal['auto', 'cpu', 'cuda']", "auto", "auto = cuda when available"),
    ParamInfo("num_workers", "int | Literal['auto']", "auto", "DataLoader workers; auto = 0 on CPU, up to 8 on GPU"),
    ParamInfo("threads", "int | Literal['auto']", "auto",
              "torch intra-op threads; auto = the cores free to this process (affinity, cgroup quota, local "
              "ranks, loader workers), 1 when a probe finds the cores busy"),
    ParamInfo("data_cache", "Literal['auto', 'memory', 'disk', 'off']", "auto",
              "keep decoded samples (before augmentation) from the first epoch on: in memory, in a memory-mapped "
              "file in the run directory, or auto = memory within a budget from available RAM, the rest on disk"),
    ParamInfo("eval_every", "int", 0, "evaluate every N optimizer steps; 0 = at the end of every epoch "
              "(always at the end of training)"),
    ParamInfo("checkpoint_every", "int", 0, "also write checkpoints/last every N optimizer steps; 0 = at evaluations"),
    ParamInfo("log_every", "int", 10, "write a training-loss line to metrics.jsonl every N steps"),
    ParamInfo("early_stopping", "int", 0, "stop after N evaluations without improvement; 0 = off"),
    ParamInfo("monitor", "str", "auto", "metric for best checkpoint/early stopping (val.<name>); auto = the head's"),
    ParamInfo("monitor_mode", "Literal['auto', 'min', 'max']", "auto", "whether the monitor should go down or up"),
    ParamInfo("compile", "bool", False, "torch.compile the model"),
    ParamInfo("cache", "bool", True, "cache frozen encoders' outputs when their preprocessing is deterministic"),
    ParamInfo("tensorboard", "bool", False, "also log to TensorBoard (pip install 'mmkit[tb]')"),
    ParamInfo("strategy", "Literal['auto', 'ddp', 'fsdp']", "auto", "multi-process strategy (auto = ddp)"),
    ParamInfo("callbacks", "list", [], "extra training callbacks (mmkit list callback): names, or tables "
              "{ type = NAME, param = value }; the built-in ones always run (docs/training.md)"),
]
ENCODER_KEYS = [
    ParamInfo("type", "str", None, "registered encoder; default: the modality's default encoder"),
    ParamInfo("freeze", "bool", False, "no gradients, eval mode, no optimizer state"),
    ParamInfo("lr_mult", "float | Literal['auto']", "auto",
              "multiplier of train.lr for this encoder; auto = 1, or min(1, 1e-5 / train.lr) for an encoder that "
              "loaded pretrained weights (fine-tunes it at 1e-5; docs/models.md)"),
]
PLUGINS_PARAMS = [ParamInfo("require", "list", [], "plugin distributions with version specifiers")]

_CARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(@[A-Za-z0-9._-]+)?$")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class ComponentSpec:
    """A component named in a recipe: its registered ``type``, its parameters, engine keys."""

    kind: str
    type: str
    params: dict[str, Any]
    where: str
    freeze: bool = False
    lr_mult: float | str = "auto"


@dataclass
class Recipe:
    """A validated recipe with every default filled in."""

    source: str
    base_dir: Path
    run: dict[str, Any]
    data: dict[str, Any]
    encoders: dict[str, ComponentSpec]
    fusion: ComponentSpec
    head: ComponentSpec
    train: dict[str, Any]
    plugins: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe as TOML-ready data (None values dropped)."""
        def spec(s: ComponentSpec, engine: bool = False) -> dict[str, Any]:
            out: dict[str, Any] = {"type": s.type}
            if engine:
                out.update(freeze=s.freeze, lr_mult=s.lr_mult)
            out.update(s.params)
            return out

        data = {k: v for k, v in self.data.items() if v is not None}
        for split in ("train", "val", "test"):  # absolute, so the resolved recipe works from the run dir
            if data.get(split):
                data[split] = str((self.base_dir / data[split]).resolve())
        return _drop_none({
            "run": dict(self.run),
            "data": data,
            "model": {"encoders": {k: spec(v, True) for k, v in self.encoders.items()},
                      "fusion": spec(self.fusion), "head": spec(self.head)},
            "train": dict(self.train),
            "plugins": dict(self.plugins),
        })

    def model_signature(self) -> dict[str, Any]:
        """What determines the model's structure (used to refuse resuming a different model)."""
        return self.to_dict()["model"]


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


def parse_value(text: str, where: str = "--set") -> Any:
    """A ``--set`` value: a TOML value if it parses (``3e-4``, ``true``, ``[1, 2]``), else the string.

    Values nested too deeply or with numbers too long to read are a RecipeError naming ``where``.
    """
    from mmkit._internal.safeio import MAX_TOML_BYTES, check_toml_text

    if len(text) > MAX_TOML_BYTES:
        raise RecipeError(f"{where}: the value is longer than {MAX_TOML_BYTES} characters")
    check_toml_text(f"v = {text}", where, RecipeError, lines=False)
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(doc: dict[str, Any], overrides: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a recipe document (a copy is returned)."""
    doc = copy.deepcopy(doc)
    if isinstance(doc.get("model"), str):  # `model = "CARD"`: overrides then go under the card's keys
        doc["model"] = {"card": doc["model"]}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"{source} {item!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
        parts = key.strip().split(".")
        if len(parts) > MAX_KEY_PARTS:
            raise RecipeError(f"{source} {item[:80]!r}...: a key of more than {MAX_KEY_PARTS} parts")
        set_path(doc, parts, parse_value(value.strip(), f"{source} {key.strip()}"), f"{source} {item!r}")
    return doc


def set_path(doc: dict[str, Any], parts: Sequence[str], value: Any, what: str) -> None:
    """``doc[parts[0]][parts[1]]... = value``, creating tables; a RecipeError (``what: a.b is not a table``)
    where a part on the way is a value."""
    node = doc
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"{what}: {'.'.join(parts[: i + 1])} is not a table")
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's document, bounded (size, nesting, key length, numbers; see :mod:`mmkit._internal.safeio`):
    every problem is a RecipeError naming the file (and line)."""
    from mmkit._internal.safeio import MAX_TOML_BYTES, loads_toml, read_text

    path = Path(path)
    if not path.exists():
        raise RecipeError(f"{path}: no such recipe file")
    if path.is_dir():
        raise RecipeError(f"{path}: is a folder, not a recipe file")
    return loads_toml(read_text(path, max_bytes=MAX_TOML_BYTES, error=RecipeError), str(path), RecipeError)


def load_card(name: str) -> dict[str, Any]:
    """A model card from the built-in registry folder by name (``NAME`` or ``NAME@VERSION``)."""
    if not _CARD_NAME.fullmatch(name) or ".." in name:
        raise RecipeError(f"invalid model name {name!r}: letters, digits, '.', '_', '-' only")
    from importlib import resources

    base = name.split("@")[0]
    folder = resources.files("mmkit_registry")
    card = folder / f"{base}.toml"
    if not card.is_file():
        import difflib

        names = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
        close = difflib.get_close_matches(base, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; built-in cards: {', '.join(names) or '(none)'}"
        raise RecipeError(f"unknown model card {name!r}{hint}")
    return tomllib.loads(card.read_text(encoding="utf-8"))


def _expand_env(text: str, path: str, where: str) -> str:
    def value(match: re.Match[str]) -> str:
        var = match.group(1)
        if not os.environ.get(var):
            raise RecipeError(f"{where}: {path} = {text!r}: environment variable {var} is not set; "
                              f"export {var}=/path/to/the/folder, or set {path} in your recipe")
        return os.environ[var]

    return _ENV_REF.sub(value, text)


def expand_card_env(doc: dict[str, Any], card: dict[str, Any], where: str, key: str = "") -> dict[str, Any]:
    """Replace ``${VAR}`` in the string values a card wrote (``path = "${MMKIT_CLIP_PATH}"``) by the
    environment variable's value, where the recipe kept the card's value. An unset or empty variable
    is an error naming ``where`` (the card), the key and the variable."""
    out = dict(doc)
    for name, card_value in card.items():
        path = f"{key}.{name}" if key else name
        if isinstance(card_value, dict) and isinstance(out.get(name), dict):
            out[name] = expand_card_env(out[name], card_value, where, path)
        elif isinstance(card_value, str) and out.get(name) == card_value and _ENV_REF.search(card_value):
            out[name] = _expand_env(card_value, path, where)
    return out


def _check_plugins(requirements: list[Any], where: str, registry: Registry) -> None:
    import importlib.metadata

    from packaging.requirements import InvalidRequirement, Requirement

    for item in requirements:
        try:
            req = Requirement(str(item))
        except InvalidRequirement as exc:
            raise RecipeError(f"{where}: invalid requirement {item!r}: {exc}") from exc
        try:
            version = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise RecipeError(f"{where}: requires plugin {req} which is not installed "
                              f"(pip install '{req}')") from None
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            raise RecipeError(f"{where}: requires {req} but {req.name} {version} is installed")
        problem = registry.requirement_problem(req.name)
        if problem:
            raise RecipeError(f"{where}: requires {req}, but {problem}")


def _section(doc: dict[str, Any], name: str, src: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise RecipeError(f"{src}: {name}: expected a table, got {type(value).__name__}")
    return value


def _fill(values: dict[str, Any], infos: list[ParamInfo], where: str) -> dict[str, Any]:
    try:
        validate_params(values, infos, where)
    except ParameterError as exc:
        raise RecipeError(str(exc)) from None
    return {p.name: copy.deepcopy(values.get(p.name, p.default)) for p in infos}


def _component(registry: Registry, kind: str, table: Any, where: str, engine_keys: list[ParamInfo] = (),
               default_type: str | None = None) -> ComponentSpec:
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: expected a table, got {type(table).__name__}")
    table = dict(table)
    ctype = table.pop("type", default_type)
    if ctype is None:
        raise RecipeError(f"{where}.type: missing required key (mmkit list {kind} shows the choices)")
    if not isinstance(ctype, str):
        raise RecipeError(f"{where}.type: expected str, got {type(ctype).__name__}")
    engine = {p.name: table.pop(p.name) for p in engine_keys if p.name in table and p.name != "type"}
    try:
        info = registry.describe(kind, ctype)
    except MmkitError as exc:
        raise RecipeError(f"{where}.type: {exc}") from None
    infos = list(info.params or ())
    params = _fill(table, infos, where) if infos or table else {}
    spec = ComponentSpec(kind, ctype, params, where)
    for p in engine_keys:
        if p.name == "type":
            continue
        value = engine.get(p.name, p.default)
        from mmkit._internal.params import value_matches

        if not value_matches(value, p.type):
            raise RecipeError(f"{where}.{p.name}: expected {p.type}, got {type(value).__name__} {value!r}")
        if p.name == "lr_mult" and value != "auto" and not (math.isfinite(value) and value >= 0):
            raise RecipeError(f"{where}.lr_mult: expected a finite number >= 0 or 'auto', got {value!r}")
        setattr(spec, p.name, value)
    return spec


def _check_train_ranges(train: dict[str, Any], src: str) -> None:
    """Ranges the types cannot express (a zero batch size or a NaN lr would fail deep inside torch)."""
    def bad(key: str, rule: str) -> RecipeError:
        return RecipeError(f"{src}: train.{key}: must be {rule}, got {train[key]!r}")

    for key in ("batch_size", "grad_accum", "log_every"):
        if train[key] < 1:
            raise bad(key, "at least 1")
    for key in ("epochs", "max_steps", "eval_every", "checkpoint_every", "early_stopping"):
        if train[key] < 0:
            raise bad(key, "0 or more")
    for key in ("warmup_steps", "num_workers"):
        if train[key] != "auto" and train[key] < 0:
            raise bad(key, "'auto' or 0 or more")
    if train["threads"] != "auto" and not 1 <= train["threads"] <= 1024:
        raise bad("threads", "'auto' or between 1 and 1024")
    for key in ("lr", "weight_decay", "momentum", "grad_clip"):
        if not math.isfinite(train[key]) or train[key] < 0:
            raise bad(key, "a finite number >= 0")


MAX_SEED = 2**32 - 1
_INT64 = (-(2**63), 2**63 - 1)


def _check_int_sizes(node: Any, src: str, path: str = "") -> None:
    """No integer in a recipe is beyond int64: torch, numpy and the data loaders cannot hold one."""
    if isinstance(node, dict):
        for key, value in node.items():
            _check_int_sizes(value, src, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_int_sizes(value, src, f"{path}[{i}]")
    elif isinstance(node, int) and not isinstance(node, bool) and not _INT64[0] <= node <= _INT64[1]:
        raise RecipeError(f"{src}: {path}: {str(node)[:30]}... is too large for a 64-bit integer")


def _check_run_ranges(run: dict[str, Any], src: str) -> None:
    if not 0 <= run["seed"] <= MAX_SEED:
        raise RecipeError(f"{src}: run.seed: must be between 0 and {MAX_SEED} (numpy's seed range), "
                          f"got {run['seed']}")


def build_recipe(doc: dict[str, Any], source: str = "<recipe>", base_dir: str | Path = ".",
                 registry: Registry | None = None) -> Recipe:
    """Validate a recipe document and fill every default."""
    registry = registry or get_registry()
    src = source
    if not isinstance(doc, dict):
        raise RecipeError(f"{src}: a recipe must be a TOML table")
    _check_int_sizes(doc, src)
    model = doc.get("model", {})
    if isinstance(model, str) or (isinstance(model, dict) and "card" in model):
        card_name = model if isinstance(model, str) else model.get("card")
        if not isinstance(card_name, str):
            raise RecipeError(f"{src}: model.card: expected str, got {type(card_name).__name__}")
        try:
            card = load_card(card_name)
        except RecipeError as exc:
            raise RecipeError(f"{src}: {'model' if isinstance(model, str) else 'model.card'}: {exc}") from None
        over = {k: v for k, v in doc.items() if k != "model"}
        if isinstance(model, dict):
            over["model"] = {k: v for k, v in model.items() if k != "card"}
        sections = {k: v for k, v in card.items() if k in SECTIONS}
        doc = expand_card_env(_deep_merge(sections, over), sections, f"{src}: model card {card_name!r}")
    for key in doc:
        if key not in SECTIONS:
            import difflib

            close = difflib.get_close_matches(key, SECTIONS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; sections: {', '.join(SECTIONS)}"
            raise RecipeError(f"{src}: {toml_key(key)}: unknown key{hint}")
    plugins = _fill(_section(doc, "plugins", src), PLUGINS_PARAMS, f"{src}: plugins")
    if plugins["require"]:
        _check_plugins(plugins["require"], f"{src}: plugins.require", registry)
    run = _fill(_section(doc, "run", src), RUN_PARAMS, f"{src}: run")
    _check_run_ranges(run, src)
    data = _fill(_section(doc, "data", src), DATA_PARAMS, f"{src}: data")
    train = _fill(_section(doc, "train", src), TRAIN_PARAMS, f"{src}: train")
    _check_train_ranges(train, src)
    from mmkit._internal.callbacks import check_entries

    check_entries(train["callbacks"], registry, src)
    if data["dataset"] is None and data["train"] is None:
        raise RecipeError(f"{src}: data: set dataset = \"shapes\" (a registered dataset) or train = \"FILE\"")
    if data["shuffle_buffer"] < 0:
        raise RecipeError(f"{src}: data.shuffle_buffer: must be 0 or more, got {data['shuffle_buffer']!r}")
    if data["dataset"] is not None:
        try:
            info = registry.describe("dataset", data["dataset"])
        except MmkitError as exc:
            raise RecipeError(f"{src}: data.dataset: {exc}") from None
        data["options"] = _fill(data["options"], list(info.params or ()), f"{src}: data.options")
    for key, col in data["columns"].items():
        if not isinstance(col, (str, list)) or (isinstance(col, list) and not all(isinstance(c, str) for c in col)):
            raise RecipeError(f"{src}: data.columns.{key}: expected a column name or a list of names")
    mtable = _section(doc, "model", src)
    for key in mtable:
        if key not in ("encoders", "fusion", "head"):
            raise RecipeError(f"{src}: model.{key}: unknown key; expected encoders, fusion, head")
    enc_tables = mtable.get("encoders")
    if not isinstance(enc_tables, dict) or not enc_tables:
        raise RecipeError(f"{src}: model.encoders: missing; add e.g. [model.encoders.image] type = \"timm\"")
    encoders = {}
    for fname, table in enc_tables.items():
        where = f"{src}: model.encoders.{fname}"
        default = None
        if isinstance(table, dict) and "type" not in table:
            try:
                default = registry.get("modality", fname).load().default_encoder or None
            except MmkitError:
                default = None
        encoders[fname] = _component(registry, "encoder", table, where, ENCODER_KEYS, default)
    if "fusion" not in mtable:
        raise RecipeError(f"{src}: model.fusion: missing; add [model.fusion] type = \"concat\" (mmkit list fusion)")
    if "head" not in mtable:
        raise RecipeError(f"{src}: model.head: missing; add [model.head] type = \"classification\" (mmkit list head)")
    fusion = _component(registry, "fusion", mtable["fusion"], f"{src}: model.fusion")
    head = _component(registry, "head", mtable["head"], f"{src}: model.head")
    return Recipe(src, Path(base_dir), run, data, encoders, fusion, head, train, plugins)


def load_recipe(path: str | Path, overrides: Iterable[str] = (), registry: Registry | None = None) -> Recipe:
    """Read, override (``a.b=value``) and validate a recipe file."""
    path = Path(path)
    doc = apply_overrides(read_toml(path), overrides)
    return build_recipe(doc, str(path), path.parent, registry)


def dump_toml(data: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(_drop_none(data))


def reference_markdown() -> str:
    """The recipe reference (docs/recipes.md's key tables), generated from the definitions above."""
    out = []
    for title, infos in (("[run]", RUN_PARAMS), ("[data]", DATA_PARAMS), ("[train]", TRAIN_PARAMS),
                         ("[model.encoders.FIELD] (engine keys; the rest are the encoder's parameters)", ENCODER_KEYS),
                         ("[plugins]", PLUGINS_PARAMS)):
        out.append(f"### {title}\n\n| key | type | default | meaning |\n|---|---|---|---|")
        for p in infos:
            default = "(required)" if p.required else f"`{p.default!r}`"
            kind = p.type.replace("|", "\\|")  # a bare | would split the table cell
            out.append(f"| `{p.name}` | `{kind}` | {default} | {p.doc} |")
        out.append("")
    return "\n".join(out)
