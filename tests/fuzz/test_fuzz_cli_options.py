"""Fuzz command-line options of ``mmkit data export`` (sizes, seeds, ``-o`` values, ``--out`` folders
holding the user's files or an earlier export) and of the model commands' option values.

Invariant: an mmkit/click error line and exit code 1 or 2, or success; the user's files are never
changed: an export appears only in a new or empty folder, or replaces an earlier export with
``--overwrite``; nothing temporary is left behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fuzzkit import (
    HUGE_NUMBERS,
    OUTCOMES,
    SCALAR_TEXT,
    WEIRD_TEXT,
    assert_untouched,
    deep,
    invoke,
    run_property,
    snapshot,
)
from hypothesis import strategies as st

from mmkit._internal.cli import cli

SAMPLE, NIGHTLY = 20, 700
MODEL_SAMPLE, MODEL_NIGHTLY = 20, 500

SMALL = st.sampled_from(["0", "1", "3", "8", "12"])
# hostile values, and no valid-but-large sizes (a valid n_train = 500000 is just slow, not a defect)
OPTION_VALUES = st.one_of(HUGE_NUMBERS, WEIRD_TEXT, SMALL, deep("["), st.floats().map(repr),
                          st.integers(-10, 40).map(str), st.text(max_size=8))
EXPORT = st.fixed_dictionaries({
    "dataset": st.sampled_from(["shapes"] * 4 + ["toy-tabular"] * 2 + ["nope", "", "shapes\n"]),
    "n": st.sampled_from(["0", "1", "3", "8", "12"] * 6 + ["-1", "x", "", "9" * 30, "nan", "1e3"]),
    "sizes": st.one_of(st.none(), st.none(), st.sampled_from(["2,1,1", "0.5,0.5,0", "1,1", "a,b,c", "nan,1,1",
                                                              "1e400,0,0", "-1,1,1", "3,0,0", "0,0,0"])),
    "seed": st.sampled_from([None] * 8 + ["0", "7", "-1", "4294967296", "9" * 5000, "nan"]),
    "options": st.just([]) | st.lists(st.one_of(st.builds(lambda k, v: f"{k}={v}", st.sampled_from(
        ["image_size", "n_train", "n_val", "seed", "p_missing", "bogus", ""]), OPTION_VALUES),
        st.sampled_from(["image_size=16", "image_size=8", "n_train=4", "image_size=100000", "n_train=10000000",
                         "p_missing=0.5"]), WEIRD_TEXT), max_size=2),
    "out": st.sampled_from(["new"] * 4 + ["nested/new", "empty", "empty", "mine", "earlier", "earlier", "file", "long",
                                          "mixed"]),
    "overwrite": st.sampled_from([False, True, True]),
})


def _prepare(work: Path) -> None:
    (work / "empty").mkdir()
    (work / "mine").mkdir()
    (work / "mine" / "train.jsonl").write_text('{"mine": 1}\n')
    (work / "mine" / "notes.txt").write_text("my notes")
    (work / "mixed").mkdir()
    (work / "mixed" / "train.jsonl").write_text('{"mine": 1}\n')
    (work / "earlier").mkdir()
    (work / "earlier" / "train.jsonl").write_text('{"claim": "old"}\n')
    (work / "earlier" / "images").mkdir()
    (work / "file").write_text("a file")


def check_export(work: Path, opts: dict[str, Any]) -> None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    _prepare(work)
    out = {"long": "x" * 300}.get(opts["out"], opts["out"])
    args = ["data", "export", opts["dataset"], "--out", out, "--n", opts["n"]]
    if opts["sizes"] is not None:
        args += ["--split-sizes", opts["sizes"]]
    if opts["seed"] is not None:
        args += ["--seed", opts["seed"]]
    for option in opts["options"]:
        args += ["-o", option]
    if opts["overwrite"]:
        args.append("--overwrite")
    before = snapshot(work)
    result = invoke(cli, args, work)
    OUTCOMES[f"data export exit {result.exit_code}"] = OUTCOMES.get(f"data export exit {result.exit_code}", 0) + 1
    after = snapshot(work)
    if result.exit_code != 0:
        assert_untouched(before, after, what=" ".join(args))
        return
    assert out in ("new", "nested/new", "empty") or (opts["overwrite"] and out in ("earlier", "mixed")), \
        f"{args}: exported into {out}, which holds the user's files"
    inside = {k for k in after if k == out or k.startswith(out + "/")} | {"nested"}
    assert_untouched({k: v for k, v in before.items() if k not in inside and not k.startswith(out + "/")},
                     {k: v for k, v in after.items() if k not in inside}, what=" ".join(args))
    assert not (work / out / "notes.txt").exists()


MODEL_ARGS = st.one_of(
    st.builds(lambda d: ["predict", "m", "--input", "in.jsonl", "--device", d],
              st.one_of(st.sampled_from(["cpu", "cuda", "cuda:0", "cuda:-1", "cuda:1:2", "mps", "meta", "xla",
                                         "cpu:0", "CUDA", " cpu", "cuda:999999999999"]), WEIRD_TEXT)),
    st.builds(lambda b: ["embed", "m", "--input", "in.jsonl", "--out", "o.npy", "--batch-size", b],
              st.one_of(HUGE_NUMBERS, WEIRD_TEXT)),
    st.builds(lambda c: ["eval", "m", "--data", "in.jsonl", "--checkpoint", c], WEIRD_TEXT),
    st.builds(lambda n: ["models", "show", n], st.one_of(WEIRD_TEXT, st.sampled_from(
        ["m@0", "m@-1", "m@99999999999999999999999", "m@latest", "m@", "@1", "..", "./", "~", "m@1@2"]))),
    st.builds(lambda n: ["register", ".", "--name", n], st.one_of(WEIRD_TEXT, st.sampled_from(["a\nb", "x" * 300]))),
    st.builds(lambda o: ["eval", "m", "--data", "shapes", "-o", o], st.one_of(SCALAR_TEXT, WEIRD_TEXT)),
)


def check_model_args(work: Path, args: list[str]) -> None:
    if not work.exists():
        work.mkdir()
        (work / "in.jsonl").write_text('{"image": null, "claim": "x"}\n')
    before = snapshot(work)
    result = invoke(cli, [*args, "--registry", str(work / "registry")] if args[0] != "models" else
                    [args[0], "--registry", str(work / "registry"), *args[1:]], work)
    assert result.exit_code != 0 or args[0] == "models"  # no model is registered there
    assert_untouched(before, snapshot(work), allowed={"registry"}, what=" ".join(args))


def test_export_options_sample(tmp_path: Path) -> None:
    run_property("data export options and --out", EXPORT, lambda o: check_export(tmp_path / "w", o), SAMPLE,
                 nightly=False)


def test_model_command_options_sample(tmp_path: Path) -> None:
    run_property("model command options", MODEL_ARGS, lambda a: check_model_args(tmp_path / "w", a), MODEL_SAMPLE,
                 nightly=False)


@pytest.mark.fuzz
def test_export_options_nightly(tmp_path: Path) -> None:
    run_property("data export options and --out", EXPORT, lambda o: check_export(tmp_path / "w", o), NIGHTLY,
                 nightly=True)


@pytest.mark.fuzz
def test_model_command_options_nightly(tmp_path: Path) -> None:
    run_property("model command options", MODEL_ARGS, lambda a: check_model_args(tmp_path / "w", a),
                 MODEL_NIGHTLY, nightly=True)
