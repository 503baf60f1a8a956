"""Learning benchmark: how well and how fast every built-in fusion learns with mmkit's DEFAULT settings.

Five small two-modality tasks (benchmarks/learning_tasks.py: binding, counting, relation, a sequence
and a tabular task, each with a text claim; no modality decides alone) x every built-in fusion x
seeds. Each run trains fusion + a linear classifier on precomputed encoder-like features with what
a recipe that sets nothing gets: the fusion's default parameters, and the optimizer, lr, weight decay,
warm-up, schedule, batch size and gradient clipping of ``[train]``'s defaults (the same
``mmkit._internal.optim`` code the Trainer runs). Reported per task x fusion: final and best validation accuracy
(mean ± std over seeds), steps to reach 90% of the best fusion's final accuracy, training samples/s.
Also a single-modality ablation (``concat`` and ``transformer`` on each modality alone, seed 0) and a
hand-written PyTorch reference (a token-level Transformer with hand-picked AdamW 3e-4, 100-step warm-up
and cosine) on two tasks.

Runs in pieces and merges: every run is one record in the JSON (``--out``; key task|model|seed|steps),
so ``--tasks binding --fusions transformer`` adds to what is there, and ``--markdown`` regenerates the
table block of docs/fusions.md from the JSON. ``--quick``: tiny sizes, nothing merged into the default
file (the test suite uses it to check that the script runs).

    OMP_NUM_THREADS=1 python benchmarks/learning.py --tasks binding,tabular --seeds 0,1,2
    python benchmarks/learning.py --report-only --markdown docs/fusions.md   # table from the JSON, no training
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, loadavg, machine, say  # noqa: E402
from learning_tasks import STEPS, TASKS, make_task  # noqa: E402

FUSIONS = ["concat", "attention", "cross-attention", "autoencoder", "transformer"]
REFERENCE_TASKS = ("binding", "relation")
START, END = "<!-- learning-benchmark:start -->", "<!-- learning-benchmark:end -->"


def train_defaults() -> dict[str, Any]:
    """``[train]`` as a recipe that sets nothing gets it."""
    from mmkit._internal.recipe import TRAIN_PARAMS

    return {p.name: p.default for p in TRAIN_PARAMS}


class _Recipe:
    """The two attributes of a Recipe that mmkit._internal.optim reads."""

    def __init__(self, train: dict[str, Any]) -> None:
        self.train, self.encoders, self.source = train, {}, "<learning benchmark>"


def build(model_name: str, feats: dict, modalities: list[str], params: dict[str, Any] | None = None):
    """The model: a built-in fusion (default parameters) + linear classifier, or the hand-written one."""
    import mmkit
    from torch import nn

    context = {"input_dims": {m: feats[m][0].shape[1] for m in modalities},
               "token_inputs": {m: feats[m][1] is not None for m in modalities}}
    if model_name == "reference":
        from learning_reference import ReferenceModel

        return ReferenceModel(context["input_dims"])
    fusion = mmkit.create("fusion", model_name, context=context, **(params or {}))
    return nn.ModuleDict({"fusion": fusion, "head": nn.Linear(fusion.dim, 2)})


def logits_and_aux(model, feats: dict, idx, modalities: list[str]):
    import torch

    from mmkit import Embedding

    if not isinstance(model, torch.nn.ModuleDict):
        return model(feats, idx, modalities), []
    embs = {}
    for m in modalities:
        pooled, tokens, mask = feats[m]
        present = torch.ones(len(idx), dtype=torch.bool)
        embs[m] = Embedding(pooled[idx], present, None if tokens is None else tokens[idx],
                            None if mask is None else mask[idx])
    out = model["fusion"](embs)
    return model["head"](out.pooled), list(out.aux_losses.values())


def evaluate(model, feats: dict, labels, modalities: list[str]) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        logits, _ = logits_and_aux(model, feats, torch.arange(len(labels)), modalities)
    model.train()
    return float((logits.argmax(1) == labels).float().mean())


def optimizer_for(model, model_name: str, steps: int, overrides: dict[str, Any] | None = None):
    """mmkit's default optimizer and schedule; the reference gets its hand-picked ones."""
    from mmkit._internal.optim import Schedule, make_optimizer, param_groups

    train = train_defaults()
    if model_name == "reference":
        train.update(lr=3e-4, warmup_steps=100, schedule="cosine")
    else:
        train.update(overrides or {})
    recipe = _Recipe(train)
    opt = make_optimizer(param_groups(model, recipe), recipe)  # type: ignore[arg-type]
    return opt, Schedule.from_recipe(train, steps), train


