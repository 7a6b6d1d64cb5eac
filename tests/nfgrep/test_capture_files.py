"""Capture file formats, link types, IP decoding and damaged files (frames built by hand)."""

from __future__ import annotations

import functools
import ipaddress
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.errors import InputError
from nfkit.nfgrep.capture import (
    LINK_ETHERNET,
    LINK_NULL,
    LINK_RAW,
    LINK_SLL,
    LINK_SLL2,
    CaptureReader,
    decode,
)
from nfkit.nfgrep.classify import Classifier

A4, B4 = ipaddress.ip_address("192.0.2.2").packed, ipaddress.ip_address("198.51.100.7").packed
A6, B6 = ipaddress.ip_address("2001:db8::2").packed, ipaddress.ip_address("2001:db8::7").packed


def tcp(sport: int, dport: int, seq: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv4(proto: int, l4: bytes, src: bytes = A4, dst: bytes = B4, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, frag, 64, proto, 0, src, dst) + l4


def ipv6(proto: int, l4: bytes, src: bytes = A6, dst: bytes = B6, ext: bytes = b"",
         first: int | None = None) -> bytes:
    nh = proto if first is None else first
    return struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(l4), nh, 64, src, dst) + ext + l4


def ether(payload: bytes, ethertype: int, vlans: tuple[int, ...] = ()) -> bytes:
    head = b"\x02" * 6 + b"\x04" * 6
    types = [*vlans, ethertype]
    if not vlans:
        return head + struct.pack("!H", ethertype) + payload
    # the first tag's TPID, then (TCI, next type) per tag
    out = head + struct.pack("!H", vlans[0])
    for i in range(len(vlans)):
        out += struct.pack("!HH", 100 + i, types[i + 1])
    return out + payload


def sll(payload: bytes, proto: int) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x02" * 6 + b"\0\0", proto) + payload


def sll2(payload: bytes, proto: int) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x02" * 6 + b"\0\0") + payload


def write_pcap(path: Path, link: int, frames: list[bytes], nano: bool = False,
               big: bool = False) -> None:
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 262144, link)
    for i, f in enumerate(frames):
        out += struct.pack(e + "IIII", 1700000000 + i, 5, len(f), len(f)) + f
    path.write_bytes(out)


def _block(btype: int, body: bytes) -> bytes:
    pad = b"\0" * (-len(body) % 4)
    n = 12 + len(body) + len(pad)
    return struct.pack("<II", btype, n) + body + pad + struct.pack("<I", n)


def write_pcapng(path: Path, interfaces: list[int], frames: list[tuple[int, bytes]]) -> None:
    out = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    for link in interfaces:
        out += _block(1, struct.pack("<HHI", link, 0, 262144))
    for i, (iface, f) in enumerate(frames):
        ts = (1700000000 + i) * 1_000_000
        out += _block(6, struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(f), len(f)) + f)
    path.write_bytes(out)


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_ethernet_with_two_vlan_tags_and_padding() -> None:
    frame = ether(ipv4(6, tcp(40000, 80, 7, 0x18, REQUEST)), 0x0800, vlans=(0x88A8, 0x8100))
    p = decode(LINK_ETHERNET, frame + b"\0" * 6)  # Ethernet padding is not payload
    assert p is not None
    proto, src, dst, sport, dport, flags, seq, payload, size = p
    assert (proto, src, dst, sport, dport, flags, seq) == (6, A4, B4, 40000, 80, 0x18, 7)
    assert payload == REQUEST and size == 40 + len(REQUEST)


def test_ipv6_extension_headers_are_skipped() -> None:
    hop = bytes([60, 0]) + b"\x01\x04\0\0\0\0"  # hop-by-hop -> destination options
    dst_opts = bytes([44, 0]) + b"\x01\x04\0\0\0\0"  # -> fragment
    frag = bytes([17, 0, 0, 0]) + b"\0\0\0\x01"  # first fragment, -> UDP
    pkt = ipv6(17, udp(5353, 53, b"query"), ext=hop + dst_opts + frag, first=0)
    p = decode(LINK_SLL, sll(pkt, 0x86DD))
    assert p is not None and p[:5] == (17, A6, B6, 5353, 53) and p[7] == b"query"
    later = bytes([17, 0, 0, 0x10]) + b"\0\0\0\x01"  # offset 2: no UDP header here
    assert decode(LINK_SLL, sll(ipv6(17, b"rest", ext=later, first=44), 0x86DD)) is None


def test_other_link_types() -> None:
    pkt = ipv4(17, udp(1000, 53, b"q"))
    assert decode(LINK_RAW, pkt)[:5] == (17, A4, B4, 1000, 53)  # type: ignore[index]
    assert decode(LINK_SLL2, sll2(pkt, 0x0800))[:5] == (17, A4, B4, 1000, 53)  # type: ignore[index]
    assert decode(LINK_NULL, struct.pack("<I", 2) + pkt)[:5] == (17, A4, B4, 1000, 53)  # type: ignore[index]
    assert decode(LINK_ETHERNET, ether(b"\0" * 28, 0x0806)) is None  # ARP
    assert decode(LINK_RAW, ipv4(17, udp(1, 2, b"x"), frag=5)) is None  # later fragment
    assert decode(LINK_ETHERNET, ether(ipv4(6, b"\0" * 5), 0x0800)) is None  # cut TCP header
    icmp = decode(LINK_RAW, ipv4(1, struct.pack("!BBHHH", 8, 0, 0, 4242, 1)))
    assert icmp is not None and icmp[3:5] == (4242, 4242)


