"""Fuzz ``mmkit predict``, ``mmkit embed`` and ``mmkit eval`` inputs and options on a real tiny model.

Each case writes a hostile input (JSONL/CSV rows whose cells are missing, unreadable or hostile files,
nested values, huge numbers, wrong types; broken lines) into a folder that also holds the user's own
files (an earlier ``out.jsonl``/``out.npy``), then runs one command in-process. Invariant: success or
an mmkit error (no traceback); on failure no file changed and none appeared; on success only the
``--out`` file appeared or (with ``--overwrite``) changed, holding strict JSON (predict) or one
float32 row per input row (embed); no temporary file is left.

The model is built once (``mmkit.load`` returns it), so the cases exercise
reading, preprocessing, prediction and writing; loading and checksums are fuzzed in
test_fuzz_registry.py.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fuzzkit import HUGE_NUMBERS, OUTCOMES, WEIRD_TEXT, assert_untouched, deep, invoke, run_property, snapshot
from hypothesis import strategies as st
from reliability_kit import fitted_predictor, shapes_pngs

from mmkit._internal.cli import cli
from mmkit._internal.manifest import count_records

SAMPLE, NIGHTLY = 25, 900


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, write_tiny_recipe) -> dict[str, Any]:
    """The tiny recipe's model, fitted on its data but not trained (weights do not matter here)."""
    root = tmp_path_factory.mktemp("fuzzinf")
    predictor = fitted_predictor(write_tiny_recipe(root / "tiny.toml"))
    images = root / "img"
    shapes_pngs(images, 2)
    (images / "text.png").write_text("not an image")
    (images / "trunc.png").write_bytes((images / "0.png").read_bytes()[:60])
    return {"predictor": predictor, "images": images}


GOOD_IMAGES = st.sampled_from(["img/0.png", "img/1.png", None])
BAD_IMAGES = st.one_of(st.sampled_from(["img/text.png", "img/trunc.png", "img/missing.png", "img", "/etc/passwd",
                                        "../../../../etc/shadow", "hf-hub:org/x", "", "  ", "img/0.png\x00",
                                        "http://example.com/x.png"]),
                       st.integers(), st.just("x" * 300), st.lists(st.just("img/0.png"), max_size=2))
IMAGES = st.one_of(GOOD_IMAGES, GOOD_IMAGES, GOOD_IMAGES, BAD_IMAGES)
GOOD_TEXTS = st.one_of(st.sampled_from(["there is a red circle", "a blue square", "", None]), st.text(max_size=20))
TEXTS = st.one_of(GOOD_TEXTS, GOOD_TEXTS, GOOD_TEXTS, WEIRD_TEXT, HUGE_NUMBERS, st.integers(), st.floats(),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
LABELS = st.one_of(st.sampled_from([0, 1, 0, 1, 0, 1, "1", "0", "x", None, 1.5, True, "", [1], {"a": 1}]),
                   HUGE_NUMBERS)
ROWS = st.fixed_dictionaries({"image": IMAGES, "claim": TEXTS, "label": LABELS},
                             optional={"extra": st.text(max_size=5)})
RAW_LINES = st.one_of(deep("[", "]"), HUGE_NUMBERS.map(lambda n: '{"claim": ' + n + ', "image": null}'),
                      st.sampled_from(["{", "[1]", "", " ", "\x0c", '{"image": "img/0.png"}{"a": 1}', "null"]))


@st.composite
def inputs(draw: st.DrawFn) -> tuple[str, bytes]:
    rows = draw(st.lists(ROWS, max_size=6))
    if draw(st.booleans()):
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
            lines.insert(draw(st.integers(0, len(lines))), draw(RAW_LINES))
        sep = draw(st.sampled_from(["\n", "\r\n", "\r"]))
        return ".jsonl", (sep.join(lines) + sep).encode("utf-8", "surrogatepass")
    buf = io.StringIO()
    odd = [["image", "claim"], ["claim", "claim"], ["img", "claim"], ["image", "claim", "", "label"]]
    columns = draw(st.sampled_from([["image", "claim", "label"]] * 4 + odd))
    writer = csv.writer(buf)
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else str(r.get(c)) for c in columns])
    return ".csv", buf.getvalue().encode("utf-8", "surrogatepass")


