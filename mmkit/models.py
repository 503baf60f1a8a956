"""The model registry: built-in cards (recipes shipped in ``mmkit_registry``) and registered models.

A registered model is a trained run frozen into ``<registry>/<NAME>/<VERSION>/``::

    model.safetensors      the weights (the only tensor file; never a pickle)
    recipe.resolved.toml   the complete recipe the run trained
    fit_state.json         label maps, vocabularies, statistics (components' ``get_fit_state``)
    summary.json           the run's summary (final/best metrics), when the run finished
    metrics.jsonl          the run's metric log, when present
    card.json              name, version, task, metrics, created, sha256 of the weights, input columns

``card.json`` is written last (atomically), so a version folder without it is incomplete and ignored.
Versions are integers assigned with ``os.mkdir`` (atomic): two concurrent registrations of one name
get distinct versions. The registry folder is ``--registry DIR``, else ``$MMKIT_REGISTRY``, else
``$XDG_DATA_HOME/mmkit/models`` (default ``~/.local/share/mmkit/models``).

Anywhere a model is asked for, it may be named ``NAME`` (latest version), ``NAME@3``,
``NAME@latest``, a registered version folder, a ``<registry>/NAME`` folder (its latest version), or a
run directory (``runs/quickstart``: its ``best`` checkpoint, else ``last``).

Nothing here imports torch: listing and registering are file operations.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import os
import re
import shutil
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mmkit.errors import MmkitError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHTS = "model.safetensors"
RECIPE = "recipe.resolved.toml"
FIT_STATE = "fit_state.json"
CARD = "card.json"
CARD_FORMAT = 1


class ModelNotFoundError(MmkitError, LookupError):
    """No model of that name, version or path."""


class ChecksumError(MmkitError):
    """A registered model's weights do not match the sha256 its card recorded."""