def run_one(task: str, model_name: str, seed: int, steps: int, data, modalities: list[str] | None = None,
            eval_every: int = 25, params: dict[str, Any] | None = None,
            train_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one model; returns its accuracy curve, final/best accuracy and samples/s."""
    import torch

    train, y_train, val, y_val = data
    modalities = modalities or sorted(train)
    torch.manual_seed(seed)
    model = build(model_name, train, modalities, params if model_name != "reference" else None)
    opt, schedule, cfg = optimizer_for(model, model_name, steps, train_overrides)
    g = torch.Generator().manual_seed(seed)
    curve, busy = [], 0.0
    model.train()
    for step in range(steps):
        start = time.perf_counter()
        schedule.apply(opt, step)
        idx = torch.randint(0, len(y_train), (cfg["batch_size"],), generator=g)
        logits, aux = logits_and_aux(model, train, idx, modalities)
        loss = torch.nn.functional.cross_entropy(logits, y_train[idx]) + sum(aux, torch.tensor(0.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
        opt.step()
        busy += time.perf_counter() - start
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            curve.append([step + 1, round(evaluate(model, val, y_val, modalities), 4)])
    return {"task": task, "model": model_name, "seed": seed, "steps": steps, "modalities": modalities,
            "final": curve[-1][1], "best": max(a for _, a in curve), "curve": curve,
            "samples_per_s": round(steps * cfg["batch_size"] / busy, 1), "lr": cfg["lr"],
            "warmup_steps": schedule.warmup, "batch_size": cfg["batch_size"]}


def key(rec: dict[str, Any]) -> str:
    mods = "+".join(rec["modalities"])
    return f"{rec['task']}|{rec['model']}|{mods}|{rec['seed']}|{rec['steps']}|{rec.get('label', 'current')}"


def load(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"benchmark": "learning", "runs": {}}


def save(path: Path, doc: dict[str, Any]) -> None:
    from mmkit._internal.safeio import write_json_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)


def add_record(path: Path, rec: dict[str, Any]) -> dict[str, Any]:
    """Merge one run into the JSON under an exclusive lock (several invocations may run at once)."""
    import fcntl
    import hashlib
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    with open(Path(tempfile.gettempdir()) / f"mmkit-learning-{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = load(path)
        doc["runs"][key(rec)] = rec
        doc["machine"] = machine()
        save(path, doc)
    return doc


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def _steps_to(curves: list[list[list[float]]], target: float) -> str:
    hits = [next((s for s, a in c if a >= target), math.inf) for c in curves]
    mean = statistics.mean(hits)
    return "never" if math.isinf(mean) else f"{mean:.0f}"


def budget(task: str, steps: int | None) -> int:
    """Optimizer steps of a run: ``--steps`` if given, else the task's own budget (learning_tasks.STEPS)."""
    return steps if steps is not None else STEPS.get(task, 400)


def _groups(runs: dict[str, Any], label: str, steps: int | None) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in runs.values():
        if rec.get("label", "current") == label and rec["steps"] == budget(rec["task"], steps):
            groups.setdefault((rec["task"], rec["model"], "+".join(rec["modalities"])), []).append(rec)
    return groups


def markdown(doc: dict[str, Any], label: str = "current", steps: int | None = None) -> str:
    """The table block of docs/fusions.md: one row per task x model (x modality subset)."""
    groups = _groups(doc["runs"], label, steps)
    tasks = [t for t in TASKS if any(g[0] == t for g in groups)]
    lines = ["| task | steps | model | inputs | seeds | final acc | best acc | steps to 90% of best | samples/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        fused = {g: rs for g, rs in groups.items() if g[0] == task}
        full = max((g[2] for g in fused), key=lambda m: m.count("+"))
        best = max(statistics.mean(r["final"] for r in rs) for g, rs in fused.items()
                   if g[2] == full and g[1] in FUSIONS)
        order = sorted(fused, key=lambda g: (g[2] != full, (FUSIONS + ["reference"]).index(g[1]), g[2]))
        for g in order:
            rs = sorted(fused[g], key=lambda r: r["seed"])
            inputs = "all" if g[2] == full else f"{g[2]} only"
            lines.append(f"| {task} | {budget(task, steps):,} | {g[1]} | {inputs} | {len(rs)} | "
                         f"{_mean_std([r['final'] for r in rs])} | "
                         f"{_mean_std([r['best'] for r in rs])} | {_steps_to([r['curve'] for r in rs], 0.9 * best)} | "
                         f"{statistics.mean(r['samples_per_s'] for r in rs):,.0f} |")
    return "\n".join(lines)


def compare_markdown(doc: dict[str, Any], labels: list[str], steps: int | None = None) -> str:
    """Final accuracy (mean ± std) per task x fusion for several labels (before/after a change)."""
    cells: dict[tuple[str, str], list[str]] = {}
    for label in labels:
        for (task, model, mods), rs in _groups(doc["runs"], label, steps).items():
            if model in FUSIONS and mods.count("+") >= 1:
                cells.setdefault((task, model), []).append(f"{label}: {_mean_std([r['final'] for r in rs])}")
    lines = ["| task | " + " | ".join(FUSIONS) + " |", "|---|" + "---|" * len(FUSIONS)]
    for task in TASKS:
        if any((task, f) in cells for f in FUSIONS):
            lines.append(f"| {task} | " + " | ".join("<br>".join(cells.get((task, f), ["–"])) for f in FUSIONS) + " |")
    return "\n".join(lines)


def grid_markdown(doc: dict[str, Any], labels: list[str], model: str = "transformer",
                  steps: int | None = None) -> str:
    """Final accuracy of ``model`` per task (mean ± std over the seeds run) for each label (a settings grid)."""
    rows = {label: {task: [r["final"] for r in rs] for (task, m, mods), rs in _groups(doc["runs"], label, steps).items()
                    if m == model and "+" in mods} for label in labels}
    tasks = [t for t in TASKS if any(t in cells for cells in rows.values())]
    lines = [f"| {model}: settings | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for label, cells in rows.items():
        rec = next((r for r in doc["runs"].values() if r.get("label") == label and r["model"] == model), None)
        extra = [o for o in (rec or {}).get("overrides", []) if o.startswith("fusion.")]
        name = ", ".join([f"lr {rec['lr']:g}", f"warm-up {rec['warmup_steps']}", *extra]) if rec else label
        lines.append(f"| {name} | " + " | ".join(
            _mean_std(cells[t]) if t in cells else "–" for t in tasks) + " |")
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} block to replace")
    head, rest = text.split(START, 1)
    path.write_text(head + START + "\n" + block + "\n" + END + rest.split(END, 1)[1], encoding="utf-8")


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/learning.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default all)")
    p.add_argument("--fusions", default=",".join(FUSIONS), help="comma-separated fusions (default all built-ins)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per run (default: the task's budget, learning_tasks.STEPS: 400, or 2,000 for "
                        "counting and relation)")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-val", type=int, default=500)
    p.add_argument("--no-ablation", action="store_true", help="skip the single-modality runs")
    p.add_argument("--no-reference", action="store_true", help="skip the hand-written reference")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a [train] default (lr=1e-3, warmup_steps=100) or, as fusion.KEY=VALUE, a "
                        "fusion parameter: for experiments; give such runs their own --label")
    p.add_argument("--label", default="current", help="tag of these runs (e.g. 'before' for a baseline)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the test suite: checks that it runs)")
    p.add_argument("--out", default=None, help="JSON to merge into (default benchmarks/results/learning.json)")
    p.add_argument("--markdown", default=None, help="write the table block of this Markdown file from the JSON")
    p.add_argument("--grid", default=None, help="with --markdown: labels of a settings grid to tabulate")
    p.add_argument("--report-only", action="store_true", help="train nothing: only print/write the tables")
    p.add_argument("--compare", default=None, help="with --markdown: labels to compare, e.g. before,current")
    return p.parse_args()


