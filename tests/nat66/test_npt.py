"""RFC 6296's mapping: the RFC's own example, the edge words, and the kernel's ip6t_NPT as oracle."""

from __future__ import annotations

import ipaddress
import json
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.nat66.npt import Drop, Dropped, Mapping, ones_sum, words_of

RFC = Mapping.parse("fd01:203:405::/48", "2001:db8:1::/48")


def test_rfc_6296_worked_example() -> None:
    # RFC 6296 section 3.6 (with erratum 3033): FD01:0203:0405:0001::1234 <-> 2001:0DB8:0001:D550::1234
    assert RFC.to_outside("fd01:203:405:1::1234") == ipaddress.IPv6Address("2001:db8:1:d550::1234")
    assert RFC.to_inside("2001:db8:1:d550::1234") == ipaddress.IPv6Address("fd01:203:405:1::1234")


def test_subnet_ffff_is_dropped_with_a_48() -> None:
    with pytest.raises(Dropped) as exc:
        RFC.to_outside("fd01:203:405:ffff::1")
    assert exc.value.reason is Drop.SUBNET_FFFF


def test_a_result_of_ffff_is_written_as_zero() -> None:
    # the subnet whose image would be 0xffff: 0xffff - 0xd54f (the adjustment) = 0x2ab0
    out = RFC.to_outside("fd01:203:405:2ab0::1")
    assert words_of(out)[3] == 0
    assert RFC.to_inside(out) == ipaddress.IPv6Address("fd01:203:405:2ab0::1")


def test_64_prefixes_adjust_the_first_iid_word_not_ffff() -> None:
    m = Mapping.parse("fd01:203:405:1::/64", "2001:db8:1:2::/64")
    out = m.to_outside("fd01:203:405:1:ffff:ffff:0:1")
    w = words_of(out)
    assert w[:4] == [0x2001, 0xDB8, 1, 2] and w[4:6] == [0xFFFF, 0xFFFF] and w[7] == 1
    assert w[6] != 0  # the third IID word carried the adjustment
    assert m.to_inside(out) == ipaddress.IPv6Address("fd01:203:405:1:ffff:ffff:0:1")
    with pytest.raises(Dropped) as exc:
        m.to_outside("fd01:203:405:1::")
    assert exc.value.reason is Drop.IID_ZERO
    with pytest.raises(Dropped) as exc:
        m.to_outside("fd01:203:405:1:ffff:ffff:ffff:ffff")
    assert exc.value.reason is Drop.IID_ONES


def test_prefixes_of_different_lengths() -> None:
    m = Mapping.parse("fd00:1::/48", "2001:db8:aa00::/40")  # outside shorter: inside bits kept
    assert m.length == 48
    a = m.to_outside("fd00:1:0:7::9")
    assert a in ipaddress.IPv6Network("2001:db8:aa00::/40") and m.to_inside(a) == ipaddress.IPv6Address("fd00:1:0:7::9")
    m = Mapping.parse("fd00:1::/40", "2001:db8:1::/48")  # inside shorter: bits 40-47 have no image
    with pytest.raises(Dropped) as exc:
        m.to_outside("fd00:1:1::1")
    assert exc.value.reason is Drop.NOT_ONE_TO_ONE
    assert m.to_inside(m.to_outside("fd00:1:0:5::1")) == ipaddress.IPv6Address("fd00:1:0:5::1")


@pytest.mark.parametrize("inside, outside, why", [
    ("fd01::1/48", "2001:db8::/48", "host bits"),
    ("fd01::/65", "2001:db8::/65", "at most /64"),
    ("192.0.2.0/24", "2001:db8::/48", "not an IPv6 prefix"),
])
def test_bad_prefixes_are_refused(inside: str, outside: str, why: str) -> None:
    with pytest.raises(InputError, match=why):
        Mapping.parse(inside, outside)


def test_an_address_outside_the_prefix_is_refused() -> None:
    with pytest.raises(InputError, match="not in the inside prefix"):
        RFC.to_outside("fd02::1")


prefix_len = st.integers(min_value=1, max_value=64)


