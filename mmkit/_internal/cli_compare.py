"""``mmkit compare``, ``mmkit plot`` and ``mmkit ablate``: look at finished runs side by side."""

from __future__ import annotations

import json

import click

SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("compare", context_settings=SETTINGS)
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--metric", default=None, metavar="SPLIT.NAME",
              help="Sort by this final metric, e.g. val.accuracy or test.loss (default: the head's val monitor).")
@click.option("--json", "fmt", flag_value="json", help="Print JSON: metric, differing keys, runs, configs.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV, one row per run with every metric.")
@click.option("--markdown", "fmt", flag_value="markdown", help="Print Markdown tables (for docs and PRs).")
@click.option("--all", "all_metrics", is_flag=True, help="Show every metric (val and test), not just the main ones.")
def compare_cmd(runs: tuple[str, ...], metric: str | None, fmt: str | None, all_metrics: bool) -> None:
    """Compare RUNS (run directories or sweep directories) in one table.

    Shows only the recipe keys that differ between the runs, the final metrics (best first by
    --metric; lower is better for losses and errors), trainable parameters, samples/s and wall
    time. Runs that differ only in run.seed are also summarised as mean ± std per configuration.

    \b
    Examples:
      mmkit compare runs/quickstart-sweep
      mmkit compare runs/quickstart runs/quickstart-2 --metric test.accuracy
      mmkit compare runs/quickstart-sweep --markdown > results.md
    """
    from mmkit._internal.compare import compare, display_columns, metric_columns, rich_table, to_csv, to_markdown

    comp = compare(runs, metric)
    if fmt == "json":
        click.echo(json.dumps(comp.to_dict(), indent=2, default=str))
        return
    if fmt == "csv":
        lead = ["run", *comp.keys]
        columns = lead + [c for c in metric_columns(comp.rows, lead) if c not in ("error",)]
        click.echo(to_csv(comp.rows, columns), nl=False)
        return
    columns = display_columns(comp.rows, comp.keys, comp.metric, full=all_metrics)
    group = [k for k in comp.keys if k != "run.seed"]
    config_cols = display_columns(comp.configs, group, comp.metric, aggregated=True, full=all_metrics)
    if fmt == "markdown":
        click.echo(to_markdown(comp.rows, columns, comp.keys), nl=False)
        if comp.configs:
            click.echo("\nMean ± std over seeds:\n")
            click.echo(to_markdown(comp.configs, config_cols, group), nl=False)
        return
    from mmkit._internal.compare import console as make_console

    console = make_console()
    console.print(rich_table(comp.rows, columns, title=f"{len(comp.rows)} runs, best {comp.metric} first",
                             highlight=comp.metric, keys=comp.keys))
    if comp.configs:
        console.print()
        console.print(rich_table(comp.configs, config_cols, title="mean ± std over seeds", highlight=comp.metric,
                                 keys=group))
    if not comp.keys:
        console.print("(the runs' recipes are identical)")


@click.command("plot", context_settings=SETTINGS)
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--metric", default=None, metavar="SPLIT.NAME",
              help="Metric of the curves and bars, e.g. val.accuracy (default: the head's val monitor).")
@click.option("--dpi", type=click.IntRange(min=30), default=100, show_default=True, help="Resolution of the PNG.")
def plot_cmd(runs: tuple[str, ...], out: str, metric: str | None, dpi: int) -> None:
    """Plot RUNS (run or sweep directories): training loss and validation metric per step, one line
    per run labelled by what differs, and a bar chart of the final metric per configuration
    (error bars: std over seeds). Needs matplotlib: pip install 'mmkit[plot]'.

    \b
    Examples:
      mmkit plot runs/quickstart-sweep --out sweep.png
      mmkit plot runs/a runs/b --metric val.macro_f1 --out ab.png
    """
    from mmkit._internal.plot import plot_runs

    path = plot_runs(runs, out, metric, dpi=dpi)
    click.echo(f"wrote {path}")


@click.command("ablate", context_settings=SETTINGS)
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="val", show_default=True, help="Split of the run's data to evaluate.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Default: the recipe's.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def ablate_cmd(run_dir: str, split: str, checkpoint: str, batch_size: int | None, device: str,
               as_json: bool) -> None:
    """Modality ablation of the model in RUN_DIR: its metrics with each input field removed in turn.

    Every row is marked absent for the removed field (the fusion's missing-modality path runs),
    so the drop shows how much the model relies on it. With a fusion that weights modalities, the
    mean weight each received is shown too: attention weights (they sum to 1 per sample) or gates.

    \b
    Examples:
      mmkit ablate runs/quickstart
      mmkit ablate runs/quickstart --split test --json
    """
    from mmkit._internal.ablation import ablate

    result = ablate(run_dir, split=split, checkpoint=checkpoint, batch_size=batch_size, device=device)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    print_ablation(result)


def print_ablation(result: dict) -> None:
    """The ablation as a table: one row for the full model, one per removed field."""
    from rich.table import Table

    from mmkit._internal.compare import console as make_console
    from mmkit._internal.compare import fmt

    metric = result["metric"]
    names = list(result["full"])
    names.sort(key=lambda m: (m != metric, m))
    model = result.get("model") or result.get("run_dir") or "model"
    title = f"modality ablation of {model} on {result.get('source') or result['split']} ({result['samples']} samples)"
    table = Table(box=None, header_style="bold")
    table.add_column("inputs")
    for m in names:
        table.add_column(m, justify="right", style="bold" if m == metric else None)
    table.add_column(f"drop in {metric}", justify="right")
    table.add_row("all", *[fmt(result["full"][m]) for m in names], "")
    for field, ab in result["ablations"].items():
        drop = ab["drop"].get(metric)
        table.add_row(f"without {field}", *[fmt(ab["metrics"].get(m)) for m in names],
                      "-" if drop is None else f"{drop:+.4f}")
    console = make_console()
    console.print(title, style="bold")
    console.print(table)
    weights = result.get("weights") or result.get("attention")
    if weights:
        what = "mean attention weight" if weights.get("kind", "attention") == "attention" else \
            "mean gate value (gates need not sum to 1)"
        console.print(f"{what}: " + ", ".join(f"{k} {v:.3f}" for k, v in weights["mean"].items())
                      + f" (over {weights['rows']} samples)")


COMMANDS = [compare_cmd, plot_cmd, ablate_cmd]
