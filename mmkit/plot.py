"""Plots of runs: training-loss and validation-metric curves, and a bar chart of the final metric.

One line per run, coloured and labelled by the recipe keys that differ between the runs (runs that
differ only in ``run.seed`` share a colour). With two or more configurations, a bar chart shows each
one's final metric, with the standard deviation over seeds as error bars. matplotlib is an optional
extra (``pip install 'mmkit[plot]'``); the Agg backend is used, so no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from mmkit.compare import RunRecord, aggregate, compare, header, load_runs
from mmkit.errors import MmkitError


class PlotError(MmkitError):
    """A plot cannot be made (matplotlib missing, nothing to plot)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotError("mmkit plot needs matplotlib: pip install 'mmkit[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_curves(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{"train": {"loss": [(step, value), ...]}, "val": {"accuracy": [...]}}`` from metrics.jsonl.

    The final evaluation (``split: final``) is the last point of the val curves. A resumed run may
    log a step twice; the later value wins.
    """
    curves: dict[str, dict[str, dict[int, float]]] = {}
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
        split = rec.get("split")
        if split == "final":  # the final evaluation ends the val curves
            finals = {k[4:]: v for k, v in (rec.get("metrics") or {}).items() if k.startswith("val.")}
            rec = {"step": rec.get("step", 0), "metrics": finals}
            split = "val"
        if split not in ("train", "val"):
            continue
        for name, value in (rec.get("metrics") or {}).items():
            if isinstance(value, (int, float)):
                curves.setdefault(split, {}).setdefault(name, {})[int(rec.get("step", 0))] = float(value)
    return {s: {n: sorted(v.items()) for n, v in names.items()} for s, names in curves.items()}


def labels_for(records: Sequence[RunRecord], keys: Sequence[str]) -> tuple[list[str], str]:
    """A label per run from the differing keys except the seed (the run name if nothing differs),
    and a title for them: with one differing key the labels are its values and the title its name."""
    shown = [k for k in keys if k != "run.seed"]
    if not shown:
        return ([r.name for r in records], "run") if "run.seed" not in keys else (["all runs"] * len(records), "")
    if len(shown) == 1:
        return [_value(r.recipe.get(shown[0])) for r in records], header(shown[0], shown)
    return [", ".join(f"{header(k, shown)}={_value(r.recipe.get(k))}" for k in shown) for r in records], ""


def _value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "-" if value is None else str(value)


def plot_runs(paths: Iterable[str | Path], out: str | Path, metric: str | None = None,
              dpi: int = 100) -> Path:
    """Write a PNG comparing the runs in ``paths`` (run or sweep directories); returns its path."""
    plt = _pyplot()
    records = load_runs(paths)
    if not records:
        raise PlotError("no runs to plot")
    comp = compare(records=records, metric=metric)
    metric = comp.metric
    split, _, name = metric.partition(".")
    curve_name = name if split in ("val", "test") else metric
    labels, label_title = labels_for(records, comp.keys)
    order = list(dict.fromkeys(labels))
    colours = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(order)}
    rows_by_run = {row["run_dir"]: row for row in comp.rows}
    grouped = aggregate([{**rows_by_run[str(r.path)], "label": lab} for r, lab in zip(records, labels)],
                        ["label"], [metric])
    bars = len(order) >= 2 or any(g["runs"] > 1 for g in grouped)
    panels = 3 if bars else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.0), dpi=dpi)
    loss_ax, metric_ax = axes[0], axes[1]
    seen: set[str] = set()
    for record, label in zip(records, labels):
        curves = read_curves(record.path)
        kw = {"color": colours[label], "alpha": 0.85, "linewidth": 1.4}
        legend = label if label not in seen else "_nolegend_"
        seen.add(label)
        train = curves.get("train", {}).get("loss", [])
        if train:
            loss_ax.plot([s for s, _ in train], [v for _, v in train], label=legend, **kw)
        val = curves.get("val", {}).get(curve_name, [])
        if val:
            metric_ax.plot([s for s, _ in val], [v for _, v in val], marker="o", markersize=3, label=legend, **kw)
    loss_ax.set(title="training loss", xlabel="step", ylabel="loss")
    metric_ax.set(title=f"val.{curve_name}", xlabel="step", ylabel=curve_name)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7, loc="best", title=label_title or None, title_fontsize=7)
    if bars:
        ax = axes[2]
        means = [g[f"{metric}.mean"] for g in grouped]
        stds = [g[f"{metric}.std"] or 0.0 for g in grouped]
        ok = [i for i, m in enumerate(means) if m is not None]
        if not ok:
            raise PlotError(f"no run has the final metric {metric!r}; choose one with --metric "
                            f"(e.g. {', '.join(sorted({m for r in records for m in r.metrics})[:6])})")
        xs = list(range(len(ok)))
        ax.bar(xs, [means[i] for i in ok], yerr=[stds[i] for i in ok], capsize=4,
               color=[colours[grouped[i]["label"]] for i in ok], alpha=0.85)
        ticks = [_wrap(grouped[i]["label"]) for i in ok]
        crowded = sum(len(t.split("\n")[0]) for t in ticks) > 60
        ax.set_xticks(xs, ticks, fontsize=8, rotation=25 if crowded else 0, ha="right" if crowded else "center")
        n = max(g["n"] for g in grouped)
        ax.set(title=f"final {metric}" + (f" (mean ± std, {n} seeds)" if n > 1 else ""), ylabel=name or metric,
               xlabel=label_title)
        ax.grid(alpha=0.3, axis="y")
        lo = min(means[i] - stds[i] for i in ok)
        hi = max(means[i] + stds[i] for i in ok)
        pad = (hi - lo) * 0.15 or 0.05
        ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def _wrap(label: str, width: int = 22) -> str:
    return "\n".join(label.split(", ")) if len(label) > width else label
