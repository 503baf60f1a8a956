"""``mmkit run`` and ``mmkit check``: train a recipe, or validate and build it without training."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("run", context_settings=SETTINGS)
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe key, e.g. --set train.lr=1e-3 (value parsed as TOML, else a string).")
@click.option("--resume", is_flag=True, help="Continue the run directory <output_dir>/<name> from its last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Delete an existing run directory of the same name first.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages; only the final summary path.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout at the end.")
@click.option("--nproc", type=click.IntRange(0, 1024), default=0, metavar="N",
              help="Launch N processes on this node through torch.distributed.run (DDP; gloo on CPU, nccl on GPU).")
@click.option("--nnodes", type=click.IntRange(1, 65536), default=1, show_default=True,
              help="Number of nodes (with --nproc).")
@click.option("--node-rank", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="This node's rank (with --nnodes > 1).")
@click.option("--master-addr", default="127.0.0.1", show_default=True, help="Rendezvous host (node 0).")
@click.option("--master-port", type=click.IntRange(1, 65535), default=29500, show_default=True, help="Rendezvous port.")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2,...",
              help="Train one run per value (repeat for a grid), e.g. --sweep model.fusion.type=concat,attention. "
                   "Values are TOML; commas inside [..] or {..} do not split.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, metavar="K",
              help="Train each configuration with seeds run.seed+0..K-1 and report mean ± std (a sweep).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Sweep runs trained at once, in subprocesses that share the CPU cores evenly (torch threads).")
def run_cmd(recipe: str, overrides: tuple[str, ...], resume: bool, overwrite: bool, quiet: bool, as_json: bool,
            nproc: int, nnodes: int, node_rank: int, master_addr: str, master_port: int,
            sweeps: tuple[str, ...], seeds: int | None, jobs: int) -> None:
    """Train the model a RECIPE (TOML) describes.

    \b
    Writes the run directory <output_dir>/<name>/ (the resolved recipe, a metrics log, a summary
    and atomic safetensors checkpoints last/best; docs/training.md). An existing run directory is
    never overwritten: --resume continues it, --overwrite replaces it, otherwise a suffixed name
    (-2, -3…) is used. Progress goes to stderr: a bar on a terminal, else a line every
    train.log_every steps.

    \b
    Examples:
      mmkit run recipes/quickstart.toml
      mmkit run recipes/quickstart.toml --set model.fusion.type=attention --set train.epochs=3
      mmkit run recipes/quickstart.toml --resume          # after Ctrl-C or a crash
      mmkit run recipes/quickstart.toml --nproc 2         # 2 processes (DDP) on this machine
      torchrun --nproc-per-node 2 -m mmkit run recipes/quickstart.toml   # the same, by hand

    \b
    Sweeps: runs under <output_dir>/<name>-sweep/; re-running the command skips finished runs and
    resumes interrupted ones (--overwrite retrains all); table in sweep.csv/sweep.json, mean ± std
    over seeds in sweep_summary.csv/json (docs/compare.md):
      mmkit run recipes/quickstart.toml --sweep model.fusion.type=concat,attention,autoencoder,transformer
      mmkit run recipes/quickstart.toml --sweep train.lr=1e-3,3e-4 --seeds 3 --jobs 2
    """
    if resume and overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if sweeps or seeds is not None:
        if nproc > 0:
            raise click.UsageError("--nproc cannot be combined with --sweep/--seeds; use --jobs")
        _sweep(recipe, overrides, sweeps, seeds or 1, jobs, overwrite, quiet, as_json)
        return
    if jobs != 1:
        raise click.UsageError("--jobs applies to sweeps; add --sweep KEY=V1,V2 or --seeds K")
    if node_rank >= nnodes:
        raise click.BadParameter(f"{node_rank} is not below --nnodes {nnodes}", param_hint="'--node-rank'")
    if nproc > 0:
        _launch(recipe, overrides, resume, overwrite, quiet, as_json, nproc, nnodes, node_rank, master_addr,
                master_port)
        return
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.trainer import train

    rec = load_recipe(recipe, overrides)
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    # progress and the summary table: callbacks, on stderr
    result = train(rec, mode=mode, quiet=quiet, overrides=overrides)
    code = _exit_code(result)
    if os.environ.get(EXIT_FILE_ENV):  # a worker under --nproc: rank 0 reports, torchrun sees a clean exit
        _report_exit(code)
    elif code:
        sys.exit(code)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))


#: set by ``--nproc``: the file rank 0 writes its exit code to, so the launcher exits with it
EXIT_FILE_ENV = "MMKIT_LAUNCH_EXIT_FILE"


def _exit_code(result: Any) -> int:
    """0 finished; 75 preempted (SIGTERM/SIGUSR1), 130 interrupted (Ctrl-C): both resumable."""
    from mmkit._internal.preempt import EXIT_INTERRUPTED, EXIT_PREEMPTED

    if not result.interrupted:
        return 0
    return EXIT_PREEMPTED if result.summary.get("preempted") else EXIT_INTERRUPTED


def _report_exit(code: int) -> None:
    """Rank 0 under ``--nproc``: tell the launching process how training ended (torchrun's own exit
    code says only that a worker exited non-zero)."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path and int(os.environ.get("RANK", "0")) == 0 and int(os.environ.get("GROUP_RANK", "0")) == 0:
        from mmkit._internal.safeio import write_text_atomic

        write_text_atomic(Path(path), str(code))


