"""The batch front end of classify gives what the per-packet path gives.

Two levels: the columns of `nfkit.nfgrep.batch.Batch` against `decode`, frame
by frame; and whole reports of `Classifier.read` (batches, bulk counting)
against `Classifier.read_each` (every frame through `packet`) on
hypothesis-made captures: IPv4 and IPv6, VLAN tags, fragments, truncated and
non-IP frames, retransmitted and reordered segments, reopened tuples, idle
gaps past the timeouts, a full flow table, several link types and small
batches.  The captures of real traffic are compared the same way in
test_capture_traffic.py.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nfkit.nfgrep import batch as batch_module
from nfkit.nfgrep import classify as classify_module
from nfkit.nfgrep.batch import Batch, frame_heads, from_frames, stable_order
from nfkit.nfgrep.capture import (
    LINK_ETHERNET,
    LINK_NULL,
    LINK_RAW,
    LINK_SLL,
    LINK_SLL2,
    decode,
)
from nfkit.nfgrep.classify import Classifier
from nfkit.nfgrep.engine import Engine
from nfkit.nfgrep.loader import load_rules
from tests.nfgrep.test_capture_files import A4, A6, B4, B6, ether, ipv4, ipv6, sll, sll2, tcp, udp

RULES = load_rules(None)
SAYS = [b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n", b"SSH-2.0-x\r\n",
        b"\x16\x03\x01\x00\x05hello", b"x" * 40, b"220 hi\r\n", b"EHLO a\r\n",
        b"227 Entering Passive Mode (198,51,100,7,4,1).\r\n", b"PASV\r\n"]
C4 = bytes([203, 0, 113, 9])


def _wrap(link: int, packet: bytes, vlans: tuple[int, ...] = ()) -> bytes:
    v6 = packet[0] >> 4 == 6
    et = 0x86DD if v6 else 0x0800
    if link == LINK_ETHERNET:
        return ether(packet, et, vlans)
    if link == LINK_SLL:
        return sll(packet, et)
    if link == LINK_SLL2:
        return sll2(packet, et)
    if link == LINK_NULL:
        return struct.pack("<I", 30 if v6 else 2) + packet
    return packet


# -- frames: one event each ------------------------------------------------------------

PACKET = st.tuples(
    st.integers(0, 5),                       # flow
    st.sampled_from(["syn", "synack", "data", "ack", "fin", "rst", "udp", "icmp", "frag",
                     "arp", "cut", "v6ext"]),
    st.integers(0, 1),                       # direction
    st.integers(0, len(SAYS) - 1),           # payload
    st.integers(-3, 60),                     # sequence offset (retransmissions, holes)
    st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.3, 1.5, 45.0, 200.0]),  # time since the previous
    st.sampled_from([(), (), (0x8100,), (0x88A8, 0x8100)]),          # VLAN tags (Ethernet)
)


def _packet(event: tuple) -> bytes:  # type: ignore[type-arg]
    flow, kind, d, say, off, _, _ = event
    v6 = flow % 3 == 2
    a, b = (A6, B6) if v6 else ((A4, B4) if flow % 3 == 0 else (C4, B4))
    port = (80, 21, 1025, 443, 53, 22)[flow]
    sport, dport, src, dst = (40000 + flow, port, a, b) if d == 0 else (port, 40000 + flow, b, a)
    ip = ipv6 if v6 else ipv4
    base = 1000 if d == 0 else 5000
    if kind == "udp":
        return ip(17, udp(sport, dport, SAYS[say]), src, dst)
    if kind == "icmp":
        return ip(58 if v6 else 1, struct.pack("!BBHHH", 128 if v6 else 8, 0, 0, 7, 1), src, dst)
    if kind == "frag" and not v6:
        return ipv4(17, udp(sport, dport, b"rest"), src, dst, frag=off % 8 + 1)
    if kind == "arp":
        return b"\x00\x01\x08\x00\x06\x04" + b"\0" * 22
    if kind == "v6ext":
        hop = bytes([6, 0]) + b"\x01\x04\0\0\0\0"
        return ipv6(6, tcp(sport, dport, base + off, 0x18, SAYS[say]), A6, B6, ext=hop, first=0)
    flags = {"syn": 0x02, "synack": 0x12, "data": 0x18, "ack": 0x10, "fin": 0x11, "rst": 0x04,
             "cut": 0x18, "frag": 0x18}[kind]
    seq = base - 1 if kind in ("syn", "synack") else base + off
    payload = SAYS[say] if kind in ("data", "cut", "frag") else b""
    pkt = ip(6, tcp(sport, dport, seq, flags, payload), src, dst)
    if kind == "cut":
        return pkt[:max(1, (off * 7) % len(pkt))]
    return pkt


def _capture(events: list[tuple], link: int) -> list[tuple[float, int, bytes]]:  # type: ignore[type-arg]
    frames = []
    t = 1700000000.0
    for ev in events:
        t += ev[5]
        pkt = _packet(ev)
        if ev[1] == "arp":
            frame = ether(pkt, 0x0806) if link == LINK_ETHERNET else pkt
        else:
            frame = _wrap(link, pkt, ev[6] if link == LINK_ETHERNET else ())
        frames.append((t, link, frame))
    return frames


def _write(path: Path, frames: list[tuple[float, int, bytes]]) -> None:
    link = frames[0][1] if frames else LINK_RAW
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link)
    for ts, _, f in frames:
        sec = int(ts)
        out += struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(f), len(f)) + f
    path.write_bytes(out)


LINKS = st.sampled_from([LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_SLL2, LINK_NULL])


@settings(max_examples=150, deadline=None)
@given(events=st.lists(PACKET, max_size=30), link=LINKS, rows=st.sampled_from([1, 2, 3, 7, 8192]),
       scalar=st.booleans())
def test_columns_are_what_decode_says(events: list[tuple], link: int, rows: int,  # type: ignore[type-arg]
                                      scalar: bool) -> None:
    """Frames parsed ``rows`` at a time (runs of one key across the pieces), with one link type
    for all or one per frame."""
    frames = _capture(events, link)
    if not frames:
        return
    with pytest.MonkeyPatch.context() as m:
        m.setattr(batch_module, "_ROWS", rows)
        b = from_frames(frames)
        if scalar:
            b = Batch(b.buf, b.ts, b.start, np.array([len(f) for _, _, f in frames]), link)
    keys: dict[tuple, int] = {}  # type: ignore[type-arg]
    for i, (_, lk, frame) in enumerate(frames):
        want = decode(lk, frame)
        assert bool(b.valid[i]) == (want is not None)
        if want is None:
            continue
        assert b.decoded(i) == want
        # one group per unordered pair of endpoints and transport
        proto, src, dst, sport, dport = want[:5]
        key = (proto, frozenset(((src, sport), (dst, dport))))
        assert keys.setdefault(key, int(b.group[i])) == int(b.group[i])
        lower = min((src, sport), (dst, dport), key=lambda e: (len(e[0]) == 16, e))
        if len(src) == len(dst) and (src, sport) != (dst, dport):
            assert int(b.orient[i]) == (0 if (src, sport) == lower else 1)
    assert len(set(keys.values())) == len(keys)



@settings(max_examples=60, deadline=None)
@given(events=st.lists(PACKET, min_size=1, max_size=30), link=LINKS, junk=st.binary(min_size=16, max_size=16))
def test_rows_that_begin_with_the_record_header_give_the_same_columns(
        events: list[tuple], link: int, junk: bytes) -> None:  # type: ignore[type-arg]
    """`classify` gathers each pcap record header and its frame's first bytes as one row
    (``skip=16``): the columns are those of rows holding the frame's bytes alone."""
    frames = _capture(events, link)
    if not frames:
        return
    plain = from_frames(frames)
    rows = frame_heads(plain.buf, plain.start)
    prefixed = np.hstack([np.frombuffer(junk * len(rows), dtype=np.uint8).reshape(-1, 16), rows])
    caplen = np.array([len(fr) for _, _, fr in frames], dtype=np.int64)
    links = np.array([lk for _, lk, _ in frames], dtype=np.int64)
    skipped = Batch(plain.buf, plain.ts, plain.start, caplen, links, head=prefixed, skip=16)
    for name in ("valid", "proto", "sport", "dport", "flags", "seq", "pstart", "pend", "size",
                 "addr_at", "group", "orient", "first", "v6"):
        assert np.array_equal(getattr(skipped, name), getattr(plain, name)), name
    for side in ("a", "b"):
        for k in (0, 1):
            assert np.array_equal(getattr(skipped, side)[k], getattr(plain, side)[k]), side
    assert skipped.slow == plain.slow

