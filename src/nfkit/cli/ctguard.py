"""`nfkit ctguard`: keep the conntrack table from filling under attack."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

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
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Take [size] from this file.")
@click.option("--memory", help="Memory the table may take (N, NK, NM, NG); overrides the file.")
@click.option("--entries-per-bucket", type=float, help="Overrides [size] entries_per_bucket.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def plan(config_path: str | None, memory: str | None, entries_per_bucket: float | None,
         as_json: bool) -> None:
    """The maximum and hash buckets that fit a memory budget, and what `apply` would write."""
    from nfkit.ctguard import size
    from nfkit.ctguard.config import read
    from nfkit.errors import InputError

    wanted: dict[str, Any] = (read(config_path)["size"] if config_path
                              else {"memory": "", "entries_per_bucket": 1.0})
    memory = memory or wanted["memory"]
    if not memory:
        raise InputError("plan: no memory budget (--memory, or [size] memory in -c FILE)")
    try:
        budget = size.parse_size(memory)
    except ValueError as exc:
        raise InputError(f"--memory: {exc}") from None
    p = size.plan(budget, entries_per_bucket or wanted["entries_per_bucket"])
    if as_json:
        click.echo(json.dumps(p.as_dict(), indent=2))
        return
    click.echo(f"entry size {p.entry_bytes} bytes ({p.entry_source}); {p.entries_per_bucket:g} "
               f"entries per bucket")
    click.echo(f"nf_conntrack_max {p.current_max} -> {p.max}; buckets {p.current_buckets} -> "
               f"{p.buckets}; {p.table_bytes} of {p.memory} bytes")
    for path, value in p.writes.items():
        click.echo(f"  would write {value} to {path}")
    if not p.initial_namespace:
        click.echo("not the initial network namespace: the kernel keeps both read-only here")


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
