"""``mmkit compare`` and ``mmkit plot`` over run directories.

The run directories here are written by hand (recipe.resolved.toml, summary.json, metrics.jsonl in the
engine's format) so that every expected number is known; the sweep tests (test_sweep.py) compare
and plot real runs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mmkit._internal.cli_compare import compare_cmd, plot_cmd
from mmkit._internal.compare import compare, differing_keys, flatten, load_runs
from mmkit._internal.recipe import dump_toml


def make_run(root: Path, name: str, *, fusion: dict, seed: int = 0, lr: float = 1e-3, val_acc: float | None = 0.5,
             test_acc: float = 0.5, losses: tuple[float, ...] = (0.9, 0.7, 0.5), params: int = 1000) -> Path:
    """A run directory as the engine writes it (no summary.json when ``val_acc`` is None: unfinished)."""
    run = root / name
    run.mkdir(parents=True)
    recipe = {"run": {"name": name, "output_dir": str(root), "seed": seed},
              "data": {"dataset": "shapes", "options": {"n_train": 100}},
              "model": {"encoders": {"image": {"type": "timm", "model": "test_resnet"}}, "fusion": fusion,
                        "head": {"type": "classification"}},
              "train": {"lr": lr, "epochs": 2}}
    (run / "recipe.resolved.toml").write_text(dump_toml(recipe), encoding="utf-8")
    lines = [{"step": 10 * (i + 1), "epoch": 0, "split": "train", "metrics": {"loss": v, "lr": lr}}
             for i, v in enumerate(losses)]
    lines.append({"step": 15, "epoch": 0, "split": "val", "metrics": {"loss": 0.8, "accuracy": 0.5}})
    if val_acc is not None:
        lines.append({"step": 30, "epoch": 1, "split": "final",
                      "metrics": {"val.loss": 1 - val_acc, "val.accuracy": val_acc, "test.accuracy": test_acc}})
        summary = {"best": {"metric": "accuracy", "value": val_acc, "step": 30},
                   "final": {"val": {"loss": 1 - val_acc, "accuracy": val_acc},
                             "test": {"loss": 1 - test_acc, "accuracy": test_acc}},
                   "steps": 30, "samples_per_s": 100.0 + seed, "wall_seconds": 12.5, "params": {"trainable": params}}
        (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return run


CONCAT = {"type": "concat", "dim": 16, "hidden_mult": 2}
ATTENTION = {"type": "attention", "dim": 16, "gate_hidden": 64}


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """2 fusions x 2 seeds, like ``mmkit run --sweep model.fusion.type=concat,attention --seeds 2``."""
    root = tmp_path / "demo-sweep"
    make_run(root, "concat_s0", fusion=CONCAT, seed=0, val_acc=0.60, test_acc=0.58, params=1000)
    make_run(root, "concat_s1", fusion=CONCAT, seed=1, val_acc=0.70, test_acc=0.66, params=1000,
             losses=(0.8, 0.6, 0.55))
    make_run(root, "attention_s0", fusion=ATTENTION, seed=0, val_acc=0.90, test_acc=0.88, params=1200,
             losses=(0.9, 0.4, 0.2))
    make_run(root, "attention_s1", fusion=ATTENTION, seed=1, val_acc=0.80, test_acc=0.79, params=1200,
             losses=(0.85, 0.5, 0.3))
    return root


def test_flatten_gives_dotted_keys_and_keeps_lists():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_compare_shows_only_differing_keys_sorted_by_metric(sweep_dir: Path):
    comp = compare([sweep_dir])
    # run.name / output_dir always differ and are hidden; gate_hidden/hidden_mult follow from the type
    assert comp.keys == ["run.seed", "model.fusion.type"]
    assert comp.metric == "val.accuracy"  # the head's monitor, from summary.best
    assert [r["run"] for r in comp.rows] == ["attention_s0", "attention_s1", "concat_s1", "concat_s0"]
    top = comp.rows[0]
    assert top["model.fusion.type"] == "attention" and top["run.seed"] == 0
    assert top["val.accuracy"] == 0.90 and top["test.accuracy"] == 0.88
    assert top["params.trainable"] == 1200 and top["samples_per_s"] == 100.0 and top["wall_seconds"] == 12.5
    # lower is better for a loss
    by_loss = compare([sweep_dir], metric="val.loss")
    assert [r["run"] for r in by_loss.rows] == ["attention_s0", "attention_s1", "concat_s1", "concat_s0"]
    by_test = compare([sweep_dir], metric="test.accuracy")
    assert by_test.rows[-1]["run"] == "concat_s0"
    # per configuration over seeds: mean and sample std
    configs = {c["model.fusion.type"]: c for c in comp.configs}
    assert configs["attention"]["n"] == 2
    assert configs["attention"]["val.accuracy.mean"] == pytest.approx(0.85)
    assert configs["attention"]["val.accuracy.std"] == pytest.approx(statistics.stdev([0.9, 0.8]))
    assert configs["concat"]["test.accuracy.mean"] == pytest.approx(0.62)
    assert [c["model.fusion.type"] for c in comp.configs] == ["attention", "concat"]


def test_a_key_that_varies_within_a_type_is_kept(tmp_path: Path):
    make_run(tmp_path, "a", fusion={**CONCAT, "dim": 16})
    make_run(tmp_path, "b", fusion={**CONCAT, "dim": 32})
    make_run(tmp_path, "c", fusion=ATTENTION)
    keys = differing_keys(load_runs([tmp_path / "a", tmp_path / "b", tmp_path / "c"]))
    assert keys == ["model.fusion.type", "model.fusion.dim"]


def test_unfinished_runs_are_listed_last(tmp_path: Path):
    make_run(tmp_path, "done", fusion=CONCAT, lr=1e-3, val_acc=0.4)
    make_run(tmp_path, "running", fusion=CONCAT, lr=3e-4, val_acc=None)
    comp = compare([tmp_path / "running", tmp_path / "done"])
    assert comp.keys == ["train.lr"]
    assert [(r["run"], r["status"]) for r in comp.rows] == [("done", "done"), ("running", "unfinished")]


def test_compare_cli_formats(sweep_dir: Path, tmp_path: Path):
    runner = CliRunner()
    as_json = json.loads(runner.invoke(compare_cmd, [str(sweep_dir), "--json"]).output)
    assert as_json["keys"] == ["run.seed", "model.fusion.type"] and len(as_json["runs"]) == 4
    assert len(as_json["configs"]) == 2
    out = runner.invoke(compare_cmd, [str(sweep_dir), "--csv", "--metric", "test.accuracy"]).output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["run"] for r in rows] == ["attention_s0", "attention_s1", "concat_s1", "concat_s0"]
    assert rows[0]["test.accuracy"] == "0.88" and rows[0]["model.fusion.type"] == "attention"
    md = runner.invoke(compare_cmd, [str(sweep_dir), "--markdown"]).output
    assert md.splitlines()[0].startswith("| run | run.seed | fusion.type | val.accuracy |")
    assert "| 2 | attention | 0.8500 ± 0.0707 |" in md
    table = runner.invoke(compare_cmd, [str(sweep_dir)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "mean ± std over seeds" in table.output
    missing = runner.invoke(compare_cmd, [str(tmp_path)])
    assert missing.exit_code != 0


# ------------------------------------------------------------------------------------------- plot
def _colours(path: Path) -> tuple[tuple[int, int], int]:
    from PIL import Image

    with Image.open(path) as img:
        rgb = img.convert("RGB")
        return rgb.size, len(rgb.getcolors(maxcolors=1 << 24))


def test_plot_renders_curves_and_bars(sweep_dir: Path, tmp_path: Path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "sweep.png"
    result = CliRunner().invoke(plot_cmd, [str(sweep_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5000
    (width, height), colours = _colours(out)
    assert colours > 10  # lines, bars, text: not a blank canvas
    assert width == 1560  # 3 panels: loss, val metric, bars over configurations
    assert 400 < height <= 500  # 4 inches of panels, and the legend below them
    single = tmp_path / "one.png"
    assert CliRunner().invoke(plot_cmd, [str(sweep_dir / "concat_s0"), "--out", str(single)]).exit_code == 0
    (w1, _), c1 = _colours(single)
    assert w1 == 1040 and c1 > 2  # a single run: curves only


def test_plot_without_matplotlib_says_how_to_install(sweep_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    from mmkit._internal.plot import PlotError, plot_runs

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PlotError, match=r"pip install 'mmkit\[plot\]'"):
        plot_runs([sweep_dir], tmp_path / "x.png")


def _outside_the_figure(fig) -> list[str]:
    """Every visible artist whose drawn extent (clipped as drawn) leaves the figure, as text."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = fig.bbox
    # matplotlib keeps tick objects just beyond the view limits but does not draw them
    undrawn = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - 1e-9 * (hi - lo) <= tick.get_loc() <= hi + 1e-9 * (hi - lo):
                    undrawn.update(tick.findobj())
    bad = []
    for artist in fig.findobj(lambda a: a.get_visible() and a is not fig and a not in undrawn):
        try:
            box = artist.get_window_extent(renderer)
        except (TypeError, NotImplementedError, AttributeError, RuntimeError):
            continue
        if artist.get_clip_on() and artist.get_clip_box() is not None:
            box = Bbox.intersection(box, artist.get_clip_box())
        if box is None or not all(map(math.isfinite, box.extents)) or (box.width == 0 and box.height == 0):
            continue
        if box.x0 < frame.x0 - 1 or box.y0 < frame.y0 - 1 or box.x1 > frame.x1 + 1 or box.y1 > frame.y1 + 1:
            bad.append(f"{type(artist).__name__} {getattr(artist, 'get_text', lambda: '')()!r} at {box.extents}")
    return bad


