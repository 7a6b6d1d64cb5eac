"""`nfkit info`: what this kernel offers nfkit."""

from __future__ import annotations

import json

import click

from nfkit.kernel import probe


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def info(as_json: bool) -> None:
    """Show what this kernel offers nfkit, found over netlink and /proc.

    Runs in the current network namespace (`ip netns exec NAME nfkit info`)
    and changes nothing.
    """
    found = probe()
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    present = sorted(n for n, ok in found.expressions.items() if ok)
    missing = sorted(n for n, ok in found.expressions.items() if not ok)
    queue = ("nft queue expression" if found.queue_expression
             else "xt NFQUEUE target (nft_compat)" if found.xt_nfqueue_target else "none")
    if not found.queue_expression and found.xt_nfqueue_target:
        queue += (f"; nft prints it with {found.xt_nfqueue_module}" if found.xt_nfqueue_module
                  else "; nft cannot print it (no libxt_NFQUEUE.so)")
    rows = [
        ("kernel", found.kernel),
        ("network namespace", found.netns),
        ("nf_tables", f"{_yes(found.nf_tables)} (generation {found.nf_tables_genid})"
         if found.nf_tables else "no"),
        ("expressions", " ".join(present) or "-"),
        ("expressions missing", " ".join(missing) or "-"),
        ("queue to userspace", queue),
        ("conntrack (ctnetlink)", _yes(found.conntrack)),
        ("conntrack entries", f"{found.conntrack_count} of max {found.conntrack_max}"),
        ("conntrack hash buckets", str(found.conntrack_buckets)),
        ("conntrack events", f"{_yes(found.conntrack_events)} (nf_conntrack_events="
                             f"{found.conntrack_events_sysctl})"),
        ("NFQUEUE (nfnetlink_queue)", _yes(found.nfqueue)),
        ("IPv4 NAT", _yes(found.ipv4_nat)),
        ("IPv6 NAT", _yes(found.ipv6_nat)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")
    for note in found.notes:
        click.echo(f"note: {note}")
