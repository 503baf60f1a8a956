"""Data pipeline: (a) samples/s of mmkit's manifest image pipeline vs a plain PIL + torchvision loop,
with 0, 1 and 2 DataLoader workers; (b) the fraction of the quickstart training loop's time spent
waiting for the next batch.

(a) ``mmkit data export shapes --n 2000`` writes PNG files and a JSONL manifest; one epoch over the
training split is read by ``MultimodalDataset`` + ``Collator`` (the image modality's loader and the
timm encoder's ``preprocess``: RGB, [0, 1], mean/std normalisation) and, interleaved with it, by a
plain ``Dataset`` doing ``PIL.Image.open(path).convert("RGB")`` + torchvision ``ToTensor`` +
``Normalize`` with the default collate. Same batch size, shuffling and workers on both sides.

(b) ``mmkit._internal.trainer.train`` runs the quickstart model (64 px, batch 64, ``num_workers`` auto = 0 on
CPU) with its training DataLoader instrumented: the time inside ``next(iterator)`` over the time of
whole steps (wall and process-CPU clocks) is the fraction of the loop spent waiting on data.

    python benchmarks/data_pipeline.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

NAME = "data_pipeline"


class _PlainDataset:
    def __init__(self, paths: list[Path], mean: Any, std: Any) -> None:
        from torchvision import transforms

        self.paths = paths
        self.tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.tf(im.convert("RGB"))


def export(n: int, out: Path) -> Path:
    exe = Path(sys.executable).with_name("mmkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mmkit"]
    subprocess.run([*cmd, "data", "export", "shapes", "--n", str(n), "--split-sizes", f"{n},0,0", "--out", str(out)],
                   check=True, capture_output=True, cwd=C.ROOT)
    return out / "train.jsonl"


def pipeline_throughput(args: Any, tmp: Path) -> tuple[dict[str, list[float]], int]:
    import torch

    import mmkit
    from mmkit._internal.data import Collator, Field, MultimodalDataset
    from mmkit._internal.manifest import load_manifest_splits
    from mmkit._internal.registry import get_registry

    manifest = export(args.n, tmp / "shapes")
    splits = load_manifest_splits(train=manifest, columns={"image": "image"})
    rows = splits.splits["train"]
    encoder = mmkit.create("encoder", "timm", model="test_resnet")  # preprocessing does not depend on the model
    modality = get_registry().get("modality", "image").load()()
    fld = Field("image", "image", modality, encoder)
    paths = [splits.base_dir / r["image"] for r in rows]

    def epoch(dl: Any) -> float:
        t0 = time.perf_counter()
        n = 0
        for batch in dl:
            n += batch.size if hasattr(batch, "size") and not callable(batch.size) else len(batch)
        assert n == len(rows), (n, len(rows))
        return n / (time.perf_counter() - t0)

    def mmkit_side(workers: int) -> float:
        ds = MultimodalDataset(rows, [fld], None, None, base_dir=splits.base_dir, source="bench", train=True)
        dl = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=Collator([fld], None))
        return epoch(dl)

    def torch_side(workers: int) -> float:
        dl = torch.utils.data.DataLoader(_PlainDataset(paths, encoder.mean, encoder.std), batch_size=args.batch_size,
                                         shuffle=True, num_workers=workers)
        return epoch(dl)

    sides = {}
    for w in args.workers:
        sides[f"mmkit, {w} workers"] = (lambda w=w: mmkit_side(w))
        sides[f"PIL + torchvision, {w} workers"] = (lambda w=w: torch_side(w))
    C.say(f"{NAME}: {args.repeats} interleaved epochs of {len(rows)} images per side ...")
    return C.interleave(sides, args.repeats, warmup=not args.quick, log=C.say), len(rows)


class _Timing:
    """Wall/CPU timestamps around each ``next()`` of the training DataLoader's iterator."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, float, float]] = []  # (wall start, wall end, cpu start, cpu end)

    def wrap(self, iterator: Any) -> Any:
        while True:
            w, c = time.perf_counter(), time.process_time()
            try:
                item = next(iterator)
            except StopIteration:
                return
            self.calls.append((w, time.perf_counter(), c, time.process_time()))
            yield item

    def fractions(self) -> dict[str, float]:
        """Waiting share of complete cycles (wait + step) 1..N-1, on each clock."""
        calls = self.calls
        if len(calls) < 2:
            return {"wall": float("nan"), "cpu": float("nan")}
        out = {}
        for name, (s, e) in (("wall", (0, 1)), ("cpu", (2, 3))):
            total = calls[-1][s] - calls[0][s]
            wait = sum(c[e] - c[s] for c in calls[:-1])
            out[name] = wait / total
        return out


