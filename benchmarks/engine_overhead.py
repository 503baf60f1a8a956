"""Engine overhead: mmkit's training loop vs a hand-written PyTorch loop on the same model and data.

Model: the quickstart's (timm resnet10t at 64 px + text-transformer + transformer fusion +
classification head) on the ``shapes`` claim task; same batch size, optimizer (AdamW, no decay on
norms/biases), gradient clipping (1.0), cosine schedule with warm-up, and number of steps.

Sides, interleaved in one process (A B C A B C ...), each rep from a freshly built model:

* ``mmkit``: ``mmkit._internal.trainer.train`` on the recipe; samples/s from its summary (training loop only:
  data loading included, model building, evaluation and checkpoints excluded).
* ``torch_pretensor``: the baseline a competent engineer writes for a dataset that fits in memory:
  images converted once to a uint8 tensor, texts tokenized once to padded ids; each step slices a
  shuffled index, normalises on the fly, runs the same modules (built by ``mmkit._internal.assembly.assemble``)
  and syncs the loss to Python only every 10 steps. The one-off conversion is reported, not timed.
* ``torch_loader``: a plain ``Dataset`` + ``DataLoader`` doing the same per-sample conversion
  (PIL -> normalised tensor, tokenize) every epoch, as mmkit does for a non-frozen encoder.

The headline ratio is mmkit / torch_pretensor (target >= 0.97).

    python benchmarks/engine_overhead.py            # the numbers in docs/performance.md
    python benchmarks/engine_overhead.py --clock cpu  # process CPU time instead of wall time
    python benchmarks/engine_overhead.py --device cuda --precision bf16   # on a GPU (benchmarks/gpu.sh)
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import nullcontext
from typing import Any

import _common as C

NAME = "engine_overhead"


def recipe_doc(args: Any, out_dir: str, run_name: str) -> dict[str, Any]:
    size = 32 if args.quick else args.image_size
    dim = 16 if args.quick else 64
    heads = 2 if args.quick else 4
    return {
        "run": {"name": run_name, "output_dir": out_dir, "seed": 0},
        "data": {"dataset": "shapes",
                 "options": {"n_train": args.steps * args.batch_size, "n_val": 0, "n_test": 0, "image_size": size}},
        "model": {
            "encoders": {"image": {"type": "timm", "model": "test_resnet" if args.quick else "resnet10t"},
                         "text": {"type": "text-transformer", "dim": dim, "layers": 1, "heads": heads}},
            "fusion": {"type": "transformer", "dim": dim, "layers": 2, "heads": heads},
            "head": {"type": "classification"},
        },
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "lr": 1e-3, "log_every": 10,
                  "device": args.device, "precision": args.precision, "num_workers": args.workers,
                  "cache": False},
    }


class Baselines:
    """The hand-written loops. Data are prepared once (the splits mmkit would train on)."""

    def __init__(self, args: Any, recipe: Any) -> None:
        import numpy as np
        import torch

        from mmkit._internal.assembly import choose_device, load_splits, plan_data
        from mmkit._internal.registry import get_registry
        from mmkit._internal.trainer import Precision

        self.args, self.recipe = args, recipe
        self.registry = get_registry()
        self.device = choose_device(recipe.train["device"])
        self.amp_dtype = Precision.choose(recipe.train["precision"], self.device).dtype
        self.splits = load_splits(recipe, self.registry)
        self.plan = plan_data(recipe, self.splits)
        self.rows = self.splits.splits["train"]
        model = self.fresh_model()
        t0 = time.perf_counter()
        images = [np.asarray(r["image"].convert("RGB")) for r in self.rows]
        self.images = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # uint8 [N,3,H,W]
        self.ids, self.mask = C.pretensor_texts(model.encoders["text"], [r["claim"] for r in self.rows])
        self.labels = torch.tensor([model.head.label_index(r["label"]) for r in self.rows])
        if self.device.type == "cuda":
            self.images, self.ids, self.mask, self.labels = (t.to(self.device) for t in
                                                               (self.images, self.ids, self.mask, self.labels))
        self.convert_seconds = time.perf_counter() - t0
        enc = model.encoders["image"]
        self.mean = torch.tensor(enc.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(enc.std, device=self.device).view(1, 3, 1, 1) * 255

    def fresh_model(self) -> Any:
        from mmkit._internal.assembly import assemble
        from mmkit._internal.rng import seed_everything

        seed_everything(0)
        model = assemble(self.recipe, self.registry, self.plan)
        return model.to(self.device).train()

    def optimizer(self, model: Any) -> tuple[Any, Any]:
        return C.hand_optimizer(model, self.recipe.train, self.args.steps)

    def _step(self, model: Any, opt: Any, sched: Any, x: Any, ids: Any, mask: Any, y: Any) -> Any:
        import torch
        import torch.nn.functional as F

        ctx = (torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext())
        with ctx:
            e_img = model.encoders["image"](x)
            e_txt = model.encoders["text"]({"ids": ids, "mask": mask})
            fused = model.fusion({"image": e_img, "text": e_txt})
            logits = model.head.out(model.head.trunk(fused.pooled))
            loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.recipe.train["grad_clip"])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def _sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def pretensor(self, clock: Any) -> float:
        import torch

        model = self.fresh_model()
        opt, sched = self.optimizer(model)
        bs, n = self.args.batch_size, len(self.rows)
        self._sync()
        t0 = clock()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(self.device)
        running = torch.zeros((), device=self.device)
        for step in range(self.args.steps):
            idx = perm[(step * bs) % n:][:bs]
            x = (self.images[idx].float() - self.mean) / self.std
            m = self.mask[idx]
            length = int(m.sum(1).max()) if self.device.type == "cpu" else m.shape[1]
            running += self._step(model, opt, sched, x, self.ids[idx, :length], m[:, :length], self.labels[idx])
            if (step + 1) % 10 == 0:
                float(running)  # log the loss like any loop does (one sync per 10 steps)
                running.zero_()
        self._sync()
        return self.args.steps * bs / (clock() - t0)

    def loader(self, clock: Any) -> float:
        import torch

        model = self.fresh_model()
        opt, sched = self.optimizer(model)
        ds = _PerSampleDataset(self.rows, model.encoders["image"].mean, model.encoders["image"].std,
                               model.encoders["text"].tokenizer, model.encoders["text"].max_length,
                               model.head.label_index)
        workers = self.args.workers if isinstance(self.args.workers, int) else (  # mmkit's "auto"
            0 if self.device.type == "cpu" else min(8, os.cpu_count() or 1))
        dl = torch.utils.data.DataLoader(ds, batch_size=self.args.batch_size, shuffle=True, num_workers=workers,
                                         collate_fn=_pad_collate, pin_memory=self.device.type == "cuda",
                                         generator=torch.Generator().manual_seed(0))
        self._sync()
        t0 = clock()
        running = torch.zeros((), device=self.device)
        step = 0
        while step < self.args.steps:
            for x, ids, mask, y in dl:
                x, ids, mask, y = (t.to(self.device, non_blocking=True) for t in (x, ids, mask, y))
                running += self._step(model, opt, sched, x, ids, mask, y)
                step += 1
                if step % 10 == 0:
                    float(running)
                    running.zero_()
                if step >= self.args.steps:
                    break
        self._sync()
        return self.args.steps * self.args.batch_size / (clock() - t0)


class _PerSampleDataset:
    """PIL image -> normalised float tensor and text -> token ids, per sample (what the timm and
    text-transformer encoders' ``preprocess`` do), in a plain torch Dataset."""

    def __init__(self, rows: list[dict[str, Any]], mean: Any, std: Any, tokenizer: Any, max_len: int,
                 label_index: Any) -> None:
        import torch

        self.rows, self.tok, self.max_len, self.label_index = rows, tokenizer, max_len, label_index
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, list[int], int]:
        import numpy as np
        import torch

        row = self.rows[i]
        arr = np.asarray(row["image"].convert("RGB"), dtype=np.float32)
        x = (torch.from_numpy(arr).permute(2, 0, 1) / 255.0 - self.mean) / self.std
        ids = self.tok.encode(str(row["claim"]), max_len=self.max_len) or [self.tok.unk_id]
        return x, ids, self.label_index(row["label"])


