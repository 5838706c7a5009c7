"""The `safenet` command. Its groups come from the `safenet.commands` entry-point group, so
each package (node, client, eventstore, simulations) registers its own commands and this
root never imports the packages built on top of it.

Every group shares `node.clikit`: one error format (`safenet: error: ...`, never a
traceback) and one exit-code table (`node.exitcodes`, written out in docs/cli.md).
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from .clikit import CONTEXT, SafenetGroup


class _RegistryGroup(SafenetGroup):
    """A group whose subcommands are the registered entry points, loaded on demand."""

    is_root = True  # error messages name it `safenet`, whatever argv[0] was

    def _registered(self) -> dict[str, object]:
        return {ep.name: ep for ep in entry_points(group="safenet.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._registered()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            return cmd
        ep = self._registered().get(cmd_name)
        if ep is None:
            return None
        try:
            loaded = ep.load()  # type: ignore[attr-defined]
        except Exception as exc:  # a broken plug-in must not take the whole CLI down
            click.echo(f"safenet: error: command group {cmd_name!r} failed to load: {exc}", err=True)
            return None
        return loaded if isinstance(loaded, click.Command) else None


@click.group(cls=_RegistryGroup, context_settings=CONTEXT)
@click.version_option(package_name="safenet-testbed", prog_name="safenet")
def main() -> None:
    """A testbed of the SAFE Network (2017-2018) and an event store built on it.

    Launch a local cluster of real node processes, put and get data, run the event store
    and its NoteBook example, and attack the network with chaos simulations.
    """


@click.group(name="node", cls=SafenetGroup, context_settings=CONTEXT)
def node_group() -> None:
    """Run a single node process."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def _register_node_commands() -> None:
    from .process import run_command

    node_group.add_command(run_command)


_register_node_commands()