OPTIONS = st.fixed_dictionaries({
    "command": st.sampled_from(["predict", "predict", "embed", "eval"]),
    "out": st.sampled_from(["existing", "new", "new", "new", "nested", "stdout", "stdout", "input", "folder"]),
    "embed_suffix": st.sampled_from([".npy"] * 6 + [".parquet", ".txt"]),
    "overwrite": st.sampled_from([True, True, False]),
    "skip": st.sampled_from([True, True, False]),
    "allow_missing": st.booleans(),
    "batch_size": st.sampled_from(["1", "2", "32"] * 6 + ["0", "1e3", "99999999999999999999"]),
    "modality": st.sampled_from([None, "image", "text", "audio"]),
    "device": st.sampled_from(["cpu"] * 15 + ["auto", "cuda:7", "gpu", ""]),
})


def _args(opts: dict[str, Any], input_name: str) -> tuple[list[str], str | None]:
    cmd = opts["command"]
    if cmd == "eval":
        return ["eval", "tiny", "--data", input_name, "--batch-size", opts["batch_size"], "--json"], None
    suffix = ".jsonl" if cmd == "predict" else opts["embed_suffix"]
    out = {"existing": f"out{suffix}", "new": f"new{suffix}", "nested": f"sub/dir/new{suffix}",
           "stdout": None if cmd == "predict" else f"new{suffix}", "input": input_name, "folder": "img"}[opts["out"]]
    args = [cmd, "tiny", "--input", input_name, "--batch-size", opts["batch_size"], "--device", opts["device"]]
    if out is not None:
        args += ["--out", out]
    for flag, on in (("--overwrite", opts["overwrite"]), ("--skip-bad-rows", opts["skip"]),
                     ("--allow-missing-columns", opts["allow_missing"])):
        if on:
            args.append(flag)
    if cmd == "embed" and opts["modality"]:
        args += ["--modality", opts["modality"]]
    return args, out


def check_case(model: dict[str, Any], work: Path, case: tuple[tuple[str, bytes], dict[str, Any]]) -> None:
    (suffix, data), opts = case
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(model["images"], work / "img")
    input_name = f"in{suffix}"
    (work / input_name).write_bytes(data)
    (work / "out.jsonl").write_text('{"row": 1, "mine": true}\n')
    np.save(work / "out.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    before = snapshot(work)
    args, out = _args(opts, input_name)
    result = invoke(cli, args, work)
    outcome = f"{opts['command']} exit {result.exit_code}"
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1
    after = snapshot(work)
    if result.exit_code != 0 or out is None:
        assert_untouched(before, after, what=" ".join(args))
        return
    allowed = {out, "sub", "sub/dir"}
    assert_untouched(before, after, allowed=allowed, what=" ".join(args))
    assert out in after, f"{args}: success but no {out}"
    if opts["command"] == "predict":
        rows = [json.loads(line, parse_constant=_no_nan) for line in (work / out).read_text().splitlines()]
        numbers = [r["row"] for r in rows]
        assert rows and numbers == sorted(set(numbers)) and numbers[-1] <= count_records(work / input_name)
    elif out.endswith(".npy"):
        arr = np.load(work / out)
        assert arr.dtype == np.float32 and arr.shape[0] == count_records(work / input_name)


def _no_nan(name: str) -> Any:
    raise AssertionError(f"non-strict JSON in predict output: {name}")


def _run(model: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, examples: int,
         nightly: bool) -> None:
    import mmkit._internal.predictor

    monkeypatch.setattr(mmkit._internal.predictor, "load", lambda *a, **k: model["predictor"])
    monkeypatch.setenv("MMKIT_REGISTRY", str(tmp_path / "unused-registry"))
    run_property("predict/embed/eval inputs and options", st.tuples(inputs(), OPTIONS),
                 lambda case: check_case(model, tmp_path / "w", case), examples, nightly=nightly)


def test_inference_inputs_sample(model: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(model, tmp_path, monkeypatch, SAMPLE, False)


@pytest.mark.fuzz
def test_inference_inputs_nightly(model: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(model, tmp_path, monkeypatch, NIGHTLY, True)
