"""The model registry: built-in cards (recipes shipped in ``mmkit_registry``) and registered models.

A registered model is a trained run frozen into ``<registry>/<NAME>/<VERSION>/``::

    model.safetensors      the weights (the only tensor file; never a pickle)
    recipe.resolved.toml   the complete recipe the run trained
    fit_state.json         label maps, vocabularies, statistics (components' ``get_fit_state``)
    summary.json           the run's summary (final/best metrics), when the run finished
    metrics.jsonl          the run's metric log, when present
    card.json              name, version, task, metrics, created, sha256 of the weights, input columns

``card.json`` records the sha256 of every other file of the folder and of its own content
(``card_sha256``): loading refuses, by file name, any changed, missing or added file and any edited
card. A registration is written into a hidden staging folder and renamed onto its version number
(reserved with ``os.mkdir``, which is atomic: two concurrent registrations of one name get distinct
versions), so a version is either complete or absent; staging folders of killed registrations are
removed by the next one. The registry folder is ``--registry DIR``, else ``$MMKIT_REGISTRY``, else
``$XDG_DATA_HOME/mmkit/models`` (default ``~/.local/share/mmkit/models``).

Anywhere a model is asked for, it may be named ``NAME`` (latest version), ``NAME@3``,
``NAME@latest``, a registered version folder, a ``<registry>/NAME`` folder (its latest version), or a
run directory (``runs/quickstart``: its ``best`` checkpoint, else ``last``). A bare name always means
the registry; a folder is meant only when the text looks like a path (it contains ``/`` or starts
with ``.`` or ``~``: ``./quickstart``), so a same-named folder in the working directory never takes
a registered model's place.

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
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from mmkit._internal.errors import MmkitError
from mmkit._internal.rundir import BEST, CHECKPOINTS, LAST, RECIPE, STATE, WEIGHTS, RunDir, checkpoint_name
from mmkit._internal.safeio import (
    sha256_file,
    MAX_JSON_BYTES,
    dumps_json,
    fsync_dir,
    loads_json,
    os_error,
    read_json,
    read_text,
    write_json_atomic,
    write_text_atomic,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # at most 100 characters: a folder name
FIT_STATE = "fit_state.json"
CARD = "card.json"
CARD_FORMAT = 2  # 2: sha256 of every file + of the card itself; 1 (round one): of the weights only
CARD_DIGEST = "card_sha256"


class ModelNotFoundError(MmkitError, LookupError):
    """No model of that name, version or path."""


class ChecksumError(MmkitError):
    """A registered model's files (or its card) do not match the sha256 its card recorded."""


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
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:60]) + "..."
        raise MmkitError(f"invalid model name {shown}: use up to 100 letters, digits, '.', '_' and '-', starting "
                         f"with a letter or digit (no '/', no '..'), e.g. 'claims-v2'")
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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a registered model or run directory (card, fit state, checkpoint state,
    summary), bounded (see :mod:`mmkit._internal.safeio`); anything else is an MmkitError naming the file."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise MmkitError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _write_json_atomic(path: Path, data: Any) -> None:
    write_json_atomic(path, data)


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
    state: dict[str, Any] | None = None  # a run checkpoint's state.json

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


def _registered(folder: Path, expect: tuple[str, int] | None = None) -> ModelRef:
    """A registered (or saved) model folder, every file but the weights verified against its card
    (the weights, the one large file, are hashed by :meth:`ModelRef.verify` when they are loaded).
    ``expect``: the (name, version) a registry lookup found it under."""
    card = read_card(folder, expect)
    verify_files(folder, card, skip=(WEIGHTS,))
    return ModelRef("registered", folder, folder / WEIGHTS, folder / RECIPE, card, sha256=card["sha256"][WEIGHTS])


