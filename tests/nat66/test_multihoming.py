"""Multihoming and prefix tracking with `nfkit nat66 run`, in a lab with real traffic.

inside hosts (ULA fd01:203:405:1::/64) -- router -- isp1 (2001:db8:1::/48) -- server
                                              \\-- isp2 (2001:db8:2::/48) --/
The server (2001:db8:ff::2) routes each ISP's prefix back through that ISP; the
router has no route to it in its main table: only the uplinks' policy routing
(ct mark -> fwmark rule -> table) gets a packet out.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nfkit.lab import multihomed
from nfkit.nat66.npt import Mapping
from nfkit.service.daemon import query_status, wait_for_status
from tests.nat66.test_apply import NFKIT, curl

INSIDE = "fd01:203:405::/48"
ISP = {1: "2001:db8:1::/48", 2: "2001:db8:2::/48"}
SERVER = "2001:db8:ff::2"
HOSTS = [f"fd01:203:405:1::{i:x}" for i in range(0x10, 0x20)]
URL = f"http://[{SERVER}]:8080/"

UDP_ECHO = ("import socket, sys\n"
            "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind((sys.argv[1], 5353))\n"
            "while True:\n"
            "    data, peer = s.recvfrom(100); s.sendto(peer[0].encode(), peer)\n")
UDP_ASK = ("import socket, sys\n"
           "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind((sys.argv[1], 0))\n"
           "s.settimeout(2); s.sendto(b'?', (sys.argv[2], 5353)); print(s.recvfrom(100)[0].decode())\n")


def config(tmp_path: Path, outside1: str = ISP[1], balance: str = "host") -> Path:
    conf = tmp_path / "nat66.toml"
    conf.write_text(f'[daemon]\nstatus = "{tmp_path}/nat66.sock"\n\n'
                    f'[multihoming]\ninside = "{INSIDE}"\nbalance = "{balance}"\n\n'
                    f'[[uplink]]\ninterface = "wan0"\noutside = "{outside1}"\n'
                    'gateway = "2001:db8:a1::1"\nmark = 1\ntable = 101\n\n'
                    f'[[uplink]]\ninterface = "wan1"\noutside = "{ISP[2]}"\n'
                    'gateway = "2001:db8:a2::1"\nmark = 2\ntable = 102\n')
    return conf


@pytest.fixture
def isp_lab(lab):  # type: ignore[no-untyped-def]
    multihomed(lab, HOSTS, list(ISP.values()), SERVER)
    lab["srv"].popen([sys.executable, "-c", UDP_ECHO, SERVER])
    return lab


def start(router, conf: Path):  # type: ignore[no-untyped-def]
    proc = router.popen([*NFKIT, "nat66", "run", str(conf)], stderr=subprocess.PIPE)
    wait_for_status(conf.parent / "nat66.sock", lambda: proc.poll() is None)
    return proc


def status(conf: Path) -> dict:  # type: ignore[type-arg]
    return query_status(conf.parent / "nat66.sock")


def wait_change(conf: Path, since: float, what: str, timeout: float = 3.0) -> dict:  # type: ignore[type-arg]
    """The daemon's record of the first change after ``since`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in status(conf)["changes"]:
            if c["time"] >= since and what in c["what"]:
                return c  # type: ignore[no-any-return]
        time.sleep(0.02)
    raise AssertionError(f"no change {what!r} recorded: {status(conf)['changes']}")


def uplink_of(seen: str) -> int:
    """Which ISP's prefix the server saw a host under."""
    return next(n for n, p in ISP.items() if ipaddress.IPv6Address(seen) in ipaddress.IPv6Network(p))