def _report(frames: list[tuple[float, int, bytes]], path: Path, batched: bool,
            **options: int | bool) -> tuple:  # type: ignore[type-arg]
    _write(path, frames)
    cl = Classifier(Engine(RULES), **options)
    (cl.read if batched else cl.read_each)(path)
    rep = cl.finish()
    return (rep.flows, rep.packets, rep.skipped, rep.evicted, rep.gaps, rep.budget_evicted,
            [s.reason for s in rep.stops])


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches, bulk runs and walk restarts small enough for hypothesis-sized captures."""
    monkeypatch.setattr(classify_module, "BATCH", 7)
    monkeypatch.setattr(classify_module, "SPAN", 300)
    monkeypatch.setattr(classify_module, "RUN_MIN", 1)
    monkeypatch.setattr(classify_module, "WALK_SLICE", 3)
    monkeypatch.setattr(classify_module, "RESLICE", 2)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(PACKET, max_size=40), link=LINKS, max_flows=st.sampled_from([1 << 20, 3, 1]),
       lazy=st.booleans(), max_memory=st.sampled_from([classify_module.MAX_MEMORY, 9000, 13000]))
def test_batches_give_the_per_packet_report(small_batches: None, tmp_path: Path, events: list[tuple],  # type: ignore[type-arg]
                                            link: int, max_flows: int, lazy: bool, max_memory: int) -> None:
    """Small budgets too: which undecided flow the budget gives up on first depends on the
    order in which their packets came, payload or not."""
    frames = _capture(events, link)
    if not frames:
        return
    options = {"max_flows": max_flows, "lazy": lazy, "max_memory": max_memory}
    batched = _report(frames, tmp_path / "a.pcap", True, **options)
    each = _report(frames, tmp_path / "b.pcap", False, **options)
    assert batched == each




@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(PACKET, max_size=40), back=st.lists(st.sampled_from([0.0, 0.0, 0.0, -0.4, -25.0]),
                                                           max_size=40),
       piece_max=st.sampled_from([0, 3, 65536]), batch=st.sampled_from([7, 64]))
def test_pieces_merged_over_quiet_sweeps_give_the_per_packet_report(
        small_batches: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, events: list[tuple],  # type: ignore[type-arg]
        back: list[float], piece_max: int, batch: int) -> None:
    """A piece goes on over the sweeps that can end no flow (`Classifier._batch`): timeouts of
    seconds due inside a batch, and times that go back (after which every sweep cuts again)."""
    from nfkit.flow.timeouts import Timeouts

    monkeypatch.setattr(classify_module, "PIECE_MAX", piece_max)
    monkeypatch.setattr(classify_module, "BATCH", batch)
    frames = _capture(events, LINK_RAW)
    if not frames:
        return
    shift = 0.0
    for i, dt in enumerate(back[:len(frames)]):
        shift += dt
        frames[i] = (frames[i][0] + shift, frames[i][1], frames[i][2])
    short = {"timeouts": Timeouts(tcp_close=2, tcp_time_wait=4, tcp_syn_sent=3, udp=1.5, icmp=1,
                                  generic=5)}
    batched = _report(frames, tmp_path / "a.pcap", True, **short)  # type: ignore[arg-type]
    assert batched == _report(frames, tmp_path / "b.pcap", False, **short)  # type: ignore[arg-type]

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(PACKET, max_size=40), link=LINKS, lazy=st.booleans(),
       max_memory=st.sampled_from([classify_module.MAX_MEMORY, 9000, 13000]), batched=st.booleans())
@example(events=[(0, "syn", 0, 0, 0, 0.0, ()), (0, "data", 0, 0, 5, 0.0, ())], link=LINK_RAW,
         lazy=True, max_memory=classify_module.MAX_MEMORY, batched=True)  # a hole before it
@example(events=[(1, "data", 0, 4, 0, 0.0, ()), (2, "data", 0, 4, 0, 0.0, ()),
                 (0, "data", 0, 0, 0, 0.0, ())], link=LINK_RAW, lazy=True, max_memory=13000,
         batched=False)  # the general way, starting the third flow gives the first one up
def test_the_first_payloads_fast_path_gives_the_general_paths_report(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, events: list[tuple], link: int,  # type: ignore[type-arg]
        lazy: bool, max_memory: int, batched: bool) -> None:
    """A waiting flow's first payload fed to the engine before the flow has streams
    (`Classifier._first_payload`) gives what starting it the general way gives: first
    segments out of order, retransmitted, after a SYN or without one, budgets that give
    flows up, flows decided at once or not."""
    frames = _capture(events, link)
    if not frames:
        return
    options = {"lazy": lazy, "max_memory": max_memory}
    fast = _report(frames, tmp_path / "a.pcap", batched, **options)
    with monkeypatch.context() as m:
        m.setattr(classify_module, "FIRST_FEED", False)
        general = _report(frames, tmp_path / "b.pcap", batched, **options)
    assert fast == general


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(["control", "data", "http"]), min_size=1, max_size=6),
       picks=st.lists(st.integers(0, 5), max_size=60),
       max_memory=st.sampled_from([classify_module.MAX_MEMORY, 12000]))
def test_the_first_payloads_fast_path_keeps_announcements_and_budgets(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kinds: list[str], picks: list[int],
        max_memory: int) -> None:
    """FTP control flows (decided by their first payload, then watching for PASV), data flows
    labelled by the announcement, HTTP: the same report with and without the fast path."""
    frames = _ftp_frames(kinds, picks, [])
    fast = _report(frames, tmp_path / "a.pcap", True, max_memory=max_memory)
    with monkeypatch.context() as m:
        m.setattr(classify_module, "FIRST_FEED", False)
        general = _report(frames, tmp_path / "b.pcap", True, max_memory=max_memory)
    assert fast == general


def test_a_pure_ack_makes_an_undecided_flow_the_latest_for_the_budget(tmp_path: Path) -> None:
    """The walk passes a payload-less ACK of an undecided flow by without `_track`; the flow
    must still become the most recent one, so the budget gives up on the other first."""
    events = [(0, "syn", 0, 0, 0, 0.001, ()), (0, "synack", 1, 0, 0, 0.001, ()),
              (3, "syn", 0, 0, 0, 0.001, ()), (3, "synack", 1, 0, 0, 0.001, ()),
              (5, "syn", 0, 0, 0, 0.001, ()), (5, "synack", 1, 0, 0, 0.001, ()),
              (0, "data", 0, 4, 0, 0.001, ()), (3, "data", 0, 4, 0, 0.001, ()),
              (0, "ack", 1, 0, 0, 0.001, ()),  # flow 0 is now more recent than flow 3
              (5, "data", 0, 4, 0, 0.001, ())]  # a third flow to inspect: one must go
    frames = _capture(events, LINK_ETHERNET)
    batched = _report(frames, tmp_path / "a.pcap", True, max_memory=10000)
    assert [(f.server.rsplit(":", 1)[1], f.evicted) for f in batched[0]] == \
        [("80", False), ("443", True), ("22", False)]
    assert batched == _report(frames, tmp_path / "b.pcap", False, max_memory=10000)

def test_a_long_decided_flow_is_counted_in_bulk(tmp_path: Path) -> None:
    """After the decision, the flow's packets reach neither the engine nor _track."""
    events = [(0, "syn", 0, 0, 0, 0.0, ()), (0, "synack", 1, 0, 0, 0.0, ()),
              (0, "data", 0, 0, 0, 0.0, ()), (0, "data", 1, 1, 0, 0.0, ())]
    events += [(0, "ack", i % 2, 0, 40, 0.001, ()) for i in range(3000)]
    frames = _capture(events, LINK_ETHERNET)
    _write(tmp_path / "a.pcap", frames)
    cl = Classifier(Engine(RULES))
    calls = []
    track = cl._track
    cl._track = lambda *a: calls.append(a) or track(*a)  # type: ignore[method-assign]
    cl.read(tmp_path / "a.pcap")
    (flow,) = cl.finish().flows
    assert flow.app == "http" and flow.packets == [1502, 1502]
    assert len(calls) < 20
    assert _report(frames, tmp_path / "b.pcap", True) == _report(frames, tmp_path / "c.pcap", False)