def _run_dir(folder: Path, checkpoint: str) -> ModelRef:
    run = RunDir(folder)
    # a run without a validation split has no best: best falls back to last (read-only: nothing renamed)
    chosen = run.checkpoint(checkpoint, fallback=LAST if checkpoint == BEST else None)
    if chosen is None:
        raise ModelNotFoundError(f"{folder}: no complete {checkpoint} checkpoint ({WEIGHTS} + {STATE}) in "
                                 f"{run.checkpoints}; has the run saved a checkpoint yet?")
    state = _read_json(chosen / STATE)
    name = checkpoint_name(chosen)
    card = run_card(folder, state, name)
    return ModelRef("run", folder, chosen / WEIGHTS, run.recipe, card, fit_state=state.get("fit_state", {}),
                    checkpoint=name, state=state)


def _is_run_dir(p: Path) -> bool:
    return RunDir.has_model(p)


def resolve(ref: str | Path, registry: str | Path | None = None, checkpoint: str = "best") -> ModelRef:
    """Find a trained model by ``NAME[@V|@latest]``, registered folder, model folder or run directory."""
    text = str(ref)
    path = Path(text).expanduser()
    if isinstance(ref, Path) or looks_like_path(text):
        if not path.exists():
            raise ModelNotFoundError(f"{text}: no such model folder or run directory")
        if (path / CARD).is_file():
            return _registered(path)
        if _is_run_dir(path):
            return _run_dir(path, checkpoint)
        versions = _versions(path)
        if versions:
            return _registered(path / str(versions[-1]), (path.name, versions[-1]))
        raise ModelNotFoundError(f"{text}: not a model: expected card.json (a registered model), "
                                 f"{RECIPE} + {CHECKPOINTS}/ (a run directory) or numbered versions")
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
        if path.is_dir() and version is None:
            hint += f" (a bare name means the registry; for the folder {text!r} write ./{text})"
        raise ModelNotFoundError(f"no registered model {name!r} in {registry_dir(registry)}{hint}")
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise ModelNotFoundError(f"model {name!r} has no version {version}; versions: "
                                 f"{', '.join(map(str, versions))}")
    return _registered(folder / str(version), (name, version))


def looks_like_path(text: str) -> bool:
    """Whether a model reference is a folder: it has a path separator or starts with ``.``/``~``.
    Anything else is a registry name (``NAME``, ``NAME@3``)."""
    return "/" in text or os.sep in text or (os.altsep or "/") in text or text.startswith((".", "~"))


# ------------------------------------------------------------------------------------- integrity
_NONE = type(None)
_CARD_TYPES: dict[str, tuple[type, ...]] = {
    "format": (int,), "name": (str,), "version": (int, _NONE), "task": (str, _NONE), "created": (str, _NONE),
    "saved": (str, _NONE), "checkpoint": (str, _NONE), "step": (int, _NONE), "source": (str, _NONE),
    "columns": (dict,), "components": (dict,), "metrics": (dict,), "sha256": (dict,),
    "mmkit_version": (str, _NONE), "description": (str, _NONE), CARD_DIGEST: (str,),
}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def card_digest(card: Mapping[str, Any]) -> str:
    """sha256 of a card's content without its own digest (canonical JSON: sorted keys, no spaces)."""
    body = {k: v for k, v in card.items() if k != CARD_DIGEST}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_card(card: Any, path: Path) -> dict[str, Any]:
    """``card`` if it is a well-formed card.json (types of the known keys, sha256 of hex digests),
    else an :class:`MmkitError` naming the file and the key."""
    if not isinstance(card, dict):
        raise MmkitError(f"{path}: expected a JSON object, got {type(card).__name__}")
    for key, types in _CARD_TYPES.items():
        value = card.get(key)
        if key in card and (not isinstance(value, types) or isinstance(value, bool)):
            want = " or ".join("null" if t is _NONE else t.__name__ for t in types)
            raise MmkitError(f"{path}: {key}: expected {want}, got {type(value).__name__} {str(value)[:40]!r}")
    for file, digest in (card.get("sha256") or {}).items():
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest) or not _plain_name(file):
            raise MmkitError(f"{path}: sha256.{file}: expected a file name and a 64-digit hex sha256")
    metrics = card.get("metrics") or {}
    for part in ("final", "best"):
        if not isinstance(metrics.get(part, {}), dict):
            raise MmkitError(f"{path}: metrics.{part}: expected an object")
    return card