def _pad_collate(items: list[tuple[Any, list[int], int]]) -> tuple[Any, Any, Any, Any]:
    import torch

    length = max(len(it[1]) for it in items)
    ids = torch.zeros((len(items), length), dtype=torch.long)  # pad id 0 for both tokenizers
    mask = torch.zeros((len(items), length), dtype=torch.bool)
    for i, (_, seq, _) in enumerate(items):
        ids[i, : len(seq)] = torch.tensor(seq)
        mask[i, : len(seq)] = True
    return torch.stack([it[0] for it in items]), ids, mask, torch.tensor([it[2] for it in items])


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5)
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per rep (default 10; quick 3)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 (the quickstart's); quick 8")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    p.add_argument("--workers", default="auto", help="DataLoader workers for mmkit and torch_loader (auto = mmkit's)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: elapsed time (the target); cpu: process CPU time, robust to other load on a "
                        "shared machine (it swaps the Trainer's clock; CPU only, workers 0)")
    args = C.finish_args(p.parse_args(), NAME)
    args.steps = args.steps or (3 if args.quick else 10)
    args.batch_size = args.batch_size or (8 if args.quick else 64)
    args.workers = int(args.workers) if str(args.workers).isdigit() else "auto"
    load_before = C.loadavg()

    from mmkit._internal.trainer import Trainer, train
    from mmkit._internal.recipe import build_recipe

    threads = C.set_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.clock == "cpu":
        if args.device != "cpu":
            raise SystemExit("--clock cpu measures CPU work; use it with --device cpu")
        Trainer.clock = staticmethod(time.process_time)  # the clock of the loop's train_time

    tmp = tempfile.mkdtemp(prefix="mmkit-bench-")
    runs = iter(range(10**6))

    def recipe(name: str) -> Any:
        return build_recipe(recipe_doc(args, tmp, name), f"<{NAME}>", tmp)

    C.say(f"{NAME}: preparing the baselines' data ...")
    base = Baselines(args, recipe("prep"))

    def mmkit_side() -> float:
        result = train(recipe(f"run{next(runs)}"), quiet=True)
        return float(result.summary["samples_per_s"])

    sides = {"mmkit": mmkit_side, "torch_pretensor": lambda: base.pretensor(clock),
             "torch_loader": lambda: base.loader(clock)}
    C.say(f"{NAME}: {args.repeats} interleaved repeats of {args.steps} steps x {args.batch_size} samples "
          f"({args.clock} clock, {threads} thread(s)) ...")
    values = C.interleave(sides, args.repeats, warmup=not args.quick, log=C.say)

    results = {name: C.summary(v) for name, v in values.items()}
    ratios = {
        "mmkit_vs_torch_pretensor": C.median(C.pair_ratios(values["mmkit"], values["torch_pretensor"])),
        "mmkit_vs_torch_loader": C.median(C.pair_ratios(values["mmkit"], values["torch_loader"])),
    }
    ratio_of_medians = results["mmkit"]["median"] / results["torch_pretensor"]["median"]
    unit = "samples/s" if args.clock == "wall" else "samples per CPU-second"
    rows = [[name, results[name]["median"], results[name]["min"], results[name]["max"]] for name in values]
    md = C.table(["side", f"{unit} (median of {args.repeats})", "min", "max"], rows)
    md += (f"\n\nratio mmkit / torch_pretensor: **{ratios['mmkit_vs_torch_pretensor']:.3f}** (median of per-repeat "
           f"ratios; ratio of medians {ratio_of_medians:.3f}); mmkit / torch_loader: "
           f"{ratios['mmkit_vs_torch_loader']:.3f}. Target >= 0.97. One-off tensor conversion of the "
           f"pre-tensorized baseline: {base.convert_seconds:.2f} s (not timed). {args.steps} steps x "
           f"{args.batch_size} samples per rep, device {base.device}, precision {args.precision}, {args.clock} clock.")
    C.write_result(NAME, args, {
        "params": {"steps": args.steps, "batch_size": args.batch_size, "device": str(base.device),
                   "precision": args.precision, "clock": args.clock, "threads": threads, "workers": str(args.workers),
                   "image_model": "test_resnet" if args.quick else "resnet10t"},
        "unit": unit, "results": results, "ratios": ratios, "ratio_of_medians": ratio_of_medians,
        "convert_seconds": base.convert_seconds, "target": {"mmkit_vs_torch_pretensor": 0.97},
    }, md, load_before)


if __name__ == "__main__":
    main()
