"""`make demo`: a small lab of namespaces, nfkit run inside it, real traffic through it.

client (192.0.2.2) -- fw (192.0.2.1 | 198.51.100.1) -- server (198.51.100.2), IPv6 too.
Each capability adds a step function to STEPS.  The lab is removed on exit,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from nfkit.lab import Lab, three_node

NFKIT = str(Path(sys.executable).with_name("nfkit"))
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "demo"
CAPTURE = Path(tempfile.gettempdir()) / f"nfkit-demo-{os.getpid()}.pcap"


def say(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def show(ns, cmd: list[str] | str) -> str:
    out = ns.run(cmd).stdout
    print(out.rstrip())
    return out


def step_info(lab: Lab) -> None:
    say("nfkit info, in the firewall namespace")
    show(lab["fw"], [NFKIT, "info"])


def step_firewall(lab: Lab) -> None:
    say("a firewall ruleset in the firewall namespace (conntrack tracks what it forwards)")
    fw = lab["fw"]
    fw.run(["nft", "add table inet demo; "
            "add chain inet demo forward { type filter hook forward priority 0; policy accept; }; "
            "add rule inet demo forward ct state established,related counter accept; "
            "add rule inet demo forward ct state new counter accept"])
    show(fw, "nft list ruleset")


def step_traffic(lab: Lab) -> None:
    say("real traffic: client -> firewall -> server (ICMP, TCP over IPv4 and IPv6, UDP), captured on the way")
    client, fw, server = lab["client"], lab["fw"], lab["server"]
    dump = fw.popen(["tcpdump", "-i", "eth1", "-U", "--immediate-mode", "-n", "-w", str(CAPTURE)],
                    stderr=subprocess.PIPE)
    assert dump.stderr is not None
    dump.stderr.readline()  # "listening on eth1": capturing from here on
    show(client, "ping -c2 -W2 198.51.100.2")
    server.serve([sys.executable, "-m", "http.server", "--bind", "::", "8080"], cwd="/tmp")
    fetch = (
        "import socket, time\n"
        "for host in ('198.51.100.2', '2001:db8:2::2'):\n"
        "    for _ in range(50):\n"
        "        try: s = socket.create_connection((host, 8080), timeout=2); break\n"
        "        except OSError: time.sleep(0.1)\n"
        "    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
        "    req = f'GET / HTTP/1.1\\r\\nHost: demo.example\\r\\nUser-Agent: nfkit-demo\\r\\n\\r\\n'.encode()\n"
        "    for b in req:  # one byte per segment: reassembly makes it whole again\n"
        "        s.send(bytes([b])); time.sleep(0.001)\n"
        "    print(host, s.recv(100).split(b'\\r\\n')[0].decode()); s.close()\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for port in range(5300, 5320):  # nobody answers: UNREPLIED entries\n"
        "    u.sendto(b'hello', ('198.51.100.2', port))\n"
        "print('sent 20 UDP datagrams to closed ports')\n"
    )
    show(client, [sys.executable, "-c", fetch])
    time.sleep(0.5)
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)


def step_conntrack(lab: Lab) -> None:
    say("nfkit ct: the firewall's conntrack table, then a selective flush of UNREPLIED UDP")
    fw = lab["fw"]
    show(fw, [NFKIT, "ct", "list"])
    show(fw, [NFKIT, "ct", "count", "-p", "udp", "--status", "UNREPLIED"])
    show(fw, [NFKIT, "ct", "delete", "-p", "udp", "--status", "UNREPLIED"])
    show(fw, [NFKIT, "ct", "count"])


def step_nfgrep(lab: Lab) -> None:
    say("nfkit nfgrep classify: what the captured flows are, by their payload (no port guessing)")
    show(lab["fw"], [NFKIT, "nfgrep", "classify", str(CAPTURE)])


def step_cgrep(lab: Lab) -> None:
    say("nfkit cgrep: where is field 'status' of a struct nf_conn set or tested?")
    out = subprocess.run([NFKIT, "cgrep", "-t", "struct nf_conn", "-a", "status", "-o", "set", "-o", "test",
                          str(EXAMPLES / "conntrack_users.c")], capture_output=True, text=True, check=True)
    print(out.stdout.rstrip())


STEPS: list[Callable[[Lab], None]] = [
    step_info, step_firewall, step_traffic, step_conntrack, step_nfgrep, step_cgrep,
]


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
    finally:
        CAPTURE.unlink(missing_ok=True)
    print(f"\ndemo done in {time.monotonic() - started:.1f}s; lab removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