def test_a_collision_of_the_key_hash_splits_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hash only orders keys: frames of different flows never share a group."""
    from nfkit.nfgrep import batch

    monkeypatch.setattr(batch, "_MIX", np.uint64(0))  # every key hashes to 0
    frames = _capture([(f, "udp", f % 2, 0, 0, 0.0, ()) for f in range(6)] * 2, LINK_RAW)
    b = from_frames(frames)
    assert b.ngroups == 6 and b.group.tolist() == list(range(6)) * 2


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 12), max_size=60), bits=st.sampled_from([0, 1, 3, 20, 64]))
def test_leads_are_each_keys_first_item(keys: list[int], bits: int) -> None:
    """`_leads` gives each item the first item with its key, whatever the hash: hashes that
    share a slot (few distinct bits), or all 64 bits, for different keys."""
    n = len(keys)
    cols = [np.array([k % 5 for k in keys], dtype=np.uint64), np.array([k // 5 for k in keys], dtype=np.uint64)]
    mix = np.array([(k * 0x9E3779B97F4A7C15) & ((1 << 64) - 1) for k in keys], dtype=np.uint64)
    h = mix >> np.uint64(64 - bits) << np.uint64(64 - bits) if bits else np.zeros(n, dtype=np.uint64)
    lead = batch_module._leads(h, cols, n)
    assert lead.tolist() == [keys.index(k) for k in keys]


@settings(max_examples=100, deadline=None)
@given(slots=st.lists(st.integers(0, 6), max_size=40))
def test_a_slots_first_item_by_sorting_is_the_tables(slots: list[int]) -> None:
    """The sort `_leads` falls back to, should numpy write a fancy assignment in another
    order, gives each item the first item of its slot, as the table does."""
    todo = np.arange(0, 3 * len(slots), 3, dtype=np.int64)  # ascending, not 0..n-1
    slot = np.array(slots, dtype=np.intp)
    want = [int(todo[slots.index(k)]) for k in slots]
    assert batch_module._slot_firsts(slot, todo).tolist() == want
    table = np.empty(8, dtype=np.int64)
    table[slot[::-1]] = todo[::-1]
    assert table[slot].tolist() == want


def _conv(port: int, reply: bool, t: float) -> list[tuple[float, int, bytes]]:
    """Handshake and a request (and its reply): an HTTP flow decided, or left waiting."""
    c, s = (A4, 40000 + port), (B4, port)
    out = [(c, s, 999, 0x02, b""), (s, c, 4999, 0x12, b""), (c, s, 1000, 0x10, b""),
           (c, s, 1000, 0x18, SAYS[0])]
    if reply:
        out.append((s, c, 5000, 0x18, SAYS[1]))
    return [(t + i * 0.001, LINK_RAW, ipv4(6, tcp(a[1], b[1], seq, fl, data), a[0], b[0]))
            for i, (a, b, seq, fl, data) in enumerate(out)]


def _ack(port: int, t: float, d: int = 0, flags: int = 0x10, seq: int = 1100) -> tuple[float, int, bytes]:
    c, s = (A4, 40000 + port), (B4, port)
    a, b = (c, s) if d == 0 else (s, c)
    return (t, LINK_RAW, ipv4(6, tcp(a[1], b[1], seq, flags, b""), a[0], b[0]))


def test_bulk_counted_flows_keep_their_place_in_the_idle_order(small_batches: None,
                                                               tmp_path: Path) -> None:
    """A flow counted in bulk after another's careful packet is the more recently seen.

    B (undecided, walked) is seen at 2.0, A (decided, counted in bulk) until
    2.5; at 7.3 the sweep ends B (idle 5.3 s > 5) but not A (4.8 s): only
    if A stands after B in the idle order.
    """
    from nfkit.flow.timeouts import Timeouts

    frames = _conv(80, True, 0.0) + _conv(8080, False, 0.1)
    frames.append((2.0, LINK_RAW, ipv4(6, tcp(48080, 8080, 1000 + len(SAYS[0]), 0x18, b"more"), A4, B4)))
    frames += [_ack(80, 2.1 + i * 0.05, i % 2) for i in range(9)]
    frames.append((7.3, LINK_RAW, ipv4(17, udp(5000, 53, b"x" * 20), A4, B4)))
    frames.append((7.4, LINK_RAW, ipv4(6, tcp(48080, 8080, 2000, 0x18, b"late"), A4, B4)))
    frames = [(t + 1700000000.0, lk, f) for t, lk, f in frames]
    short = {"timeouts": Timeouts(tcp_established=5)}
    batched = _report(frames, tmp_path / "a.pcap", True, **short)  # type: ignore[arg-type]
    assert batched == _report(frames, tmp_path / "b.pcap", False, **short)  # type: ignore[arg-type]
    assert [f.server for f in batched[0]].count(f"{'198.51.100.7'}:8080") == 2


def test_a_flow_reopened_after_bulk_packets_ends_at_its_last_packet(small_batches: None,
                                                                    tmp_path: Path) -> None:
    frames = _conv(80, True, 0.0)
    frames.append(_ack(80, 1.0, 0, flags=0x14))  # RST: closed, decided
    frames += [_ack(80, 1.1 + i * 0.01, i % 2) for i in range(12)]  # counted in bulk
    frames.append(_ack(80, 1.5, 0, flags=0x02, seq=7000))  # SYN: the tuple opens again
    frames = [(t + 1700000000.0, lk, f) for t, lk, f in frames]
    batched = _report(frames, tmp_path / "a.pcap", True)
    assert batched == _report(frames, tmp_path / "b.pcap", False)
    first = batched[0][0]
    assert first.app == "http" and first.last == pytest.approx(1700000000.0 + 1.1 + 11 * 0.01)


def test_a_careful_packet_after_bulk_ones_sets_the_last_seen_time(small_batches: None,
                                                                 tmp_path: Path) -> None:
    frames = _conv(80, True, 0.0)
    frames += [_ack(80, 1.1 + i * 0.01, i % 2) for i in range(12)]  # counted in bulk
    frames.append(_ack(80, 1.5, 0, flags=0x11))  # FIN: walked
    frames = [(t + 1700000000.0, lk, f) for t, lk, f in frames]
    batched = _report(frames, tmp_path / "a.pcap", True)
    assert batched == _report(frames, tmp_path / "b.pcap", False)
    assert batched[0][0].last == pytest.approx(1700000001.5)


def test_an_ipv6_next_header_is_read_whole() -> None:
    # next header 38 (0x26): its low five bits say TCP (6); it is not TCP
    pkt = bytearray(ipv6(6, tcp(1234, 80, 1, 0x02, b"GET / HTTP/1.1\r\n")))
    pkt[6] = 38
    want = decode(LINK_RAW, bytes(pkt))
    assert want is not None and want[0] == 38
    assert from_frames([(1.0, LINK_RAW, bytes(pkt))]).decoded(0) == want



def test_the_farthest_headers_lie_in_the_gathered_bytes() -> None:
    """The parse reads each frame's first HEAD bytes: the TCP flags behind 40 bytes of IPv4
    options and a VLAN tag (or an SLL2 header) are the farthest it reads, and are read right."""
    options = b"\x01" * 40  # NOPs
    l4 = tcp(1234, 80, 7, 0x18, b"GET / HTTP/1.1\r\n")
    pkt = struct.pack("!BBHHHBBH4s4s", 0x4F, 0, 60 + len(l4), 1, 0, 64, 6, 0, A4, B4) + options + l4
    for link, frame, flags_at in ((LINK_ETHERNET, ether(pkt, 0x0800, (0x8100,)), 18 + 60 + 13),
                                  (LINK_SLL2, sll2(pkt, 0x0800), 20 + 60 + 13)):
        assert flags_at < batch_module.HEAD
        want = decode(link, frame)
        assert want is not None and want[7] == b"GET / HTTP/1.1\r\n"
        b = from_frames([(1.0, link, frame)])
        assert 0 not in b.slow and b.decoded(0) == want

# -- decided flows: their TCP state changes counted in bulk ----------------------------

TEARDOWN = st.lists(st.tuples(
    st.integers(0, 2),                                                   # flow
    st.integers(0, 1),                                                   # direction
    st.sampled_from([0x10, 0x11, 0x19, 0x14, 0x04, 0x02, 0x12, 0x03, 0x05, 0x01, 0x00, 0x18]),
    st.sampled_from([0.0, 0.001, 0.4, 3.0, 12.0]),                       # time since the previous
), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(after=TEARDOWN, decided=st.lists(st.booleans(), min_size=3, max_size=3),
       small=st.booleans(), max_flows=st.sampled_from([1 << 20, 2]))
@example(after=[(0, 1, 0x14, 2.0), (0, 0, 0x10, 0.0), (1, 0, 0x11, 0.0), (0, 0, 0x02, 0.001),
                (0, 1, 0x12, 0.001), (1, 1, 0x11, 0.0)],
         decided=[True, True, False], small=False, max_flows=1 << 20)
@example(after=[(0, 0, 0x11, 0.0), (0, 1, 0x19, 0.001), (0, 0, 0x10, 0.001), (0, 0, 0x02, 0.3),
                (0, 1, 0x04, 0.0), (0, 0, 0x02, 0.0)],
         decided=[True, False, True], small=True, max_flows=1 << 20)
def test_state_changes_of_decided_flows_give_the_per_packet_report(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, after: list[tuple[int, int, int, float]],
        decided: list[bool], small: bool, max_flows: int) -> None:
    """FIN, RST, SYN (a reused tuple), SYN+FIN... after the decision, in any order and direction.

    Flows decided (or left waiting) and then sent flags sequences: the
    batched path (state changes worked out in bulk) against every packet
    through `packet`, with timeouts short enough to end closed flows between
    packets, whole batches and small ones.
    """
    from nfkit.flow.timeouts import Timeouts

    if small:
        for name, value in (("BATCH", 11), ("SPAN", 700), ("RUN_MIN", 1), ("WALK_SLICE", 4),
                            ("RESLICE", 2)):
            monkeypatch.setattr(classify_module, name, value)
    frames = []
    for f, ok in enumerate(decided):
        frames += _conv(80 + f, ok, f * 0.01)
    t = 0.1
    for f, d, flags, dt in after:
        t += dt
        seq = 7000 if flags & 0x02 else 1100 + int(t * 10)
        frames.append(_ack(80 + f, t, d, flags=flags, seq=seq))
    frames = [(ts + 1700000000.0, lk, fr) for ts, lk, fr in frames]
    short = {"timeouts": Timeouts(tcp_close=5, tcp_time_wait=10, tcp_last_ack=7), "max_flows": max_flows}
    batched = _report(frames, tmp_path / "a.pcap", True, **short)  # type: ignore[arg-type]
    assert batched == _report(frames, tmp_path / "b.pcap", False, **short)  # type: ignore[arg-type]


def test_a_decided_flows_teardown_is_counted_in_bulk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FIN, ACK, FIN, ACK after the decision: counted in bulk, state and timeout class as one by one."""
    # every sweep cuts the batch (none is merged over): the teardown comes in a piece of its own
    monkeypatch.setattr(classify_module, "PIECE_MAX", 0)
    frames: list[tuple[float, int, bytes]] = []
    for f in range(20):
        frames += _conv(1000 + f, True, f * 0.01)
    teardown = [(0, 0x11), (1, 0x10), (1, 0x11), (0, 0x10)]
    for k, (d, flags) in enumerate(teardown):
        frames += [_ack(1000 + f, 1.0 + k * 0.1 + f * 0.001, d, flags=flags) for f in range(20)]
    frames.append(_ack(1000, 1.9, 0, flags=0x02, seq=9000))  # the first tuple used again: a new flow
    frames = [(t + 1700000000.0, lk, fr) for t, lk, fr in frames]
    _write(tmp_path / "a.pcap", frames)
    cl = Classifier(Engine(RULES))
    calls: list[tuple] = []  # type: ignore[type-arg]
    step = cl.table.step
    cl.table.step = lambda *a: calls.append(a) or step(*a)  # type: ignore[method-assign]
    cl.read(tmp_path / "a.pcap")
    assert calls and not [c for c in calls if c[5] & 0x01]  # no FIN went one by one
    assert cl.table.tcp_state(cl.table.find(6, A4, B4, 41001, 1001) >> 1).name == "TIME_WAIT"
    rep = cl.finish()
    assert len(rep.flows) == 21
    first = [r for r in rep.flows if r.client.endswith(":41000")]
    assert [r.packets for r in first] == [[5, 4], [1, 0]]
    assert _report(frames, tmp_path / "b.pcap", True) == _report(frames, tmp_path / "c.pcap", False)


