"""Achieved fraction of the device's matmul throughput for the transformer fusion (model FLOPs
utilisation), made for a GPU in bf16 (``benchmarks/gpu.sh``); runs on CPU in fp32 too.

1. Peak: the best of ``--repeats`` timings of a large square matmul (``--matmul-size``; 8192 on GPU)
   in the chosen dtype: 2 n^3 FLOPs per product.
2. Fusion: the registry's ``transformer`` fusion, forward + backward (training step without the
   optimizer) under autocast, on random image/text token embeddings. FLOPs are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and attention, forward and backward) and
   cross-checked against the analytic estimate 3 x 2 x B x [L x T x (12 D^2 + 2 T D) + sum_m T_m d_m D].
   Two sizes: the quickstart's (dim 64, 2 layers, ~11 tokens: overhead-bound, shows why small
   models cannot fill a GPU) and a large one (dim 1024, 8 layers, 1 + 196 + 64 tokens, batch 128).

    python benchmarks/gpu_mfu.py --device cuda --dtype bf16
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import _common as C

NAME = "gpu_mfu"

CONFIGS = {
    # name: batch, image tokens x width, text tokens x width, fusion dim, layers, heads
    "quickstart": dict(batch=64, image=(4, 512), text=(6, 64), dim=64, layers=2, heads=4),
    "large": dict(batch=128, image=(196, 768), text=(64, 384), dim=1024, layers=8, heads=16),
    "tiny": dict(batch=4, image=(4, 16), text=(3, 16), dim=16, layers=1, heads=2),
}


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: Any, dtype: Any, n: int, repeats: int) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    inner = 10 if device.type == "cuda" else 2
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2 * n**3 / best


def fusion_inputs(cfg: dict[str, Any], device: Any) -> dict[str, Any]:
    import torch

    from mmkit._internal.interfaces import Embedding

    out = {}
    for name in ("image", "text"):
        t, d = cfg[name]
        tokens = torch.randn(cfg["batch"], t, d, device=device)
        ones = torch.ones(cfg["batch"], t, dtype=torch.bool, device=device)
        out[name] = Embedding(tokens.mean(1), ones[:, 0], tokens, ones)
    return out


def analytic_flops(cfg: dict[str, Any]) -> float:
    b, d, layers = cfg["batch"], cfg["dim"], cfg["layers"]
    t = 1 + cfg["image"][0] + cfg["text"][0]
    per_layer = t * (12 * d * d + 2 * t * d)
    proj = sum(cfg[m][0] * cfg[m][1] * d for m in ("image", "text"))
    return 3 * 2 * b * (layers * per_layer + proj)


def fusion_mfu(cfg: dict[str, Any], device: Any, dtype: Any, repeats: int) -> dict[str, float]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import mmkit

    fusion = mmkit.create("fusion", "transformer",
                          context={"input_dims": {"image": cfg["image"][1], "text": cfg["text"][1]},
                                   "token_inputs": {"image": True, "text": True}},
                          dim=cfg["dim"], layers=cfg["layers"], heads=cfg["heads"], dropout=0.0).to(device).train()
    inputs = fusion_inputs(cfg, device)
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    def step() -> None:
        with amp:
            out = fusion(inputs)
        out.pooled.float().square().mean().backward()
        fusion.zero_grad(set_to_none=True)

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    counted = float(counter.get_total_flops())
    for _ in range(3):
        step()
    inner = 10 if device.type == "cuda" else 1
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(inner):
            step()
        sync(device)
        times.append((time.perf_counter() - t0) / inner)
    seconds = C.median(times)
    return {"seconds_per_step": seconds, "flops_counted": counted, "flops_analytic": analytic_flops(cfg),
            "achieved_flops_per_s": counted / seconds, "step_times": times}


def main() -> None:
    p = C.parser(NAME, __doc__, repeats=5)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto = bf16 on a GPU, fp32 on CPU")
    p.add_argument("--matmul-size", type=int, default=None, help="peak matmul size (default 8192 on GPU, 1024 CPU)")
    p.add_argument("--configs", default=None, help="comma-separated fusion sizes: quickstart, large, tiny "
                                                   "(default quickstart,large on GPU, quickstart on CPU; quick tiny)")
    args = C.finish_args(p.parse_args(), NAME)
    load_before = C.loadavg()

    import torch

    threads = C.set_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    size = args.matmul_size or (128 if args.quick else 8192 if device.type == "cuda" else 1024)
    default = "tiny" if args.quick else ("quickstart,large" if device.type == "cuda" else "quickstart")
    configs = (args.configs or default).split(",")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    C.say(f"{NAME}: matmul peak ({size}^3, {dtype_name}) on {device} ...")
    peak = matmul_peak(device, dtype, size, args.repeats)
    results: dict[str, Any] = {"matmul_peak_tflops": peak / 1e12}
    rows = [[f"matmul {size}x{size} ({dtype_name}), best of {args.repeats}", f"{peak / 1e12:.2f}", "1.00", "-", "-"]]
    for name in configs:
        cfg = CONFIGS[name]
        C.say(f"{NAME}: fusion {name} {cfg} ...")
        r = fusion_mfu(cfg, device, dtype, args.repeats)
        r["fraction_of_peak"] = r["achieved_flops_per_s"] / peak
        results[name] = {**r, "config": cfg}
        rows.append([f"transformer fusion '{name}' (dim {cfg['dim']}, {cfg['layers']} layers, batch {cfg['batch']}, "
                     f"{1 + cfg['image'][0] + cfg['text'][0]} tokens), fwd+bwd",
                     f"{r['achieved_flops_per_s'] / 1e12:.3f}", f"{r['fraction_of_peak']:.3f}",
                     f"{r['flops_counted'] / 1e9:.2f}", f"{r['flops_analytic'] / 1e9:.2f}"])
    md = C.table(["workload", "TFLOP/s", "fraction of matmul peak", "GFLOP/step (counted)", "GFLOP/step (analytic)"],
                 rows)
    device_name = torch.cuda.get_device_name(0) if device.type == "cuda" else C.cpu_model()
    md += f"\n\ndevice {device} ({device_name}), {dtype_name}."
    C.write_result(NAME, args, {"params": {"device": str(device), "dtype": dtype_name, "matmul_size": size,
                                           "configs": configs, "threads": threads},
                                "unit": "FLOP/s", "results": results}, md, load_before)


if __name__ == "__main__":
    main()
