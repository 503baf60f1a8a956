"""Plots of runs: training-loss and validation-metric curves, and a bar chart of the final metric.

One line per run, coloured and labelled by the recipe keys that differ between the runs (runs that
differ only in ``run.seed`` share a colour). With two or more configurations, a bar chart shows each
one's final metric, with the standard deviation over seeds as error bars. matplotlib is an optional
extra (``pip install 'mmkit[plot]'``); the Agg backend is used, so no display is needed.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mmkit._internal.compare import RunRecord, aggregate, compare, header, load_runs
from mmkit._internal.errors import MmkitError
from mmkit._internal.rundir import RunDir


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
    for rec in RunDir(run_dir).read_metrics():  # a line cut short by a crash is skipped
        split, step = rec.get("split"), rec.get("step", 0)
        if not isinstance(rec.get("metrics") or {}, dict) or not isinstance(step, int):
            continue  # not a record mmkit wrote: skipped like a damaged line
        if split == "final":  # the final evaluation ends the val curves
            finals = {str(k)[4:]: v for k, v in (rec.get("metrics") or {}).items() if str(k).startswith("val.")}
            rec = {"step": step, "metrics": finals}
            split = "val"
        if split not in ("train", "val"):
            continue
        for name, value in (rec.get("metrics") or {}).items():
            if isinstance(value, (int, float)) and abs(value) < 1e300:  # a 400-digit integer is no point to plot
                curves.setdefault(split, {}).setdefault(str(name), {})[step] = float(value)
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
    fig = runs_figure(paths, metric, dpi)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


#: a curve with at most this many points is drawn with markers (one point would be invisible as a line)
MARKERS_UP_TO = 30
#: longest line of a label (legend entry or bar label) before it wraps
LABEL_WIDTH = 28
BASE_HEIGHT = 4.0


def runs_figure(paths: Iterable[str | Path], metric: str | None = None, dpi: int = 100) -> Any:
    """The matplotlib figure :func:`plot_runs` saves (the caller closes it).

    Layout is matplotlib's constrained layout, so titles, axis labels and tick labels stay inside the
    figure; the legend sits below the panels (the figure grows by its rows), and the bar labels wrap
    and, when they would still overlap, turn (the figure grows by their height).
    """
    plt = _pyplot()
    records = load_runs(paths)
    if not records:
        raise PlotError("no runs to plot")
    comp = compare(records=records, metric=metric)
    metric = comp.metric
    labels, label_title = labels_for(records, comp.keys)
    order = list(dict.fromkeys(labels))
    colours = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(order)}
    rows_by_run = {row["run_dir"]: row for row in comp.rows}
    grouped = aggregate([{**rows_by_run[str(r.path)], "label": lab} for r, lab in zip(records, labels)],
                        ["label"], [metric])
    bars = len(order) >= 2 or any(g["runs"] > 1 for g in grouped)
    panels = 3 if bars else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, BASE_HEIGHT), dpi=dpi, layout="constrained")
    _draw_curves(axes[0], axes[1], records, labels, colours, metric)
    if bars:
        _draw_bars(axes[2], grouped, colours, metric, records, label_title)
    rows = _legend(fig, axes[0], label_title)
    fig.set_figheight(BASE_HEIGHT + 0.2 * rows + (0.25 if label_title else 0.0) + 0.15)
    if bars:
        _fit_tick_labels(fig, axes[2])
    return fig


def _draw_curves(loss_ax: Any, metric_ax: Any, records: Sequence[RunRecord], labels: Sequence[str],
                 colours: dict[str, Any], metric: str) -> None:
    """One training-loss line and one validation-metric line per run (markers when a run has few points)."""
    split, _, name = metric.partition(".")
    curve_name = name if split in ("val", "test") else metric
    seen: set[str] = set()
    for record, label in zip(records, labels):
        curves = read_curves(record.path)
        legend = _wrap(label) if label not in seen else "_nolegend_"
        seen.add(label)
        for ax, points in ((loss_ax, curves.get("train", {}).get("loss", [])),
                           (metric_ax, curves.get("val", {}).get(curve_name, []))):
            if points:
                few = len(points) <= MARKERS_UP_TO
                ax.plot([x for x, _ in points], [y for _, y in points], label=legend, color=colours[label],
                        alpha=0.85, linewidth=1.4, marker="o" if few else None, markersize=4 if few else 0)
    loss_ax.set(title="training loss", xlabel="step", ylabel="loss")
    metric_ax.set(title=f"val.{curve_name}", xlabel="step", ylabel=curve_name)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)


def _draw_bars(ax: Any, grouped: list[dict[str, Any]], colours: dict[str, Any], metric: str,
               records: Sequence[RunRecord], label_title: str) -> None:
    """The final metric per configuration, mean ± std over seeds."""
    name = metric.partition(".")[2]
    means = [g[f"{metric}.mean"] for g in grouped]
    stds = [g[f"{metric}.std"] or 0.0 for g in grouped]
    ok = [i for i, m in enumerate(means) if m is not None]
    if not ok:
        raise PlotError(f"no run has the final metric {metric!r}; choose one with --metric "
                        f"(e.g. {', '.join(sorted({m for r in records for m in r.metrics})[:6])})")
    xs = list(range(len(ok)))
    ax.bar(xs, [means[i] for i in ok], yerr=[stds[i] for i in ok], capsize=4,
           color=[colours[grouped[i]["label"]] for i in ok], alpha=0.85)
    ax.set_xticks(xs, [_wrap(grouped[i]["label"]) for i in ok], fontsize=8)
    n = max(g["n"] for g in grouped)
    ax.set(title=f"final {metric}" + (f" (mean ± std, {n} seeds)" if n > 1 else ""), ylabel=name or metric,
           xlabel=label_title)
    ax.grid(alpha=0.3, axis="y")
    lo = min(means[i] - stds[i] for i in ok)
    hi = max(means[i] + stds[i] for i in ok)
    pad = (hi - lo) * 0.15 or 0.05
    ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)


def _legend(fig: Any, ax: Any, title: str) -> int:
    """The runs' legend below the panels, in as many columns as fit the width; returns its row count."""
    handles, texts = ax.get_legend_handles_labels()
    if not handles:
        return 0
    widest = max(len(line) for t in texts for line in t.split("\n"))
    fits = max(1, int(fig.get_figwidth() * 72 / (widest * 4.6 + 40)))  # 8-pt text, handle and padding
    cols = min(len(handles), fits)
    fig.legend(handles, texts, loc="outside lower center", ncols=cols, fontsize=8, title=title or None,
               title_fontsize=8, frameon=False)
    lines = max(t.count("\n") + 1 for t in texts)
    return -(-len(handles) // cols) * lines


def _fit_tick_labels(fig: Any, ax: Any) -> None:
    """Turn the bar labels until they no longer overlap, and make the figure tall enough for them."""
    labels = ax.get_xticklabels()
    for angle in (0, 45, 90):
        for text in labels:
            text.set_rotation(angle)
            text.set_horizontalalignment("right" if angle else "center")
            text.set_rotation_mode("anchor" if angle else "default")
        fig.canvas.draw()
        boxes = [t.get_window_extent() for t in labels if t.get_text()]
        if not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
            break
    tallest = max((b.height for b in boxes), default=0.0) / fig.dpi
    if tallest > 0.5:  # room for turned labels, so that the panels keep their height
        fig.set_figheight(fig.get_figheight() + tallest - 0.5)


def _wrap(label: str, width: int = LABEL_WIDTH) -> str:
    """One ``key=value`` per line when the label is long, and no line longer than ``width``."""
    parts = label.split(", ") if len(label) > width else [label]
    return "\n".join(textwrap.fill(p, width, break_long_words=True) for p in parts)
