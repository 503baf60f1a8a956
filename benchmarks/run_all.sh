#!/usr/bin/env bash
# Run every CPU benchmark at full size, one after the other, and collect the Markdown blocks in
# benchmarks/results/ALL.md (paste into docs/performance.md). Takes ~15-30 min on 2 cores.
#
#   benchmarks/run_all.sh            # full size
#   benchmarks/run_all.sh --quick    # every script at CI size (~1 min on a quiet 2-core machine)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
all=benchmarks/results/ALL${1:+-quick}.md
mkdir -p benchmarks/results
: > "$all"
run() {
    echo "== $*" >&2
    "$PY" "$@" >> "$all"
}
run benchmarks/engine_overhead.py "$@"
run benchmarks/engine_overhead.py --clock cpu "$@" --out "benchmarks/results/engine_overhead-cpu${1:+-quick}.json"
run benchmarks/frozen_cache.py "$@"
run benchmarks/startup.py "$@"
run benchmarks/data_pipeline.py "$@"
run benchmarks/memory.py "$@"
run benchmarks/decoding.py "$@"
run benchmarks/user_data.py "$@"
run benchmarks/user_data.py --clock cpu --no-busy "$@" --out "benchmarks/results/user_data-cpu${1:+-quick}.json"
run benchmarks/tricks.py --variants base,channels_last,adamw_fused,adamw_forloop "$@"
run benchmarks/gpu_mfu.py --device cpu "$@" --out "benchmarks/results/gpu_mfu-cpu${1:+-quick}.json"
echo "Markdown blocks: $all" >&2