def _plain_name(file: Any) -> bool:
    return isinstance(file, str) and file not in ("", ".", "..", CARD) and "/" not in file and "\\" not in file


def read_card(folder: Path, expect: tuple[str, int] | None = None) -> dict[str, Any]:
    """The verified card of a model folder: well-formed, unmodified (its ``card_sha256``), recording
    the sha256 of the weights, and (``expect``) naming the name/version it is registered under."""
    path = folder / CARD
    text = read_text(path, max_bytes=MAX_JSON_BYTES)
    card = check_card(loads_json(text, str(path), finite=True), path)
    if not (card.get("sha256") or {}).get(WEIGHTS):
        raise ChecksumError(f"{path}: no sha256 recorded for {WEIGHTS}; refusing to load unverified weights")
    if card.get("format") != CARD_FORMAT or CARD_DIGEST not in card:
        source = card.get("source") or "RUN_DIR"
        raise ChecksumError(f"{path}: card format {card.get('format')} covers only the weights; this mmkit checks "
                            f"every file of a model. Register it again: mmkit register {source} --name "
                            f"{card.get('name') or folder.parent.name}")
    if card[CARD_DIGEST] != card_digest(card) or text != _card_text(card):  # content, then every byte
        raise ChecksumError(f"{path}: the card was modified after it was written (its {CARD_DIGEST} does not "
                            f"match its content); register the run again")
    if expect is not None and (card.get("name"), card.get("version")) != expect:
        raise ChecksumError(f"{path}: the card describes {card.get('name')}@{card.get('version')} but is stored as "
                            f"{expect[0]}@{expect[1]}")
    return card


def verify_files(folder: Path, card: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Raise :class:`ChecksumError` naming the first file of ``folder`` that differs from the card's
    sha256 (``skip``: recorded files checked elsewhere), is missing, or was added; or when a file
    mmkit loads is not recorded at all."""
    recorded = card.get("sha256") or {}
    label = f"{card.get('name')}@{card.get('version')}"
    for required in (WEIGHTS, RECIPE, FIT_STATE):
        if required not in recorded:
            raise ChecksumError(f"{folder / CARD}: no sha256 recorded for {required} (model {label})")
    try:
        present = {p.name for p in folder.iterdir()} - {CARD}
    except OSError as exc:
        raise os_error(exc, "cannot list a model folder") from None
    added = sorted(present - set(recorded))
    if added:
        raise ChecksumError(f"{folder / added[0]}: not part of model {label} (its card does not list it); "
                            f"remove it or register the run again")
    for file, expected in recorded.items():
        target = folder / file
        if not target.is_file():
            raise ChecksumError(f"{target}: file missing (model {label})")
        if file in skip:
            continue
        actual = sha256_file(target)
        if actual != expected:
            raise ChecksumError(f"{target}: checksum mismatch for model {label}: sha256 is {actual}, card.json "
                                f"recorded {expected}. The file was modified or corrupted; register the run again")


def write_card(folder: Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``card.json`` atomically, recording the sha256 of every other file in ``folder`` and of
    the card itself (used by :func:`register` and :meth:`mmkit._internal.predictor.Predictor.save`).
    Returns the card as written."""
    out = {k: v for k, v in card.items() if k not in ("sha256", CARD_DIGEST)}
    out["format"] = CARD_FORMAT
    out["sha256"] = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.name != CARD}
    out = json.loads(json.dumps(out, default=str))  # as it will read back (tuples -> lists, NaN kept)
    from mmkit._internal.safeio import strict_json

    out = strict_json(out)
    out[CARD_DIGEST] = card_digest(out)
    write_text_atomic(folder / CARD, _card_text(out))
    return out


def _card_text(card: Mapping[str, Any]) -> str:
    """The one serialization of a card: a card.json whose bytes differ from it was edited."""
    return dumps_json(card, indent=2) + "\n"


