"""`nfkit rules monitor` and `nfkit rules trace`: ruleset changes and traced packets as
they happen, printed as `nft monitor` and `nft monitor trace` print them.

Thin: the lines come from `nfkit.nftables.monitor` and `nfkit.nftables.trace`.
Ctrl-C and SIGTERM end either command quietly with status 0.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from typing import Any

import click


class _Stop(Exception):
    """SIGTERM arrived."""


def _on_term(_signum: int, _frame: Any) -> None:
    raise _Stop


def _print_until_stopped(lines: Iterator[str]) -> None:
    """Print each line as it comes (flushed: a pipe reader sees it at once) until
    Ctrl-C or SIGTERM, which end the command with status 0."""
    old = signal.signal(signal.SIGTERM, _on_term)
    try:
        out = sys.stdout
        for line in lines:
            out.write(line + "\n")
            out.flush()
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        close = getattr(lines, "close", None)
        if close is not None:
            close()


def _buffer_option(f: Any) -> Any:
    return click.option(
        "--buffer-size", "-b", "rcvbuf", type=click.IntRange(min=4096, max=2**30),
        default=16 << 20, show_default=True, metavar="BYTES",
        help="Receive buffer; events that overflow it are reported lost (as conntrack -b).")(f)


@click.command("monitor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (as nft -j monitor).")
@_buffer_option
@click.argument("words", nargs=-1)
def monitor(as_json: bool, rcvbuf: int, words: tuple[str, ...]) -> None:
    """Print ruleset changes as they happen, as `nft monitor [new|destroy] [OBJECT]` does.

    WORDS: [new|destroy] [tables|chains|sets|rules|elements|ruleset], or `trace`
    (as `nft monitor trace`: the same as `nfkit rules trace`)."""
    from nfkit.netlink.consts import NFNLGRP_NFTABLES
    from nfkit.nftables.monitor import RulesetMonitor, parse_filter, prime_sets, watch

    if words == ("trace",):
        _trace(as_json, rcvbuf)
        return
    event, obj = parse_filter(list(words))
    mon = RulesetMonitor(as_json, event, obj)
    _print_until_stopped(watch((NFNLGRP_NFTABLES,), mon.feed,
                               lambda sock: prime_sets(mon, sock), rcvbuf))


@click.command("trace")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_buffer_option
def trace(as_json: bool, rcvbuf: int) -> None:
    """Print packets traced with `meta nftrace set 1`, as `nft monitor trace` does: the
    packet's headers, each rule that matched it with its verdict, each chain policy."""
    _trace(as_json, rcvbuf)


def _trace(as_json: bool, rcvbuf: int) -> None:
    from nfkit.netlink.consts import NFNLGRP_NFTABLES, NFNLGRP_NFTRACE
    from nfkit.nftables.monitor import watch
    from nfkit.nftables.trace import TraceFormatter, ruleset_rules

    fmt = TraceFormatter(ruleset_rules(as_json), as_json)
    _print_until_stopped(watch((NFNLGRP_NFTRACE, NFNLGRP_NFTABLES), fmt.feed,
                               lambda _sock: fmt.load(), rcvbuf))
