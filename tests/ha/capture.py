"""Capture what a stock conntrackd sends, to refresh tests/ha/captures/ (run as root).

    .venv/bin/python -m tests.ha.capture tests/ha/captures

ftfw.hex / notrack.hex: the lab's traffic (`ha_lab.make_traffic`), in each
mode; notrack.conntrack is the firewall's table then; ftfw-flush.hex /
notrack-flush.hex: what a flush of that table sent next.  extras.hex: an ftp-helped TCP flow in
ct zone 7 with ct labels 5 and 100, with TCPWindowTracking on.  expect.hex:
the same ftp flow outside any zone, with the expectation its PORT command
makes (conntrackd sent no EXP message for the expectation in zone 7).  sctp.hex:
the SCTP entries of `ha_lab.SCTP_ENTRIES` made with `conntrack -I`, then
`SCTP_UPDATE`, then deleted; sctp.conntrack: their kernel values (state and
verification tags, which `conntrack -L` does not show) after each step.  One hex
datagram per line.  The tests hold these files to what they document.
"""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from pathlib import Path

from tests.ha.ha_lab import (
    FW_SYNC,
    PEER_SYNC,
    SCTP_ENTRIES,
    SCTP_UPDATE,
    make_traffic,
    sync_lab,
    table_in,
    udp_socket,
)
from tests.ha.stock import SYNC_PORT, StockConntrackd

EXTRAS_RULES = """
table inet extras {
  ct helper ftp-std { type "ftp" protocol tcp; }
  chain pre { type filter hook prerouting priority -300; ct zone set 7; }
  chain filt { type filter hook forward priority 0; ct label set 5; ct label set 100; tcp dport 21 ct helper set "ftp-std"; }
}
"""
FTP_SERVER = r"""
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 21)); s.listen()
def serve(c):
    c.sendall(b"220 hello\r\n")
    while c.recv(200):
        c.sendall(b"200 PORT command successful\r\n")
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
FTP_CLIENT = r"""
import socket, time
s = socket.create_connection(("198.51.100.2", 21)); s.recv(100)
# the ftp helper reads a command only in a packet that follows one ending in a newline
s.sendall(b"USER anonymous\r\n"); s.recv(100)
s.sendall(b"PORT 192,0,2,2,7,208\r\n"); s.recv(100); print("ok", flush=True); time.sleep(3600)
"""


def _drain(sock: socket.socket, seconds: float) -> list[bytes]:
    out, end = [], time.monotonic() + seconds
    sock.settimeout(0.2)
    while time.monotonic() < end:
        try:
            out.append(sock.recv(65536))
        except TimeoutError:
            pass
    return out


def _write(path: Path, grams: list[bytes]) -> None:
    path.write_text("".join(g.hex() + "\n" for g in grams))


def capture(outdir: Path) -> None:
    for mode in ("FTFW", "NOTRACK"):
        with sync_lab() as lab:
            rx = udp_socket(lab["peer"], PEER_SYNC, SYNC_PORT)
            StockConntrackd(lab["fw"], Path(tempfile.mkdtemp()), mode=mode, own=FW_SYNC, peer=PEER_SYNC,
                            interface="sync0")
            make_traffic(lab)
            listing = lab["fw"].run("conntrack -L -o id").stdout
            _write(outdir / f"{mode.lower()}.hex", _drain(rx, 4))
            lab["fw"].run("conntrack -F")
            _write(outdir / f"{mode.lower()}-flush.hex", _drain(rx, 3))
            if mode == "NOTRACK":
                (outdir / "notrack.conntrack").write_text(listing)
    for name, rules in (("extras", EXTRAS_RULES), ("expect", EXTRAS_RULES.replace("ct zone set 7;", ""))):
        _capture_ftp(outdir, name, rules)
    _capture_sctp(outdir)


def _capture_sctp(outdir: Path) -> None:
    with sync_lab() as lab:
        fw = lab["fw"]
        rx = udp_socket(lab["peer"], PEER_SYNC, SYNC_PORT)
        StockConntrackd(fw, Path(tempfile.mkdtemp()), mode="NOTRACK", own=FW_SYNC, peer=PEER_SYNC,
                        interface="sync0")
        grams, values = [], []
        for step in [*(f"-I -p sctp {a}" for a in SCTP_ENTRIES), f"-U -p sctp {SCTP_UPDATE}", "-D -p sctp"]:
            fw.run(f"conntrack {step}")
            values += [f"{e.orig.src} {e.orig.sport} state={e.state} vtags={e.vtags[0]:#x},{e.vtags[1]:#x}\n"
                       for e in table_in(fw).entries() if e.proto == 132 and e.vtags]
            grams += [g for g in _drain(rx, 0.5) if g[1] == 0]  # state messages, no ALIVE
        _write(outdir / "sctp.hex", grams)
        (outdir / "sctp.conntrack").write_text("".join(values))


def _capture_ftp(outdir: Path, name: str, rules: str) -> None:
    with sync_lab() as lab:
        lab["fw"].run(["nft", "-f", "-"], input=rules)
        rx = udp_socket(lab["peer"], PEER_SYNC, SYNC_PORT)
        StockConntrackd(lab["fw"], Path(tempfile.mkdtemp()), mode="NOTRACK", own=FW_SYNC, peer=PEER_SYNC,
                        interface="sync0", options="TCPWindowTracking On\n        ExpectationSync {\n ftp\n }")
        lab["server"].popen(["python3", "-c", FTP_SERVER])
        time.sleep(0.5)
        client = lab["client"].popen(["python3", "-c", FTP_CLIENT], stdout=-1)
        assert client.stdout is not None and client.stdout.readline() == b"ok\n"
        time.sleep(0.5)
        listing = lab["fw"].run("conntrack -L -o extended,labels").stdout
        listing += lab["fw"].run("conntrack -L expect").stdout
        _write(outdir / f"{name}.hex", _drain(rx, 3))
        (outdir / f"{name}.conntrack").write_text(listing)


if __name__ == "__main__":
    capture(Path(sys.argv[1]))