# ------------------------------------------------------------------------------------- cards
def head_type(recipe_doc: Mapping[str, Any]) -> str | None:
    return ((recipe_doc.get("model") or {}).get("head") or {}).get("type")


def data_columns(recipe_doc: Mapping[str, Any]) -> dict[str, Any]:
    """Field -> column(s) the model reads: the dataset's defaults overridden by ``[data] columns``.

    For a registered dataset the dataset is built once to read its default mapping.
    """
    from mmkit._internal.datasets import DataSplits

    data = recipe_doc.get("data") or {}
    splits = DataSplits({})
    if data.get("dataset"):
        from mmkit._internal.registry import get_registry

        try:
            splits = get_registry().create("dataset", data["dataset"], **(data.get("options") or {}))
        except MmkitError:
            raise
        except Exception as exc:
            raise MmkitError(f"dataset {data['dataset']!r}: cannot build it to read its columns: "
                             f"{type(exc).__name__}: {exc}") from exc
    return splits.merged_columns(data.get("columns"))


def _summary_metrics(summary: Mapping[str, Any] | None) -> dict[str, Any]:
    if not summary:
        return {}
    return {"final": summary.get("final", {}), "best": summary.get("best", {})}


def run_card(run_dir: Path, state: Mapping[str, Any] | None, checkpoint: str) -> dict[str, Any]:
    """A card describing a run directory (not registered: no version, no sha256)."""
    run = RunDir(run_dir)
    doc = run.read_recipe()
    summary = run.read_summary()
    return {"name": run_dir.name, "version": None, "task": head_type(doc), "metrics": _summary_metrics(summary),
            "checkpoint": checkpoint, "step": (state or {}).get("step"), "source": str(run_dir.resolve()),
            "components": _card_summary(doc)}


def _read_recipe(path: Path) -> dict[str, Any]:
    from mmkit._internal.recipe import read_toml

    return read_toml(path)


def _reserve_version(folder: Path) -> tuple[int, Path]:
    """Create the next free integer version folder (``os.mkdir`` is atomic: no two callers share one).
    It stays empty, and so invisible, until the staged registration is renamed onto it."""
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