def _sweep(recipe: str, overrides: tuple[str, ...], sweeps: tuple[str, ...], seeds: int, jobs: int,
           overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Plan (validating every run's recipe first), train what is not finished, print the table."""
    from mmkit._internal.sweep import SweepInterrupted, plan_sweep, print_result, run_sweep

    plan = plan_sweep(recipe, overrides, sweeps, seeds)
    echo = None if quiet else (lambda msg: click.echo(msg, err=True))
    if not quiet:
        click.echo(f"sweep: {len(plan.points)} runs into {plan.sweep_dir}"
                   + (f", {jobs} at a time" if jobs > 1 else ""), err=True)
    try:
        result = run_sweep(plan, jobs=jobs, overwrite=overwrite, echo=echo)
    except SweepInterrupted as exc:
        click.secho(str(exc), fg="yellow", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps({"sweep_dir": str(plan.sweep_dir), "metric": result.metric, "runs": result.rows,
                               "configs": result.summary_rows if seeds > 1 else []}, indent=2, default=str))
    elif quiet:
        click.echo(str(plan.sweep_dir))
    else:
        print_result(result)
    if result.failed:
        click.secho(f"{len(result.failed)} run(s) failed: {', '.join(result.failed)} (logs in "
                    f"{plan.sweep_dir / 'logs'})", fg="red", err=True)
        sys.exit(1)


def _launch(recipe: str, overrides: tuple[str, ...], resume: bool, overwrite: bool, quiet: bool, as_json: bool,
            nproc: int, nnodes: int, node_rank: int, master_addr: str, master_port: int) -> None:
    """Re-run this command under torch's own launcher (torch.distributed.run), one process per rank.

    SIGTERM/SIGUSR1 sent to this process are passed on to the workers (torchrun's children), which
    stop after the current step with a checkpoint and exit cleanly; this process then exits with rank
    0's code (75 after a preemption stop), read from a file it writes. torchrun itself also handles
    SIGUSR1 (a scheduler may signal every process) and gives the workers ``--shutdown-timeout``
    seconds before it kills them."""
    import subprocess
    import tempfile

    from mmkit._internal.preempt import PREEMPT_SIGNALS

    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}",
                f"--node-rank={node_rank}", f"--master-addr={master_addr}", f"--master-port={master_port}",
                "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "--shutdown-timeout=120",
                "-m", "mmkit", "run", recipe]
    for item in overrides:
        launcher += ["--set", item]
    launcher += [flag for flag, on in (("--resume", resume), ("--overwrite", overwrite), ("--quiet", quiet),
                                       ("--json", as_json)) if on]
    fd, exit_file = tempfile.mkstemp(prefix="mmkit-exit-")
    os.close(fd)
    proc = subprocess.Popen(launcher, env={**os.environ, EXIT_FILE_ENV: exit_file})
    import signal

    previous = {sig: signal.signal(sig, lambda signum, _frame: _forward(proc, signum)) for sig in PREEMPT_SIGNALS}
    try:
        code = _wait(proc)
        reported = Path(exit_file).read_text(encoding="utf-8").strip()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        Path(exit_file).unlink(missing_ok=True)
    sys.exit(int(reported) if reported.isdigit() else code)


def _forward(proc: Any, signum: int) -> None:
    """Send ``signum`` to torchrun's worker processes (Linux /proc), else to torchrun itself."""
    try:
        pids = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    except (OSError, ValueError):
        pids = []
    if not pids:
        proc.send_signal(signum)
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def _wait(proc: Any) -> int:
    """Wait for the launcher. A Ctrl-C on the terminal reaches the workers too, so keep waiting while
    they write their checkpoint; a second one is passed on to torchrun (which stops the workers)."""
    import signal

    interrupts = 0
    while True:
        try:
            return int(proc.wait())
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts > 1:
                proc.send_signal(signal.SIGINT)


