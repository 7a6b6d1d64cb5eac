"""`nfkit ha -C` against a stock `conntrackd -C` (and against itself), on a veth sync link.

The lab's firewall (fw) runs one daemon, its sync peer (peer) the other; real
TCP (SNAT, DNAT), UDP, ICMP and IPv6 traffic crosses fw; what fw's kernel has
must land in peer's kernel table with the same tuples, NAT bindings, mark and
TCP state, and go away when fw's entries do.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nfkit.conntrack import wire as ctwire
from nfkit.conntrack.model import Entry, Status, Tuple
from nfkit.lab import Namespace
from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NLM_F_REQUEST
from nfkit.netlink.specs import ctnetlink as S
from tests.ha.ha_lab import (
    FW_SYNC,
    PEER_SYNC,
    SCTP_ENTRIES,
    SCTP_UPDATE,
    forwarded,
    make_traffic,
    sync_lab,
    table_in,
)
from tests.ha.stock import MCAST_GROUP, NFKIT, NfkitHa, StockConntrackd, conntrackd_conf
from tests.ha.test_interop import STATUS_SYNCED, same_flow

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


def tcp_flags(ns: Namespace, e: Entry) -> tuple[int, int]:
    """The TCP tracking flags (original, reply) the kernel keeps for ``e``."""
    w = MessageWriter()
    w.begin(ctwire.MSG_GET, NLM_F_REQUEST, family=e.family)
    ctwire.put_entry_key(w, Entry(e.orig))
    w.end()
    (msg,) = table_in(ns).sock.request(w)
    tcp = S.CT.decode(msg.attrs)["protoinfo"]["tcp"]
    return tcp["flags_original"][0], tcp["flags_reply"][0]


@pytest.mark.parametrize("fw_kind,peer_kind", [("stock", "nfkit"), ("nfkit", "stock"), ("nfkit", "nfkit")])
def test_real_traffic_lands_in_the_peers_kernel_and_deletions_follow(tmp_path: Path, fw_kind: str,
                                                                      peer_kind: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        metrics = ("--metrics", "127.0.0.1:9733") if fw_kind == "nfkit" else ()
        a = start(fw_kind, fw, tmp_path, "fw", **({"args": metrics} if metrics else {}))
        b = start(peer_kind, peer, tmp_path, "peer")
        for d in (a, b):  # scheduled as stock 1.4.7 schedules itself: SCHED_RR at 99, load cannot starve it
            assert (os.sched_getscheduler(d.proc.pid), os.sched_getparam(d.proc.pid).sched_priority) == \
                (os.SCHED_RR, 99)
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        assert len(want) == 7
        wait_for(mirrored(want, peer), lambda: (listing(peer), a.ctl("-s"), b.ctl("-s")))
        # nothing came back: the peer's injections are not echoed to fw
        assert set(forwarded(list(table_in(fw).entries()))) == set(want)
        if isinstance(a, NfkitHa) and isinstance(b, NfkitHa):
            status_and_metrics(fw, a, b)
        if peer_kind == "nfkit":  # injected TCP is tracked liberally (the peer never saw its windows)
            for e in want.values():
                if e.proto == 6:
                    assert all(f & ctwire.TCP_FLAG_BE_LIBERAL for f in tcp_flags(peer, e)), e
                    assert not any(f & ctwire.TCP_FLAG_BE_LIBERAL for f in tcp_flags(fw, e)), e
        table_in(fw).flush()
        wait_for(lambda: not forwarded(list(table_in(peer).entries())), lambda: (listing(peer), b.ctl("-s")))
        for d in (a, b):  # nfkit's client asks either daemon, stock or nfkit
            stats = d.ns.run([NFKIT, "ha", "-C", str(d.conf), "-s"]).stdout
            assert re.search(r"\b0 Malformed msgs", stats) and "cache internal:" in stats, stats


def handshake_done(d: StockConntrackd) -> Callable[[], bool]:
    """An nfkit daemon heard its peer's HELLO_BACK; for a stock one, a quiet second and a half."""
    if isinstance(d, NfkitHa):
        return lambda: all(p["handshake"] == "DONE" for p in d.status()["peers"])
    until = time.monotonic() + 1.5
    return lambda: time.monotonic() > until


