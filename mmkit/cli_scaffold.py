"""``mmkit new-plugin``: generate a plugin package (see :mod:`mmkit.scaffold`). Imports no torch."""

from __future__ import annotations

from pathlib import Path

import click

from mmkit.errors import MmkitError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Refused(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.secho(f"error: {self.format_message()}", fg="red", err=True)


@click.command("new-plugin", context_settings=CONTEXT_SETTINGS)
@click.argument("name")
@click.option("--kind", type=click.Choice(["encoder", "fusion", "head", "modality"]), default="encoder",
              show_default=True, help="The component skeleton to generate (modality: a modality plus its encoder).")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder in which mmkit-NAME/ is created.")
def new_plugin(name: str, kind: str, directory: Path) -> None:
    """Write a ready-to-install plugin package mmkit-NAME/ into DIR.

    It holds a pyproject.toml with the 'mmkit' entry point, a light plugin module that registers the
    component by import string, a component skeleton that passes the contract kit (mmkit.testing),
    a test file and a README. NAME: lowercase letters, digits, '_' or '-' ('-' becomes '_' in the
    module name mmkit_NAME). An existing folder is never overwritten.

    \b
    Examples:
      mmkit new-plugin gated --kind fusion
      mmkit new-plugin my-encoder --dir plugins
      cd mmkit-gated && pip install -e '.[test]' && pytest
    """
    from mmkit.scaffold import PluginNames, create_plugin

    try:
        root = create_plugin(name, kind, directory)
    except MmkitError as exc:
        raise _Refused(str(exc)) from None
    names = PluginNames.from_name(name)
    _warn_taken(kind, name)
    click.echo(f"created {root}/ ({kind} {name!r}, package {names.module}):")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        click.echo(f"  {path.relative_to(root.parent)}")
    click.echo("next:")
    click.echo(f"  PYTHONPATH={root} MMKIT_PLUGINS={names.module}.plugin mmkit list   # try it without installing")
    click.echo(f"  cd {root} && pip install -e '.[test]' && pytest")


def _warn_taken(kind: str, name: str) -> None:
    """Warn when the name is already registered (users would need 'plugin:name' to pick one)."""
    try:
        from mmkit.registry import get_registry

        registry = get_registry()
        taken = [c.plugin for c in registry.list(kind) if c.name == name]
    except MmkitError:
        return
    if taken:
        click.secho(f"warning: a {kind} named {name!r} is already registered by plugin {taken[0]!r}; with both "
                    f"installed, recipes must say '{name}:{name}' or '{taken[0]}:{name}'", fg="yellow", err=True)


COMMANDS = [new_plugin]
