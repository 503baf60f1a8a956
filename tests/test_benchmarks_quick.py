"""The benchmark scripts keep working: each ``benchmarks/NAME.py --quick`` runs in a subprocess and
writes a JSON result with the expected keys and positive numbers. Times and ratios are never
asserted (they depend on the machine); behaviour the benchmarks report is (a text-free recipe
imports no sentence_transformers, cached and uncached decoding agree, predict output is complete)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"

pytestmark = pytest.mark.slow  # each script imports torch (and timm) in a fresh process


def run_quick(name: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    env = {k: v for k, v in os.environ.items() if k not in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS")}
    env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), "--quick", "--out", str(out), *extra],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == name and doc["quick"] is True
    assert doc["machine"]["nproc"] >= 1 and doc["machine"]["cpu"] and len(doc["machine"]["loadavg_before"]) == 3
    assert doc["command"].startswith(f"python benchmarks/{name}.py --quick")
    assert doc["markdown"].startswith(f"#### {name}") and "|---|" in doc["markdown"]
    assert doc["markdown"].strip() in proc.stdout  # the block to paste is printed
    return doc


def positive_medians(results: dict[str, Any]) -> int:
    """Every ``{"median", "min", "max", "runs"}`` summary in ``results`` (at any depth) holds finite
    positive numbers; returns how many there are (at least one)."""
    found = 0
    for value in results.values():
        if isinstance(value, dict) and "median" in value:
            found += 1
            assert value["runs"] and all(math.isfinite(v) and v > 0 for v in value["runs"]), value
            assert 0 < value["min"] <= value["median"] <= value["max"], value
        elif isinstance(value, dict):
            found += positive_medians(value)
    assert found, results
    return found


def test_engine_overhead_quick(tmp_path: Path) -> None:
    doc = run_quick("engine_overhead", tmp_path)
    assert set(doc["results"]) == {"mmkit", "torch_pretensor", "torch_loader"}
    positive_medians(doc["results"])
    assert doc["ratios"]["mmkit_vs_torch_pretensor"] > 0 and doc["ratios"]["mmkit_vs_torch_loader"] > 0
    assert doc["params"]["clock"] == "wall" and doc["params"]["threads"] == 1


def test_engine_overhead_cpu_clock_quick(tmp_path: Path) -> None:
    doc = run_quick("engine_overhead", tmp_path, "--clock", "cpu", "--repeats", "1")
    positive_medians(doc["results"])
    assert doc["unit"] == "samples per CPU-second"


def test_frozen_cache_quick(tmp_path: Path) -> None:
    doc = run_quick("frozen_cache", tmp_path)
    assert set(doc["results"]) == {"no_cache", "cache", "cache_build"}
    positive_medians(doc["results"])
    assert doc["ratios"]["speedup_per_epoch"] > 0


def test_startup_quick(tmp_path: Path) -> None:
    doc = run_quick("startup", tmp_path)
    assert {"mmkit --help", "mmkit list", 'python -c "import torch"'} <= set(doc["results"])
    positive_medians(doc["results"])
    imports = doc["imports"]["image only (timm + concat)"]
    assert "torch" in imports["heavy"] and "timm" in imports["heavy"]  # the record is real
    assert "mmkit_timm.encoder" in imports["plugin_modules"]
    assert imports["sentence_transformers"] is False and imports["transformers"] is False
    assert not any(m.startswith("mmkit_text.") for m in imports["plugin_modules"])


def test_data_pipeline_quick(tmp_path: Path) -> None:
    doc = run_quick("data_pipeline", tmp_path)
    assert {"mmkit, 0 workers", "PIL + torchvision, 0 workers", "mmkit, 1 workers"} <= set(doc["results"])
    positive_medians(doc["results"])
    for clock in ("wall", "cpu"):
        wait = doc["loader_wait_fraction"][clock]
        assert 0 < wait["median"] < 1, wait


def test_memory_quick(tmp_path: Path) -> None:
    doc = run_quick("memory", tmp_path)
    predict = doc["results"]["predict"]
    assert set(predict) == {"200", "2000"}
    positive_medians(doc["results"])
    assert all(p["rows_per_s"] > 0 for p in predict.values())
    assert doc["ratios"]["predict_rss_largest_vs_smallest"] > 0
    assert set(doc["stream_training"]["results"]["streamed"]) == {"100", "1000"}  # training on shards


def test_decoding_quick(tmp_path: Path) -> None:
    doc = run_quick("decoding", tmp_path)
    assert len(doc["results"]) == 4
    positive_medians(doc["results"])
    assert doc["identical_outputs"] == {"greedy": True, "beam": True}  # the KV cache changes nothing
    assert doc["ratios"]["greedy_cache_speedup"] > 0 and doc["ratios"]["beam_cache_speedup"] > 0


def test_gpu_mfu_quick_runs_on_cpu(tmp_path: Path) -> None:
    doc = run_quick("gpu_mfu", tmp_path, "--device", "cpu")
    res = doc["results"]
    assert res["matmul_peak_tflops"] > 0
    tiny = res["tiny"]
    assert tiny["flops_counted"] > 0 and tiny["achieved_flops_per_s"] > 0 and tiny["fraction_of_peak"] > 0
    # the FLOP counter and the analytic estimate agree to within a factor of 2
    assert 0.5 < tiny["flops_counted"] / tiny["flops_analytic"] < 2


def test_gpu_script_is_valid_bash() -> None:
    proc = subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert os.access(BENCH / "gpu.sh", os.X_OK)


def test_text_encoders_quick(tmp_path: Path) -> None:
    doc = run_quick("text_encoders", tmp_path)
    assert set(doc["results"]) == {"text-transformer", "minilm-frozen", "minilm-finetuned"}
    positive_medians(doc["results"])
    assert doc["ratios_vs_text_transformer"]["text-transformer"] == 1.0
    assert doc["cache_build_seconds_per_row"]["median"] > 0


def test_user_data_quick(tmp_path: Path) -> None:
    doc = run_quick("user_data", tmp_path)
    assert set(doc["results"]) == {"quiet", "busy"}
    assert all(set(doc["results"][ph]) == {"mmkit", "hand"} for ph in ("quiet", "busy"))
    positive_medians(doc["results"])
    assert all(doc["ratios"][ph][k] > 0 for ph in ("quiet", "busy") for k in ("steady", "all"))
    assert doc["slowdown"]["mmkit"]["steady"] > 0 and doc["slowdown"]["hand"]["steady"] > 0
    assert doc["thread_choice"]["quiet"] and doc["thread_choice"]["busy"]  # the policy's choice is recorded
    assert doc["data_cache"]["memory_mb"] > 0 and doc["data_cache"]["hits"] > 0  # mmkit read decoded samples
    assert doc["peak_rss_kb"]["off"] > 0 and doc["peak_rss_kb"]["auto"] > 0


def test_tricks_quick(tmp_path: Path) -> None:
    doc = run_quick("tricks", tmp_path, "--variants", "base,channels_last,adamw_fused")  # compile: minutes
    assert set(doc["results"]) == {"base", "channels_last", "adamw_fused"}
    positive_medians(doc["results"])
    assert doc["speed_vs_base"]["base"]["cpu_ms"] == 1.0 and doc["speed_vs_base"]["adamw_fused"]["cpu_ms"] > 0
