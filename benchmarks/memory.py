"""Memory: peak RSS of a (shortened) quickstart run, and of ``mmkit predict`` as the input grows.

Each measured command runs in its own subprocess; its peak resident set size is the ``ru_maxrss``
that ``os.wait4`` reports for that child alone. ``mmkit predict`` streams its input in batches, so
its peak RSS must stay flat from 1k to 10k to 100k rows: the benchmark predicts with a small
text-only model (text-transformer + concat + classification, trained here in a few steps) on JSONL
files of claims, interleaving the sizes (1k 10k 100k 1k 10k 100k ...).

Training on a *streamed* split (WebDataset tar shards of claims, text-only model, one epoch) must
also stay flat as the split grows 1x/10x/100x; the same data as an in-memory JSONL manifest is run
alongside for contrast (``--only stream`` runs just this part).

    python benchmarks/memory.py
    python benchmarks/memory.py --only stream --repeats 1
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

NAME = "memory"


def mmkit_exe() -> list[str]:
    exe = Path(sys.executable).with_name("mmkit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mmkit"]


def peak_rss(cmd: list[str], threads: int) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``cmd`` run to completion in a child process."""
    env = {k: v for k, v in os.environ.items() if k not in ("MMKIT_PLUGINS", "MMKIT_STRICT_PLUGINS")}
    env["HF_HUB_OFFLINE"] = "1"
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in the child
    err = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=C.ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err.seek(0)
        raise SystemExit(f"{' '.join(cmd)} failed (rc {proc.returncode}):\n{err.read().decode()[-3000:]}")
    kib = usage.ru_maxrss if sys.platform != "darwin" else usage.ru_maxrss / 1024
    return kib / 1024, seconds


def train_text_model(tmp: Path, quick: bool) -> Path:
    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import build_recipe

    doc = {"run": {"name": "text-model", "output_dir": str(tmp / "runs"), "seed": 0},
           "data": {"dataset": "shapes", "options": {"n_train": 64, "n_val": 16, "n_test": 0, "image_size": 16}},
           "model": {"encoders": {"text": {"type": "text-transformer", "dim": 32, "layers": 1, "heads": 2}},
                     "fusion": {"type": "concat"}, "head": {"type": "classification"}},
           "train": {"max_steps": 2 if quick else 5, "batch_size": 16, "device": "cpu"}}
    return train(build_recipe(doc, f"<{NAME}>", tmp), quiet=True).run_dir


def write_inputs(path: Path, n: int) -> Path:
    rng = random.Random(n)
    colors, shapes = ("red", "green", "blue", "yellow"), ("circle", "square", "triangle")
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            fh.write(json.dumps({"claim": f"there is a {rng.choice(colors)} {rng.choice(shapes)}"}) + "\n")
    return path


