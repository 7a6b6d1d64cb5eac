"""nfkit nat66 apply: stateful NAT66 in a lab, with real traffic."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nfkit.lab import WHO_SERVER as WHO

NFKIT = [sys.executable, "-m", "nfkit"]



@pytest.fixture
def nat_lab(lab):  # type: ignore[no-untyped-def]
    """inside (fd01::2, servers fd01::10 and ::11) -- router -- outside (2001:db8:1::2)."""
    inside, router, outside = lab.add("in"), lab.add("r"), lab.add("out")
    lab.link(inside, router, ["fd01::2/64", "fd01::10/64", "fd01::11/64"], ["fd01::1/64"], "eth0", "lan0")
    lab.link(router, outside, ["2001:db8:1::1/64", "2001:db8:1::9/64", "2001:db8:1::80/64"],
             ["2001:db8:1::2/64"] + [f"2001:db8:1::1{i:02x}/64" for i in range(16)], "wan0", "eth0")
    router.sysctl("net.ipv6.conf.all.forwarding", "1")
    inside.run("ip -6 route add 2001:db8:1::/64 via fd01::1")
    for ns, addr in ((outside, "2001:db8:1::2"), (inside, "fd01::10"), (inside, "fd01::11")):
        ns.popen([sys.executable, "-c", WHO, addr, "8080"])
    for ns in (outside, inside):
        ns.run(["sh", "-c", "for i in $(seq 50); do ss -ltn | grep -q :8080 && exit 0; sleep 0.1; done; exit 1"])
    return lab


def curl(ns, url: str, source: str | None = None) -> str:  # type: ignore[no-untyped-def]
    return ns.run(["curl", "-sS", "-m", "5", *(["--interface", source] if source else []), url]).stdout


def nat66(ns, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return ns.run([*NFKIT, "nat66", *args], check=check)


@pytest.mark.kernel
def test_masquerade_snat_and_a_dnat_pool(nat_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inside, router, outside = nat_lab["in"], nat_lab["r"], nat_lab["out"]
    conf = tmp_path / "nat66.toml"
    conf.write_text('[[snat]]\ninside = "fd01::/64"\ninterface = "wan0"\n'
                    '[[dnat]]\naddress = "2001:db8:1::80"\nport = 80\nservers = ["fd01::10", "fd01::11"]\n'
                    'server_port = 8080\n')
    nat66(router, "apply", str(conf))
    # masquerade: the server beyond sees one of the router's outside addresses
    assert curl(inside, "http://[2001:db8:1::2]:8080/").split()[0] in {
        "2001:db8:1::1", "2001:db8:1::9", "2001:db8:1::80"}
    # a pool: each client address always reaches the same server, and both servers are used
    seen = {}
    for i in range(16):
        src = f"2001:db8:1::1{i:02x}"
        first = curl(outside, "http://[2001:db8:1::80]/", src).split()
        again = curl(outside, "http://[2001:db8:1::80]/", src).split()
        assert first == again and first[0] == src  # the server sees the client itself
        seen[src] = first[1]
    assert set(seen.values()) == {"fd01::10", "fd01::11"}
    # re-applying the same file changes nothing
    out = nat66(router, "apply", str(conf))
    assert out.stdout == "" and "0 change(s)" in out.stderr
    # snat to a fixed address, with ports
    conf.write_text('[[snat]]\ninside = "fd01::/64"\ninterface = "wan0"\nto = "2001:db8:1::9"\n'
                    'ports = "20000-20010"\n')
    nat66(router, "apply", str(conf))
    who = curl(inside, "http://[2001:db8:1::2]:8080/").split()[0]
    assert who == "2001:db8:1::9"
    ct = router.run("conntrack -L -f ipv6 -p tcp").stdout
    assert any("dst=2001:db8:1::9" in line and "dport=200" in line for line in ct.splitlines())
    shown = nat66(router, "show").stdout
    assert 'oifname "wan0" ip6 saddr fd01::/64 meta l4proto { tcp, udp } snat to [2001:db8:1::9]:20000-20010' in shown


@pytest.mark.kernel
def test_snat_to_a_prefix_maps_each_host_one_to_one(nat_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    inside, router, outside = nat_lab["in"], nat_lab["r"], nat_lab["out"]
    outside.run("ip -6 route add 2001:db8:5::/64 via 2001:db8:1::1")
    conf = tmp_path / "nat66.toml"
    conf.write_text('[[snat]]\ninside = "fd01::/64"\ninterface = "wan0"\nto = "2001:db8:5::/64"\n')
    nat66(router, "apply", str(conf))
    # each inside host appears under the outside prefix with its own host bits, every time
    for host in ("fd01::2", "fd01::10", "fd01::11", "fd01::2"):
        seen = curl(inside, "http://[2001:db8:1::2]:8080/", host).split()[0]
        assert seen == host.replace("fd01::", "2001:db8:5::")
    shown = nat66(router, "show").stdout
    assert 'ip6 saddr fd01::/64 snat prefix to 2001:db8:5::/64' in shown
    listed = router.run("nft list table ip6 nfkit_nat66").stdout
    assert "snat prefix to 2001:db8:5::/64" in listed  # nft reads back the netmap nfkit wrote
    assert nat66(router, "apply", str(conf)).stdout == ""


@pytest.mark.kernel
def test_bad_files_change_nothing(nat_lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    router = nat_lab["r"]
    conf = tmp_path / "nat66.toml"
    router.run(["nft", "add table inet user; add chain inet user c { type filter hook forward priority 0; }; "
                "add rule inet user c ct state invalid drop"])
    before = router.run("nft list ruleset").stdout
    for text, message in (
        ('[[snat]]\ninside = "fd01::/64"\ninterface = "wan9"\n', ":3: snat[0].interface: wan9: no such interface"),
        ('[[snat]]\ninside = "fd01::1/64"\ninterface = "wan0"\n', ":2: snat[0].inside:"),
        ('[[snat]]\ninside = "fd01::/64"\ninterface = "wan0"\nto = "2001:db8::/80"\n',
         ":4: snat[0].to: 2001:db8::/80 is longer than inside fd01::/64"),
    ):
        conf.write_text(text)
        out = nat66(router, "apply", str(conf), check=False)
        assert out.returncode == 2 and message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        assert router.run("nft list ruleset").stdout == before