def _remove_stale_staging(folder: Path) -> None:
    """Remove ``.tmp-PID-*`` staging folders whose registering process no longer runs (killed)."""
    for stage in folder.glob(".tmp-*-*"):
        pid = stage.name.split("-")[1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def register(run_dir: str | Path, name: str, checkpoint: str = "best",
             registry: str | Path | None = None) -> dict[str, Any]:
    """Copy a run's weights, recipe, fit state and metrics into ``<registry>/<name>/<version>/``.

    Returns the written card. ``checkpoint`` is ``best`` (falls back to ``last`` when the run has no
    validation split) or ``last``. The files are staged in a hidden folder and renamed into place
    when complete; a failure (a full disk, Ctrl-C) leaves no version behind.
    """
    validate_name(name)
    if checkpoint not in ("best", "last"):
        raise MmkitError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    run = Path(run_dir).expanduser()
    if not _is_run_dir(run):
        raise ModelNotFoundError(f"{run}: not a run directory (expected {RECIPE} and checkpoints/)")
    ref = _run_dir(run, checkpoint)
    doc = _read_recipe(ref.recipe)
    columns = data_columns(doc)
    base = registry_dir(registry) / name
    try:
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(base)
        stage = base / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
    except OSError as exc:
        raise os_error(exc, f"cannot write to the model registry {registry_dir(registry)}") from None
    dest = None
    try:
        _copy(ref.weights, stage / WEIGHTS)
        _copy(ref.recipe, stage / RECIPE)
        _write_json_atomic(stage / FIT_STATE, ref.fit_state or {})
        for extra in (RunDir(run).summary_file, RunDir(run).metrics):
            if extra.is_file():
                _copy(extra, stage / extra.name)
        version, dest = _reserve_version(base)
        card = write_card(stage, {
            "name": name, "version": version, "task": head_type(doc), "metrics": ref.card.get("metrics", {}),
            "created": _now(), "checkpoint": ref.checkpoint, "step": ref.card.get("step"),
            "source": str(run.resolve()), "columns": columns, "components": _card_summary(doc),
            "mmkit_version": _mmkit_version(),
        })
        os.replace(stage, dest)  # onto the empty reserved folder
        fsync_dir(base)
    except BaseException as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if dest is not None and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if isinstance(exc, OSError):
            raise os_error(exc, f"cannot register {name} in {registry_dir(registry)}") from None
        raise
    return card


def _mmkit_version() -> str:
    import mmkit

    return mmkit.__version__


# ------------------------------------------------------------------------------------- listing
def list_registered(registry: str | Path | None = None, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Cards of every complete registered version, sorted by name then version.

    A card that cannot be read, is malformed or was modified is skipped; its file and the reason are
    appended to ``problems`` (the CLI prints them as warnings), so one bad card hides only itself.
    """
    root = registry_dir(registry)
    try:
        folders = sorted(root.iterdir()) if root.is_dir() else []
    except OSError as exc:
        (problems if problems is not None else []).append(f"{root}: cannot list: {exc.strerror or exc}")
        return []
    out = []
    for folder in folders:
        if not folder.is_dir() or not NAME_RE.fullmatch(folder.name):
            continue
        for version in _versions(folder):
            try:
                out.append(read_card(folder / str(version), (folder.name, version)))
            except MmkitError as exc:
                if problems is not None:
                    problems.append(f"skipped {folder.name}@{version}: {exc}")
    return out


def list_models(registry: str | Path | None = None, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """Built-in cards and registered models as rows: kind (builtin/registered), name, version, task,
    description (built-in) or metrics/created/path (registered). ``problems`` as :func:`list_registered`."""
    rows = []
    for card in builtin_cards():
        rows.append({"kind": "builtin", "name": card["name"], "version": card.get("version"),
                     "task": card.get("task") or head_type(card), "description": card.get("description", ""),
                     "components": _card_summary(card)})
    for card in list_registered(registry, problems):
        rows.append({"kind": "registered", "name": card.get("name"), "version": card.get("version"),
                     "task": card.get("task"), "metrics": card.get("metrics", {}), "created": card.get("created"),
                     "components": card.get("components", {}),
                     "path": str(registry_dir(registry) / str(card.get("name")) / str(card.get("version")))})
    return rows


def show(ref: str, registry: str | Path | None = None) -> dict[str, Any]:
    """The card of a registered model / run directory, or a built-in card (with its recipe)."""
    text = str(ref)
    if "@" not in text and not looks_like_path(text):
        validate_name(text)
        if not _versions(registry_dir(registry) / text):
            card = builtin_card(text)
            if card is not None:
                return {**card, "kind": "builtin"}
    model = resolve(text, registry)
    return {**model.card, "kind": model.kind, "path": str(model.folder)}


def fmt_number(value: Any) -> str:
    """``value`` with 4 significant digits when it is a number, else as text (cards are user files)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.4g}"
    return str(value)


def metric_line(metrics: Mapping[str, Any], limit: int = 4) -> str:
    """A short ``split.metric value`` line from a card's metrics (final values first)."""
    final = metrics.get("final") if isinstance(metrics, Mapping) else None
    final = final if isinstance(final, Mapping) else {}
    parts = []
    for split in ("test", "val"):
        values = final.get(split)
        values = values if isinstance(values, Mapping) else {}
        for key, value in values.items():
            if key == "loss" and len(values) > 1:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parts.append(f"{split}.{key} {value:.4g}")
        if parts:
            break
    return "  ".join(parts[:limit])


__all__ = ["ChecksumError", "ModelNotFoundError", "ModelRef", "builtin_cards", "card_digest", "check_card",
           "data_columns", "fmt_number", "list_models", "list_registered", "looks_like_path", "parse_ref", "read_card",
           "register", "registry_dir", "resolve", "sha256_file", "show", "validate_name", "verify_files",
           "write_card"]
