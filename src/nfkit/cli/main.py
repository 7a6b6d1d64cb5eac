"""The `nfkit` command: one click group, a sub-command group per package.

Sub-commands are imported only when used, so `nfkit rules add` does not pay
for importing the pcap or C-parsing machinery.  Every `NfkitError` becomes a
one-line message and exit status 2 (never a traceback).
"""

from __future__ import annotations

import importlib

import click

from nfkit import __version__
from nfkit.cli.guard import guarded

# name -> "module:attribute"; add a line here when a package grows a command.
SUBCOMMANDS: dict[str, str] = {
    "info": "nfkit.cli.info:info",
    "cgrep": "nfkit.cli.cgrep:cgrep",
    "nfgrep": "nfkit.cli.nfgrep:nfgrep",
    "ct": "nfkit.cli.ct:ct",
    "rules": "nfkit.cli.rules:rules",
    "nat66": "nfkit.cli.nat66:nat66",
    "ctguard": "nfkit.cli.ctguard:ctguard",
    "ha": "nfkit.cli.ha:ha",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]

    def invoke(self, ctx: click.Context) -> object:
        return guarded(super().invoke, ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nfkit")
def main() -> None:
    """nfkit: netfilter from Python, over netlink, on today's kernel."""