def sctp_view(ns: Namespace) -> tuple[dict[object, tuple[object, ...]], list[str]]:
    """The namespace's SCTP entries by key: tuples, state, verification tags, mark, synced
    status bits; and `conntrack -L -p sctp`'s lines without the timeout and use columns."""
    got = {e.key: (e.orig, e.reply, e.state, e.vtags, e.mark, e.status & STATUS_SYNCED)
           for e in table_in(ns).entries() if e.proto == 132}
    lines = sorted(re.sub(r" use=\d+", "", re.sub(r"^(sctp\s+132\s+)\d+ ", r"\1", line))
                   for line in ns.run("conntrack -L -p sctp").stdout.splitlines())
    return got, lines


def as_stock_injects(view: dict[object, tuple[object, ...]]) -> dict[object, tuple[object, ...]]:
    """``view`` as a stock 1.4.7 receiver puts it in its kernel without TCPWindowTracking: it
    sets the liberal TCP flags (0x08) on every entry it injects, and in libnetfilter_conntrack's
    protoinfo union the reply direction's flag mask is the low byte of the SCTP original
    tag (stock -> stock does the same; with TCPWindowTracking On the tags arrive whole)."""
    out = {}
    for key, (o, r, state, vtags, mark, status) in view.items():
        assert isinstance(vtags, tuple)
        out[key] = (o, r, state, (vtags[0] & ~0xFF | 0x08, vtags[1]), mark, status)
    return out


@pytest.mark.parametrize("fw_kind,peer_kind,options", [("stock", "nfkit", ""), ("nfkit", "nfkit", ""),
                                                       ("nfkit", "stock", ""),
                                                       ("nfkit", "stock", "TCPWindowTracking On")])
