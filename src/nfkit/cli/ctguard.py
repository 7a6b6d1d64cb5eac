"""`nfkit ctguard`: keep the conntrack table from filling under attack."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click


@click.group()
def ctguard() -> None:
    """Keep the conntrack table from filling: shorter timeouts, fair eviction, topology flushes."""


@ctguard.command()
@click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The TOML file (`nfkit ctguard reference` lists every key).")
@click.option("--status-socket", type=click.Path(), help="Override [daemon] status.")
def run(config_path: str, status_socket: str | None) -> None:
    """Run in the foreground until SIGTERM or Ctrl-C (then restore timeouts and exit 0)."""
    from nfkit.ctguard.config import read
    from nfkit.ctguard.guard import Guard
    from nfkit.service.daemon import run as run_service

    cfg = read(config_path)
    logging.basicConfig(level=logging.INFO, format="nfkit ctguard: %(message)s", stream=sys.stderr)
    guard = Guard(cfg)
    status = Path(status_socket or cfg["daemon"]["status"])
    sys.exit(run_service(guard, status=status, metrics=cfg["daemon"]["metrics"],
                         registry=guard.registry))


@ctguard.command()
@click.option("--socket", "sock", default="/run/nfkit/ctguard.sock", show_default=True,
              type=click.Path(), help="The daemon's status socket.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(sock: str, as_json: bool) -> None:
    """What the running daemon sees and did: fill, states, top sources, actions and why."""
    from nfkit.service.daemon import query_status

    found = query_status(Path(sock))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    fill = f"{found['fill']:.1%}" if found.get("fill") is not None else "-"
    click.echo(f"entries {found['entries']} of {found['limit']} ({fill}); evicted {found['evicted']}, "
               f"stale flushed {found['stale_flushed']}, resync dumps {found['dumps']}")
    click.echo("states: " + (" ".join(f"{k}={v}" for k, v in sorted(found["by_state"].items())) or "-"))
    click.echo("top sources: " + (" ".join(f"{s}={n}" for s, n in found["top_sources"]) or "-"))
    if found["timeouts_shortened"]:
        click.echo("timeouts shortened: " + " ".join(found["timeouts_shortened"]))
    for a in found["actions"][-20:]:
        click.echo(f"  {a['action']} ({a['entries']}): {a['why']}")


@ctguard.command()
def reference() -> None:
    """Every key of the configuration file, with its type, default and meaning."""
    from nfkit.ctguard.config import SCHEMA

    click.echo(SCHEMA.reference())


@ctguard.command()
@click.option("-c", "--config", "config_path", default="/etc/nfkit/ctguard.toml", show_default=True)
def unit(config_path: str) -> None:
    """Print the systemd unit (install it as /etc/systemd/system/nfkit-ctguard.service)."""
    from nfkit.service.systemd import unit as make_unit

    click.echo(make_unit("ctguard", "conntrack table guard", config_path), nl=False)
