"""`make demo`: a small lab of namespaces, nfkit run inside it, real traffic through it.

client (192.0.2.2) -- fw (192.0.2.1 | 198.51.100.1) -- server (198.51.100.2), IPv6 too.
Each capability adds a step function to STEPS.  The lab is removed on exit,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nfkit.lab import Lab, three_node

NFKIT = str(Path(sys.executable).with_name("nfkit"))


def say(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def show(ns, cmd: list[str] | str) -> str:
    out = ns.run(cmd).stdout
    print(out.rstrip())
    return out


def step_info(lab: Lab) -> None:
    say("nfkit info, in the firewall namespace")
    show(lab["fw"], [NFKIT, "info"])


def step_traffic(lab: Lab) -> None:
    say("real traffic: client -> firewall -> server (ICMP, TCP over IPv4 and IPv6)")
    client, server = lab["client"], lab["server"]
    show(client, "ping -c2 -W2 198.51.100.2")
    server.popen([sys.executable, "-m", "http.server", "--bind", "::", "8080"], cwd="/tmp")
    fetch = ("import socket,sys\n"
             "for host in ('198.51.100.2', '2001:db8:2::2'):\n"
             "  for _ in range(50):\n"
             "    try: s = socket.create_connection((host, 8080), timeout=2); break\n"
             "    except OSError: import time; time.sleep(0.1)\n"
             "  s.sendall(b'HEAD / HTTP/1.0\\r\\n\\r\\n'); print(host, s.recv(100).split(b'\\r\\n')[0].decode())\n")
    show(client, [sys.executable, "-c", fetch])


STEPS: list[Callable[[Lab], None]] = [step_info, step_traffic]


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    try:
        with three_node("demo") as lab:
            print("lab:", ", ".join(f"{role}={ns.name}" for role, ns in lab.namespaces.items()))
            for step in STEPS:
                step(lab)
    except KeyboardInterrupt:
        print("\ninterrupted: lab removed", file=sys.stderr)
        return 130
    except subprocess.CalledProcessError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print(f"\ndemo done in {time.monotonic() - started:.1f}s; lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
