"""`nfkit nat66`: IPv6 prefix translation (RFC 6296)."""

from __future__ import annotations

import json
import sys

import click

from nfkit.errors import InputError
from nfkit.nat66.npt import Dropped, Mapping
from nfkit.nftables import Ruleset
from nfkit.service.config import Config


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
    changes = rules.apply(cfg, dry_run=dry_run)
    for change in changes:
        click.echo(command(change))
    click.echo(f"{len(changes)} change(s){' (dry run: nothing sent)' if dry_run else ''}", err=True)


@nat66.command()
@click.argument("file", type=click.Path(dir_okay=False), required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def show(file: str | None, as_json: bool) -> None:
    """Show nfkit's NAT66 rules in the kernel (and FILE's NPT mappings, if given)."""
    from nfkit.nat66 import config
    from nfkit.nftables.jsonfmt import dump_json
    from nfkit.nftables.textfmt import to_text

    found = installed()
    mappings = []
    if file:
        cfg = config.read(file)
        mappings = [{"inside": str(e["inside"]), "outside": str(e["outside"]),
                     "interface": e["interface"]} for e in cfg["npt"]]
    if as_json:
        body = json.loads(dump_json(found)) if found.tables else None
        click.echo(json.dumps({"tables": [f"{t.family} {t.name}" for t in found.tables],
                               "ruleset": body, "npt": mappings}, indent=2))
        return
    if not found.tables:
        click.echo("nothing installed (no table ip6 nfkit_nat66, no NPT chains in ip6 mangle)")
    else:
        click.echo(to_text(found), nl=False)
    for m in mappings:
        click.echo(f"npt {m['inside']} <-> {m['outside']} on {m['interface']}")


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
