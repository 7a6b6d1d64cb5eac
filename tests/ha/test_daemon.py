"""`nfkit ha -C` against a stock `conntrackd -C` (and against itself), on a veth sync link.

The lab's firewall (fw) runs one daemon, its sync peer (peer) the other; real
TCP (SNAT, DNAT), UDP, ICMP and IPv6 traffic crosses fw; what fw's kernel has
must land in peer's kernel table with the same tuples, NAT bindings, mark and
TCP state, and go away when fw's entries do.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nfkit.conntrack.model import Entry
from nfkit.lab import Namespace
from tests.ha.ha_lab import FW_SYNC, PEER_SYNC, forwarded, make_traffic, sync_lab, table_in
from tests.ha.stock import NfkitHa, StockConntrackd
from tests.ha.test_interop import same_flow

pytestmark = pytest.mark.kernel

DAEMONS: dict[str, Callable[..., StockConntrackd]] = {"stock": StockConntrackd, "nfkit": NfkitHa}
DROP_SYNC = ("table inet syncloss { chain input { type filter hook input priority 0; "
             "udp dport 3780 counter drop; }; }")


def start(kind: str, ns: Namespace, workdir: Path, side: str, **kw: object) -> StockConntrackd:
    own, peer = (FW_SYNC, PEER_SYNC) if side == "fw" else (PEER_SYNC, FW_SYNC)
    return DAEMONS[kind](ns, workdir / side, mode=kw.pop("mode", "FTFW"), own=own, peer=peer,
                         interface="sync0", **kw)


def wait_for(done: Callable[[], bool], what: Callable[[], object], timeout: float = 10) -> float:
    started = time.monotonic()
    while not done():
        assert time.monotonic() - started < timeout, what()
        time.sleep(0.05)
    return time.monotonic() - started


def mirrored(want: dict[object, Entry], ns: Namespace) -> Callable[[], bool]:
    table = table_in(ns)

    def check() -> bool:
        got = forwarded(list(table.entries()))
        return set(got) == set(want) and all(same_flow(got[k], e) for k, e in want.items())
    return check


def listing(ns: Namespace) -> str:
    return ns.run("conntrack -L").stdout


@pytest.mark.parametrize("fw_kind,peer_kind", [("stock", "nfkit"), ("nfkit", "stock"), ("nfkit", "nfkit")])
def test_real_traffic_lands_in_the_peers_kernel_and_deletions_follow(tmp_path: Path, fw_kind: str,
                                                                      peer_kind: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        a = start(fw_kind, fw, tmp_path, "fw")
        b = start(peer_kind, peer, tmp_path, "peer")
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        assert len(want) == 7
        wait_for(mirrored(want, peer), lambda: (listing(peer), a.ctl("-s"), b.ctl("-s")))
        # nothing came back: the peer's injections are not echoed to fw
        assert set(forwarded(list(table_in(fw).entries()))) == set(want)
        table_in(fw).flush()
        wait_for(lambda: not forwarded(list(table_in(peer).entries())), lambda: (listing(peer), b.ctl("-s")))
        for d in (a, b):
            assert re.search(r"\b0 Malformed msgs", d.ctl("-s")), d.ctl("-s")