def plan(args: argparse.Namespace) -> list[tuple[str, str, int, list[str] | None]]:
    runs: list[tuple[str, str, int, list[str] | None]] = []
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for task in [t for t in args.tasks.split(",") if t]:
        if task not in TASKS:
            raise SystemExit(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        for fusion in [f for f in args.fusions.split(",") if f]:
            runs += [(task, fusion, seed, None) for seed in seeds]
        if not args.no_reference and task in REFERENCE_TASKS:
            runs += [(task, "reference", seed, None) for seed in seeds]
        if not args.no_ablation:
            mods = sorted(make_task(task, 4, 4)[0])
            runs += [(task, f, 0, [m]) for f in ("concat", "transformer") for m in mods]
    return runs


def overrides(items: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` values, parsed as TOML: ``(train overrides, fusion parameters)``."""
    from mmkit._internal.safeio import loads_toml

    train: dict[str, Any] = {}
    fusion: dict[str, Any] = {}
    for item in items:
        name, _, value = item.partition("=")
        parsed = loads_toml(f"v = {value}", "--set")["v"] if value else None
        (fusion if name.startswith("fusion.") else train)[name.removeprefix("fusion.")] = parsed
    return train, fusion


def main() -> None:
    args = arguments()
    train_set, fusion_set = overrides(args.set)
    if args.quick:
        args.steps, args.n_train, args.n_val = min(args.steps or 20, 20), 64, 32
    out = Path(args.out or RESULTS / f"learning{'-quick' if args.quick else ''}.json")
    doc = load(out)
    if not args.report_only:
        import torch

        torch.set_num_threads(1)
        data = {}
        for task, model_name, seed, mods in plan(args):
            data.setdefault(task, make_task(task, args.n_train, args.n_val))
            rec = run_one(task, model_name, seed, budget(task, args.steps), data[task], mods, 5 if args.quick else 25,
                          fusion_set, train_set)
            rec.update(label=args.label, overrides=args.set, time=time.strftime("%Y-%m-%d %H:%M:%S"), loadavg=loadavg())
            doc = add_record(out, rec)
            say(f"{task:9s} {model_name:15s} {'+'.join(rec['modalities']):15s} seed {seed}: final "
                f"{rec['final']:.3f} best {rec['best']:.3f} ({rec['samples_per_s']:.0f} samples/s)")
    print(markdown(doc, args.label, args.steps))
    if args.markdown:
        block = markdown(doc, args.label, args.steps)
        if args.compare:
            block = compare_markdown(doc, args.compare.split(","), args.steps) + "\n\n" + block
        if args.grid:
            block += "\n\n" + grid_markdown(doc, args.grid.split(","), steps=args.steps)
        write_docs(Path(args.markdown), block)


if __name__ == "__main__":
    main()