@pytest.mark.kernel
def test_hosts_balanced_failover_and_back(isp_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inside, router, isp1 = isp_lab["in"], isp_lab["r"], isp_lab["isp1"]
    conf = config(tmp_path)
    daemon = start(router, conf)
    # each host leaves by one uplink, as RFC 6296's image of its address, every time
    seen = {h: curl(inside, URL, h).split()[0] for h in HOSTS}
    on = {h: uplink_of(s) for h, s in seen.items()}
    assert all(s == str(Mapping.parse(INSIDE, ISP[on[h]]).to_outside(h)) for h, s in seen.items())
    assert set(on.values()) == {1, 2}
    assert all(curl(inside, URL, h).split()[0] == seen[h] for h in HOSTS[:4])
    first = next(h for h in HOSTS if on[h] == 1)
    # ping and UDP take the same way as the host's TCP
    assert inside.run(["ping", "-6", "-c", "1", "-W", "2", "-I", first, SERVER]).returncode == 0
    udp = inside.run([sys.executable, "-c", UDP_ASK, first, SERVER]).stdout.strip()
    assert udp == seen[first]
    ping = inside.popen(["ping", "-6", "-i", "0.05", "-I", first, SERVER])
    time.sleep(0.3)
    assert "mark=1" in router.run("conntrack -L -f ipv6 -p icmpv6").stdout
    # isp1's side goes down: wan0 loses carrier; the daemon re-maps and flushes within 1 s
    t0 = time.time()
    isp1.run("ip link set eth0 down")
    change = wait_change(conf, t0, "wan0 down")
    assert change["time"] - t0 < 1.0 and change["flushed"] >= 1
    assert uplink_of(curl(inside, URL, first).split()[0]) == 2  # a new flow uses isp2 ...
    assert time.time() - t0 < 1.0  # ... done within a second of the link loss
    time.sleep(0.2)
    marks = router.run("conntrack -L -f ipv6 -m 1").stdout
    assert "mark=1" not in marks, marks  # nothing left bound to the dead uplink
    assert "mark=2" in router.run("conntrack -L -f ipv6 -p icmpv6").stdout  # the ping moved
    ping.terminate()
    shown = json.loads(router.run([*NFKIT, "nat66", "show", str(conf), "--json"]).stdout)
    assert [u["live"] for u in shown["daemon"]["uplinks"]] == [False, True]
    # isp1 comes back: the host's new flows use it again
    t0 = time.time()
    isp1.run("ip link set eth0 up")
    isp1.run(f"ip -6 route replace {ISP[1]} via 2001:db8:a1::2")  # its own went with its link
    wait_change(conf, t0, "wan0 up")
    assert uplink_of(curl(inside, URL, first).split()[0]) == 1
    # SIGTERM: clean exit, the rules stay
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(5) == 0
    assert "uplink_of_bucket" in router.run("nft list table ip6 nfkit_nat66").stdout
    assert "nfkit-npt-out" in router.run("nft list table ip6 mangle").stdout


@pytest.mark.kernel
def test_prefix_change_remaps_and_flushes_within_a_second(isp_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inside, router, isp1, srv = isp_lab["in"], isp_lab["r"], isp_lab["isp1"], isp_lab["srv"]
    new_prefix = "2001:db8:3::/48"
    isp1.run(f"ip -6 route add {new_prefix} via 2001:db8:a1::2")
    srv.run(f"ip -6 route add {new_prefix} via 2001:db8:b1::1")
    router.run("ip -6 addr add 2001:db8:1::1/48 dev wan0")  # the delegated prefix, as a client installs it
    conf = config(tmp_path, outside1="address", balance="flow")
    daemon = start(router, conf)
    assert status(conf)["uplinks"][0]["outside"] == ISP[1]
    host = HOSTS[0]
    seen = {uplink_of(curl(inside, URL, host).split()[0]) for _ in range(4)}
    assert seen == {1, 2}  # balanced by flow: one host, both uplinks
    old = [h for h in (curl(inside, URL, host).split()[0] for _ in range(6)) if h.startswith("2001:db8:1:")]
    assert old and old[0] == str(Mapping.parse(INSIDE, ISP[1]).to_outside(host))
    assert "mark=1" in router.run("conntrack -L -f ipv6 -m 1").stdout
    # the ISP delegates another prefix: the client replaces the address
    t0 = time.time()
    router.run("ip -6 addr add 2001:db8:3::1/48 dev wan0")
    router.run("ip -6 addr del 2001:db8:1::1/48 dev wan0")
    change = wait_change(conf, t0, "-> 2001:db8:3::/48")
    assert change["time"] - t0 < 1.0
    assert router.run("conntrack -L -f ipv6 -m 1").stdout.count("mark=1") == 0  # no stale entry
    assert f"snpt prefix {INSIDE} to {new_prefix}" in router.run([*NFKIT, "rules", "list", "-f", "ip6", "-t", "mangle"]).stdout
    images = {curl(inside, URL, host).split()[0] for _ in range(6)}
    assert str(Mapping.parse(INSIDE, new_prefix).to_outside(host)) in images
    assert not any(i.startswith("2001:db8:1:") for i in images)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(5) == 0


@pytest.mark.kernel
def test_prefix_file_metrics_show_and_remove_on_exit(isp_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inside, router, isp1, srv = isp_lab["in"], isp_lab["r"], isp_lab["isp1"], isp_lab["srv"]
    isp1.run("ip -6 route add 2001:db8:3::/48 via 2001:db8:a1::2")
    srv.run("ip -6 route add 2001:db8:3::/48 via 2001:db8:b1::1")
    pd = tmp_path / "wan0.prefix"  # what a DHCPv6 client's hook writes
    pd.write_text("2001:db8:1::/48\n")
    conf = config(tmp_path, outside1=f"file:{pd}")
    conf.write_text(conf.read_text().replace("[daemon]\n", '[daemon]\nmetrics = "127.0.0.1:9166"\n'))
    daemon = router.popen([*NFKIT, "nat66", "run", "--remove-on-exit", str(conf)], stderr=subprocess.PIPE)
    wait_for_status(tmp_path / "nat66.sock", lambda: daemon.poll() is None)
    host = next(h for h in HOSTS if uplink_of(curl(inside, URL, h).split()[0]) == 1)
    t0 = time.time()
    new = tmp_path / "wan0.prefix.new"
    new.write_text("2001:db8:3::/48\n")
    new.replace(pd)  # written whole, then renamed: never read half-written
    assert wait_change(conf, t0, "-> 2001:db8:3::/48")["time"] - t0 < 1.0
    assert curl(inside, URL, host).split()[0] == str(Mapping.parse(INSIDE, "2001:db8:3::/48").to_outside(host))
    metrics = router.run(["curl", "-sS", "http://127.0.0.1:9166/metrics"]).stdout
    assert "nfkit_nat66_remaps_total 1.0" in metrics
    assert 'nfkit_nat66_uplink_live{interface="wan0"} 1.0' in metrics
    assert "nfkit_nat66_reaction_seconds_count 2.0" in metrics  # the start and the change
    shown = router.run([*NFKIT, "nat66", "show", str(conf)]).stdout
    assert "uplink wan0 mark 1 weight 1: live, outside 2001:db8:3::/48, 32 bucket(s)" in shown
    # SIGTERM with --remove-on-exit: nfkit's table, NPT chains, policy rules and routes go
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(5) == 0
    assert "nfkit_nat66" not in router.run("nft list tables").stdout
    assert "nfkit-npt" not in router.run("nft list ruleset").stdout
    assert "fwmark" not in router.run("ip -6 rule").stdout
    assert router.run("ip -6 route show table 101").stdout == ""
    unit = router.run([*NFKIT, "nat66", "unit", "-c", "/etc/nfkit/nat66.toml"]).stdout
    assert "nat66 run -c /etc/nfkit/nat66.toml" in unit and "KillSignal=SIGTERM" in unit


@pytest.mark.kernel
def test_readme_example_runs(isp_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("A complete multihomed example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    pd = tmp_path / "wan1.prefix"
    pd.write_text(f"{ISP[2]}\n")
    conf = tmp_path / "nat66.toml"
    conf.write_text(example.replace("/run/nfkit/wan1.prefix", str(pd)))
    inside, router = isp_lab["in"], isp_lab["r"]
    daemon = router.popen([*NFKIT, "nat66", "run", "--status-socket", str(tmp_path / "s.sock"), str(conf)])
    wait_for_status(tmp_path / "s.sock", lambda: daemon.poll() is None)
    on = [uplink_of(curl(inside, URL, h).split()[0]) for h in HOSTS]
    assert set(on) == {1, 2} and on.count(1) > on.count(2)  # weight 2 against 1
    up = query_status(tmp_path / "s.sock")["uplinks"]
    assert [(u["outside"], u["buckets"]) for u in up] == [(ISP[1], 43), (ISP[2], 21)]
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(5) == 0