def write_stream_data(folder: Path, n: int, shard_size: int = 1000) -> tuple[str, Path]:
    """``n`` claim samples (~2 KB each) as WebDataset shards (``KEY.json``) and as one JSONL manifest;
    returns the shard pattern and the manifest."""
    from webdataset.writer import TarWriter

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(n)
    colors, shapes = ("red", "green", "blue", "yellow"), ("circle", "square", "triangle")
    note = " ".join(["lorem ipsum dolor"] * 117)  # ~2 KB per row the model does not read (a row's other columns)
    rows = ({"claim": f"there is a {rng.choice(colors)} {rng.choice(shapes)}", "label": rng.randrange(2), "note": note}
            for _ in range(n))
    shards = -(-n // shard_size)
    with (folder / "train.jsonl").open("w", encoding="utf-8") as manifest:
        for s in range(shards):
            with TarWriter(str(folder / f"train-{s:06d}.tar"), encoder=False, mtime=0) as sink:
                for i in range(s * shard_size, min(n, (s + 1) * shard_size)):
                    row = next(rows)
                    manifest.write(json.dumps(row) + "\n")
                    sink.write({"__key__": f"{i:08d}", "json": json.dumps(row).encode()})
    return str(folder / f"train-{{000000..{shards - 1:06d}}}.tar"), folder / "train.jsonl"


STREAM_RECIPE = """
[run]
name = "{name}"
output_dir = "{out}"
seed = 0

[data]
train = "{train}"
columns = {{ text = "claim", label = "label" }}

[model.encoders.text]
type = "text-transformer"
dim = 32
layers = 1
heads = 2

[model.fusion]
type = "concat"

[model.head]
type = "classification"

[train]
epochs = 1
batch_size = 256
num_workers = 0
device = "cpu"
"""


def stream_training(tmp: Path, sizes: list[int], repeats: int, threads: int,
                    contrast: bool = True) -> tuple[dict[str, Any], str]:
    """Peak RSS of one epoch on streamed shards vs (``contrast``) the same rows in memory, per size."""
    mmkit = mmkit_exe()
    data = {n: write_stream_data(tmp / f"stream{n}", n) for n in sizes}
    kinds = ["streamed", "in memory"] if contrast else ["streamed"]
    rss: dict[str, dict[int, list[float]]] = {k: {n: [] for n in sizes} for k in kinds}
    sec: dict[str, dict[int, list[float]]] = {k: {n: [] for n in sizes} for k in kinds}
    for rep in range(repeats):
        for n in sizes:
            for kind in kinds:
                train = data[n][0] if kind == "streamed" else str(data[n][1])
                recipe = tmp / f"stream-{n}-{kind[:2]}.toml"
                recipe.write_text(STREAM_RECIPE.format(name=f"s{n}{kind[:2]}{rep}", out=(tmp / "runs").as_posix(),
                                                       train=train), encoding="utf-8")
                r, t = peak_rss([*mmkit, "run", str(recipe), "-q"], threads)
                rss[kind][n].append(r)
                sec[kind][n].append(t)
                C.say(f"  rep {rep + 1}/{repeats} train {kind}, {n:,} samples: peak RSS {r:.0f} MiB, {t:.1f} s")
    small, large = sizes[0], sizes[-1]
    result = {kind: {str(n): {"peak_rss_mib": C.summary(rss[kind][n]), "seconds": C.summary(sec[kind][n])}
                     for n in sizes} for kind in rss}
    ratio = {kind: C.median(rss[kind][large]) / C.median(rss[kind][small]) for kind in rss}
    md = C.table(["training, 1 epoch", "samples", "x", "peak RSS MiB (median)", "min", "max", "wall s (median)"],
                 [[kind, f"{n:,}", f"{n // small}x", C.median(rss[kind][n]), min(rss[kind][n]), max(rss[kind][n]),
                   C.median(sec[kind][n])] for kind in rss for n in sizes])
    md += (f"\n\nstreamed training peak RSS {large // small}x vs 1x: x{ratio['streamed']:.3f} "
           f"(**{'flat' if ratio['streamed'] < 1.1 else 'grows'}**)"
           + (f"; in memory: x{ratio['in memory']:.3f}. " if contrast else ". ") +
           f"Rows of ~2 KB (a claim, a label, a 2 KB note the model does not read); text-only model "
           f"(text-transformer dim 32 + concat + classification), batch 256, num_workers 0, shards of 1,000 "
           f"samples; {threads} torch thread(s).")
    return {"results": result, "ratios": ratio}, md


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5, quick_repeats=1)
    p.add_argument("--sizes", default=None, help="predict input rows (default 1000,10000,100000; quick 200,2000)")
    p.add_argument("--batch-size", type=int, default=256, help="mmkit predict --batch-size")
    p.add_argument("--quickstart-steps", type=int, default=None, help="max_steps of the quickstart run (default 20)")
    p.add_argument("--quickstart-repeats", type=int, default=None, help="quickstart runs (default 3; quick 1)")
    p.add_argument("--stream-sizes", default=None, help="streamed training samples (default 1000,10000,100000; "
                                                         "quick 100,1000)")
    p.add_argument("--only", choices=["all", "stream"], default="all", help="run only the streaming part")
    args = C.finish_args(p.parse_args(), NAME)
    if args.only == "stream":
        return main_stream(args)
    sizes = [int(s) for s in (args.sizes or ("200,2000" if args.quick else "1000,10000,100000")).split(",")]
    qs_steps = args.quickstart_steps or (2 if args.quick else 20)
    qs_repeats = args.quickstart_repeats or (1 if args.quick else 3)
    load_before = C.loadavg()
    threads = C.set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="mmkit-bench-"))
    mmkit = mmkit_exe()

    # (a) the quickstart recipe, shortened to a few steps (its data generation and final evaluation kept)
    qs = [*mmkit, "run", str(C.ROOT / "recipes" / "quickstart.toml"), "-q", "--set", f"train.max_steps={qs_steps}",
          "--set", f"run.output_dir={(tmp / 'runs').as_posix()}"]
    if args.quick:
        qs += ["--set", "data.options.n_train=32", "--set", "data.options.n_val=8", "--set", "data.options.n_test=8",
               "--set", "model.encoders.image.model=test_resnet", "--set", "train.batch_size=8"]
    C.say(f"{NAME}: quickstart, {qs_steps} steps, {qs_repeats} run(s) ...")
    quick_rss, quick_sec = [], []
    for rep in range(qs_repeats):
        rss, sec = peak_rss([*qs, "--set", f"run.name=qs{rep}"], args.threads)
        quick_rss.append(rss)
        quick_sec.append(sec)
        C.say(f"  quickstart run {rep + 1}: peak RSS {rss:.0f} MiB, {sec:.1f} s")

    # (b) mmkit predict on growing inputs
    C.say(f"{NAME}: training a small text model for predict ...")
    run_dir = train_text_model(tmp, args.quick)
    inputs = {n: write_inputs(tmp / f"in{n}.jsonl", n) for n in sizes}
    rss_by: dict[int, list[float]] = {n: [] for n in sizes}
    sec_by: dict[int, list[float]] = {n: [] for n in sizes}
    for rep in range(args.repeats):
        for n in sizes:
            out = tmp / f"out{n}.jsonl"
            rss, sec = peak_rss([*mmkit, "predict", str(run_dir), "--input", str(inputs[n]), "--out", str(out),
                                 "--batch-size", str(args.batch_size), "-q"], args.threads)
            lines = sum(1 for _ in out.open())
            assert lines == n, (lines, n)
            rss_by[n].append(rss)
            sec_by[n].append(sec)
            C.say(f"  rep {rep + 1}/{args.repeats} predict {n} rows: peak RSS {rss:.0f} MiB, {sec:.1f} s")

    predict = {str(n): {"peak_rss_mib": C.summary(rss_by[n]), "seconds": C.summary(sec_by[n]),
                        "rows_per_s": n / C.median(sec_by[n])} for n in sizes}
    small, large = str(sizes[0]), str(sizes[-1])
    growth = predict[large]["peak_rss_mib"]["median"] - predict[small]["peak_rss_mib"]["median"]
    ratio = predict[large]["peak_rss_mib"]["median"] / predict[small]["peak_rss_mib"]["median"]
    md = C.table(["command", "peak RSS MiB (median)", "min", "max", "wall s (median)", "runs"],
                 [[f"mmkit run quickstart.toml --set train.max_steps={qs_steps}", C.median(quick_rss), min(quick_rss),
                   max(quick_rss), C.median(quick_sec), qs_repeats]]
                 + [[f"mmkit predict, {n:,} rows", predict[str(n)]["peak_rss_mib"]["median"],
                     predict[str(n)]["peak_rss_mib"]["min"], predict[str(n)]["peak_rss_mib"]["max"],
                     predict[str(n)]["seconds"]["median"], args.repeats] for n in sizes])
    md += (f"\n\npredict peak RSS from {int(small):,} to {int(large):,} rows: {growth:+.1f} MiB (x{ratio:.3f}): "
           f"**{'flat (streams)' if ratio < 1.1 else 'grows with the input'}**. Text-only model "
           f"(text-transformer dim 32 + concat + classification), --batch-size {args.batch_size}; "
           f"{threads} torch thread(s) in each child.")
    C.say(f"{NAME}: training on streamed shards ...")
    stream, stream_md = stream_training(tmp, _stream_sizes(args), args.repeats, threads, contrast=not args.quick)
    md += "\n\n" + stream_md
    C.write_result(NAME, args, {
        "params": {"sizes": sizes, "batch_size": args.batch_size, "quickstart_steps": qs_steps, "threads": threads},
        "stream_training": stream,
        "unit": "MiB",
        "results": {"quickstart": {"peak_rss_mib": C.summary(quick_rss), "seconds": C.summary(quick_sec)},
                                   "predict": predict},
        "ratios": {"predict_rss_largest_vs_smallest": ratio}, "predict_rss_growth_mib": growth,
    }, md, load_before)


def _stream_sizes(args: Any) -> list[int]:
    return [int(s) for s in (args.stream_sizes or ("100,1000" if args.quick else "1000,10000,100000")).split(",")]


def main_stream(args: Any) -> None:
    """``--only stream``: the streamed-training table alone."""
    load_before = C.loadavg()
    threads = C.set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="mmkit-bench-"))
    C.say(f"{NAME}: training on streamed shards ...")
    stream, md = stream_training(tmp, _stream_sizes(args), args.repeats, threads)
    args.out = args.out.replace(".json", "-stream.json")
    C.write_result(NAME, args, {"params": {"sizes": _stream_sizes(args), "threads": threads}, "unit": "MiB",
                                "stream_training": stream}, md, load_before)


if __name__ == "__main__":
    main()
