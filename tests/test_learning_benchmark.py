"""Defaults that follow the data, and the learning benchmark (benchmarks/learning.py) keeps running.

The benchmark's numbers are not asserted here (docs/fusions.md holds them); its quick variant must
run, merge its records into the JSON and regenerate a Markdown table from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import mmkit

ROOT = Path(__file__).resolve().parent.parent


def text_encoder(**params):
    return mmkit.create("encoder", "text-transformer", dim=16, layers=1, heads=2, dropout=0.0, **params)


def test_text_transformer_embedding_table_is_the_fitted_vocabulary() -> None:
    enc = text_encoder()
    enc.fit(["a red circle", "a blue square", "red red"])
    # 4 specials + 5 distinct words, not max_vocab = 8000 rows
    assert enc.embed.num_embeddings == 9
    assert float(enc.embed.weight.detach()[enc.tokenizer.pad_id].abs().sum()) == 0.0
    capped = text_encoder(max_vocab=6)
    capped.fit(["a red circle", "a blue square", "red red"])
    assert capped.embed.num_embeddings == 6
    out = enc(enc.collate([enc.preprocess("a red circle"), enc.preprocess("unseen words here")]))
    assert out.pooled.shape == (2, 16) and torch.isfinite(out.pooled).all()


def test_text_transformer_fit_state_restores_the_table_size() -> None:
    enc = text_encoder()
    enc.fit(["one two three", "four"])
    fresh = text_encoder()
    fresh.set_fit_state(json.loads(json.dumps(enc.get_fit_state())))
    fresh.load_state_dict(enc.state_dict())  # fails on a size mismatch
    batch = enc.collate([enc.preprocess("two four"), enc.preprocess("three")])
    enc.eval(), fresh.eval()
    assert torch.equal(enc(batch).pooled, fresh(batch).pooled)


def test_learning_benchmark_quick_runs_and_merges(tmp_path: Path) -> None:
    out, md = tmp_path / "learning.json", tmp_path / "fusions.md"
    md.write_text("intro\n<!-- learning-benchmark:start -->\nold\n<!-- learning-benchmark:end -->\nrest\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, str(ROOT / "benchmarks" / "learning.py"), "--quick", "--out", str(out), "--seeds", "0"]
    for tasks, fusions in (("tabular", "concat,transformer"), ("binding", "transformer")):
        proc = subprocess.run([*base, "--tasks", tasks, "--fusions", fusions, "--no-ablation"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([*base, "--report-only", "--markdown", str(md)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    # both invocations' records are kept (merged), plus binding's hand-written reference
    assert {(r["task"], r["model"]) for r in runs.values()} == {
        ("tabular", "concat"), ("tabular", "transformer"), ("binding", "transformer"), ("binding", "reference")}
    for rec in runs.values():
        assert 0.0 <= rec["final"] <= rec["best"] <= 1.0 and rec["samples_per_s"] > 0
        assert rec["lr"] == 3e-4 or rec["model"] == "reference"
    text = md.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    assert "| tabular | 20 | transformer | all | 1 |" in text and "| binding | 20 | reference | all | 1 |" in text