# -- flow-major walk: FTP control flows announcing, data flows begun before and after ------

PASV = b"227 Entering Passive Mode (198,51,100,7,4,1).\r\n"  # B4, port 1025


def _script(kind: str, k: int) -> list[tuple[int, int, bytes]]:
    """One flow's packets as (direction, TCP flags, payload)."""
    hand = [(0, 0x02, b""), (1, 0x12, b""), (0, 0x10, b"")]
    if kind == "control":
        return hand + [(1, 0x18, b"220 hi\r\n"), (0, 0x18, b"USER x\r\n"), (1, 0x18, PASV),
                       (0, 0x10, b""), (1, 0x18, PASV), (0, 0x11, b""), (1, 0x11, b""),
                       (0, 0x10, b"")]
    if kind == "data":  # to the announced port; then its tuple closed and opened again
        return hand + [(1, 0x18, b"x" * 40), (0, 0x10, b""), (0, 0x04, b"")] + hand + \
            [(0, 0x18, SAYS[0])]
    return hand + [(0, 0x18, SAYS[0]), (1, 0x18, SAYS[1]), (0, 0x10, b"")]


def _ftp_frames(kinds: list[str], picks: list[int], gaps: list[float]) -> list[tuple[float, int, bytes]]:
    """The flows' packets interleaved: ``picks`` says whose packet comes next."""
    ports = {"control": 21, "data": 1025, "http": 80}
    scripts = [_script(kind, k) for k, kind in enumerate(kinds)]
    seqs = [[1000, 5000] for _ in kinds]
    at = [0] * len(kinds)
    order = [p % len(kinds) for p in picks] + [k for k, sc in enumerate(scripts) for _ in sc]
    frames = []
    t = 1700000000.0
    for n, k in enumerate(order):
        if at[k] >= len(scripts[k]):
            continue
        d, flags, payload = scripts[k][at[k]]
        at[k] += 1
        c, s = (C4 if kinds[k] == "data" else A4, 40000 + k), (B4, ports[kinds[k]])
        a, b = (c, s) if d == 0 else (s, c)
        seq = seqs[k][d]
        seqs[k][d] += len(payload) + (1 if flags & 0x03 else 0)
        if flags == 0x02 and at[k] > 1:  # the tuple opened again: a new sequence space
            seqs[k] = [seq + 100000, 5000]
            seq = seqs[k][0] - 1 + 1
            seqs[k][0] += 1
        t += gaps[n % len(gaps)] if gaps else 0.001
        frames.append((t, LINK_RAW, ipv4(6, tcp(a[1], b[1], seq, flags, payload), a[0], b[0])))
    return frames


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(["control", "data", "http"]), min_size=1, max_size=6),
       picks=st.lists(st.integers(0, 5), max_size=60),
       gaps=st.lists(st.sampled_from([0.001, 0.001, 0.2, 45.0]), max_size=5),
       small=st.booleans(), max_memory=st.sampled_from([classify_module.MAX_MEMORY, 12000]))