@st.composite
def mappings_and_addresses(draw: st.DrawFn) -> tuple[Mapping, ipaddress.IPv6Address]:
    n = draw(prefix_len)
    m = draw(st.sampled_from([n, draw(prefix_len)]))
    def net(bits: int, length: int) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network((bits >> (128 - length) << (128 - length), length))
    inside = net(draw(st.integers(0, 2**128 - 1)), n)
    outside = net(draw(st.integers(0, 2**128 - 1)), m)
    host = draw(st.integers(0, 2**128 - 1)) & ((1 << (128 - max(n, m))) - 1)
    return Mapping(inside, outside), ipaddress.IPv6Address(int(inside.network_address) | host)


@settings(max_examples=2000, deadline=None)
@given(mappings_and_addresses())
def test_mapping_is_checksum_neutral_and_reversible(case: tuple[Mapping, ipaddress.IPv6Address]) -> None:
    mapping, address = case
    try:
        out = mapping.to_outside(address)
    except Dropped:
        return
    assert out in mapping.outside
    assert ones_sum(words_of(out)) % 0xFFFF == ones_sum(words_of(address)) % 0xFFFF
    assert mapping.to_inside(out) == address


# ----------------------------------------------------------------- the kernel as oracle

RECEIVER = r'''
import json, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("2001:db8:ffff::2", 5000))
s.settimeout(3)
seen = {}
try:
    while True:
        data, peer = s.recvfrom(100)
        seen[data.decode()] = peer[0]
except socket.timeout:
    pass
print(json.dumps(seen))
'''


@pytest.mark.kernel
@pytest.mark.parametrize("inside, outside", [
    ("fd01:203:405::/48", "2001:db8:1::/48"),
    ("fd01:203:405:1::/64", "2001:db8:1:2::/64"),
    ("fd00:1::/48", "2001:db8:aa00::/40"),
    ("fd00:10::/56", "2001:db8:77:100::/56"),
])
def test_kernel_snpt_maps_as_nfkit_does(lab, inside: str, outside: str) -> None:  # type: ignore[no-untyped-def]
    """Addresses sent through ip6tables' SNPT in one namespace arrive at the other as nfkit maps them."""
    mapping = Mapping.parse(inside, outside)
    rnd = random.Random(f"{inside}{outside}")
    net = mapping.inside
    hostbits = (1 << (128 - mapping.length)) - 1
    cases = [ipaddress.IPv6Address(int(net.network_address) | (rnd.getrandbits(128) & hostbits))
             for _ in range(30)]
    cases.append(ipaddress.IPv6Address(int(net.network_address) | 0x1234))
    expected = {}
    for address in cases:
        try:
            expected[str(address)] = str(mapping.to_outside(address))
        except Dropped:
            continue
    a, b = lab.add("a"), lab.add("b")
    lab.link(a, b, ["2001:db8:ffff::1/64"], ["2001:db8:ffff::2/64"])
    a.run(["ip", "-6", "route", "add", str(net), "dev", "lo"])
    a.run(["ip", "-6", "-batch", "-"], input="".join(f"addr add {x}/128 dev lo nodad\n" for x in expected))
    b.run(["ip", "-6", "route", "add", str(mapping.outside), "via", "2001:db8:ffff::1"])
    # SNPT rewrites whatever source it is given (even neighbour discovery's): match the prefix
    a.run(["ip6tables", "-t", "mangle", "-A", "POSTROUTING", "-o", "v1a", "-s", inside, "-j", "SNPT",
           "--src-pfx", inside, "--dst-pfx", outside])
    receiver = b.popen([sys.executable, "-c", RECEIVER], stdout=-1)
    b.run(["sh", "-c", "for i in $(seq 50); do ss -lun | grep -q :5000 && exit 0; sleep 0.1; done; exit 1"])
    sender = ("import socket,sys\n"
              "for x in sys.argv[1:]:\n"
              "    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.bind((x, 0))\n"
              "    s.sendto(x.encode(), ('2001:db8:ffff::2', 5000)); s.close()\n")
    a.run([sys.executable, "-c", sender, *expected])
    out, _ = receiver.communicate(timeout=20)
    seen = json.loads(out)
    assert len(expected) >= 20
    assert seen == expected