def test_sctp_entries_land_with_their_state_and_verification_tags(tmp_path: Path, fw_kind: str,
                                                                  peer_kind: str, options: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        a = start(fw_kind, fw, tmp_path, "fw")
        b = start(peer_kind, peer, tmp_path, "peer", options=options)
        quirk = as_stock_injects if peer_kind == "stock" and not options else (lambda v: v)

        def landed() -> bool:
            got, lines = sctp_view(peer)
            return got == quirk(want) and lines == want_lines

        for args in SCTP_ENTRIES:
            fw.run(f"conntrack -I -p sctp {args}")
        want, want_lines = sctp_view(fw)
        assert len(want) == 2 and {v[2] for v in want.values()} == {4, 2}  # ESTABLISHED, COOKIE_WAIT
        assert {v[3] for v in want.values()} == {(0x44332211, 0xDDCCBBAA), (0x1000000, 0)}
        wait_for(landed, lambda: (sctp_view(peer), a.ctl("-s"), b.ctl("-s")))
        fw.run(f"conntrack -U -p sctp {SCTP_UPDATE}")
        want, want_lines = sctp_view(fw)
        assert 5 in {v[2] for v in want.values()}  # SHUTDOWN_SENT
        wait_for(landed, lambda: (sctp_view(peer), a.ctl("-s"), b.ctl("-s")))
        fw.run("conntrack -D -p sctp")
        wait_for(lambda: not sctp_view(peer)[0], lambda: (sctp_view(peer), b.ctl("-s")))
        for d in (a, b):
            stats = d.ctl("-s")
            assert re.search(r"\b0 Malformed msgs", stats), stats
            if isinstance(d, NfkitHa):  # nothing refused as unsendable, nothing failed to inject
                st = d.status()
                assert st["events"]["unsendable"] == 0 and st["inject"]["create_failed"] == 0, st


@pytest.mark.parametrize("fw_kind,peer_kind", [("stock", "nfkit"), ("nfkit", "stock")])
def test_a_restarted_peer_gets_the_whole_table(tmp_path: Path, fw_kind: str, peer_kind: str) -> None:
    """The peer is down while the traffic is made (and its table emptied): once it is back,
    resync brings every entry (nfkit asks with RESYNC when it starts; a stock conntrackd's
    HELLO makes nfkit send it its table)."""
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        a = start(fw_kind, fw, tmp_path, "fw")
        b = start(peer_kind, peer, tmp_path, "peer")
        wait_for(handshake_done(b), lambda: b.log())
        b.stop()
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        table_in(peer).flush()
        b.start()
        took = wait_for(mirrored(want, peer), lambda: (listing(peer), a.log(), b.log(), a.ctl("-s"), b.ctl("-s"),
                                                       [d.status() for d in (a, b) if isinstance(d, NfkitHa)]))
        print(f"{fw_kind} -> restarted {peer_kind}: all {len(want)} entries {took:.2f} s after the restart")


def test_a_stock_peer_restarting_on_the_next_number_gets_the_whole_table(tmp_path: Path) -> None:
    """The flake of test_a_restarted_peer_gets_the_whole_table[nfkit-stock], made to happen:
    a stock conntrackd numbers its messages from the Unix time of its first one, so when
    it has sent as many messages as seconds went by, its restart goes on from the number
    after its last, and nfkit took that HELLO for the one it had answered already."""
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        a = start("nfkit", fw, tmp_path, "fw")
        b = start("stock", peer, tmp_path, "peer")
        wait_for(handshake_done(b), lambda: b.log())
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        wait_for(mirrored(want, peer), lambda: (listing(peer), b.ctl("-s")))
        assert isinstance(a, NfkitHa)

        def last_seq() -> int:
            return int(a.status()["peers"][0]["last_seq"])

        # entries made on the peer (sync-link addresses: not the lab's traffic) push its
        # numbering ahead of the clock: one message each
        ahead = last_seq() - int(time.time())
        extra = [Entry(Tuple("203.0.113.50", "203.0.113.60", 17, 1000 + i, 53), timeout=120)
                 for i in range(max(0, 2 - ahead))]
        table_in(peer).create_many(extra)
        wait_for(lambda: last_seq() - int(time.time()) >= 1, lambda: (a.status(), b.ctl("-s")))
        b.stop()
        table_in(peer).flush()
        last = last_seq()
        # start when the clock shows `last`: the first message (ALIVE, a second after the
        # start) then carries last + 1
        while time.time() < last + 0.05:
            time.sleep(0.01)
        assert time.time() < last + 0.5, "could not start on time"
        b.start()
        wait_for(mirrored(want, peer), lambda: (listing(peer), a.status(), b.log(), b.ctl("-s")))


@pytest.mark.parametrize("fw_kind,peer_kind", [("stock", "nfkit"), ("nfkit", "stock")])
def test_datagrams_dropped_on_the_sync_link_are_recovered_by_nack(tmp_path: Path, fw_kind: str,
                                                                  peer_kind: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        a = start(fw_kind, fw, tmp_path, "fw")
        b = start(peer_kind, peer, tmp_path, "peer")
        nfkit = a if isinstance(a, NfkitHa) else b
        wait_for(handshake_done(nfkit), lambda: nfkit.log())
        time.sleep(1.2)  # the stock side hears our HELLO_BACK with an ALIVE
        peer.run(["nft", "-f", "-"], input=DROP_SYNC)
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        time.sleep(0.3)
        dropped = int(re.findall(r"packets (\d+)", peer.run("nft list table inet syncloss").stdout)[0])
        assert dropped > 0 and not forwarded(list(table_in(peer).entries()))  # before the link heals
        peer.run("nft delete table inet syncloss")
        took = wait_for(mirrored(want, peer), lambda: (listing(peer), a.ctl("-s"), b.ctl("-s")))
        st = nfkit.status()["peers"][0]
        if nfkit is b:  # nfkit saw the gap and asked for it
            assert st["lost"] > 0 and st["nacks_sent"] > 0, st
        else:  # the stock peer asked, nfkit resent
            assert st["nacks_received"] > 0 and st["resent"] >= len(want), st
        assert re.search(r"\b0 Malformed msgs", a.ctl("-s")) and re.search(r"\b0 Malformed msgs", b.ctl("-s"))
        print(f"{fw_kind} -> {peer_kind}: {dropped} datagrams dropped, all entries back {took:.2f} s after; {st}")


PRIMARY_BACKUP = Path("/usr/share/doc/conntrackd/examples/sync/primary-backup.sh")


def keepalived_script(tmp_path: Path, conf: Path, lock: Path) -> Path:
    """keepalived's primary-backup.sh with CONNTRACKD_BIN pointed at nfkit (its only change)."""
    text = PRIMARY_BACKUP.read_text()
    text = re.sub(r"^CONNTRACKD_BIN=.*$", f'CONNTRACKD_BIN="{NFKIT} ha"', text, flags=re.M)
    text = re.sub(r"^CONNTRACKD_CONFIG=.*$", f"CONNTRACKD_CONFIG={conf}", text, flags=re.M)
    text = re.sub(r"^CONNTRACKD_LOCK=.*$", f"CONNTRACKD_LOCK={lock}", text, flags=re.M)
    script = tmp_path / "primary-backup.sh"
    script.write_text(text)
    return script


def test_keepalived_primary_backup_script_drives_nfkit(tmp_path: Path) -> None:
    """A backup with the external cache on keeps the primary's entries out of its kernel;
    the script's `primary` (-c, -f, -R, -B) puts them in and sends them back; `backup`
    (-s, -t, -n) shortens the kernel timeouts and asks for the table again; -k stops it,
    and `backup` with no daemon running starts one with -d."""
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        start("stock", fw, tmp_path, "fw")
        conf = conntrackd_conf(tmp_path / "peer", mode="FTFW", own=PEER_SYNC, peer=FW_SYNC, interface="sync0")
        b = NfkitHa(peer, tmp_path / "peer", mode="FTFW", own=PEER_SYNC, peer=FW_SYNC, interface="sync0",
                    conf=conf.replace("DisableExternalCache on", "DisableExternalCache off"))
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        wait_for(lambda: len(b.ctl("-e").splitlines()) == 7, lambda: b.ctl("-e"))
        assert not forwarded(list(table_in(peer).entries()))
        assert all(re.search(r"\[active since \d+s\]$", line) for line in b.ctl("-e").splitlines())
        # a stock client reads nfkit's statistics
        stock_stats = peer.run(["conntrackd", "-C", str(b.conf), "-s"]).stdout
        assert re.search(r"cache external:\s+current active connections:\s+7\b", stock_stats), stock_stats
        script = keepalived_script(tmp_path, b.conf, tmp_path / "peer" / "lock")
        sent = b.status()["peers"][0]["messages_sent"]
        peer.run(["sh", str(script), "primary"])
        wait_for(mirrored(want, peer), lambda: listing(peer))
        assert b.ctl("-e") == ""  # -f emptied it
        assert len(b.ctl("-i").splitlines()) == 7  # -R read the kernel table
        assert b.status()["peers"][0]["messages_sent"] >= sent + 7  # -B sent it
        peer.run(["sh", str(script), "backup"])
        assert all(e.timeout is not None and e.timeout <= 60 for e in forwarded(list(table_in(peer).entries())).values())
        wait_for(lambda: len(b.ctl("-e").splitlines()) == 7, lambda: b.ctl("-e"))  # -n: the table again
        assert "resync requested" in b.log() and "Committed 7 new entries" in b.log()
        b.ctl("-k")
        assert b.proc.wait(10) == 0 and not (tmp_path / "peer" / "lock").exists()
        assert peer.run([NFKIT, "ha", "-C", str(b.conf), "-s"], check=False).returncode == 1
        peer.run(["sh", str(script), "backup"])  # no daemon: the script starts one with -d
        assert "cache internal:" in b.ctl("-s")
        b.ctl("-k")
        wait_for(lambda: not (tmp_path / "peer" / "lock").exists(), lambda: b.log())


@pytest.mark.parametrize("mode,multicast,fw_kind,peer_kind", [
    ("NOTRACK", False, "nfkit", "stock"), ("ALARM", False, "stock", "nfkit"),
    ("FTFW", True, "nfkit", "stock"), ("NOTRACK", True, "stock", "nfkit"),
])
def test_notrack_alarm_and_multicast(tmp_path: Path, mode: str, multicast: bool, fw_kind: str,
                                     peer_kind: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        if multicast:  # the group is routed onto the sync link (the namespaces have no default route)
            for ns in (fw, peer):
                ns.run("ip route add 224.0.0.0/4 dev sync0")
        a = start(fw_kind, fw, tmp_path, "fw", mode=mode, multicast=multicast)
        b = start(peer_kind, peer, tmp_path, "peer", mode=mode, multicast=multicast)
        nfkit = a if isinstance(a, NfkitHa) else b
        other, to = (peer, FW_SYNC) if nfkit is a else (fw, PEER_SYNC)
        # a malformed datagram (version 2) on the sync port: counted, dropped, nothing else
        other.run(["python3", "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                   f"s.sendto(bytes.fromhex('2000000800000001'), ('{MCAST_GROUP if multicast else to}', 3780))"])
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        if mode == "ALARM":  # no DisableExternalCache in ALARM: the entries wait in the external cache
            wait_for(lambda: len(b.ctl("-e").splitlines()) == 7, lambda: (b.ctl("-e"), a.ctl("-s")))
            refreshed = b.status()["peers"][0]["entries_received"]
            wait_for(lambda: b.status()["peers"][0]["entries_received"] >= refreshed + 7, lambda: b.status())
            b.ctl("-c")
        wait_for(mirrored(want, peer), lambda: (listing(peer), a.ctl("-s"), b.ctl("-s")))
        if mode != "ALARM":  # ALARM's deletions: by the external cache's timeout
            table_in(fw).flush()
            wait_for(lambda: not forwarded(list(table_in(peer).entries())), lambda: (listing(peer), b.ctl("-s")))
        st = nfkit.status()
        assert (st["mode"], st["transport"]) == (mode, "Multicast" if multicast else "UDP")
        assert st["peers"][0]["malformed"] == 1


def status_and_metrics(fw: Namespace, a: StockConntrackd, b: NfkitHa) -> None:
    """`nfkit ha status` (text and JSON) and the Prometheus endpoint of two synced nfkit daemons."""
    for d in (a, b):  # each side's own HELLO / HELLO_BACK
        wait_for(lambda d=d: d.status()["peers"][0]["handshake"] == "DONE", lambda d=d: d.status())
    text = fw.run([NFKIT, "ha", "status", "-C", str(a.conf)]).stdout
    assert text.startswith("FTFW over UDP 203.0.113.1 port 3780 on sync0; running\n"), text
    assert re.search(r"internal cache 7 entries", text) and "peer 203.0.113.2:3780: handshake DONE" in text
    st = b.status()
    assert st["inject"]["created"] + st["inject"]["updated"] >= 7 and st["internal_cache"] == 0
    # the events of its own injections never reach it: the kernel drops them (a socket filter)
    assert st["peers"][0]["entries_received"] >= 7 and st["events"]["own"] == 0
    scrape = fw.run(["python3", "-c", "import urllib.request; "
                     "print(urllib.request.urlopen('http://127.0.0.1:9733/metrics').read().decode())"]).stdout
    assert 'nfkit_ha_cache_entries{cache="internal"} 7.0' in scrape, scrape
    assert re.search(r'nfkit_ha_messages_sent_total\{peer="203.0.113.2:3780"\} \d+', scrape), scrape


def test_an_event_overrun_is_recovered_from_the_table(tmp_path: Path) -> None:
    """A burst of entries overruns nfkit's small event buffer (NetlinkBufferSize 65536): the
    socket is drained before the table is read again, so the peer gets every entry."""
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        conf = conntrackd_conf(tmp_path / "fw", mode="FTFW", own=FW_SYNC, peer=PEER_SYNC, interface="sync0")
        conf = conf.replace("NetlinkBufferSize 2097152", "NetlinkBufferSize 65536").replace(
            "NetlinkBufferSizeMaxGrowth 8388608", "NetlinkBufferSizeMaxGrowth 65536")
        a = NfkitHa(fw, tmp_path / "fw", mode="FTFW", own=FW_SYNC, peer=PEER_SYNC, interface="sync0", conf=conf)
        start("stock", peer, tmp_path, "peer")
        n = 20000
        burst = [Entry(Tuple(f"192.0.2.{1 + i // 10000}", "198.51.100.2", 6, 1024 + i % 10000, 80), timeout=600,
                       state=3, status=Status.SEEN_REPLY | Status.ASSURED) for i in range(n)]
        table_in(fw).create_many(burst)
        peer_table = table_in(peer)
        wait_for(lambda: peer_table.count() >= n, lambda: (peer_table.count(), a.status()["events"]), timeout=40)
        assert a.status()["events"]["overruns"] >= 1


@pytest.mark.parametrize("fw_kind", ["stock", "nfkit"])
def test_notrack_without_internal_cache_says_events_as_they_come(tmp_path: Path, fw_kind: str) -> None:
    """DisableInternalCache (NOTRACK): no internal cache; `-s` shows the bypass counters,
    `-i` the kernel table, `-B` sends the kernel table (the peer gets back what it lost);
    the same assertions hold for the stock conntrackd and for nfkit on fw."""
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        a = start(fw_kind, fw, tmp_path, "fw", mode="NOTRACK")
        a.stop()  # the same file with the internal cache disabled
        a.conf.write_text(a.conf.read_text().replace("DisableExternalCache on",
                                                     "DisableExternalCache on\n        DisableInternalCache on"))
        a.start()
        b = start("stock" if fw_kind == "nfkit" else "nfkit", peer, tmp_path, "peer", mode="NOTRACK")
        make_traffic(lab)
        want = forwarded(list(table_in(fw).entries()))
        wait_for(mirrored(want, peer), lambda: (listing(peer), a.ctl("-s"), b.ctl("-s")))
        stats = a.ctl("-s")
        new = re.search(r"internal bypass:\nconnections new:\s+(\d+)", stats)
        assert new and int(new.group(1)) >= len(want) and "cache internal:" not in stats, stats
        shown = a.ctl("-i").splitlines()  # the kernel table, as conntrack -L, without the Filter's
        assert len(shown) == len(want) and not any("active since" in line for line in shown), shown
        for e in want.values():
            assert any(f"src={e.orig.src} dst={e.orig.dst} " in line for line in shown), (e, shown)
        table_in(peer).flush()
        a.ctl("-B")  # from the kernel table: there is no cache
        wait_for(mirrored(want, peer), lambda: (listing(peer), a.ctl("-s"), b.ctl("-s")))
        table_in(fw).flush()
        wait_for(lambda: not forwarded(list(table_in(peer).entries())), lambda: (listing(peer), b.ctl("-s")))


def _scheduling(d: StockConntrackd) -> tuple[int, int]:
    """(policy, real-time priority) of a daemon's process (proc(5): stat fields 41 and 40)."""
    fields = Path(f"/proc/{d.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[38]), int(fields[37])


@pytest.mark.parametrize("block,expected", [("", (2, 99)), ("Scheduler {\n        Type FIFO\n        Priority 7\n    }",
                                                            (1, 7))])
def test_the_daemon_schedules_itself_as_conntrackd_does(tmp_path: Path, block: str,
                                                         expected: tuple[int, int]) -> None:
    """conntrackd 1.4.7 runs under SCHED_RR priority 99 unless its Scheduler block says otherwise
    (conntrackd.conf(5)); nfkit ha, given the same file, runs as the stock daemon does."""
    with sync_lab() as lab:
        daemons = [start("stock", lab["fw"], tmp_path, "fw"), start("nfkit", lab["peer"], tmp_path, "peer")]
        for d in daemons:  # the same file for both, with the block
            d.stop()
            d.conf.write_text(d.conf.read_text().replace("General {", "General {\n    " + block, 1))
            d.start()
        assert [_scheduling(d) for d in daemons] == [expected, expected]  # (SCHED_RR 2, SCHED_FIFO 1)
