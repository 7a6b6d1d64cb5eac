"""`nfkit nat66`: IPv6 prefix translation (RFC 6296)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from nfkit.errors import InputError
from nfkit.nat66.npt import Dropped, Mapping
from nfkit.nftables import Ruleset
from nfkit.service.config import Config

if TYPE_CHECKING:
    from nfkit.nat66.uplinks import Topology


@click.group()
def nat66() -> None:
    """IPv6 NAT: checksum-neutral prefix translation (NPTv6, RFC 6296)."""


@nat66.command("map")
@click.option("--inside", required=True, metavar="PREFIX", help="Inside prefix, e.g. fd01:203:405::/48.")
@click.option("--outside", required=True, metavar="PREFIX", help="Outside prefix, e.g. 2001:db8:1::/48.")
@click.option("--reverse", is_flag=True, help="Map outside addresses back to inside ones.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per address.")
@click.argument("addresses", nargs=-1, required=True)
def map_(inside: str, outside: str, reverse: bool, as_json: bool, addresses: tuple[str, ...]) -> None:
    """Print the RFC 6296 image of each ADDRESS (offline: no kernel involved).

    An address the RFC says to drop (subnet 0xffff with a /48, an all-zero or
    all-ones interface identifier, bits with no 1:1 image) is printed as
    dropped, with the reason; the exit status is then 1.
    """
    mapping = Mapping.parse(inside, outside)
    direction = mapping.to_inside if reverse else mapping.to_outside
    dropped = False
    for text in addresses:
        try:
            image, reason = str(direction(text)), None
        except Dropped as exc:
            image, reason, dropped = None, exc.reason.value, True
        except ValueError:
            raise InputError(f"{text[:80]!r} is not an IPv6 address") from None
        if as_json:
            click.echo(json.dumps({"address": text, "image": image, "dropped": reason}))
        elif image is not None:
            click.echo(f"{text} -> {image}")
        else:
            click.echo(f"{text} dropped: {reason}")
    if dropped:
        sys.exit(1)


def _check_interfaces(cfg: Config) -> None:
    """Every interface the file names exists here (ConfigError naming the key otherwise)."""
    from nfkit.route.rtnl import Rtnl

    with Rtnl() as rt:
        names = {link.name for link in rt.links()}
    for section in ("npt", "snat", "uplink"):
        for i, entry in enumerate(cfg[section]):
            if entry["interface"] not in names:
                raise cfg.error((section, i, "interface"),
                                f"{entry['interface']}: no such interface here")


@nat66.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the changes; send nothing.")
def apply(file: str, dry_run: bool) -> None:
    """Make nfkit's NAT66 rules what FILE says, in one transaction.

    Only table ip6 nfkit_nat66 is touched; re-applying an unchanged file
    changes nothing.  A bad key or value, or an interface that does not
    exist, is one line naming file, line and key, and nothing changes.
    """
    from nfkit.nat66 import config, rules
    from nfkit.nftables.textfmt import command

    cfg = config.read(file)
    _check_interfaces(cfg)
    topology = _topology(cfg)
    changes = rules.apply(cfg, dry_run=dry_run, topology=topology)
    if topology is not None and not dry_run:
        from nfkit.nat66 import routing
        from nfkit.route.rtnl import Rtnl

        with Rtnl() as rt:
            for problem in routing.ensure(rt, cfg["uplink"], topology):
                click.echo(f"nfkit: {problem}", err=True)
    for change in changes:
        click.echo(command(change))
    click.echo(f"{len(changes)} change(s){' (dry run: nothing sent)' if dry_run else ''}", err=True)


def _topology(cfg: Config) -> Topology | None:
    """The file's uplinks as the kernel shows them now (None: the file has none)."""
    if not cfg["uplink"]:
        return None
    from nfkit.nat66.uplinks import Topology
    from nfkit.route.rtnl import Rtnl

    topology = Topology(cfg["uplink"])
    with Rtnl() as rt:
        topology.update(rt.links(), rt.addresses(6))
    return topology


def _config_arg(file: str | None, config_path: str | None) -> str:
    path = file or config_path
    if path is None:
        raise InputError("give the file: nfkit nat66 run FILE (or -c FILE)")
    return path


@nat66.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="The file, as the systemd unit gives it.")
@click.option("--status-socket", type=click.Path(), help="Override [daemon] status.")
@click.option("--remove-on-exit", is_flag=True,
              help="Remove nfkit's NAT66 rules, policy rules and routes on SIGTERM.")