@pytest.mark.parametrize("nano,big", [(False, False), (True, False), (False, True), (True, True)])
def test_pcap_variants(tmp_path: Path, nano: bool, big: bool) -> None:
    frames = [ether(ipv4(17, udp(1000 + i, 53, b"q")), 0x0800) for i in range(5)]
    path = tmp_path / "x.pcap"
    write_pcap(path, LINK_ETHERNET, frames, nano=nano, big=big)
    reader = CaptureReader(path)
    got = list(reader)
    assert [f for _, _, f in got] == frames and reader.stop is None
    assert got[0][0] == pytest.approx(1700000000 + (5e-9 if nano else 5e-6))


def test_pcapng_with_interfaces_of_different_link_types(tmp_path: Path) -> None:
    pkt = ipv4(17, udp(1000, 53, b"q"))
    path = tmp_path / "x.pcapng"
    write_pcapng(path, [LINK_ETHERNET, LINK_RAW], [(0, ether(pkt, 0x0800)), (1, pkt)])
    reader = CaptureReader(path)
    got = list(reader)
    assert [(link, decode(link, f)[:5]) for _, link, f in got] == [  # type: ignore[index]
        (LINK_ETHERNET, (17, A4, B4, 1000, 53)), (LINK_RAW, (17, A4, B4, 1000, 53))]
    assert reader.format == "pcapng" and reader.stop is None


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_truncated_files_stop_with_a_reason(tmp_path: Path, kind: str) -> None:
    frames = [ether(ipv4(17, udp(1000 + i, 53, b"q" * 50)), 0x0800) for i in range(10)]
    path = tmp_path / f"x.{kind}"
    if kind == "pcap":
        write_pcap(path, LINK_ETHERNET, frames)
    else:
        write_pcapng(path, [LINK_ETHERNET], [(0, f) for f in frames])
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    reader = CaptureReader(path)
    got = list(reader)
    assert len(got) == 9
    assert reader.stop is not None and reader.stop.packet == 10 and "truncated" in reader.stop.reason
    assert f"stopped at packet 10 (byte {reader.stop.offset})" in str(reader.stop)


def test_corrupt_record_length(tmp_path: Path) -> None:
    frames = [ether(ipv4(17, udp(1000, 53, b"q")), 0x0800)] * 3
    path = tmp_path / "x.pcap"
    write_pcap(path, LINK_ETHERNET, frames)
    data = bytearray(path.read_bytes())
    second = 24 + 16 + len(frames[0])
    data[second + 8: second + 12] = struct.pack("<I", 0x7FFFFFFF)
    path.write_bytes(bytes(data))
    reader = CaptureReader(path)
    assert len(list(reader)) == 1
    assert reader.stop is not None and reader.stop.offset == second and "corrupt" in reader.stop.reason


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("hello, world\n")
    with pytest.raises(InputError, match="not a pcap or pcapng file"):
        CaptureReader(path)
    with pytest.raises(InputError, match="No such file"):
        CaptureReader(tmp_path / "missing.pcap")



@settings(max_examples=300, deadline=None)
@given(st.sampled_from([0, 1, 12, 101, 108, 113, 228, 229, 276, 147]), st.binary(max_size=120))
def test_decode_never_raises(link: int, frame: bytes) -> None:
    p = decode(link, frame)
    assert p is None or (len(p) == 9 and p[0] >= 0)


@functools.lru_cache(maxsize=1)
def _engine() -> object:
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules

    return Engine(load_rules(None))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["pcap", "pcapng"]), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                   max_size=8))
def test_mutated_files_end_cleanly(tmp_path_factory: pytest.TempPathFactory, kind: str,
                                   edits: list[tuple[int, int]]) -> None:
    """Flipped bytes anywhere: frames come out or reading stops with a reason; never an exception."""
    frames = [ether(ipv4(6, tcp(40000, 80, 1 + i, 0x18, REQUEST)), 0x0800) for i in range(20)]
    path = tmp_path_factory.mktemp("mut") / f"x.{kind}"
    if kind == "pcap":
        write_pcap(path, LINK_ETHERNET, frames)
    else:
        write_pcapng(path, [LINK_ETHERNET], [(0, f) for f in frames])
    data = bytearray(path.read_bytes())
    for pos, value in edits:
        data[pos % len(data)] = value
    path.write_bytes(bytes(data))
    try:
        reader = CaptureReader(path)
    except InputError:
        return  # the magic itself was hit
    n = sum(1 for _ in reader)
    assert n <= 20 or kind == "pcap"
    classifier = Classifier(_engine())
    classifier.read(path)
    classifier.finish()
