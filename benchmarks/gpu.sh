#!/usr/bin/env bash
# GPU benchmarks (NVIDIA, bf16): engine overhead (1) and frozen-encoder cache (2) on the GPU, and the
# transformer fusion's achieved fraction of the GPU's bf16 matmul throughput.
#
#   benchmarks/gpu.sh                  # uses .venv/bin/python (or $PYTHON)
#   QUICK=1 benchmarks/gpu.sh          # CI-sized check that the script runs on this GPU
#
# Results: benchmarks/results/gpu-*.json; the Markdown blocks for docs/performance.md are printed.
# Sizes are larger than the CPU runs' so that the GPU has work to do: batch 256 and 100 steps for
# the engine comparison (the DataLoader workers start once per epoch), 4096 rows for the cache. The
# engine's data loading uses its GPU default (num_workers auto = min(8, cores)); the pre-tensorized
# baseline keeps its data on the GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
OUT=benchmarks/results

"$PY" - <<'EOF'
import sys
import torch
if not torch.cuda.is_available():
    sys.exit("benchmarks/gpu.sh needs a CUDA GPU (torch.cuda.is_available() is False)")
if not torch.cuda.is_bf16_supported():
    sys.exit(f"{torch.cuda.get_device_name(0)} does not support bf16")
print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || true

if [[ -n "${QUICK:-}" ]]; then
    q=(--quick); suffix=-quick
    engine=(); cache=(); mfu=(--configs quickstart)
else
    q=(); suffix=
    engine=(--batch-size 256 --steps 100)
    cache=(--n-train 4096 --batch-size 256)
    mfu=()
fi

"$PY" benchmarks/engine_overhead.py "${q[@]}" --device cuda --precision bf16 --threads 0 "${engine[@]}" \
    --out "$OUT/gpu-engine_overhead$suffix.json"
"$PY" benchmarks/frozen_cache.py "${q[@]}" --device cuda --precision bf16 --threads 0 "${cache[@]}" \
    --out "$OUT/gpu-frozen_cache$suffix.json"
"$PY" benchmarks/gpu_mfu.py "${q[@]}" --device cuda --dtype bf16 --threads 0 "${mfu[@]}" \
    --out "$OUT/gpu-mfu$suffix.json"
