"""``mmkit run`` and ``mmkit check``: train a recipe, or validate and build it without training."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from mmkit.errors import MmkitError

SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("run", context_settings=SETTINGS)
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set train.lr=1e-3 (value parsed as TOML, else a string).")
@click.option("--resume", is_flag=True, help="Continue the run directory <output_dir>/<name> from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory of the same name first.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages; only the final summary path.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout at the end.")
@click.option("--nproc", type=int, default=0, metavar="N",
              help="Launch N processes on this node through torch.distributed.run (DDP; gloo on CPU, nccl on GPU).")
@click.option("--nnodes", type=int, default=1, show_default=True, help="Number of nodes (with --nproc).")
@click.option("--node-rank", type=int, default=0, show_default=True, help="This node's rank (with --nnodes > 1).")
@click.option("--master-addr", default="127.0.0.1", show_default=True, help="Rendezvous host (node 0).")
@click.option("--master-port", type=int, default=29500, show_default=True, help="Rendezvous port.")
def run_cmd(recipe: str, overrides: tuple[str, ...], resume: bool, overwrite: bool, quiet: bool, as_json: bool,
            nproc: int, nnodes: int, node_rank: int, master_addr: str, master_port: int) -> None:
    """Train the model a RECIPE (TOML) describes.

    \b
    Writes <output_dir>/<name>/: recipe.resolved.toml, metrics.jsonl, summary.json and
    checkpoints/{last,best}/ (safetensors). An existing run directory is never overwritten:
    --resume continues it, --overwrite replaces it, otherwise a suffixed name (-2, -3…) is used.

    \b
    Examples:
      mmkit run recipes/quickstart.toml
      mmkit run recipes/quickstart.toml --set model.fusion.type=attention --set train.epochs=3
      mmkit run recipes/quickstart.toml --resume          # after Ctrl-C or a crash
      mmkit run recipes/quickstart.toml --nproc 2         # 2 processes (DDP) on this machine
      torchrun --nproc-per-node 2 -m mmkit run recipes/quickstart.toml   # the same, by hand
    """
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if nproc > 0:
        _launch(recipe, overrides, resume, overwrite, quiet, as_json, nproc, nnodes, node_rank, master_addr,
                master_port)
        return
    from mmkit.engine import train
    from mmkit.recipe import load_recipe

    rec = load_recipe(recipe, overrides)
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    result = train(rec, mode=mode, quiet=quiet)
    if result.interrupted:
        sys.exit(130)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))
    if not quiet:
        _print_summary(result, rec.source)


def _launch(recipe: str, overrides: tuple[str, ...], resume: bool, overwrite: bool, quiet: bool, as_json: bool,
            nproc: int, nnodes: int, node_rank: int, master_addr: str, master_port: int) -> None:
    """Re-run this command under torch's own launcher (torch.distributed.run), one process per rank."""
    import subprocess

    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
                f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={master_port}",
                "-m", "mmkit", "run", recipe]
    for item in overrides:
        launcher += ["--set", item]
    launcher += [flag for flag, on in (("--resume", resume), ("--overwrite", overwrite), ("--quiet", quiet),
                                       ("--json", as_json)) if on]
    sys.exit(subprocess.call(launcher))


def _print_summary(result, source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    console = Console(stderr=False, highlight=False)
    table = Table(title="summary", box=None, header_style="bold")
    table.add_column("split")
    table.add_column("metrics", overflow="fold")
    for split, values in s["final"].items():
        table.add_row(split, "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    if s["best"]:
        b = s["best"]
        table.add_row("best", f"{b['metric']} {b['value']:.4f} at step {b['step']} (checkpoints/best)")
    console.print(table)
    console.print(f"{s['steps']} steps, {s['samples_per_s']:.0f} samples/s, {s['wall_seconds']:.0f} s wall"
                  + (f", cache: {s['cache']}" if s["cache"] else ""))
    if result.renamed:
        console.print(f"[yellow]the run name was taken; wrote to a new directory[/yellow]")
    console.print(f"run directory: [bold]{result.run_dir}[/bold]")
    console.print("next: compare fusions with --set model.fusion.type=attention, "
                  "or inspect with: mmkit check " + source)


@click.command("check", context_settings=SETTINGS)
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key.")
def check_cmd(recipe: str, overrides: tuple[str, ...]) -> None:
    """Validate a RECIPE and build its model without training.

    Prints the component tree, trainable/frozen parameter counts and the data fields each
    component reads.

    \b
    Examples:
      mmkit check recipes/quickstart.toml
      mmkit check recipes/quickstart.toml --set model.fusion.type=concat
    """
    from rich.console import Console
    from rich.tree import Tree

    from mmkit.engine import assemble, load_splits, plan_data
    from mmkit.model import count_parameters
    from mmkit.recipe import load_recipe
    from mmkit.registry import get_registry

    registry = get_registry()
    rec = load_recipe(recipe, overrides)
    splits = load_splits(rec, registry)
    plan = plan_data(rec, splits)
    model = assemble(rec, registry, plan)
    console = Console(highlight=False)
    trainable, frozen = count_parameters(model)
    tree = Tree(f"[bold]{Path(recipe).name}[/bold]: {trainable:,} trainable, {frozen:,} frozen parameters")
    enc = tree.add("encoders")
    for name, e in model.encoders.items():
        spec = rec.encoders[name]
        tr, fr = count_parameters(e)
        enc.add(f"{name}: {spec.type} (modality {e.modality}, dim {e.dim}{', tokens' if e.has_tokens else ''}) "
                f"<- column {plan.field_columns[name]!r}; {tr:,} trainable, {fr:,} frozen"
                + (" [frozen]" if spec.freeze else ""))
    tr, fr = count_parameters(model.fusion)
    tree.add(f"fusion: {rec.fusion.type} (dim {model.fusion.dim}); {tr:,} parameters")
    tr, fr = count_parameters(model.head)
    targets = ", ".join(f"{f} <- column {c!r}" for f, c in plan.target_columns.items()) or "none"
    tree.add(f"head: {rec.head.type}; {tr:,} parameters; targets: {targets}")
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.splits.items())
    tree.add(f"data: {splits.name} ({sizes})")
    console.print(tree)
    console.print("[green]ok[/green]: the recipe is valid and the model builds")


COMMANDS = [run_cmd, check_cmd]
