"""The systemd unit of each nfkit daemon, from one template.

`nfkit NAME unit` prints it; installing is the administrator's
(`nfkit nat66 unit > /etc/systemd/system/nfkit-nat66.service`).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

TEMPLATE = """\
[Unit]
Description=nfkit {name}: {what}
Documentation=man:nfkit(1)
After=network-pre.target
Wants=network-pre.target

[Service]
Type=simple
ExecStart={exe} {name} {args}
Restart=on-failure
RestartSec=2
# SIGTERM: the daemon tears down what must not outlive it and exits 0
KillSignal=SIGTERM
TimeoutStopSec=15
RuntimeDirectory=nfkit
RuntimeDirectoryPreserve=yes
AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_ADMIN
ProtectHome=yes
ProtectSystem=strict
ReadWritePaths=/run/nfkit{writable}
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""


def nfkit_executable() -> str:
    """The `nfkit` beside the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("nfkit")
    return str(beside) if beside.exists() else "/usr/bin/env nfkit"


def unit(name: str, what: str, config: str, args: str | None = None,
         writable: tuple[str, ...] = ()) -> str:
    """The unit of daemon ``name``: ``nfkit NAME run -c CONFIG``, or ``nfkit NAME ARGS``
    for a daemon run by its options; ``writable``: paths besides /run/nfkit it writes."""
    return TEMPLATE.format(name=name, what=what, exe=nfkit_executable(),
                           args=args if args is not None else f"run -c {shlex.quote(config)}",
                           writable="".join(f" {shlex.quote(w)}" for w in writable))
