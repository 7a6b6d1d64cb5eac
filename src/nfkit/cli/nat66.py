"""`nfkit nat66`: IPv6 prefix translation (RFC 6296)."""

from __future__ import annotations

import json
import sys

import click

from nfkit.errors import InputError
from nfkit.nat66.npt import Dropped, Mapping


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