def loader_wait(args: Any, tmp: Path) -> dict[str, list[float]]:
    import torch

    from mmkit._internal.trainer import train
    from mmkit._internal.recipe import build_recipe

    original = torch.utils.data.DataLoader
    timings: list[_Timing] = []

    class TimedLoader(original):  # type: ignore[misc, valid-type]
        def __iter__(self) -> Any:
            it = super().__iter__()
            if getattr(self.dataset, "train", False):  # the training loader (not the cache/eval ones)
                timing = _Timing()
                timings.append(timing)
                return timing.wrap(it)
            return it

    steps = args.wait_steps
    bs = 8 if args.quick else 64
    doc = {"run": {"name": "wait", "output_dir": str(tmp / "runs"), "seed": 0},
           "data": {"dataset": "shapes", "options": {"n_train": (steps + 1) * bs, "n_val": 0, "n_test": 0,
                                                     "image_size": 32 if args.quick else 64}},
           "model": {"encoders": {"image": {"type": "timm", "model": "test_resnet" if args.quick else "resnet10t"},
                                  "text": {"type": "text-transformer", "dim": 16 if args.quick else 64, "layers": 1,
                                           "heads": 2 if args.quick else 4}},
                     "fusion": {"type": "transformer", "dim": 16 if args.quick else 64, "layers": 2,
                                "heads": 2 if args.quick else 4},
                     "head": {"type": "classification"}},
           "train": {"max_steps": steps, "batch_size": bs, "lr": 1e-3, "device": "cpu"}}
    out: dict[str, list[float]] = {"wall": [], "cpu": []}
    torch.utils.data.DataLoader = TimedLoader
    try:
        for rep in range(args.repeats):
            doc["run"]["name"] = f"wait{rep}"
            train(build_recipe(doc, f"<{NAME}>", tmp), quiet=True)
            fr = timings[-1].fractions()
            out["wall"].append(fr["wall"])
            out["cpu"].append(fr["cpu"])
            C.say(f"  rep {rep + 1}/{args.repeats} loader wait: wall {fr['wall']:.3%}, cpu {fr['cpu']:.3%}")
    finally:
        torch.utils.data.DataLoader = original
    return out


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5)
    p.add_argument("--n", type=int, default=None, help="images exported (default 2000; quick 48)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64; quick 16")
    p.add_argument("--workers", default=None, help="comma-separated worker counts (default 0,1,2; quick 0,1)")
    p.add_argument("--wait-steps", type=int, default=None, help="training steps timed in (b) (default 15; quick 3)")
    args = C.finish_args(p.parse_args(), NAME)
    args.n = args.n or (48 if args.quick else 2000)
    args.batch_size = args.batch_size or (16 if args.quick else 64)
    args.workers = [int(w) for w in (args.workers or ("0,1" if args.quick else "0,1,2")).split(",")]
    args.wait_steps = args.wait_steps or (3 if args.quick else 15)
    load_before = C.loadavg()
    threads = C.set_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="mmkit-bench-"))

    values, n_rows = pipeline_throughput(args, tmp)
    results = {name: C.summary(v) for name, v in values.items()}
    ratios = {f"mmkit_vs_torch_{w}_workers": C.median(C.pair_ratios(values[f"mmkit, {w} workers"],
                                                                    values[f"PIL + torchvision, {w} workers"]))
              for w in args.workers}
    C.say(f"{NAME}: loader wait inside the quickstart training loop ...")
    wait = loader_wait(args, tmp)
    wait_summary = {k: C.summary(v) for k, v in wait.items()}

    md = C.table(["pipeline", f"images/s (median of {args.repeats} epochs)", "min", "max"],
                 [[name, r["median"], r["min"], r["max"]] for name, r in results.items()])
    md += "\n\nmmkit / plain ratio: " + ", ".join(f"{w} workers **{ratios[f'mmkit_vs_torch_{w}_workers']:.2f}**"
                                                  for w in args.workers)
    md += (f" ({n_rows} PNG images of {32 if args.quick else 64} px, batch {args.batch_size}, one epoch per repeat, "
           f"worker start-up included).\n\n")
    md += C.table(["quickstart training loop (workers auto = 0 on CPU)", f"median of {args.repeats}", "min", "max"],
                  [[f"share of step time waiting on the loader ({clock} clock)", f"{s['median']:.1%}",
                    f"{s['min']:.1%}", f"{s['max']:.1%}"] for clock, s in wait_summary.items()])
    C.write_result(NAME, args, {
        "params": {"n": n_rows, "batch_size": args.batch_size, "workers": args.workers, "threads": threads,
                   "wait_steps": args.wait_steps},
        "unit": "images/s", "results": results, "ratios": ratios, "loader_wait_fraction": wait_summary,
    }, md, load_before)


if __name__ == "__main__":
    main()
