"""`nfkit ct expect`: the expectation table (list, create, delete, watch), in `conntrack -L expect`'s format."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from nfkit.conntrack.expect import Expectation, ExpectTable, expect_text
from nfkit.conntrack.model import Tuple, canonical_address, proto_number
from nfkit.conntrack.table import ConntrackTable
from nfkit.errors import InputError


def _json(x: Expectation) -> str:
    return json.dumps({k: v for k, v in asdict(x).items() if v is not None})


@click.group("expect")
def expect() -> None:
    """Expectations (the flows helpers such as ftp expect), as `conntrack -L expect` shows them."""


@expect.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line.")
def list_cmd(as_json: bool) -> None:
    """Every expectation of the table."""
    with ConntrackTable() as t:
        found = list(ExpectTable(t).entries())
    for x in found:
        click.echo(_json(x) if as_json else expect_text(x))
    click.echo(f"nfkit ct expect: {len(found)} expectations have been shown.", err=True)


def _tuple(src: str, dst: str, proto: int, sport: int, dport: int, what: str) -> Tuple:
    return Tuple(canonical_address(src, f"{what} source"), canonical_address(dst, f"{what} destination"),
                 proto, sport, dport)


@expect.command("create")
@click.option("-p", "--proto", required=True, help="Layer-4 protocol of the master and the expected flow.")
@click.option("-s", "--src", required=True, help="Master's original source.")
@click.option("-d", "--dst", required=True, help="Master's original destination.")
@click.option("--sport", type=click.IntRange(0, 65535), default=0, help="Master's source port.")
@click.option("--dport", type=click.IntRange(0, 65535), default=0, help="Master's destination port.")
@click.option("--tuple-src", required=True, help="Expected flow's source.")
@click.option("--tuple-dst", required=True, help="Expected flow's destination.")
@click.option("--tuple-sport", type=click.IntRange(0, 65535), default=0)
@click.option("--tuple-dport", type=click.IntRange(0, 65535), default=0)
@click.option("--mask-src", required=True, help="Mask of the expected source (255.255.255.255: exact).")
@click.option("--mask-dst", required=True)
@click.option("--mask-sport", type=click.IntRange(0, 65535), default=0)
@click.option("--mask-dport", type=click.IntRange(0, 65535), default=0xFFFF)
@click.option("-t", "--timeout", type=click.IntRange(1, 2**31 - 1), required=True, help="Seconds.")
@click.option("--helper", default=None, help="Helper name (the master must have it).")
@click.option("--zone", type=click.IntRange(0, 65535), default=None)
def create_cmd(**kw: Any) -> None:
    """Create an expectation of an existing master connection."""
    proto = proto_number(kw["proto"])
    x = Expectation(_tuple(kw["src"], kw["dst"], proto, kw["sport"], kw["dport"], "master"),
                    _tuple(kw["tuple_src"], kw["tuple_dst"], proto, kw["tuple_sport"], kw["tuple_dport"],
                           "expected tuple"),
                    _tuple(kw["mask_src"], kw["mask_dst"], proto, kw["mask_sport"], kw["mask_dport"], "mask"),
                    timeout=kw["timeout"], helper=kw["helper"], zone=kw["zone"])
    if len({x.master.family, x.tuple.family, x.mask.family}) != 1:
        raise InputError("expectation: master, tuple and mask addresses of different families")
    with ConntrackTable() as t:
        ExpectTable(t).create(x)
    click.echo("nfkit ct expect: 1 expectation has been created.", err=True)


@expect.command("delete")
@click.option("-p", "--proto", required=True)
@click.option("--tuple-src", required=True)
@click.option("--tuple-dst", required=True)
@click.option("--tuple-sport", type=click.IntRange(0, 65535), default=0)
@click.option("--tuple-dport", type=click.IntRange(0, 65535), default=0)
@click.option("--zone", type=click.IntRange(0, 65535), default=None)
def delete_cmd(**kw: Any) -> None:
    """Delete the expectation of this expected tuple."""
    proto = proto_number(kw["proto"])
    t = _tuple(kw["tuple_src"], kw["tuple_dst"], proto, kw["tuple_sport"], kw["tuple_dport"], "expected tuple")
    with ConntrackTable() as table:
        gone = ExpectTable(table).delete(Expectation(t, t, t, zone=kw["zone"]))
    if not gone:
        raise InputError(f"expectation {t.src} -> {t.dst} dport {t.dport}: no such expectation")
    click.echo("nfkit ct expect: 1 expectation has been deleted.", err=True)


@expect.command("watch")
@click.option("--json", "as_json", is_flag=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Stop after this many events.")
def watch_cmd(as_json: bool, limit: int | None) -> None:
    """Expectation events as they happen (`conntrack -E expect`'s [NEW] / [DESTROY] lines)."""
    n = 0
    with ConntrackTable() as t:
        events = ExpectTable(t).events()
        try:
            for kind, x, _pid in events:
                if as_json:
                    click.echo(json.dumps({"event": kind, **json.loads(_json(x))}))
                else:
                    click.echo(f"{'[' + kind.upper() + ']':>9} {expect_text(x)}")
                sys.stdout.flush()
                n += 1
                if limit is not None and n >= limit:
                    break
        finally:
            events.close()
