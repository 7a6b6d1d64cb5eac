"""Expectations: `nfkit ct expect` against `conntrack -L expect` (the oracle), and conntrackd's
EXP messages between nfkit and a stock conntrackd, made by a real FTP PASV through vsftpd."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from nfkit.conntrack.table import ConntrackTable
from nfkit.ha import wire
from nfkit.ha.engine import Options, Peer, SyncEngine
from nfkit.ha.notrack import PlainSession
from nfkit.ha.spec import MsgType
from nfkit.lab import Namespace
from tests.ha.ha_lab import ftp_expectation, sync_lab
from tests.ha.stock import NFKIT, NfkitHa
from tests.ha.test_daemon import start, wait_for

pytestmark = pytest.mark.kernel

SYNC_FTP = "ExpectationSync {\n ftp\n }"


def oracle(ns: Namespace) -> list[str]:
    """`conntrack -L expect`, without the remaining timeout (it ticks)."""
    return sorted(line.split(" ", 1)[1] for line in ns.run("conntrack -L expect").stdout.splitlines())


def ours(ns: Namespace) -> list[str]:
    out = ns.run([NFKIT, "ct", "-n", ns.name, "expect", "list"]).stdout
    return sorted(line.split(" ", 1)[1] for line in out.splitlines())


@pytest.mark.parametrize("fw_kind,peer_kind", [("nfkit", "stock"), ("stock", "nfkit")])
def test_an_ftp_data_expectation_reaches_the_peers_kernel(tmp_path: Path, fw_kind: str, peer_kind: str) -> None:
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        a = start(fw_kind, fw, tmp_path, "fw", options=SYNC_FTP)
        b = start(peer_kind, peer, tmp_path, "peer", options=SYNC_FTP)
        ftp_expectation(lab, tmp_path / "ftp")
        want = oracle(fw)
        assert len(want) == 1 and "helper=ftp" in want[0] and ours(fw) == want
        wait_for(lambda: oracle(peer) == want, lambda: (oracle(peer), want, a.ctl("-s"), b.ctl("-s")))
        assert ours(peer) == want
        nfkit = a if isinstance(a, NfkitHa) else b
        assert len(nfkit.ctl("-i", "expect").splitlines()) == (1 if nfkit is a else 0)


def test_nfkit_ct_expect_create_delete_watch(tmp_path: Path) -> None:
    with sync_lab() as lab:
        fw = lab["fw"]
        # watching before the master exists: the kernel reports a master's expectations only
        # when someone listened as it was created (its event cache)
        watch = subprocess.Popen(fw.argv([NFKIT, "ct", "expect", "watch", "--limit", "3"]), stdout=subprocess.PIPE,
                                 text=True)
        time.sleep(0.5)
        ftp_expectation(lab, tmp_path / "ftp")
        (line,) = fw.run("conntrack -L expect").stdout.splitlines()
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f and not f.startswith("mask-"))
        tuple_args = ["-p", "tcp", "--tuple-src", fields["src"], "--tuple-dst", fields["dst"],
                      "--tuple-dport", line.split("dport=", 1)[1].split()[0]]
        fw.run([NFKIT, "ct", "expect", "delete", *tuple_args])
        assert fw.run("conntrack -L expect").stdout == ""
        master = line.split("master-src=", 1)[1].split()
        fw.run([NFKIT, "ct", "expect", "create", *tuple_args, "-s", master[0], "-d", master[1].split("=")[1],
                "--sport", master[2].split("=")[1], "--dport", master[3].split("=")[1],
                "--mask-src", "255.255.255.255", "--mask-dst", "255.255.255.255", "-t", "120", "--helper", "ftp"])
        (again,) = fw.run("conntrack -L expect").stdout.splitlines()
        assert again.split(" ", 1)[1] == line.split(" ", 1)[1]  # the same expectation again
        assert ours(fw) == oracle(fw)
        out, _ = watch.communicate(timeout=10)
        kinds = [ln.split()[0] for ln in out.splitlines()]
        assert kinds == ["[NEW]", "[DESTROY]", "[NEW]"], out
        assert out.splitlines()[0].split(None, 2)[2] == line.split(" ", 1)[1], (out, line)
        bad = fw.run([NFKIT, "ct", "expect", "delete", "-p", "tcp", "--tuple-src", "192.0.2.9", "--tuple-dst",
                      "198.51.100.9", "--tuple-dport", "9"], check=False)
        assert bad.returncode == 2 and "no such expectation" in bad.stderr


def test_an_expectation_found_again_by_a_resync_is_sent_as_exp_upd(tmp_path: Path) -> None:
    """conntrackd sends a cache object by its status: an expectation its resync with the
    kernel found again is ALIVE, so a bulk send says EXP_UPD; a new one EXP_NEW.  Then the
    same against a stock peer: the expectation deleted there comes back by `-R` and `-B`."""
    with sync_lab() as lab:
        fw, peer = lab["fw"], lab["peer"]
        ftp_expectation(lab, tmp_path / "ftp")
        with fw.enter():
            table = ConntrackTable()
        engine = SyncEngine(table, Options(expectations=True))
        sent: list[bytes] = []
        engine.add_peer(Peer("peer", PlainSession(seq=1), lambda d: sent.append(d) or True))
        try:
            engine.subscribe()  # reads the table: the expectation is new to the cache

            def exp_types() -> list[MsgType]:
                engine.flush()
                types = [m.type for d in sent for m in wire.decode_datagram(d)
                         if isinstance(m, wire.StateMessage) and m.type >= MsgType.EXP_NEW]
                sent.clear()
                return types

            engine.bulk()
            assert exp_types() == [MsgType.EXP_NEW]
            engine.resync_with_kernel(send=True)  # found again: EXP_UPD
            assert exp_types() == [MsgType.EXP_UPD]
            engine.bulk()
            assert exp_types() == [MsgType.EXP_UPD]
        finally:
            engine.close()
            table.close()
        a = start("nfkit", fw, tmp_path, "fw", options=SYNC_FTP)
        b = start("stock", peer, tmp_path, "peer", options=SYNC_FTP)
        want = oracle(fw)
        a.ctl("-B")
        wait_for(lambda: oracle(peer) == want, lambda: (oracle(peer), want, a.ctl("-s"), b.ctl("-s")))
        peer.run("conntrack -F expect")  # gone from the peer's kernel
        assert oracle(peer) == []
        a.ctl("-R")
        a.ctl("-B")  # the stock peer takes the EXP_UPD
        wait_for(lambda: oracle(peer) == want, lambda: (oracle(peer), want, a.ctl("-s"), b.ctl("-s")))
