"""The ``mmkit`` command line (click). Nothing here imports torch at module level: commands that
train or predict import the engine inside their bodies."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mmkit._internal.errors import MmkitError
from mmkit._internal.registry import KINDS, get_registry

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class MmkitGroup(click.Group):
    """A command group that also offers the commands plugins add through ``register_commands``."""

    _plugin_commands: tuple[object, dict[str, click.Command]] | None = None  # (registry, commands)

    def _plugin_cmds(self, ctx: click.Context) -> dict[str, click.Command]:
        # Commands are resolved before the group callback runs, so load the `-p` plugins here already.
        try:
            registry = get_registry((ctx.params.get("plugins") if ctx is not None else None) or None)
        except MmkitError as exc:  # MMKIT_STRICT_PLUGINS: the group callback reports it as an error
            click.echo(f"warning: {exc}", err=True)
            return {}
        if self._plugin_commands is None or self._plugin_commands[0] is not registry:
            holder = click.Group()
            for plugin, _, exc in registry.call_each("register_commands", cli=holder):
                if exc is not None:  # a broken plugin must not break the CLI
                    click.echo(f"warning: plugin {plugin!r} failed in register_commands: "
                               f"{type(exc).__name__}: {exc}", err=True)
            commands = {n: c for n, c in holder.commands.items() if n not in self.commands}
            self._plugin_commands = (registry, commands)
        return self._plugin_commands[1]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_cmds(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or self._plugin_cmds(ctx).get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MmkitError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


def escape(text: str) -> str:
    """Text shown as-is by rich (``list[str]`` is not markup)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def _console():
    from rich.console import Console

    return Console(soft_wrap=False)


@click.group(cls=MmkitGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="mmkit", prog_name="mmkit")
@click.option("-p", "plugins", multiple=True, metavar="MODULE", is_eager=True,
              help="Load an extra plugin module (repeatable); '-p no:NAME' blocks a plugin, built-ins included.")
def cli(plugins: tuple[str, ...]) -> None:
    """mmkit: multimodal deep learning from plugins and TOML recipes.

    \b
    Examples:
      mmkit list                      every registered component
      mmkit list fusion               fusions only
      mmkit show transformer          a component's parameters
      mmkit plugins                   loaded plugins and load errors
      mmkit -p my_pkg.plugin list     load an extra plugin module
      mmkit -p no:fusion list         block a plugin (here the built-in fusions)

    Plugins come from the 'mmkit' entry-point group, from MMKIT_PLUGINS=mod1,mod2 and from -p.
    MMKIT_STRICT_PLUGINS=1 makes a plugin that fails to load an error instead of a warning.
    """
    get_registry(plugins or None)


def _warn_failures(json_mode: bool) -> None:
    registry = get_registry()
    for name, error in registry.failed_plugins().items():
        click.secho(f"warning: plugin {name!r} failed to load: {error}", fg="yellow", err=True)
    for problem in registry.problems:
        click.secho(f"warning: {problem}", fg="yellow", err=True)


@cli.command("list", context_settings=CONTEXT_SETTINGS)
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.argument("pattern", required=False, default="*")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {kind, name, plugin, version, summary}.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (used for docs/components.md).")
def list_cmd(kind: str | None, pattern: str, as_json: bool, markdown: bool) -> None:
    """List registered components, optionally of one KIND and matching a glob PATTERN.

    \b
    Examples:
      mmkit list
      mmkit list encoder
      mmkit list fusion "*attention*"
      mmkit list --json | python -m json.tool
    """
    registry = get_registry()
    items = registry.list(kind, pattern)
    _warn_failures(as_json)
    if as_json:
        keys = ("kind", "name", "plugin", "version", "summary")
        click.echo(json.dumps([{k: i.to_dict()[k] for k in keys} for i in items], indent=2))
        return
    if markdown:
        click.echo("| kind | name | plugin | summary |\n|---|---|---|---|")
        for i in items:
            click.echo(f"| {i.kind} | `{i.name}` | {i.plugin} {i.version} | {i.summary} |")
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("kind", "name", "plugin", "summary"):
        table.add_column(col, overflow="fold")
    for i in items:
        table.add_row(i.kind, i.name, f"{i.plugin} {i.version}", escape(i.summary))
    console = _console()
    console.print(table)
    if not items:
        console.print(f"no {kind or 'component'}s match {pattern!r}")


@cli.command("show", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--kind", type=click.Choice(KINDS), help="Which kind, when NAME is registered for several.")
@click.option("--json", "as_json", is_flag=True, help="Print the component and a JSON schema of its parameters.")
def show_cmd(name: str, kind: str | None, as_json: bool) -> None:
    """Show a component's parameters: name, type, default and documentation.

    \b
    Examples:
      mmkit show transformer
      mmkit show classification --kind head
      mmkit show fusion:concat --json
    """
    registry = get_registry()
    if kind is None:
        kind = registry.kind_of(name)
    info = registry.describe(kind, name)
    params = list(info.params or ())
    if as_json:
        from mmkit._internal.schema import params_json_schema

        out = info.to_dict(with_params=True)
        out["schema"] = params_json_schema(info)
        click.echo(json.dumps(out, indent=2, default=str))
        return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{escape(info.name)}[/bold] ({info.kind}) from plugin {escape(info.plugin)} {info.version}")
    console.print(f"  {escape(info.summary)}")
    console.print(f"  target: {info.target}")
    if info.fixed_params:
        console.print(f"  fixed: {escape(str(info.fixed_params))}")
    if not params:
        console.print("  no parameters")
        return
    table = Table(box=None, header_style="bold", show_lines=False)
    for col in ("parameter", "type", "default", "description"):
        table.add_column(col, overflow="fold")
    for p in params:
        default = "(required)" if p.required else repr(p.default)
        table.add_row(p.name, escape(p.type), escape(default), escape(p.doc))
    console.print(table)


@cli.command("plugins", context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: name, version, module, source, hooks, error.")
def plugins_cmd(as_json: bool) -> None:
    """List loaded plugins with their versions, hooks and load errors.

    \b
    Examples:
      mmkit plugins
      MMKIT_PLUGINS=my_pkg.plugin mmkit plugins --json
    """
    registry = get_registry()
    plugins = sorted(registry.plugins.values(), key=lambda p: p.name)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in plugins], indent=2))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("plugin", "version", "source", "hooks", "status"):
        table.add_column(col, overflow="fold")
    for p in plugins:
        status = f"[red]failed: {escape(p.error)}[/red]" if p.error else "ok"
        hooks = ", ".join(h.replace("register_", "") for h in p.hooks)
        table.add_row(p.name, p.version, p.source, hooks, status)
    console = _console()
    console.print(table)
    if registry.blocked:
        console.print(f"blocked: {', '.join(sorted(registry.blocked))}")
    for problem in registry.problems:
        console.print(f"[yellow]warning:[/yellow] {escape(problem)}")


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mmkit")


def _add_builtin_commands() -> None:
    from mmkit._internal.cli_compare import COMMANDS as COMPARE_COMMANDS
    from mmkit._internal.cli_data import data
    from mmkit._internal.cli_models import COMMANDS as MODEL_COMMANDS
    from mmkit._internal.cli_run import COMMANDS
    from mmkit._internal.cli_scaffold import COMMANDS as SCAFFOLD_COMMANDS

    for command in [*COMMANDS, *MODEL_COMMANDS, *SCAFFOLD_COMMANDS, *COMPARE_COMMANDS, data]:
        cli.add_command(command)


_add_builtin_commands()