@example(kinds=["data", "control", "data"], picks=[0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2],
         gaps=[], small=False, max_memory=classify_module.MAX_MEMORY)
def test_the_flow_major_walk_gives_the_capture_order_report(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kinds: list[str], picks: list[int],
        gaps: list[float], small: bool, max_memory: int) -> None:
    """Flow by flow, flow-major (the default), capture order and packet by packet agree:
    announcements (PASV) made before and after data flows to the announced port begin,
    tuples reopened, sweeps, small batches, budgets that give flows up."""
    with monkeypatch.context() as m:
        if small:
            m.setattr(classify_module, "BATCH", 7)
            m.setattr(classify_module, "SPAN", 300)
        frames = _ftp_frames(kinds, picks, gaps)
        reports = [_report(frames, tmp_path / f"{i}.pcap", batched, max_memory=max_memory,
                           flow_major=major)
                   for i, (batched, major) in enumerate(((True, True), (True, False), (False, False)))]
    assert reports[0] == reports[1] == reports[2]


def test_a_data_flow_begun_before_the_announcement_is_not_labelled_by_it(tmp_path: Path) -> None:
    """Flow-major, the control flow's PASV is read before the data flow is walked: the data
    flow began earlier, so (as in capture order) it is not ftp-data; the one begun after is."""
    kinds = ["control", "data", "data"]
    # control's handshake, then data flow 1 opens, then the PASV, then data flow 2
    picks = [0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    frames = _ftp_frames(kinds, picks, [])
    major = _report(frames, tmp_path / "a.pcap", True, flow_major=True)
    assert major == _report(frames, tmp_path / "b.pcap", False)
    apps = [(f.client.rsplit(":", 1)[1], f.app) for f in major[0]]
    # (each data tuple is closed and opened again later: the second flows take the second PASV;
    # the one left sends an HTTP request, which is http on its own)
    assert apps == [("40000", "ftp"), ("40001", None), ("40002", "ftp-data"), ("40001", "ftp-data"),
                    ("40002", "http")]


def test_a_flow_major_piece_leaves_the_budgets_idle_order_of_capture_order(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A piece walked flow by flow feeds A's two segments before B's one, though B's came
    between them; a later piece, near the budget, gives up on the flow idle the longest:
    B, as in capture order (the walk restores the idle order after a flow-major piece)."""
    monkeypatch.setattr(classify_module, "BATCH", 3)
    head, more = b"GET / HTTP/1.1\r\nHost: a", b"b\r\nX-Y: 1"  # headers never end: undecided
    frames = []
    t = 1700000000.0
    for k, (port, seq, data) in enumerate([(1, 1000, head), (2, 1000, head),
                                           (1, 1000 + len(head), more)]
                                          + [(p, 1000, head) for p in range(3, 12)]):
        frames.append((t + k * 0.001, LINK_RAW, ipv4(6, tcp(40000 + port, 80, seq, 0x18, data), A4, B4)))
    alone = []  # budgets at which one flow only was given up on
    for budget in range(30000, 52000, 1000):
        major = _report(frames, tmp_path / "a.pcap", True, max_memory=budget)
        assert major == _report(frames, tmp_path / "b.pcap", False, max_memory=budget), budget
        evicted = [f.client for f in major[0] if f.evicted]
        if len(evicted) == 1:
            alone += evicted
    assert alone and set(alone) == {"192.0.2.2:40002"}  # B, never A


@settings(max_examples=100, deadline=None)
@given(buf=st.binary(min_size=1, max_size=400), picks=st.lists(st.integers(0, 399), max_size=20),
       width=st.sampled_from([1, 16, 96, 112]))
def test_frame_heads_are_each_frames_first_bytes_zero_padded(buf: bytes, picks: list[int],
                                                             width: int) -> None:
    start = np.array([p % len(buf) for p in picks], dtype=np.int64)
    got = frame_heads(buf, start, width)
    assert got.shape == (len(start), width) and got.dtype == np.uint8
    for row, at in zip(got.tolist(), start.tolist(), strict=True):
        assert bytes(row) == buf[at:at + width].ljust(width, b"\0")


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.integers(0, (1 << 17) - 1), max_size=300), bound=st.sampled_from([1 << 16, 1 << 17]))
def test_stable_order_is_numpys_stable_argsort(keys: list[int], bound: int) -> None:
    a = np.array([k % bound for k in keys], dtype=np.int64)
    assert np.array_equal(stable_order(a, bound), np.argsort(a, kind="stable"))
