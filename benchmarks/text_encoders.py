"""Text encoders on the quickstart task: training samples/s of the from-scratch ``text-transformer``, the
frozen bundled MiniLM (``sentence-transformer``, cached) and the same MiniLM fine-tuned (``hf-text``).

Recipe: ``recipes/quickstart.toml`` (timm test_resnet at 64 px, transformer fusion, classification
on the ``shapes`` claims) with only ``model.encoders.text`` replaced, ``n_train`` rows and one epoch
per run. samples/s = training-loop samples / seconds from the run summary (evaluation excluded); the
frozen MiniLM's cache is built before the loop and reported separately (seconds per row). The three
settings run interleaved (A B C A B C ...) in one process; ratios are per repeat against the
text-transformer of the same repeat. Accuracy is not measured here (see docs/models.md for the
full-budget runs and their commands).

    python benchmarks/text_encoders.py
"""

from __future__ import annotations

import tempfile
from typing import Any

import _common as C
import tomllib

NAME = "text_encoders"
TEXT = {
    "text-transformer": None,  # the quickstart's own
    "minilm-frozen": {"type": "sentence-transformer", "max_length": 32, "freeze": True},
    "minilm-finetuned": {"type": "hf-text", "max_length": 32, "lr_mult": 0.01},  # lr does not change speed
}


def recipe_doc(args: Any, out_dir: str, run_name: str, setting: str) -> dict[str, Any]:
    doc = tomllib.loads((C.ROOT / "recipes" / "quickstart.toml").read_text(encoding="utf-8"))
    doc["run"].update(name=run_name, output_dir=out_dir)
    doc["data"]["options"].update(n_train=args.n_train, n_val=0, n_test=0)
    if args.quick:
        doc["data"]["options"]["image_size"] = 32
    if TEXT[setting] is not None:
        doc["model"]["encoders"]["text"] = dict(TEXT[setting])
    doc["train"].update(epochs=1, batch_size=args.batch_size, warmup_steps=0, num_workers=0)
    return doc


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=3)
    p.add_argument("--n-train", type=int, default=None, help="training rows per run (default 512; quick 16)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (the quickstart's); quick 8")
    args = C.finish_args(p.parse_args(), NAME)
    args.n_train = args.n_train or (16 if args.quick else 512)
    args.batch_size = args.batch_size or (8 if args.quick else 64)
    load_before = C.loadavg()

    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import build_recipe

    threads = C.set_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="mmkit-bench-")
    counter = iter(range(10**6))
    builds: list[float] = []

    def side(setting: str) -> float:
        doc = recipe_doc(args, tmp, f"run{next(counter)}", setting)
        summary = train(build_recipe(doc, f"<{NAME}>", tmp), quiet=True).summary
        if setting == "minilm-frozen":
            assert "text" in summary["cache"], summary["cache"]
            builds.append(float(summary["cache"]["seconds"]) / args.n_train)
        return float(summary["samples_per_s"])

    C.say(f"{NAME}: {args.repeats} interleaved repeats of {args.n_train} rows, batch {args.batch_size} ...")
    values = C.interleave({name: (lambda name=name: side(name)) for name in TEXT}, args.repeats,
                          warmup=not args.quick, log=C.say)
    builds = builds[-args.repeats:]
    results = {name: C.summary(v) for name, v in values.items()}
    ratios = {name: C.median(C.pair_ratios(values[name], values["text-transformer"])) for name in TEXT}
    rows = [[name, results[name]["median"], results[name]["min"], results[name]["max"], f"{ratios[name]:.2f}x"]
            for name in TEXT]
    md = C.table(["text encoder", f"training samples/s (median of {args.repeats})", "min", "max",
                  "vs text-transformer"], rows)
    md += (f"\n\nThe frozen MiniLM's cache is built once before training: {C.median(builds) * 1000:.1f} ms per row "
           f"(median). {args.n_train} rows, batch {args.batch_size}, one epoch per run, {threads} thread(s).")
    C.write_result(NAME, args, {
        "params": {"n_train": args.n_train, "batch_size": args.batch_size, "threads": threads},
        "unit": "training samples/s", "results": results, "ratios_vs_text_transformer": ratios,
        "cache_build_seconds_per_row": C.summary(builds) if builds else None,
    }, md, load_before)


if __name__ == "__main__":
    main()
