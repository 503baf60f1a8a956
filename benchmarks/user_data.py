"""A user's own files: mmkit vs a hand-written loop that pre-decodes, on a quiet and on a busy machine.

The benchmark writes a manifest of PNG files (noise images tinted by their label, 64 px, a
three-word caption each) and trains the issue-21 model on it -- timm resnet10t at 64 px +
text-transformer + transformer fusion + classification head, batch 32, AdamW, cosine schedule,
gradient clipping -- for ``--epochs`` epochs, two ways, interleaved (A B A B ..., ``--repeats``
times after one untimed warm-up of each), each repeat from a freshly built model:

* ``mmkit``: ``mmkit._internal.trainer.train`` on a recipe naming the manifest, every speed setting at its
  default (``threads = "auto"``, ``data_cache = "auto"``, ``num_workers = "auto"``).
* ``hand``: what a competent engineer writes: every PNG decoded once into a uint8 tensor and every
  caption tokenized once (reported, not timed), then per epoch a shuffled index, normalisation on the
  fly, the same modules (built by ``mmkit._internal.assembly.assemble``), one loss sync per 10 steps; torch
  intra-op threads ``--threads`` (default 1: what that engineer sets on a shared machine).

Phase (a) runs on the machine as it is ("quiet"; the load average is printed, since other users'
processes count), phase (b) with a competing CPU-bound process that the benchmark starts itself
(``--competitors``, default 1: a busy loop pinned to nothing, sharing the cores). Reported: samples/s
over all epochs and over the steady epochs (the second on: mmkit's first epoch decodes the PNGs,
the hand loop's decoding is not timed), the ratio mmkit / hand in each phase, and each side's
slowdown under load (quiet / busy). The thread policy's choice is recorded per repeat. Last, peak
RSS of one training run in a fresh process with ``data_cache = "off"`` and ``"auto"``.

    python benchmarks/user_data.py                      # the numbers in docs/performance.md
    python benchmarks/user_data.py --quick              # CI size (test_resnet, 32 px)
    python benchmarks/user_data.py --clock cpu --no-busy  # quiet phase on the process-CPU clock
    python benchmarks/user_data.py --no-busy --workers 1  # does a loader worker pay on CPU?
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C

NAME = "user_data"
WORDS = ["red", "blue", "green", "round", "square", "small", "large", "dark", "light", "striped"]


def build_manifest(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` PNG files and ``train.csv`` (image, text, label) in ``folder``; returns the CSV."""
    import numpy as np
    from PIL import Image

    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = folder / "train.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "text", "label"])
        for i in range(n):
            label = int(rng.integers(0, 4))
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            pixels[..., label % 3] //= 2
            Image.fromarray(pixels).save(folder / f"img/{i}.png")
            writer.writerow([f"img/{i}.png", " ".join(rng.choice(WORDS, 3)), f"class{label}"])
    return out


def recipe_doc(args: Any, folder: Path, out_dir: str, name: str, cache: str = "auto") -> dict[str, Any]:
    dim, heads = (16, 2) if args.quick else (64, 4)
    return {
        "run": {"name": name, "output_dir": out_dir, "seed": 0},
        "data": {"train": str(folder / "train.csv")},
        "model": {
            "encoders": {"image": {"type": "timm", "model": "test_resnet" if args.quick else "resnet10t"},
                         "text": {"type": "text-transformer", "dim": dim, "layers": 1, "heads": heads}},
            "fusion": {"type": "transformer", "dim": dim, "layers": 2, "heads": heads},
            "head": {"type": "classification"},
        },
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "log_every": 10,
                  "device": "cpu", "precision": "fp32", "data_cache": cache, "cache": False,
                  "num_workers": getattr(args, "workers", "auto")},
    }


