"""Shared helpers of the benchmark scripts: arguments, machine description, interleaved repeats,
medians and ratios, the JSON result file and the Markdown block printed for docs/performance.md.

Every benchmark is one command (``python benchmarks/NAME.py [--quick]``) that writes
``benchmarks/results/NAME[-quick].json`` (or ``--out FILE``) and prints a Markdown block to paste.
Comparisons run both sides in the same process, interleaved (A B A B ...), after one untimed warm-up
of each side, and report medians and the median of the per-pair ratios (robust to load drifting
during the run). Nothing here imports torch: the start-up benchmark must not pay for it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def parser(name: str, doc: str | None, repeats: int = 5, quick_repeats: int = 2) -> argparse.ArgumentParser:
    """The common options: ``--quick`` (CI-sized), ``--out``, ``--repeats``, ``--threads``."""
    p = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=(doc or "").split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and 2 repeats (CI: checks the script runs)")
    p.add_argument("--out", default=None, help=f"JSON result file (default benchmarks/results/{name}[-quick].json)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed repeats per side (default {repeats}; quick {quick_repeats})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for both sides (default 1: stable on a shared machine; "
                        "0 = torch's default, one per core)")
    p.set_defaults(default_repeats=repeats, quick_repeats=quick_repeats)
    return p


def finish_args(args: argparse.Namespace, name: str) -> argparse.Namespace:
    if args.repeats is None:
        args.repeats = args.quick_repeats if args.quick else args.default_repeats
    if args.out is None:
        args.out = str(RESULTS / f"{name}{'-quick' if args.quick else ''}.json")
    return args


def set_threads(n: int) -> int:
    """Set torch's intra-op threads (0 keeps torch's default); returns the number in use."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Unix
        return []


def machine(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What the numbers were taken on (the load average is that of the moment of the call)."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "loadavg": loadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    info.update(extra or {})
    return info


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def interleave(sides: Mapping[str, Callable[[], float]], repeats: int, warmup: bool = True,
               log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Run each side ``repeats`` times in turn (A B A B ...) after one untimed warm-up of each.

    Each side returns its measurement (e.g. samples/s); returns ``{side: [values]}``.
    """
    out: dict[str, list[float]] = {name: [] for name in sides}
    if warmup:
        for fn in sides.values():
            fn()
    for rep in range(repeats):
        for name, fn in sides.items():
            value = float(fn())
            out[name].append(value)
            if log:
                log(f"  rep {rep + 1}/{repeats} {name}: {value:.4g}  (load {loadavg()[:1]})")
    return out


def pair_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """Per-repeat ratios a_i / b_i (the two sides of one repeat ran back to back)."""
    return [x / y for x, y in zip(a, b) if y]


def summary(values: Sequence[float]) -> dict[str, Any]:
    return {"median": median(values), "min": min(values), "max": max(values), "runs": [round(v, 6) for v in values]}


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(info: Mapping[str, Any]) -> str:
    load = info.get("loadavg_before") or info.get("loadavg") or []
    load_after = info.get("loadavg_after") or []
    threads = f", torch {info['torch']} with {info['torch_threads']} thread(s)" if "torch" in info else ""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"machine: {info.get('nproc')} x {info.get('cpu')}{gpu}{threads}; load average (1/5/15 min) "
            f"{'/'.join(map(str, load))} before, {'/'.join(map(str, load_after))} after")


def write_result(name: str, args: argparse.Namespace, result: dict[str, Any], markdown: str,
                 load_before: list[float]) -> dict[str, Any]:
    """Add machine/load/command to ``result``, write it as JSON to ``args.out`` and print the Markdown."""
    info = machine({"loadavg_before": load_before, "loadavg_after": loadavg()})
    command = "python " + " ".join([f"benchmarks/{name}.py", *sys.argv[1:]])
    block = f"#### {name}\n\n`{command}`\n\n{machine_line(info)}\n\n{markdown}\n"
    doc = {"benchmark": name, "quick": bool(args.quick), "command": command, "repeats": args.repeats,
           "machine": info, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **result, "markdown": block}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    print(block)
    print(f"(result written to {out})", file=sys.stderr)
    return doc


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pretensor_texts(text_encoder: Any, texts: Sequence[Any]) -> tuple[Any, Any]:
    """What a hand-written baseline does once: tokenize every text with the encoder's own tokenizer
    and pad to one ``[N, L]`` id tensor and its bool mask (an empty text becomes ``[unk]``)."""
    import torch

    tok, max_len = text_encoder.tokenizer, text_encoder.max_length
    seqs = [tok.encode(str(text), max_len=max_len) or [tok.unk_id] for text in texts]
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), tok.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return ids, mask


def hand_optimizer(model: Any, train: Mapping[str, Any], total: int) -> tuple[Any, Any]:
    """The baselines' optimizer and schedule, written as a user would: torch's default AdamW with no
    decay on norms/biases, and ``min(100, total // 10)`` warm-up steps then a cosine to 0."""
    import math

    import torch

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim > 1 and not n.endswith(".bias")]
    rest = [p for n, p in params if p.ndim <= 1 or n.endswith(".bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": train["weight_decay"]},
                             {"params": rest, "weight_decay": 0.0}], lr=train["lr"])
    warmup = min(100, total // 10)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