def _overlapping(texts) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_visible() and t.get_text()]
    return [(a, b) for i, (a, ba) in enumerate(boxes) for b, bb in boxes[i + 1:] if ba.overlaps(bb)]


@pytest.fixture
def crowded_dir(tmp_path: Path) -> Path:
    """9 configurations with three differing keys (long labels), and a run with a one-point loss curve."""
    root = tmp_path / "crowded"
    for i, (kind, dim, lr) in enumerate([(k, d, r) for k in ("concat", "attention", "transformer")
                                          for d, r in ((16, 1e-3), (32, 3e-4), (64, 1e-4))]):
        make_run(root, f"{kind}_{dim}", fusion={"type": kind, "dim": dim}, lr=lr, val_acc=0.5 + 0.04 * i,
                 losses=(0.9,) if i == 0 else (0.9, 0.6, 0.4))
    return root


@pytest.mark.parametrize("which", ["sweep", "crowded"])
def test_plot_panels_lie_inside_the_figure_and_bar_labels_do_not_overlap(which, sweep_dir, crowded_dir):
    pytest.importorskip("matplotlib")
    from mmkit._internal.plot import runs_figure

    fig = runs_figure([sweep_dir if which == "sweep" else crowded_dir])
    try:
        assert len(fig.axes) == 3  # loss curves, metric curves, bars
        assert _outside_the_figure(fig) == []
        bars = fig.axes[2]
        assert _overlapping(bars.get_xticklabels()) == []
        assert len([t for t in bars.get_xticklabels() if t.get_text()]) == (2 if which == "sweep" else 9)
        legends = [*fig.legends, *(a.get_legend() for a in fig.axes if a.get_legend())]
        assert legends and all(fig.bbox.contains(*lg.get_window_extent().min) and
                               fig.bbox.contains(*lg.get_window_extent().max) for lg in legends)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_a_run_with_few_points_is_drawn_with_markers(crowded_dir):
    pytest.importorskip("matplotlib")
    from mmkit._internal.plot import runs_figure

    fig = runs_figure([crowded_dir / "concat_16"])  # one training-loss point, two validation points
    try:
        (loss_line,) = fig.axes[0].get_lines()
        assert len(loss_line.get_xdata()) == 1
        assert loss_line.get_marker() not in (None, "None", "", " ") and loss_line.get_markersize() > 0
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