class Hand:
    """The hand-written loop over pre-decoded tensors (data prepared once, not timed)."""

    clock = staticmethod(time.perf_counter)

    def __init__(self, args: Any, recipe: Any, threads: int) -> None:
        import numpy as np
        import torch
        from PIL import Image

        from mmkit._internal.assembly import load_splits, plan_data
        from mmkit._internal.registry import get_registry

        self.args, self.recipe, self.threads = args, recipe, threads
        self.registry = get_registry()
        self.plan = plan_data(recipe, load_splits(recipe, self.registry))
        self.rows = self.plan.rows("train")
        base = self.plan.splits.base_dir
        model = self.fresh_model()
        t0 = time.perf_counter()
        arrays = [np.asarray(Image.open(base / r["image"]).convert("RGB")) for r in self.rows]
        self.images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        self.ids, self.mask = C.pretensor_texts(model.encoders["text"], [r["text"] for r in self.rows])
        self.labels = torch.tensor([model.head.label_index(r["label"]) for r in self.rows])
        self.convert_seconds = time.perf_counter() - t0
        enc = model.encoders["image"]
        self.mean = torch.tensor(enc.mean).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(enc.std).view(1, 3, 1, 1) * 255

    def fresh_model(self) -> Any:
        from mmkit._internal.assembly import assemble
        from mmkit._internal.rng import seed_everything

        seed_everything(0)
        return assemble(self.recipe, self.registry, self.plan).train()

    def run(self) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(self.threads)
        model = self.fresh_model()
        t = self.recipe.train
        bs, n = self.args.batch_size, len(self.rows)
        per_epoch = math.ceil(n / bs)
        opt, sched = C.hand_optimizer(model, t, per_epoch * self.args.epochs)
        times, step = [], 0
        running = torch.zeros(())
        for epoch in range(self.args.epochs):
            t0 = self.clock()
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
            for b in range(per_epoch):
                idx = perm[b * bs:(b + 1) * bs]
                x = (self.images[idx].float() - self.mean) / self.std
                m = self.mask[idx]
                length = int(m.sum(1).max())
                e_img = model.encoders["image"](x)
                e_txt = model.encoders["text"]({"ids": self.ids[idx, :length], "mask": m[:, :length]})
                fused = model.fusion({"image": e_img, "text": e_txt})
                loss = F.cross_entropy(model.head.out(model.head.trunk(fused.pooled)).float(), self.labels[idx])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                running += loss.detach()
                step += 1
                if step % 10 == 0:
                    float(running)
                    running.zero_()
            times.append(self.clock() - t0)
        return rates(times, n)


def rates(epoch_seconds: list[float], n: int) -> dict[str, float]:
    """Samples/s over all epochs and over the steady ones (the second on)."""
    steady = epoch_seconds[1:] or epoch_seconds
    return {"all": n * len(epoch_seconds) / sum(epoch_seconds), "steady": n * len(steady) / sum(steady)}


def mmkit_side(args: Any, folder: Path, tmp: str, runs: Any, log: dict[str, list[Any]]) -> dict[str, float]:
    from mmkit import Callback
    from mmkit._internal.recipe import build_recipe
    from mmkit._internal.trainer import train

    seconds: list[float] = []

    class Epochs(Callback):
        def on_epoch_end(self, trainer: Any, stats: Any) -> None:
            seconds.append(float(stats["seconds"]))

    recipe = build_recipe(recipe_doc(args, folder, tmp, f"run{next(runs)}", args.data_cache), f"<{NAME}>", tmp)
    result = train(recipe, quiet=True, callbacks=[Epochs()])
    log["threads"].append(result.summary["threads"])
    log["cache"].append(result.summary["data_cache"].get("train", {}))
    n = result.summary["samples_seen"] // max(1, len(seconds))
    return rates(seconds, n)