def run(file: str | None, config_path: str | None, status_socket: str | None,
        remove_on_exit: bool) -> None:
    """Apply FILE and keep it true as uplinks go down, come back or change prefix.

    Runs in the foreground until SIGTERM or Ctrl-C, then exits 0 leaving the
    rules in place (unless --remove-on-exit or [daemon] remove_on_exit).
    """
    import logging
    from pathlib import Path

    from nfkit.nat66 import config
    from nfkit.nat66.daemon import Nat66
    from nfkit.service.daemon import run as run_service

    cfg = config.read(_config_arg(file, config_path))
    _check_interfaces(cfg)
    logging.basicConfig(level=logging.INFO, format="nfkit nat66: %(message)s", stream=sys.stderr)
    service = Nat66(cfg, remove_on_exit)
    sys.exit(run_service(service, status=Path(status_socket or cfg["daemon"]["status"]),
                         metrics=cfg["daemon"]["metrics"], registry=service.registry))


@nat66.command()
@click.option("-c", "--config", "config_path", default="/etc/nfkit/nat66.toml", show_default=True)
def unit(config_path: str) -> None:
    """Print the systemd unit (install it as /etc/systemd/system/nfkit-nat66.service)."""
    from nfkit.service.systemd import unit as make_unit

    click.echo(make_unit("nat66", "IPv6 NAT, multihoming and prefix tracking", config_path), nl=False)


@nat66.command()
def reference() -> None:
    """Every key of the configuration file, with its type, default and meaning."""
    from nfkit.nat66.config import SCHEMA

    click.echo(SCHEMA.reference())


@nat66.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--socket", "sock", type=click.Path(),
              help="The daemon's status socket (default: FILE's [daemon] status, else "
                   "/run/nfkit/nat66.sock).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show(file: str | None, sock: str | None, as_json: bool) -> None:
    """Show nfkit's NAT66 rules in the kernel, FILE's NPT mappings if given, and, when
    `nfkit nat66 run` answers on its status socket, its uplinks, state and counters."""
    from pathlib import Path

    from nfkit.errors import CapabilityError
    from nfkit.nat66 import config
    from nfkit.nftables.jsonfmt import dump_json
    from nfkit.nftables.textfmt import to_text
    from nfkit.service.daemon import query_status, status_path

    found = installed()
    mappings = []
    where = Path(sock) if sock else status_path("nat66")
    if file:
        cfg = config.read(file)
        mappings = [{"inside": str(e["inside"]), "outside": str(e["outside"]),
                     "interface": e["interface"]} for e in cfg["npt"]]
        where = Path(sock or cfg["daemon"]["status"])
    try:
        daemon: dict[str, Any] | None = query_status(where, timeout=2.0)
    except CapabilityError:
        daemon = None
    if as_json:
        body = json.loads(dump_json(found)) if found.tables else None
        click.echo(json.dumps({"tables": [f"{t.family} {t.name}" for t in found.tables],
                               "ruleset": body, "npt": mappings, "daemon": daemon}, indent=2))
        return
    if not found.tables:
        click.echo("nothing installed (no table ip6 nfkit_nat66, no NPT chains in ip6 mangle)")
    else:
        click.echo(to_text(found), nl=False)
    for m in mappings:
        click.echo(f"npt {m['inside']} <-> {m['outside']} on {m['interface']}")
    if daemon is None:
        click.echo(f"daemon: not running (no answer on {where})")
        return
    click.echo(f"daemon: {daemon['remaps']} re-map(s), {daemon['stale_flushed']} stale entries "
               f"flushed; inside {daemon['inside'] or '-'}, balance by {daemon['balance']}")
    for u in daemon["uplinks"]:
        state = "live" if u["live"] else ("up, no prefix" if u["running"] else "down")
        click.echo(f"uplink {u['interface']} mark {u['mark']} weight {u['weight']}: {state}, "
                   f"outside {u['outside'] or '(masquerade)'}, {u['buckets']} bucket(s)")
    for c in daemon["changes"][-10:]:
        click.echo(f"  {c['what']}: {c['commands']} command(s), {c['flushed']} flushed, "
                   f"{c['seconds'] * 1000:.1f} ms")


def installed() -> Ruleset:
    """What nfkit's NAT66 holds in the kernel: table ip6 nfkit_nat66 and nfkit's NPT chains."""
    from nfkit.nat66 import rules
    from nfkit.nftables import list_ruleset

    found = list_ruleset(rules.FAMILY, rules.TABLE)
    npt = list_ruleset(rules.FAMILY, "mangle")
    mine = set(rules.NPT_CHAINS.chains or ())
    chains = [c for c in npt.chains if c.name in mine]
    if chains:
        found.tables += npt.tables
        found.chains += chains
        found.rules += [r for r in npt.rules if r.chain in mine]
    return found
