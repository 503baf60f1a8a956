"""Speed tricks on CPU, each measured against the loop as mmkit runs it: channels_last for the CNN
backbone, the optimizer's implementation (foreach -- mmkit's -- vs fused vs a per-parameter for-loop),
and torch.compile (compile time vs steady-state gain).

The user-data model (timm resnet10t at 64 px + text-transformer + transformer fusion +
classification head, batch 32; ``--quick``: test_resnet at 32 px, batch 8) trains on one fixed
pre-decoded batch, so only the model and optimizer step are timed. Each variant builds a fresh model,
takes ``--warmup`` untimed steps (for ``compile`` the first step's time is the compile time), then
``--steps`` timed steps; variants are interleaved (A B C ... A B C) ``--repeats`` times. Reported:
ms per step on the wall clock and on the process-CPU clock (robust to other load on a shared
machine), and each variant's speed relative to ``base``.

    python benchmarks/tricks.py
"""

from __future__ import annotations

import time
from typing import Any

import _common as C

NAME = "tricks"
VARIANTS = ("base", "channels_last", "adamw_fused", "adamw_forloop", "compile")


class Bench:
    def __init__(self, args: Any) -> None:
        import tempfile
        from pathlib import Path

        import torch

        from mmkit._internal.assembly import load_splits, plan_data
        from mmkit._internal.recipe import build_recipe
        from mmkit._internal.registry import get_registry
        from user_data import build_manifest, recipe_doc

        self.args = args
        tmp = tempfile.mkdtemp(prefix="mmkit-tricks-")
        folder = Path(tmp) / "manifest"
        build_manifest(folder, max(args.batch_size, 8), args.image_size)
        args.epochs = 1
        self.recipe = build_recipe(recipe_doc(args, folder, tmp, "tricks"), f"<{NAME}>", tmp)
        self.registry = get_registry()
        self.plan = plan_data(self.recipe, load_splits(self.recipe, self.registry))
        g = torch.Generator().manual_seed(0)
        bs = args.batch_size
        self.x = torch.randn(bs, 3, args.image_size, args.image_size, generator=g)
        vocab = self.model().encoders["text"].embed.num_embeddings  # the table is sized to the fitted words
        self.ids = torch.randint(1, vocab, (bs, 6), generator=g)
        self.mask = torch.ones(bs, 6, dtype=torch.bool)
        self.y = torch.randint(0, 2, (bs,), generator=g)
        self.compile_seconds: list[float] = []

    def model(self) -> Any:
        from mmkit._internal.assembly import assemble
        from mmkit._internal.rng import seed_everything

        seed_everything(0)
        return assemble(self.recipe, self.registry, self.plan).train()

    def run(self, variant: str) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        model = self.model()
        x = self.x
        if variant == "channels_last":
            model.encoders["image"].to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        kind = {"adamw_fused": {"fused": True}, "adamw_forloop": {"foreach": False}}.get(variant, {"foreach": True})
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, **kind)

        def forward(x: Any, ids: Any, mask: Any) -> Any:
            e_img = model.encoders["image"](x)
            e_txt = model.encoders["text"]({"ids": ids, "mask": mask})
            fused = model.fusion({"image": e_img, "text": e_txt})
            return model.head.out(model.head.trunk(fused.pooled))

        fwd = torch.compile(forward) if variant == "compile" else forward

        def step() -> None:
            loss = F.cross_entropy(fwd(x, self.ids, self.mask).float(), self.y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(loss)

        t0 = time.perf_counter()
        for _ in range(self.args.warmup):
            step()
        if variant == "compile":
            self.compile_seconds.append(time.perf_counter() - t0)
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(self.args.steps):
            step()
        n = self.args.steps
        return {"wall_ms": 1000 * (time.perf_counter() - w0) / n, "cpu_ms": 1000 * (time.process_time() - c0) / n}


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5)
    p.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 8; quick 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile happens here)")
    p.add_argument("--batch-size", type=int, default=None, help="default 32; quick 8")
    p.add_argument("--image-size", type=int, default=None, help="default 64; quick 32")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    args = C.finish_args(p.parse_args(), NAME)
    args.steps = args.steps or (2 if args.quick else 8)
    args.batch_size = args.batch_size or (8 if args.quick else 32)
    args.image_size = args.image_size or (32 if args.quick else 64)
    variants = [v for v in args.variants.split(",") if v]
    load_before = C.loadavg()
    threads = C.set_threads(args.threads)
    bench = Bench(args)
    values: dict[str, dict[str, list[float]]] = {v: {"wall_ms": [], "cpu_ms": []} for v in variants}
    for rep in range(args.repeats):
        for v in variants:
            r = bench.run(v)
            for k in r:
                values[v][k].append(r[k])
            C.say(f"  rep {rep + 1}/{args.repeats} {v}: {r['wall_ms']:.0f} ms wall, {r['cpu_ms']:.0f} ms CPU per step "
                  f"(load {C.loadavg()[:1]})")
    results = {v: {k: C.summary(vals) for k, vals in d.items()} for v, d in values.items()}
    speed = {v: {k: C.median(C.pair_ratios(values["base"][k], values[v][k])) for k in ("wall_ms", "cpu_ms")}
             for v in variants} if "base" in variants else {}
    rows = [[v, results[v]["wall_ms"]["median"], results[v]["cpu_ms"]["median"],
             speed.get(v, {}).get("wall_ms", float("nan")), speed.get(v, {}).get("cpu_ms", float("nan"))]
            for v in variants]
    md = C.table(["variant", "wall ms/step (median)", "CPU ms/step (median)", "speed vs base (wall)",
                  "speed vs base (CPU)"], rows)
    if bench.compile_seconds:
        md += (f"\n\ncompile: first {args.warmup} step(s) took {C.median(bench.compile_seconds):.1f} s (median; "
               f"compilation). ")
    md += (f"\n\n{args.steps} timed steps x batch {args.batch_size} at {args.image_size} px per repeat, "
           f"{threads} thread(s).")
    C.write_result(NAME, args, {"params": {"steps": args.steps, "batch_size": args.batch_size, "threads": threads,
                                           "image_size": args.image_size, "variants": variants},
                                "results": results, "speed_vs_base": speed,
                                "compile_seconds": bench.compile_seconds}, md, load_before)


if __name__ == "__main__":
    main()