def start_competitors(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` CPU-bound processes (a pure-Python busy loop each), started by the benchmark itself."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def phase(args: Any, sides: dict[str, Any], label: str) -> dict[str, dict[str, list[float]]]:
    """Interleaved repeats; ``{side: {"all": [...], "steady": [...]}}``."""
    out: dict[str, dict[str, list[float]]] = {s: {"all": [], "steady": []} for s in sides}
    if not args.quick:
        for fn in sides.values():
            fn()
    for rep in range(args.repeats):
        for name, fn in sides.items():
            r = fn()
            out[name]["all"].append(r["all"])
            out[name]["steady"].append(r["steady"])
            C.say(f"  {label} rep {rep + 1}/{args.repeats} {name}: {r['steady']:.1f} samples/s steady, "
                  f"{r['all']:.1f} all  (load {C.loadavg()[:1]})")
    return out


def peak_rss(folder: Path, cache: str, quick: bool, epochs: int, batch_size: int) -> int:
    """Peak RSS (KiB) of one training run in a fresh process."""
    cmd = [sys.executable, __file__, "--rss-child", cache, "--manifest", str(folder), "--epochs", str(epochs),
           "--batch-size", str(batch_size)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["maxrss_kb"])


def rss_child(args: Any) -> None:
    import resource

    from mmkit._internal.recipe import build_recipe
    from mmkit._internal.trainer import train

    tmp = tempfile.mkdtemp(prefix="mmkit-rss-")
    folder = Path(args.manifest)
    train(build_recipe(recipe_doc(args, folder, tmp, "rss", args.rss_child), f"<{NAME}>", tmp), quiet=True)
    print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5)
    p.add_argument("--images", type=int, default=None, help="PNG files in the manifest (default 256; quick 32)")
    p.add_argument("--image-size", type=int, default=None, help="default 64; quick 32")
    p.add_argument("--epochs", type=int, default=None, help="epochs per repeat (default 3; quick 2)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; quick 8")
    p.add_argument("--competitors", type=int, default=1, help="CPU-bound processes in the busy phase")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall (default: what a user waits) or process CPU time (robust to other users' load; "
                        "meaningful with 1 thread and no workers)")
    p.add_argument("--no-busy", action="store_true", help="skip the busy phase (b)")
    p.add_argument("--workers", default="auto", help="mmkit's train.num_workers (default auto = 0 on CPU)")
    p.add_argument("--data-cache", default="auto", choices=["auto", "memory", "disk", "off"],
                   help="mmkit's train.data_cache (default auto)")
    p.add_argument("--rss-child", default=None, help=argparse_hidden())
    p.add_argument("--manifest", default=None, help=argparse_hidden())
    args = C.finish_args(p.parse_args(), NAME)
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.batch_size = args.batch_size or (8 if args.quick else 32)
    args.workers = int(args.workers) if str(args.workers).isdigit() else "auto"
    if args.rss_child:
        return rss_child(args)
    args.images = args.images or (32 if args.quick else 256)
    args.image_size = args.image_size or (32 if args.quick else 64)
    load_before = C.loadavg()

    from mmkit._internal.recipe import build_recipe
    from mmkit._internal.trainer import Trainer

    if args.clock == "cpu":
        Trainer.clock = staticmethod(time.process_time)  # the clock of the loop's train_time
        Hand.clock = staticmethod(time.process_time)
    tmp = tempfile.mkdtemp(prefix="mmkit-userdata-")
    folder = Path(tmp) / "manifest"
    build_manifest(folder, args.images, args.image_size)
    runs = iter(range(10**6))
    log: dict[str, list[Any]] = {"threads": [], "cache": []}
    hand = Hand(args, build_recipe(recipe_doc(args, folder, tmp, "prep"), f"<{NAME}>", tmp), max(1, args.threads))
    sides = {"mmkit": lambda: mmkit_side(args, folder, tmp, runs, log), "hand": hand.run}

    C.say(f"{NAME}: (a) quiet, {args.repeats} interleaved repeats of {args.epochs} epochs x {args.images} PNGs ...")
    quiet = phase(args, sides, "quiet")
    quiet_threads = list(log["threads"])
    load_quiet = C.loadavg()
    if args.no_busy:
        busy = quiet
    else:
        C.say(f"{NAME}: (b) with {args.competitors} competing CPU-bound process(es) ...")
        procs = start_competitors(args.competitors)
        try:
            time.sleep(0.5)
            busy = phase(args, sides, "busy")
        finally:
            stop(procs)
    busy_threads = log["threads"][len(quiet_threads):]
    rss = {mode: peak_rss(folder, mode, args.quick, args.epochs, args.batch_size) for mode in ("off", "auto")}
    report(args, quiet, busy, quiet_threads, busy_threads, log["cache"][-1], rss, hand, load_before, load_quiet)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


def report(args: Any, quiet: Any, busy: Any, quiet_threads: list[Any], busy_threads: list[Any], cache: Any,
           rss: dict[str, int], hand: Hand, load_before: list[float], load_quiet: list[float]) -> None:
    results = {ph: {side: {k: C.summary(v) for k, v in vals.items()} for side, vals in data.items()}
               for ph, data in (("quiet", quiet), ("busy", busy))}
    ratios = {ph: {k: C.median(C.pair_ratios(data["mmkit"][k], data["hand"][k])) for k in ("steady", "all")}
              for ph, data in (("quiet", quiet), ("busy", busy))}
    slowdown = {side: {k: results["quiet"][side][k]["median"] / results["busy"][side][k]["median"]
                       for k in ("steady", "all")} for side in ("mmkit", "hand")}
    choice = {"quiet": sorted({t["threads"] for t in quiet_threads}),
              "busy": sorted({t["threads"] for t in busy_threads}),
              "quiet_reasons": sorted({t["reason"] for t in quiet_threads}),
              "busy_reasons": sorted({t["reason"] for t in busy_threads})}
    busy_text = "no busy phase" if args.no_busy else f"{args.competitors} competitor(s) in the busy phase"
    rows = [[ph, side, results[ph][side]["steady"]["median"], results[ph][side]["steady"]["min"],
             results[ph][side]["steady"]["max"], results[ph][side]["all"]["median"]]
            for ph in (("quiet",) if args.no_busy else ("quiet", "busy")) for side in ("mmkit", "hand")]
    md = C.table(["phase", "side", f"steady samples/s (median of {args.repeats})", "min", "max",
                  "all epochs samples/s"], rows)
    if args.no_busy:
        md += (f"\n\nmmkit / hand (median of per-repeat ratios), steady epochs: **{ratios['quiet']['steady']:.3f}**; "
               f"all epochs (mmkit's first decodes the PNGs): {ratios['quiet']['all']:.3f}. Thread policy: "
               f"{choice['quiet']} ({'; '.join(choice['quiet_reasons'])}); hand loop {hand.threads} thread(s). "
               f"Decoded-sample cache: ")
    else:
        md += (f"\n\nmmkit / hand (median of per-repeat ratios), steady epochs: quiet "
               f"**{ratios['quiet']['steady']:.3f}**, busy **{ratios['busy']['steady']:.3f}**; all epochs (mmkit's "
               f"first decodes the PNGs): quiet {ratios['quiet']['all']:.3f}, busy {ratios['busy']['all']:.3f}. "
               f"Slowdown under load (quiet / busy, steady): mmkit **{slowdown['mmkit']['steady']:.2f}x**, hand "
               f"**{slowdown['hand']['steady']:.2f}x**. Thread policy: {choice['quiet']} quiet "
               f"({'; '.join(choice['quiet_reasons'])}), {choice['busy']} busy ({'; '.join(choice['busy_reasons'])}); "
               f"hand loop {hand.threads} thread(s). Decoded-sample cache: ")
    md += (f"{cache.get('memory_mb')} MB in memory, {cache.get('disk_mb')} MB on disk. Peak RSS of one run: "
           f"{rss['off'] / 1024:.0f} MB with data_cache off, {rss['auto'] / 1024:.0f} MB with auto. "
           f"{args.images} PNGs of {args.image_size} px, {args.epochs} epochs x batch {args.batch_size}, "
           f"{args.clock} clock, {busy_text}; load after the quiet phase "
           f"{'/'.join(map(str, load_quiet))}. Hand loop's one-off decoding: {hand.convert_seconds:.2f} s (not timed).")
    C.write_result(NAME, args, {
        "params": {"images": args.images, "image_size": args.image_size, "epochs": args.epochs,
                   "workers": str(args.workers), "data_cache": args.data_cache, "clock": args.clock,
                   "busy_phase": not args.no_busy,
                   "batch_size": args.batch_size, "competitors": args.competitors, "hand_threads": hand.threads,
                   "image_model": "test_resnet" if args.quick else "resnet10t"},
        "results": results, "ratios": ratios, "slowdown": slowdown, "thread_choice": choice,
        "threads_per_repeat": {"quiet": quiet_threads, "busy": busy_threads}, "data_cache": cache,
        "peak_rss_kb": rss, "convert_seconds": hand.convert_seconds, "loadavg_after_quiet": load_quiet,
    }, md, load_before)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
