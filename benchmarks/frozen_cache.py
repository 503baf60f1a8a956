"""Frozen-encoder cache: epoch time with ``train.cache = true`` vs ``false``.

Recipe: a frozen timm resnet10t (64 px) and the frozen bundled all-MiniLM-L6-v2 sentence-transformer,
a trainable transformer fusion and a classification head, on the ``shapes`` claim task. With the
cache, the engine runs both backbones once over the split before training (``summary.cache.seconds``)
and every epoch then trains the fusion and head from the cached embeddings; without it, every epoch
re-runs both backbones (without gradients).

Per-epoch time = training-loop seconds / epochs, from the summary (``n_train / samples_per_s``,
unrounded); evaluation and checkpoints are excluded on both sides. The two settings run interleaved
(A B A B ...) in one process. Target: epochs after the first >= 5x faster with the cache.

    python benchmarks/frozen_cache.py
    python benchmarks/frozen_cache.py --device cuda --precision bf16      # benchmarks/gpu.sh
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import _common as C

NAME = "frozen_cache"


def recipe_doc(args: Any, out_dir: str, run_name: str, cache: bool) -> dict[str, Any]:
    return {
        "run": {"name": run_name, "output_dir": out_dir, "seed": 0},
        "data": {"dataset": "shapes", "options": {"n_train": args.n_train, "n_val": 0, "n_test": 0,
                                                  "image_size": 32 if args.quick else 64}},
        "model": {
            "encoders": {"image": {"type": "timm", "model": "test_resnet" if args.quick else "resnet10t",
                                   "freeze": True},
                         "text": {"type": "sentence-transformer", "freeze": True, "max_length": 32}},
            "fusion": {"type": "transformer", "dim": 16 if args.quick else 64, "layers": 1 if args.quick else 2,
                       "heads": 2 if args.quick else 4},
            "head": {"type": "classification"},
        },
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "cache": cache,
                  "device": args.device, "precision": args.precision, "num_workers": args.workers},
    }


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5)
    p.add_argument("--n-train", type=int, default=None, help="training rows (default 512; quick 16)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (per-epoch time = loop time / epochs)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64; quick 8")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    p.add_argument("--workers", default="auto", help="DataLoader workers (auto = mmkit's choice)")
    args = C.finish_args(p.parse_args(), NAME)
    args.n_train = args.n_train or (16 if args.quick else 512)
    args.batch_size = args.batch_size or (8 if args.quick else 64)
    args.workers = int(args.workers) if str(args.workers).isdigit() else "auto"
    load_before = C.loadavg()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import build_recipe

    threads = C.set_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="mmkit-bench-")
    counter = iter(range(10**6))
    builds: list[float] = []

    def side(cache: bool) -> float:
        doc = recipe_doc(args, tmp, f"run{next(counter)}", cache)
        summary = train(build_recipe(doc, f"<{NAME}>", tmp), quiet=True).summary
        if cache:
            builds.append(float(summary["cache"]["seconds"]))
            assert set(summary["cache"]) >= {"image", "text"}, summary["cache"]
        else:
            assert not summary["cache"], summary["cache"]
        return args.n_train / float(summary["samples_per_s"])  # seconds per epoch

    C.say(f"{NAME}: {args.repeats} interleaved repeats, {args.epochs} epochs of {args.n_train} rows each ...")
    values = C.interleave({"no_cache": lambda: side(False), "cache": lambda: side(True)}, args.repeats,
                           warmup=not args.quick, log=C.say)
    builds = builds[-args.repeats:]  # drop the warm-up run's
    results = {name: C.summary(v) for name, v in values.items()}
    results["cache_build"] = C.summary(builds)
    speedup = C.median(C.pair_ratios(values["no_cache"], values["cache"]))
    first_epoch = results["cache_build"]["median"] + results["cache"]["median"]
    md = C.table(["setting", f"seconds per epoch (median of {args.repeats})", "min", "max"],
                 [["cache = false", results["no_cache"]["median"], results["no_cache"]["min"],
                   results["no_cache"]["max"]],
                  ["cache = true (epochs after the cache is built)", results["cache"]["median"],
                   results["cache"]["min"], results["cache"]["max"]],
                  ["cache build (once, before epoch 1)", results["cache_build"]["median"],
                   results["cache_build"]["min"], results["cache_build"]["max"]]])
    md += (f"\n\nspeed-up per epoch after the first: **{speedup:.1f}x** (median of per-repeat ratios; target >= 5x). "
           f"First epoch with the cache (build + epoch): {first_epoch:.2f} s vs {results['no_cache']['median']:.2f} s "
           f"without. {args.n_train} training rows, batch {args.batch_size}, {args.epochs} epochs per run.")
    C.write_result(NAME, args, {
        "params": {"n_train": args.n_train, "epochs": args.epochs, "batch_size": args.batch_size,
                   "device": args.device, "precision": args.precision, "threads": threads},
        "unit": "seconds per epoch", "results": results, "ratios": {"speedup_per_epoch": speedup},
        "first_epoch_seconds": {"cache": first_epoch, "no_cache": results["no_cache"]["median"]},
        "target": {"speedup_per_epoch": 5.0},
    }, md, load_before)


if __name__ == "__main__":
    main()
