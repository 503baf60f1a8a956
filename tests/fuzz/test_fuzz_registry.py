"""Fuzz registered-model folders and run directories as a hostile user or a failing disk leaves them.

Registered models: flip, truncate, extend, delete, add or replace files; edit card.json values or
replace the card with hostile JSON; move a version. Then ``mmkit models``, ``mmkit models show``,
``mmkit models --json`` and resolving + verifying the model (what every load does first).
Invariant: no traceback; every change is refused by ``resolve``/``verify`` with an error naming the
file; the other models still list.

Run directories: hostile ``state.json``, ``summary.json``, ``recipe.resolved.toml``, missing
files; then ``mmkit models show ./RUN`` and ``mmkit register ./RUN``. Invariant: an mmkit error or
success; a failed registration leaves the registry as it was (no partial version, no staging folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import HUGE_NUMBERS, WEIRD_TEXT, assert_untouched, deep, invoke, run_property, snapshot
from hypothesis import strategies as st
from reliability_kit import RESOLVED, make_run

from mmkit._internal import models
from mmkit._internal.cli import cli
from mmkit._internal.errors import MmkitError

REG_SAMPLE, REG_NIGHTLY = 20, 1200
RUN_SAMPLE, RUN_NIGHTLY = 15, 800

@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding m@1 and other@1 (registered from a fake run)."""
    root = tmp_path_factory.mktemp("fuzzreg")
    run = make_run(root)
    for name in ("m", "other"):
        models.register(run, name, registry=root / "registry")
    return root


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | WEIRD_TEXT,
                           _containers, max_leaves=6)
CARD_KEYS = st.sampled_from(["format", "name", "version", "task", "created", "checkpoint", "step", "source",
                             "columns", "components", "metrics", "sha256", "mmkit_version", "card_sha256", "extra"])
FILES = st.sampled_from(["card.json", "model.safetensors", "recipe.resolved.toml", "fit_state.json", "summary.json",
                         "metrics.jsonl"])
HOSTILE_JSON = st.one_of(deep("[", "]"), deep('{"a":'), HUGE_NUMBERS.map(lambda n: '{"version": ' + n + "}"),
                         st.sampled_from(["", "{", "[]", "null", '"card"', '{"sha256": "x"}', "\x00", "\ufeff{}"]),
                         json_values.map(json.dumps))


@st.composite
def registry_mutations(draw: st.DrawFn) -> list[tuple[str, Any, Any]]:
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "append", "delete", "add", "card_set", "card_del",
                                   "card_raw", "move", "dir", "metrics"]))
        if op in ("flip", "truncate", "append", "delete", "dir"):
            ops.append((op, draw(FILES), draw(st.integers(0, 10_000))))
        elif op == "add":
            ops.append((op, draw(st.sampled_from(["x.bin", ".hidden", "pytorch_model.bin", "card.json.bak"])), None))
        elif op == "card_set":
            ops.append((op, draw(CARD_KEYS), draw(json_values)))
        elif op == "card_del":
            ops.append((op, draw(CARD_KEYS), None))
        elif op == "card_raw":
            ops.append((op, None, draw(HOSTILE_JSON)))
        elif op == "metrics":
            ops.append((op, None, draw(json_values)))
        else:
            ops.append((op, None, draw(st.sampled_from(["2", "0", "x"]))))
    return ops


def _mutate(version: Path, op: str, arg: Any, value: Any) -> None:
    if not version.is_dir():  # moved away by an earlier operation
        return
    target = version / arg if isinstance(arg, str) and op not in ("card_set", "card_del", "add") else None
    if op == "flip" and target is not None and target.is_file():
        data = bytearray(target.read_bytes())
        if data:
            data[value % len(data)] ^= 0x01
            target.write_bytes(bytes(data))
    elif op == "truncate" and target is not None and target.is_file():
        data = target.read_bytes()
        target.write_bytes(data[:value % max(len(data), 1)])
    elif op == "append" and target is not None and target.is_file():
        with target.open("ab") as fh:
            fh.write(b" ")
    elif op == "delete" and target is not None and target.is_file():
        target.unlink()
    elif op == "dir" and target is not None and target.is_file():
        target.unlink()
        target.mkdir()
    elif op == "add":
        (version / arg).write_bytes(b"added")
    elif op in ("card_set", "card_del", "metrics"):
        card_path = version / "card.json"
        try:
            card = json.loads(card_path.read_text())
        except (OSError, ValueError, RecursionError):
            return
        if not isinstance(card, dict):
            return
        if op == "card_set":
            card[arg] = value
        elif op == "card_del":
            card.pop(arg, None)
        else:
            card["metrics"] = {"final": {"test": value}, "best": {"metric": "acc", "value": value}}
        card_path.write_text(json.dumps(card))
    elif op == "card_raw" and (version / "card.json").is_file():
        (version / "card.json").write_text(value)
    elif op == "move" and version.is_dir() and not (version.parent / value).exists():
        version.rename(version.parent / value)


