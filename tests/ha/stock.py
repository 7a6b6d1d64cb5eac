"""A stock conntrackd (conntrack-tools) run in a lab namespace, for interop tests.

Everything it needs (config, lock, log, control socket) lives in a directory of
its own; it runs in the foreground (no -d) and the lab stops it by PID.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from nfkit.lab import Namespace

SYNC_PORT = 3780


def conntrackd_conf(workdir: Path, *, mode: str, own: str, peer: str, interface: str,
                    external_cache: bool = False) -> str:
    """conntrackd.conf for one node: UDP to ``peer`` on ``interface``, files in ``workdir``."""
    mode_body = "" if mode == "NOTRACK" and external_cache else "DisableExternalCache on"
    if external_cache:
        mode_body = ""
    return f"""
Sync {{
    Mode {mode} {{ {mode_body} }}
    UDP {{
        IPv4_address {own}
        IPv4_Destination_Address {peer}
        Port {SYNC_PORT}
        Interface {interface}
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }}
}}
General {{
    HashSize 8192
    HashLimit 65536
    LogFile {workdir}/log
    Syslog off
    LockFile {workdir}/lock
    UNIX {{ Path {workdir}/ctl }}
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {{
        Address Ignore {{
            IPv4_address 127.0.0.1
            IPv4_address {own}
            IPv4_address {peer}
            IPv6_address ::1
        }}
    }}
}}
"""


class StockConntrackd:
    """``conntrackd -C conf`` in ``ns``, in the foreground; stopped by the lab (by PID)."""

    def __init__(self, ns: Namespace, workdir: Path, **conf: object) -> None:
        self.ns = ns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "conntrackd.conf"
        self.conf.write_text(conntrackd_conf(workdir, **conf))  # type: ignore[arg-type]
        self.proc = ns.popen(["conntrackd", "-C", str(self.conf)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (workdir / "ctl").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"conntrackd did not start: {self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        path = self.workdir / "log"
        return path.read_text() if path.exists() else ""

    def ctl(self, *args: str) -> str:
        """A client command (``-s``, ``-i``, ``-e``, ...) against this daemon."""
        return self.ns.run(["conntrackd", "-C", str(self.conf), *args]).stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=5)
