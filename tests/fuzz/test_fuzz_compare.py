"""Fuzz ``mmkit compare`` and ``mmkit plot`` over hostile run and sweep directories (findings #41, #42:
a deeply nested ``summary.json`` was a RecursionError traceback in ``compare``; ``plot`` read
``metrics.jsonl`` lines and ``summary.json`` with plain ``json.loads``).

The invariant: an mmkit error or success; the run directories are never changed; ``plot`` writes its
PNG only when it succeeds.
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

from mmkit._internal.cli import cli

SAMPLE, NIGHTLY = 10, 300

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | WEIRD_TEXT,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=6)
RECORDS = st.fixed_dictionaries({"step": json_values | st.integers(-5, 10**30), "split": st.sampled_from(
    ["train", "val", "final", "epoch", 3, None]), "metrics": json_values | st.dictionaries(
        st.sampled_from(["loss", "accuracy", "val.accuracy", "val.loss"]), json_values, max_size=3)})
HOSTILE_JSON = st.one_of(deep("[", "]"), deep('{"a":'), HUGE_NUMBERS.map(lambda n: '{"steps": ' + n + "}"),
                         st.sampled_from(["", "{", "[]", "null", "NaN", "\x00", "\ufeff{}",
                                          '{"final": {"val": {"accuracy": null}}, "best": {}}']),
                         json_values.map(json.dumps), RECORDS.map(json.dumps))
METRIC_LINES = st.lists(st.one_of(RECORDS.map(lambda r: json.dumps(r, allow_nan=True)), HOSTILE_JSON), max_size=6)
TOML_TEXT = st.one_of(deep("["), HUGE_NUMBERS.map(lambda n: f"x = {n}"), st.text(max_size=40),
                      st.just(RESOLVED.replace("dim = 8", "dim = 9")), st.just(RESOLVED.replace("[run]", "run")))


@st.composite
def mutations(draw: st.DrawFn) -> list[tuple[str, str, str | None]]:
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        file = draw(st.sampled_from(["a/summary.json", "b/summary.json", "a/metrics.jsonl", "b/recipe.resolved.toml",
                                     "sweep.json"]))
        op = draw(st.sampled_from(["replace", "replace", "delete", "dir"]))
        if op != "replace":
            text = None
        elif file.endswith(".toml"):
            text = draw(TOML_TEXT)
        elif file.endswith(".jsonl"):
            text = "\n".join(draw(METRIC_LINES)) + "\n"
        else:
            text = draw(HOSTILE_JSON)
        ops.append((op, file, text))
    return ops


def check(work: Path, ops: list[tuple[str, str, str | None]], metric: str | None) -> None:
    if work.exists():
        shutil.rmtree(work)
    sweep = work / "sweep"
    for name in ("a", "b"):
        make_run(sweep, name)
    (sweep / "sweep.json").write_text(json.dumps([{"run": "a"}, {"run": "b"}]))
    for op, file, text in ops:
        target = sweep / file
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        if op == "replace" and text is not None:
            target.write_text(text, encoding="utf-8", errors="surrogatepass")
        elif op == "dir":
            target.mkdir()
    before = snapshot(sweep)
    extra = ["--metric", metric] if metric else []
    for args in (["compare", str(sweep), *extra], ["compare", str(sweep / "a"), str(sweep / "b"), "--json", *extra]):
        invoke(cli, args, work)
    out = work / "plot.png"
    result = invoke(cli, ["plot", str(sweep), "--out", str(out), *extra], work)
    assert out.exists() == (result.exit_code == 0), result.output
    assert_untouched(before, snapshot(sweep), what="compare/plot")
    assert not [p for p in work.iterdir() if ".tmp" in p.name]


STRATEGY: Any = st.tuples(mutations(), st.sampled_from([None, "val.accuracy", "test.accuracy", "val.nope", "x"]))


def test_compare_and_plot_sample(tmp_path: Path) -> None:
    run_property("run/sweep directories (compare/plot)", STRATEGY, lambda v: check(tmp_path / "w", *v), SAMPLE,
                 nightly=False)


@pytest.mark.fuzz
def test_compare_and_plot_nightly(tmp_path: Path) -> None:
    run_property("run/sweep directories (compare/plot)", STRATEGY, lambda v: check(tmp_path / "w", *v), NIGHTLY,
                 nightly=True)