def check_registry(template: Path, work: Path, ops: list[tuple[str, Any, Any]]) -> None:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(template, work)
    reg = work / "registry"
    version = reg / "m" / "1"
    before = snapshot(reg / "m")
    for op, arg, value in ops:
        _mutate(version, op, arg, value)
    changed = snapshot(reg / "m") != before
    problems: list[str] = []
    listed = models.list_registered(reg, problems)
    assert any(c.get("name") == "other" for c in listed), f"one bad model hid another: {problems}"
    for args in (["models", "--registry", str(reg)], ["models", "--json", "--registry", str(reg)],
                 ["models", "show", "m", "--registry", str(reg)], ["models", "show", "m@1", "--registry", str(reg)],
                 ["models", "show", "./registry/m/1"]):
        invoke(cli, args, work)
    try:
        models.resolve("m", reg).verify()
    except MmkitError as exc:
        assert "/" in str(exc) or "registered model" in str(exc), f"the error names no file: {exc}"
        return
    assert not changed, f"a changed registered model was accepted: {ops}"
    assert not problems


RUN_FILES = st.sampled_from(["checkpoints/best/state.json", "summary.json", "recipe.resolved.toml", "metrics.jsonl",
                             "checkpoints/best/model.safetensors", "checkpoints/last/state.json"])
TOML_TEXT = st.one_of(deep("["), st.integers(1, 50_000).map(lambda n: "a" + ".a" * n + " = 1"),
                      HUGE_NUMBERS.map(lambda n: f"x = {n}"), st.text(max_size=40),
                      st.just(RESOLVED.replace("classification", "nope")), st.just(RESOLVED.replace("[run]", "run")))


@st.composite
def run_mutations(draw: st.DrawFn) -> list[tuple[str, str, str | None]]:
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        file = draw(RUN_FILES)
        op = draw(st.sampled_from(["replace", "delete", "dir"]))
        text = draw(TOML_TEXT if file.endswith(".toml") else HOSTILE_JSON) if op == "replace" else None
        ops.append((op, file, text))
    return ops


def check_run(work: Path, ops: list[tuple[str, str, str | None]]) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    run = make_run(work)
    for op, file, text in ops:
        target = run / file
        if op == "replace" and text is not None:
            if target.is_dir():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", errors="surrogatepass")
        elif target.is_file():
            target.unlink()
            if op == "dir":
                target.mkdir()
    reg = work / "registry"
    before = snapshot(work)
    invoke(cli, ["models", "show", "./fake"], work)
    result = invoke(cli, ["register", "./fake", "--name", "r", "--registry", str(reg)], work)
    after = snapshot(work)
    if result.exit_code == 0:
        assert models.resolve("r", reg).card["version"] == 1
        return
    assert_untouched(before, after, allowed={"registry", "registry/r"}, what="a failed register")
    assert not (reg / "r").exists() or not any(p.name.isdigit() for p in (reg / "r").iterdir())


def test_registry_folders_sample(template: Path, tmp_path: Path) -> None:
    run_property("registered-model folders", registry_mutations(),
                 lambda ops: check_registry(template, tmp_path / "w", ops), REG_SAMPLE, nightly=False)


def test_run_directories_sample(tmp_path: Path) -> None:
    run_property("run directories (show/register)", run_mutations(), lambda ops: check_run(tmp_path / "w", ops),
                 RUN_SAMPLE, nightly=False)


@pytest.mark.fuzz
def test_registry_folders_nightly(template: Path, tmp_path: Path) -> None:
    run_property("registered-model folders", registry_mutations(),
                 lambda ops: check_registry(template, tmp_path / "w", ops), REG_NIGHTLY, nightly=True)


@pytest.mark.fuzz
def test_run_directories_nightly(tmp_path: Path) -> None:
    run_property("run directories (show/register)", run_mutations(), lambda ops: check_run(tmp_path / "w", ops),
                 RUN_NIGHTLY, nightly=True)
