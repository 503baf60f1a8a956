"""``mmkit new-plugin``: generate a plugin package (see :mod:`mmkit._internal.scaffold`). Imports no torch."""

from __future__ import annotations

from pathlib import Path

import click

from mmkit._internal.errors import MmkitError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Refused(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.secho(f"error: {self.format_message()}", fg="red", err=True)


@click.command("new-plugin", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--kind", "kinds", multiple=True, default=("encoder",), show_default=True, metavar="KINDS",
              help="What to generate: modality, encoder, fusion, head -- comma-separated or repeated; KIND=NAME "
                   "names that component (default: NAME). A modality comes with an encoder for it.")
@click.option("--add", is_flag=True, help="Add the kinds to the existing package DIR/mmkit-NAME.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder in which mmkit-NAME/ is created (or found, with --add).")
def new_plugin(name: str, kinds: tuple[str, ...], add: bool, directory: Path) -> None:
    """Write a ready-to-install plugin package mmkit-NAME/ into DIR.

    It holds a pyproject.toml with the 'mmkit' entry point, a light plugin module that registers the
    components by import string, one component skeleton per kind that passes the contract kit
    (mmkit.testing), a test file and a README. NAME: lowercase letters, digits, '_' or '-' ('-'
    becomes '_' in the module name mmkit_NAME). An existing file is never overwritten.

    \b
    Examples:
      mmkit new-plugin gated --kind fusion
      mmkit new-plugin timeseries --kind modality,encoder=gru,fusion=gated
      mmkit new-plugin timeseries --add --kind head          # one more kind, later
      cd mmkit-timeseries && pip install -e '.[test]' && OMP_NUM_THREADS=1 pytest
    """
    from mmkit._internal.scaffold import PluginNames, add_to_plugin, create_plugin, parse_kinds

    try:
        names = PluginNames.from_name(name)
        parts = parse_kinds(kinds, name)
        if add:
            root, written = add_to_plugin(name, kinds, directory)
        else:
            root = create_plugin(name, kinds, directory)
            written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    except MmkitError as exc:
        raise _Refused(str(exc)) from None
    for part in parts:
        _warn_taken(part.kind, part.name, name)
    what = ", ".join(f"{p.kind} {p.name!r}" for p in parts)
    click.echo(f"{'added to' if add else 'created'} {root}/ ({what}; package {names.module}):")
    for rel in written:
        click.echo(f"  {root.name}/{rel}")
    click.echo("next:")
    click.echo(f"  PYTHONPATH={root} MMKIT_PLUGINS={names.module}.plugin mmkit list   # try it without installing")
    click.echo(f"  cd {root} && pip install -e '.[test]' && OMP_NUM_THREADS=1 pytest")


def _warn_taken(kind: str, name: str, plugin: str) -> None:
    """Warn when the name is already registered (users would need 'plugin:name' to pick one)."""
    try:
        from mmkit._internal.registry import get_registry

        registry = get_registry()
        taken = [c.plugin for c in registry.list(kind) if c.name == name]
    except MmkitError:
        return
    if taken:
        click.secho(f"warning: a {kind} named {name!r} is already registered by plugin {taken[0]!r}; with both "
                    f"installed, recipes must say '{plugin}:{name}' or '{taken[0]}:{name}'",
                    fg="yellow", err=True)


COMMANDS = [new_plugin]
