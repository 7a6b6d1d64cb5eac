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
ExecStart={exe} {name} run -c {config}
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
ReadWritePaths=/run/nfkit
NoNewPrivileges=yes

[Install]
WantedBy=multi-user.target
"""


def nfkit_executable() -> str:
    """The `nfkit` beside the running interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("nfkit")
    return str(beside) if beside.exists() else "/usr/bin/env nfkit"


def unit(name: str, what: str, config: str) -> str:
    return TEMPLATE.format(name=name, what=what, config=shlex.quote(config),
                           exe=nfkit_executable())
