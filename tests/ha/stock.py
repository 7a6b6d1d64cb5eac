"""A stock conntrackd (conntrack-tools 1.4.7) run in a lab namespace, for interop tests.

Everything it needs (config, lock, log, control socket) lives in a directory of
its own; it runs in the foreground (no -d) and the lab stops it by PID.
The configuration is the one the issue found to work between two namespaces.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from nfkit.lab import Namespace

SYNC_PORT = 3780
MCAST_GROUP = "225.0.0.50"


def conntrackd_conf(workdir: Path, *, mode: str, own: str, peer: str, interface: str, options: str = "",
                    multicast: bool = False) -> str:
    """conntrackd.conf for one node: ``mode`` (FTFW, NOTRACK) over UDP to ``peer``, files in ``workdir``.

    ``options`` is the body of the Sync block's Options (TCPWindowTracking, ExpectationSync).
    """
    opts = f"Options {{\n        {options}\n    }}" if options else ""
    if multicast:
        link = f"""Multicast {{
        IPv4_address {MCAST_GROUP}
        Group {SYNC_PORT}
        IPv4_interface {own}
        Interface {interface}
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}"""
    else:
        link = f"""UDP {{
        IPv4_address {own}
        IPv4_Destination_Address {peer}
        Port {SYNC_PORT}
        Interface {interface}
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}"""
    # ALARM has no DisableExternalCache: the peer's entries wait in the external cache
    mode_opts = "RefreshTime 1\n        CacheTimeout 10" if mode == "ALARM" else "DisableExternalCache on"
    return f"""
Sync {{
    Mode {mode} {{
        {mode_opts}
    }}
    {link}
    {opts}
}}
{general_block(workdir, [f"IPv4_address {own}", f"IPv4_address {peer}", "IPv6_address ::1"])}"""


def general_block(workdir: object, ignored: list[str]) -> str:
    """conntrackd.conf's General block of the labs: files in ``workdir``, the sync
    addresses (``ignored``: "IPv4_address A" lines) and loopback left out of sync."""
    lines = "\n".join(f"            {x}" for x in ["IPv4_address 127.0.0.1", *ignored])
    return f"""General {{
    HashSize 8192
    HashLimit 65536
    LogFile {workdir}/log
    Syslog off
    LockFile {workdir}/lock
    UNIX {{
        Path {workdir}/ctl
    }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Address Ignore {{
{lines}
        }}
    }}
}}
"""


class StockConntrackd:
    """``conntrackd -C conf`` in ``ns``, in the foreground; the lab stops it (by PID)."""

    def __init__(self, ns: Namespace, workdir: Path, *, mode: str, own: str, peer: str,
                 interface: str, options: str = "", multicast: bool = False, conf: str | None = None) -> None:
        self.ns = ns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "conntrackd.conf"
        self.conf.write_text(conf or conntrackd_conf(workdir, mode=mode, own=own, peer=peer, interface=interface,
                                                     options=options, multicast=multicast))
        self.start()

    def start(self) -> None:
        before = self.log().count("initialization completed")
        self.proc = self.ns.popen(["conntrackd", "-C", str(self.conf)])
        deadline = time.monotonic() + 10
        while self.log().count("initialization completed") <= before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"conntrackd did not start: {self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)

    def log(self) -> str:
        path = self.workdir / "log"
        return path.read_text() if path.exists() else ""

    def ctl(self, *args: str) -> str:
        """A client command (``-s``, ``-i``, ``-e``, ...) against this daemon."""
        return self.ns.run(["conntrackd", "-C", str(self.conf), *args]).stdout


NFKIT = str(Path(sys.executable).with_name("nfkit"))


class NfkitHa(StockConntrackd):
    """``nfkit ha -C conf`` in ``ns`` with the same configuration as a stock daemon's."""

    def __init__(self, ns: Namespace, workdir: Path, *, mode: str, own: str, peer: str,
                 interface: str, options: str = "", multicast: bool = False, conf: str | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.ns = ns
        self.workdir = workdir
        self.args = args
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "conntrackd.conf"
        self.conf.write_text(conf or conntrackd_conf(workdir, mode=mode, own=own, peer=peer,
                                                     interface=interface, options=options, multicast=multicast))
        self.start()

    def start(self) -> None:
        before = self.log().count("initialization completed")
        self.proc = self.ns.popen([NFKIT, "ha", "-C", str(self.conf), *self.args], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while self.log().count("initialization completed") <= before:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.poll() is not None and self.proc.stderr else ""
                raise RuntimeError(f"nfkit ha did not start: {self.log()} {err}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(10) == 0  # a clean teardown, lock file removed

    def ctl(self, *args: str) -> str:
        return self.ns.run([NFKIT, "ha", "-C", str(self.conf), *args]).stdout

    def status(self) -> dict:
        return json.loads(self.ns.run([NFKIT, "ha", "status", "-C", str(self.conf), "--json"]).stdout)