@click.command("check", context_settings=SETTINGS)
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key.")
@click.option("--no-rows", is_flag=True, help="Skip loading every row (columns are still checked).")
def check_cmd(recipe: str, overrides: tuple[str, ...], no_rows: bool) -> None:
    """Validate a RECIPE, build its model and load every row of every split, without training.

    Also refuses everything `mmkit run` would refuse in its setup, through the same checks: an
    unavailable device, a precision the device lacks, an unimplemented strategy, a monitored
    metric the head does not report, a callback's missing optional package.

    Prints the component tree, trainable/frozen parameter counts and the data fields each
    component reads. Every row of train, val and test is loaded and preprocessed as training and
    evaluation would (files exist, cells parse, targets are known to the head); the first errors
    are listed with their file, row and column.

    \b
    Examples:
      mmkit check recipes/quickstart.toml
      mmkit check recipes/quickstart.toml --set model.fusion.type=concat
    """
    from rich.console import Console
    from rich.markup import escape

    from mmkit._internal.assembly import assemble, check_rows, load_splits, make_fields, plan_data
    from mmkit._internal.errors import DataError
    from mmkit._internal.preflight import check_training
    from mmkit._internal.recipe import load_recipe
    from mmkit._internal.registry import get_registry

    registry = get_registry()
    rec = load_recipe(recipe, overrides)
    plan = plan_data(rec, load_splits(rec, registry))
    model = assemble(rec, registry, plan)
    console = Console(highlight=False)
    console.print(_model_tree(Path(recipe).name, rec, model, plan))
    if not no_rows:
        report = check_rows(model, make_fields(model, plan, registry), plan)
        if report["errors"]:
            more = " (first ones)" if report["truncated"] else ""
            raise DataError(f"{len(report['errors'])} row(s) cannot be used{more}:\n  " + "\n  ".join(report["errors"]))
        console.print("rows: every row loads (" + ", ".join(f"{k} {v}" for k, v in report["rows"].items()) + ")")
    for note in check_training(rec, registry, model, plan, rows=not no_rows):  # what `mmkit run` refuses
        console.print(f"[yellow]note[/yellow]: {escape(note)}")
    console.print("[green]ok[/green]: the recipe is valid and the model builds")


def _lr_note(lr_mult: Any, encoder: Any, lr: float) -> str:
    """``; lr 1e-05 (x0.0333: pretrained, lr_mult auto)`` where an encoder does not train at ``train.lr``."""
    from mmkit._internal.optim import encoder_lr_mult

    mult = encoder_lr_mult(lr_mult, encoder, lr)
    if mult == 1.0:
        return ""
    why = "pretrained, lr_mult auto" if lr_mult == "auto" else "lr_mult"
    return f"; lr {lr * mult:.3g} (x{mult:.3g}: {why})"


def _model_tree(title: str, rec: Any, model: Any, plan: Any) -> Any:
    """The component tree of ``mmkit check``: encoders with their columns, fusion, head, data."""
    from rich.tree import Tree

    from mmkit._internal.model import count_parameters
    from mmkit._internal.registry import get_registry

    trainable, frozen = count_parameters(model)
    tree = Tree(f"[bold]{title}[/bold]: {trainable:,} trainable, {frozen:,} frozen parameters")
    enc = tree.add("encoders")
    for name, e in model.encoders.items():
        spec = rec.encoders[name]
        tr, fr = count_parameters(e)
        enc.add(f"{name}: {spec.type} (modality {e.modality}, dim {e.dim}{', tokens' if e.has_tokens else ''}) "
                f"<- column {plan.field_columns[name]!r}; {tr:,} trainable, {fr:,} frozen"
                + (" [frozen]" if spec.freeze else _lr_note(spec.lr_mult, e, rec.train["lr"])))
    tr, fr = count_parameters(model.fusion)
    tree.add(f"fusion: {rec.fusion.type} (dim {model.fusion.dim}); {tr:,} parameters")
    tr, fr = count_parameters(model.head)
    targets = ", ".join(f"{f} <- column {c!r}" for f, c in plan.target_columns.items()) or "none"
    tree.add(f"head: {rec.head.type}; {tr:,} parameters; targets: {targets}")
    sizes = ", ".join(f"{k} {len(v)}" if plan.stream(k) is None else f"{k} {plan.stream(k).total} streamed"
                      for k, v in plan.splits.splits.items())
    tree.add(f"data: {plan.splits.name} ({sizes})")
    if rec.train["strategy"] == "fsdp":
        from mmkit._internal.fsdp import fsdp_unit_sizes, fsdp_units

        units = fsdp_units(model)
        fsdp = tree.add(f"fsdp (with --nproc > 1; one process trains the whole model): {len(units) - 1} units "
                        "sharded over the ranks, then the root")
        for name, (count, is_frozen) in fsdp_unit_sizes(model, units).items():
            fsdp.add(f"{name or 'root (the rest)'}: {count:,} parameters" + (" (frozen)" if is_frozen else ""))
        from mmkit._internal.distributed import absent_field_reasons

        for reason in absent_field_reasons(model, plan, get_registry(), ("train", "val", "test"), trainable_only=False):
            fsdp.add(f"[red]refused with several processes[/red]: {reason} (use train.strategy = 'ddp')")
    if rec.train["callbacks"]:
        tree.add("callbacks (besides the built-in ones): " + ", ".join(
            c if isinstance(c, str) else str(c.get("type")) for c in rec.train["callbacks"]))
    return tree


COMMANDS = [run_cmd, check_cmd]