# ------------------------------------------------------------------------------------------ basics
def registry_dir(explicit: str | Path | None = None) -> Path:
    """The user registry folder: ``explicit``, else ``$MMKIT_REGISTRY``, else the user data dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("MMKIT_REGISTRY")
    if env:
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home).expanduser() / "mmkit" / "models"


def validate_name(name: str) -> str:
    """A model name: letters, digits, ``.``, ``_``, ``-``; starting with a letter or digit (no paths)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise MmkitError(f"invalid model name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                         f"letter or digit (no '/', no '..'), e.g. 'claims-v2'")
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` / ``NAME@latest`` -> (NAME, None); ``NAME@3`` -> (NAME, 3)."""
    name, sep, version = ref.partition("@")
    validate_name(name)
    if not sep or version == "latest":
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise MmkitError(f"invalid model version in {ref!r}: expected NAME@N (N = 1, 2, ...) or NAME@latest")
    return name, int(version)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise MmkitError(f"{path}: unreadable: {exc}") from exc


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------- built-ins
def builtin_cards() -> list[dict[str, Any]]:
    """The cards shipped in ``mmkit_registry`` (parsed TOML), sorted by name."""
    from importlib import resources

    cards = []
    for entry in resources.files("mmkit_registry").iterdir():
        if entry.name.endswith(".toml"):
            doc = tomllib.loads(entry.read_text(encoding="utf-8"))
            doc.setdefault("name", entry.name[:-5])
            cards.append(doc)
    return sorted(cards, key=lambda c: c["name"])


def builtin_card(name: str) -> dict[str, Any] | None:
    return next((c for c in builtin_cards() if c["name"] == name), None)


def _card_summary(card: Mapping[str, Any]) -> dict[str, Any]:
    model = card.get("model", {})
    enc = {k: v.get("type") for k, v in model.get("encoders", {}).items()}
    return {"encoders": enc, "fusion": model.get("fusion", {}).get("type"), "head": model.get("head", {}).get("type")}


# ------------------------------------------------------------------------------------- resolving
@dataclass
class ModelRef:
    """Where a trained model's files are.

    ``kind`` is ``registered`` (a version folder with card.json) or ``run`` (a run directory's
    checkpoint). ``sha256`` is the expected hash of ``weights`` (None for run directories).
    """

    kind: str
    folder: Path
    weights: Path
    recipe: Path
    card: dict[str, Any]
    fit_state: dict[str, Any] | None = None
    sha256: str | None = None
    checkpoint: str | None = None
    extras: dict[str, Path] = field(default_factory=dict)

    @property
    def label(self) -> str:
        name, version = self.card.get("name"), self.card.get("version")
        return f"{name}@{version}" if version is not None else str(self.folder)

    def load_fit_state(self) -> dict[str, Any]:
        if self.fit_state is None:
            self.fit_state = _read_json(self.folder / FIT_STATE) if self.kind == "registered" else {}
        return self.fit_state

    def verify(self) -> None:
        """Raise :class:`ChecksumError` when the weights differ from the card's sha256."""
        if self.sha256 is None:
            return
        if not self.weights.is_file():
            raise ChecksumError(f"{self.weights}: weights file missing (model {self.label})")
        actual = sha256_file(self.weights)
        if actual != self.sha256:
            raise ChecksumError(f"{self.weights}: checksum mismatch for model {self.label}: sha256 is {actual}, "
                                f"card.json recorded {self.sha256}. The file was modified or corrupted; "
                                f"register the run again")


def _versions(folder: Path) -> list[int]:
    """Complete versions (with card.json) of a model folder, ascending."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and (p / CARD).is_file())


def _registered(folder: Path) -> ModelRef:
    card = _read_json(folder / CARD)
    expected = (card.get("sha256") or {}).get(WEIGHTS)
    if not expected:
        raise ChecksumError(f"{folder / CARD}: no sha256 recorded for {WEIGHTS}; refusing to load unverified weights")
    return ModelRef("registered", folder, folder / WEIGHTS, folder / RECIPE, card, sha256=expected)


def _checkpoint(ckdir: Path, name: str) -> Path | None:
    """A complete checkpoint folder (read-only version of :func:`mmkit.checkpoint.find_checkpoint`,
    which imports torch): ``checkpoints/NAME``, or the ``.old-NAME-*`` a crashed save left behind."""
    candidates = [ckdir / name] + sorted(ckdir.glob(f".old-{name}-*"), key=lambda p: p.stat().st_mtime,
                                         reverse=True)
    return next((c for c in candidates if (c / "state.json").is_file() and (c / WEIGHTS).is_file()), None)


def _run_dir(folder: Path, checkpoint: str) -> ModelRef:
    ckdir = folder / "checkpoints"
    chosen = _checkpoint(ckdir, checkpoint)
    if chosen is None and checkpoint == "best":
        chosen = _checkpoint(ckdir, "last")  # runs without a validation split have no best
    if chosen is None:
        raise ModelNotFoundError(f"{folder}: no complete checkpoints/{checkpoint} (model.safetensors + state.json); "
                                 f"has the run saved a checkpoint yet?")
    state = _read_json(chosen / "state.json")
    name = chosen.name.split("-")[1] if chosen.name.startswith(".old-") else chosen.name
    card = run_card(folder, state, name)
    return ModelRef("run", folder, chosen / WEIGHTS, folder / RECIPE, card, fit_state=state.get("fit_state", {}),
                    checkpoint=name)


def _is_run_dir(p: Path) -> bool:
    return (p / RECIPE).is_file() and (p / "checkpoints").is_dir()


def resolve(ref: str | Path, registry: str | Path | None = None, checkpoint: str = "best") -> ModelRef:
    """Find a trained model by ``NAME[@V|@latest]``, registered folder, model folder or run directory."""
    text = str(ref)
    path = Path(text).expanduser()
    pathlike = isinstance(ref, Path) or "/" in text or os.sep in text or text.startswith((".", "~"))
    if pathlike or (path.is_dir() and ((path / CARD).is_file() or _is_run_dir(path))):
        if not path.exists():
            raise ModelNotFoundError(f"{text}: no such model folder or run directory")
        if (path / CARD).is_file():
            return _registered(path)
        if _is_run_dir(path):
            return _run_dir(path, checkpoint)
        versions = _versions(path)
        if versions:
            return _registered(path / str(versions[-1]))
        raise ModelNotFoundError(f"{text}: not a model: expected card.json (a registered model), "
                                 f"recipe.resolved.toml + checkpoints/ (a run directory) or numbered versions")
    name, version = parse_ref(text)
    folder = registry_dir(registry) / name
    versions = _versions(folder)
    if not versions:
        if builtin_card(name) is not None:
            raise ModelNotFoundError(
                f"{name!r} is a built-in card: a recipe without trained weights. Train it with a recipe holding "
                f"model = \"{name}\" (mmkit run my.toml), then: mmkit register runs/{name} --name {name}")
        known = [m["name"] for m in list_registered(registry)] + [c["name"] for c in builtin_cards()]
        close = difflib.get_close_matches(name, sorted(set(known)), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; mmkit models lists them"
        raise ModelNotFoundError(f"no registered model {name!r} in {registry_dir(registry)}{hint}")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise ModelNotFoundError(f"model {name!r} has no version {version}; versions: "
                                 f"{', '.join(map(str, versions))}")
    return _registered(folder / str(version))


# ------------------------------------------------------------------------------------- cards
def head_type(recipe_doc: Mapping[str, Any]) -> str | None:
    return ((recipe_doc.get("model") or {}).get("head") or {}).get("type")


def data_columns(recipe_doc: Mapping[str, Any]) -> dict[str, Any]:
    """Field -> column(s) the model reads: the dataset's defaults overridden by ``[data] columns``.

    For a registered dataset the dataset is built once to read its default mapping.
    """
    data = recipe_doc.get("data") or {}
    columns: dict[str, Any] = {}
    if data.get("dataset"):
        from mmkit.registry import get_registry

        try:
            splits = get_registry().create("dataset", data["dataset"], **(data.get("options") or {}))
            columns.update(getattr(splits, "columns", {}) or {})
        except MmkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - a dataset plugin failure is reported by name
            raise MmkitError(f"dataset {data['dataset']!r}: cannot build it to read its columns: "
                             f"{type(exc).__name__}: {exc}") from exc
    columns.update(data.get("columns") or {})
    return columns


def _summary_metrics(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    if not summary:
        return {}
    return {"final": summary.get("final", {}), "best": summary.get("best", {})}


def run_card(run_dir: Path, state: Mapping[str, Any] | None, checkpoint: str) -> dict[str, Any]:
    """A card describing a run directory (not registered: no version, no sha256)."""
    doc = tomllib.loads((run_dir / RECIPE).read_text(encoding="utf-8"))
    summary = _read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
    return {"name": run_dir.name, "version": None, "task": head_type(doc), "metrics": _summary_metrics(summary),
            "checkpoint": checkpoint, "step": (state or {}).get("step"), "source": str(run_dir.resolve()),
            "components": _card_summary(doc)}


def _new_version_dir(folder: Path) -> tuple[int, Path]:
    """Create the next free integer version folder (``os.mkdir`` is atomic: no two callers share one)."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    version = max(taken, default=0) + 1
    while True:
        try:
            os.mkdir(folder / str(version))
            return version, folder / str(version)
        except FileExistsError:
            version += 1


def _copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb") as fh:
        os.fsync(fh.fileno())


def register(run_dir: str | Path, name: str, checkpoint: str = "best",
             registry: str | Path | None = None) -> dict[str, Any]:
    """Copy a run's weights, recipe, fit state and metrics into ``<registry>/<name>/<version>/``.

    Returns the written card. ``checkpoint`` is ``best`` (falls back to ``last`` when the run has no
    validation split) or ``last``.
    """
    validate_name(name)
    if checkpoint not in ("best", "last"):
        raise MmkitError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run = Path(run_dir).expanduser()
    if not _is_run_dir(run):
        raise ModelNotFoundError(f"{run}: not a run directory (expected {RECIPE} and checkpoints/)")
    ref = _run_dir(run, checkpoint)
    doc = tomllib.loads(ref.recipe.read_text(encoding="utf-8"))
    columns = data_columns(doc)
    base = registry_dir(registry) / name
    version, dest = _new_version_dir(base)
    try:
        _copy(ref.weights, dest / WEIGHTS)
        _copy(ref.recipe, dest / RECIPE)
        _write_json_atomic(dest / FIT_STATE, ref.fit_state or {})
        for extra in ("summary.json", "metrics.jsonl"):
            if (run / extra).is_file():
                _copy(run / extra, dest / extra)
        card = {
            "format": CARD_FORMAT,
            "name": name,
            "version": version,
            "task": head_type(doc),
            "metrics": ref.card.get("metrics", {}),
            "created": _now(),
            "sha256": {WEIGHTS: sha256_file(dest / WEIGHTS)},
            "checkpoint": ref.checkpoint,
            "step": ref.card.get("step"),
            "source": str(run.resolve()),
            "columns": columns,
            "components": _card_summary(doc),
            "mmkit_version": _mmkit_version(),
        }
        _write_json_atomic(dest / CARD, card)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return card


def _mmkit_version() -> str:
    import mmkit

    return mmkit.__version__


def write_card(folder: Path, card: Mapping[str, Any]) -> None:
    """Write ``card.json`` atomically (used by :meth:`mmkit.predictor.Predictor.save`)."""
    _write_json_atomic(folder / CARD, dict(card))


# ------------------------------------------------------------------------------------- listing
def list_registered(registry: str | Path | None = None) -> list[dict[str, Any]]:
    """Cards of every complete registered version, sorted by name then version."""
    root = registry_dir(registry)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(root.iterdir()):
        if not folder.is_dir() or not NAME_RE.match(folder.name):
            continue
        for version in _versions(folder):
            try:
                out.append(_read_json(folder / str(version) / CARD))
            except MmkitError:
                continue
    return out


def list_models(registry: str | Path | None = None) -> list[dict[str, Any]]:
    """Built-in cards and registered models as rows: kind (builtin/registered), name, version, task,
    description (built-in) or metrics/created/path (registered)."""
    rows = []
    for card in builtin_cards():
        rows.append({"kind": "builtin", "name": card["name"], "version": card.get("version"),
                     "task": card.get("task") or head_type(card), "description": card.get("description", ""),
                     "components": _card_summary(card)})
    for card in list_registered(registry):
        rows.append({"kind": "registered", "name": card.get("name"), "version": card.get("version"),
                     "task": card.get("task"), "metrics": card.get("metrics", {}), "created": card.get("created"),
                     "components": card.get("components", {}),
                     "path": str(registry_dir(registry) / str(card.get("name")) / str(card.get("version")))})
    return rows


def show(ref: str, registry: str | Path | None = None) -> dict[str, Any]:
    """The card of a registered model / run directory, or a built-in card (with its recipe)."""
    text = str(ref)
    if "@" not in text and "/" not in text and not text.startswith((".", "~")):
        validate_name(text)
        if not _versions(registry_dir(registry) / text) and not Path(text).is_dir():
            card = builtin_card(text)
            if card is not None:
                return {**card, "kind": "builtin"}
    model = resolve(text, registry)
    return {**model.card, "kind": model.kind, "path": str(model.folder)}


def metric_line(metrics: Mapping[str, Any], limit: int = 4) -> str:
    """A short ``split.metric value`` line from a card's metrics (final values first)."""
    final = metrics.get("final") or {}
    parts = []
    for split in ("test", "val"):
        for key, value in (final.get(split) or {}).items():
            if key == "loss" and len(final.get(split) or {}) > 1:
                continue
            if isinstance(value, (int, float)):
                parts.append(f"{split}.{key} {value:.4g}")
        if parts:
            break
    return "  ".join(parts[:limit])


__all__ = ["ChecksumError", "ModelNotFoundError", "ModelRef", "builtin_cards", "data_columns", "list_models",
           "list_registered", "parse_ref", "register", "registry_dir", "resolve", "sha256_file", "show",
           "validate_name"]
