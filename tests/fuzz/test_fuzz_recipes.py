"""Fuzz recipe reading and ``--set``: hostile TOML text (deep nesting, long dotted keys, huge numbers,
broken strings, bytes) and hostile overrides, through ``load_recipe`` (what ``mmkit run``/``check``
call before anything is built) and the ``mmkit eval -o``/``data export -o`` value parser.

Invariant: a RecipeError that names the recipe file (or the ``--set`` item) or a valid recipe; no
other exception, no hang (a 20 s deadline per case), no memory blow-up (tomllib needs 6 GB for a
40,000-part dotted key: such keys are refused before parsing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzkit import HUGE_NUMBERS, SCALAR_TEXT, WEIRD_TEXT, deep, run_property
from hypothesis import strategies as st

from mmkit._internal.errors import RecipeError
from mmkit._internal.recipe import load_recipe, parse_value

SAMPLE, NIGHTLY = 40, 2500
SET_SAMPLE, SET_NIGHTLY = 40, 1500

KEYS = st.sampled_from(["run.seed", "train.lr", "train.batch_size", "model.fusion.dim", "data.options.image_size",
                        "data.options.n_train", "model.encoders.image.model", "model.head.type", "data.columns.text",
                        "train.max_steps", "train.precision", "plugins.require", "model", "data.train"])
FRAGMENTS = st.one_of(
    st.builds(lambda k, v: f"{k} = {v}", KEYS, SCALAR_TEXT),
    deep("["), deep("{a="), deep("[", "]").map(lambda t: f"x = {t}"),
    st.integers(1, 100_000).map(lambda n: "a" + ".a" * n + " = 1"),
    st.integers(1, 3000).map(lambda n: "[" + "t." * n + "t]"),
    HUGE_NUMBERS.map(lambda n: f"seed = {n}"),
    st.sampled_from(['x = """unterminated', "x = '''", 'x = "\\', '"quoted.key" = 1', "[[model]]", "[model",
                     "model = 'clip-tiny'", "model = '../../etc/passwd'", "model = 'hf-hub:x/y'", "= 1", "a =",
                     "\x00", "[data]\n[data]", "seed = 1979-05-27T07:32:00Z", "x = [1, 'a']"]),
    WEIRD_TEXT,
    st.text(max_size=40),
)


@st.composite
def recipe_texts(draw: st.DrawFn, base: str) -> bytes:
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "replace", "delete", "truncate"]))
        at = draw(st.integers(0, len(lines)))
        if op == "insert":
            lines.insert(at, draw(FRAGMENTS))
        elif op == "replace" and at < len(lines):
            lines[at] = draw(FRAGMENTS)
        elif op == "delete" and at < len(lines):
            del lines[at]
        elif op == "truncate":
            lines = lines[:at]
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 9)) == 0:
        data = draw(st.binary(max_size=200))
    return data


def check_text(folder: Path, data: bytes) -> None:
    path = folder / "fz.toml"
    path.write_bytes(data)
    try:
        load_recipe(path)
    except RecipeError as exc:
        assert str(exc).startswith(str(path)), f"the error does not start with the recipe file: {exc}"


SET_ITEMS = st.one_of(st.builds(lambda k, v: f"{k}={v}", KEYS, SCALAR_TEXT),
                      st.builds(lambda n, v: "a" + ".a" * n + f"={v}", st.integers(1, 20_000), SCALAR_TEXT),
                      st.text(max_size=30), WEIRD_TEXT)


def check_overrides(path: Path, items: list[str]) -> None:
    try:
        load_recipe(path, items)
    except RecipeError as exc:
        assert str(exc).startswith((str(path), "--set")), f"the error names neither file nor --set: {exc}"
    for item in items:
        try:
            parse_value(item, "-o x")
        except RecipeError as exc:
            assert str(exc).startswith("-o x"), exc


@pytest.fixture
def base(tmp_path: Path, write_tiny_recipe) -> Path:
    """The tests' tiny recipe (conftest.TINY_RECIPE), valid: the fuzzers mutate it."""
    path = write_tiny_recipe(tmp_path / "base.toml")
    assert load_recipe(path).fusion.type == "transformer"
    return path


def _texts(tmp_path: Path, base: Path, examples: int, nightly: bool) -> None:
    run_property("recipe files (TOML text)", recipe_texts(base.read_text()), lambda d: check_text(tmp_path, d),
                 examples, nightly=nightly)


def _overrides(base: Path, examples: int, nightly: bool) -> None:
    run_property("--set / -o overrides", st.lists(SET_ITEMS, min_size=1, max_size=3),
                 lambda items: check_overrides(base, items), examples, nightly=nightly)


def test_recipe_text_sample(tmp_path: Path, base: Path) -> None:
    _texts(tmp_path, base, SAMPLE, False)


def test_set_overrides_sample(base: Path) -> None:
    _overrides(base, SET_SAMPLE, False)


@pytest.mark.fuzz
def test_recipe_text_nightly(tmp_path: Path, base: Path) -> None:
    _texts(tmp_path, base, NIGHTLY, True)


@pytest.mark.fuzz
def test_set_overrides_nightly(base: Path) -> None:
    _overrides(base, SET_NIGHTLY, True)
