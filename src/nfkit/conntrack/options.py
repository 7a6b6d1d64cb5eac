"""An entry from conntrack-tools style options (`conntrack -I`, `nfkit ct create`).

This module owns what the create options mean for an entry: which are needed
for which protocol, what the reply tuple is when none is given, and the check
of every value (through `nfkit.conntrack.values`, the one place that knows
each field's range).  Filters from the same options are `filter.py`'s.  It
knows nothing about click or the kernel; the CLI passes the option values in.
"""

from __future__ import annotations

from nfkit.conntrack.filter import parse_labels, parse_mark
from nfkit.conntrack.model import (
    AF_INET,
    AF_INET6,
    FAMILY_NUMBERS,
    ICMP_PROTOS,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    PORT_PROTOS,
    Entry,
    Tuple,
    canonical_address,
    parse_status_names,
    parse_tcp_state,
    proto_number,
)
from nfkit.conntrack.values import check
from nfkit.errors import InputError

DEFAULT_TIMEOUT = 30


def entry_from_options(
    *, family: str | None = None, proto: str | None = None, src: str | None = None, dst: str | None = None,
    reply_src: str | None = None, reply_dst: str | None = None,
    sport: str | int | None = None, dport: str | int | None = None,
    reply_sport: str | int | None = None, reply_dport: str | int | None = None,
    status: str | None = None, state: str | None = None, mark: str | None = None,
    zone: str | int | None = None, label: str | None = None, timeout: str | int | None = None,
) -> Entry:
    """The entry `conntrack -I` would create from these option values.

    Raises InputError naming the option (``--zone: 70000 is out of range for a
    zone number (0-65535)``) for a missing or bad value.
    """
    if proto is None:
        raise InputError("create needs -p/--proto")
    number = proto_number(proto, "-p/--proto")
    if src is None:
        raise InputError("create needs -s/--src")
    if dst is None:
        raise InputError("create needs -d/--dst")
    orig_src = canonical_address(src, "-s/--src")
    orig_dst = canonical_address(dst, "-d/--dst")
    if (":" in orig_src) != (":" in orig_dst):
        raise InputError("-s and -d are of different families")
    if family is not None:
        wanted = FAMILY_NUMBERS.get(family.strip().lower())
        if wanted is None:
            raise InputError(f"-f/--family: unknown family {family[:40]!r} (ipv4 or ipv6)")
        if wanted != (AF_INET6 if ":" in orig_src else AF_INET):
            raise InputError(f"-f/--family: {family} but -s and -d are not")
    if number in PORT_PROTOS:
        if sport is None or dport is None:
            raise InputError("create needs --sport and --dport for this protocol")
        orig = Tuple(orig_src, orig_dst, number, check(sport, "port", "--sport"),
                     check(dport, "port", "--dport"))
    else:
        for value, opt in ((sport, "--sport"), (dport, "--dport"), (reply_sport, "--reply-port-src"),
                           (reply_dport, "--reply-port-dst")):
            if value is not None:
                raise InputError(f"{opt}: protocol {proto} has no ports")
        if number in ICMP_PROTOS:
            orig = Tuple(orig_src, orig_dst, number, 0, 0, 8 if number == IPPROTO_ICMP else 128, 0, 0)
        else:
            orig = Tuple(orig_src, orig_dst, number)
    reply = orig.mirror()
    if reply_src is not None:
        reply = reply._replace(src=canonical_address(reply_src, "--reply-src"))
    if reply_dst is not None:
        reply = reply._replace(dst=canonical_address(reply_dst, "--reply-dst"))
    if (":" in reply.src) != (":" in orig_src) or (":" in reply.dst) != (":" in orig_src):
        raise InputError("--reply-src/--reply-dst: not of the family of -s and -d")
    if number in PORT_PROTOS:
        if reply_sport is not None:
            reply = reply._replace(sport=check(reply_sport, "port", "--reply-port-src"))
        if reply_dport is not None:
            reply = reply._replace(dport=check(reply_dport, "port", "--reply-port-dst"))
    bits = 0
    if status:
        try:
            bits = parse_status_names([s for s in status.split(",") if s.strip()])
        except InputError as exc:
            raise InputError(f"--status: {exc}") from None
    tcp_state = None
    if state:
        if number != IPPROTO_TCP:
            raise InputError("--state: only TCP entries have a state")
        try:
            tcp_state = parse_tcp_state(state)
        except InputError as exc:
            raise InputError(f"--state: {exc}") from None
    return Entry(orig, reply, status=bits, state=tcp_state,
                 timeout=DEFAULT_TIMEOUT if timeout is None else check(timeout, "timeout", "-t/--timeout"),
                 mark=parse_mark(mark, "-m/--mark")[0] if mark else 0,
                 zone=(check(zone, "zone", "--zone") or None) if zone is not None else None,
                 labels=parse_labels(label, "-l/--label") if label else None)


__all__ = ["DEFAULT_TIMEOUT", "entry_from_options"]
