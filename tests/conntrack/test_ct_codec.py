"""Entry model, wire codec, formats and filters without the kernel (round trips, properties)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.conntrack import Entry, Filter, Status, Tuple, filter_from_options, formats, wire
from nfkit.conntrack.filter import Prefix
from nfkit.errors import DecodeError, InputError
from nfkit.netlink.codec import MessageWriter, iter_attrs, parse_messages
from nfkit.netlink.consts import NLM_F_CREATE

V4 = st.sampled_from(["192.0.2.1", "192.0.2.200", "198.51.100.7", "203.0.113.9", "0.0.0.0"])
V6 = st.sampled_from(["2001:db8::1", "2001:db8:1::2", "2001:db8:ffff::abcd", "::1"])
PORT = st.integers(0, 65535)


@st.composite
def tuples(draw: st.DrawFn, family: int, proto: int) -> Tuple:
    addr = V6 if family == 10 else V4
    src, dst = draw(addr), draw(addr)
    if proto in (6, 17, 132):
        return Tuple(src, dst, proto, draw(PORT), draw(PORT))
    if proto in (1, 58):
        itype = draw(st.sampled_from([8, 13] if proto == 1 else [128]))
        return Tuple(src, dst, proto, 0, 0, itype, 0, draw(PORT))
    return Tuple(src, dst, proto)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    family = draw(st.sampled_from([2, 10]))
    proto = draw(st.sampled_from([6, 17, 132] + ([1] if family == 2 else [58])))
    orig = draw(tuples(family, proto))
    reply = None
    if draw(st.booleans()) and proto in (6, 17, 132):
        reply = draw(tuples(family, proto))
    status = draw(st.integers(0, 0xFFFF)) & ~int(Status.DYING)
    state = draw(st.integers(0, 9)) if proto == 6 else None
    return Entry(orig, reply, status=status | Status.CONFIRMED, state=state,
                 timeout=draw(st.integers(0, 1 << 31)), mark=draw(st.integers(0, 0xFFFFFFFF)),
                 zone=draw(st.one_of(st.none(), st.integers(1, 0xFFFF))),
                 labels=draw(st.one_of(st.none(), st.integers(1, (1 << 128) - 1))),
                 id=draw(st.integers(0, 0xFFFFFFFF)), use=draw(st.integers(1, 5)))


RESTORED = ("family", "orig", "_reply", "status", "state", "timeout", "mark", "zone", "labels",
            "id", "use")


@given(entries())
@settings(max_examples=150, deadline=None)
def test_json_round_trip(e: Entry) -> None:
    line = formats.entry_json(e)
    back = formats.entry_from_json(json.loads(line))
    for name in RESTORED:
        assert getattr(back, name) == getattr(e, name), name
    assert "\n" not in line


DECODER = wire.EntryDecoder()  # shared across examples: layouts are reused and must still be right


@given(entries())
@settings(max_examples=150, deadline=None)
def test_create_message_decodes_back(e: Entry) -> None:
    w = MessageWriter()
    wire.encode_create(w, e, NLM_F_CREATE)
    (msg,) = parse_messages(w.buffer)
    got = DECODER.decode_attrs(msg.attrs, msg.family)
    if e.nat and e.status & (Status.SRC_NAT | Status.DST_NAT):
        # a NAT binding is asked for with CTA_NAT_*: the reply sent is the mirror
        assert got.orig == e.orig and got.reply == e.orig.mirror() and not got.nat
        nums = {t for t, _ in iter_attrs(msg.attrs)}
        assert (wire.CTA_NAT_SRC in nums) == bool(e.status & Status.SRC_NAT)
        assert (wire.CTA_NAT_DST in nums) == bool(e.status & Status.DST_NAT)
    else:
        assert got.orig == e.orig and got.reply == e.reply and got.nat == e.nat
    assert got.family == e.family
    assert got.timeout == e.timeout and got.mark == e.mark and got.labels == e.labels
    assert got.zone == e.zone
    assert got.state == (e.state if e.proto == 6 else None)
    # the kernel decides the unchangeable bits; the rest is sent as asked
    assert got.status == (e.status | Status.CONFIRMED) & ~int(wire._CREATE_DROP)
    # the generated per-layout text and JSON are exactly the spec functions' output
    attrs = bytes(msg.attrs)
    assert DECODER.text(attrs, 0, len(attrs), msg.family) == formats.entry_text(got)
    assert DECODER.json(attrs, 0, len(attrs), msg.family) == formats.entry_json(got)


def test_template_encoders_match_plain_encoding() -> None:
    es = [Entry(Tuple("192.0.2.1", "198.51.100.2", 17, p, 53), timeout=p, mark=p % 2, id=p)
          for p in range(1, 50)]
    es += [Entry(Tuple("2001:db8::1", "2001:db8::2", 6, p, 80), timeout=9, state=3, status=6, id=p)
           for p in range(1, 20)]
    for make, plain in ((wire.DeleteEncoder().add, wire.encode_delete),
                        (wire.CreateEncoder(0x600).add, lambda w, e: wire.encode_create(w, e, 0x600))):
        w1, w2 = MessageWriter(), MessageWriter()
        for e in es:
            seq = make(w1, e)
            plain(w2, e)
            w2.seqs[-1] = (seq, w2.seqs[-1][1])
        # identical bytes apart from sequence numbers
        for m1, m2 in zip(parse_messages(w1.buffer), parse_messages(w2.buffer), strict=True):
            assert (m1.type, m1.flags, bytes(m1.payload)) == (m2.type, m2.flags, bytes(m2.payload))


def test_malformed_attributes_raise_decode_error() -> None:
    w = MessageWriter()
    wire.encode_create(w, Entry(Tuple("192.0.2.1", "198.51.100.2", 17, 1, 2)), 0)
    (msg,) = parse_messages(w.buffer)
    attrs = bytearray(msg.attrs)
    attrs[0] = 0xFF  # first attribute's length runs past the message
    with pytest.raises(DecodeError):
        wire.EntryDecoder().decode_attrs(attrs, 2)
    with pytest.raises(DecodeError):
        wire.EntryDecoder().decode_attrs(bytes(msg.attrs)[:-3], 2)


def test_text_format_is_conntracks() -> None:
    e = Entry(Tuple("192.0.2.2", "198.51.100.2", 6, 40000, 80), timeout=431999, state=3,
              status=Status.SEEN_REPLY | Status.ASSURED | Status.CONFIRMED, mark=0, use=1)
    assert formats.entry_text(e) == (
        "tcp      6 431999 ESTABLISHED src=192.0.2.2 dst=198.51.100.2 sport=40000 dport=80 "
        "src=198.51.100.2 dst=192.0.2.2 sport=80 dport=40000 [ASSURED] mark=0 use=1")
    u = Entry(Tuple("192.0.2.2", "198.51.100.2", 17, 5353, 53),
              Tuple("198.51.100.2", "203.0.113.1", 17, 53, 1024), timeout=29,
              status=Status.CONFIRMED, use=1)
    assert formats.entry_text(u, event="new") == (
        "    [NEW] udp      17 29 src=192.0.2.2 dst=198.51.100.2 sport=5353 dport=53 [UNREPLIED] "
        "src=198.51.100.2 dst=203.0.113.1 sport=53 dport=1024 mark=0 use=1")


@pytest.mark.parametrize("kw, option", [
    ({"src": "192.0.2.300"}, "-s/--src"),
    ({"reply_dst": "2001:db8::/129"}, "--reply-dst"),
    ({"status": "ASSURED,NOPE"}, "--status"),
    ({"state": "ESTABLISHD"}, "--state"),
    ({"mark": "4294967296"}, "-m/--mark"),
    ({"mark": "1/0x1ffffffff"}, "-m/--mark"),
    ({"proto": "nosuchproto"}, "-p/--proto"),
    ({"family": "ipx"}, "-f/--family"),
    ({"proto": "udp", "sport": "70000"}, "--sport"),
    ({"timeout_below": "soon"}, "--timeout-below"),
    ({"label": "nosuchlabel"}, "-l/--label"),
    ({"label": "128"}, "-l/--label"),
])
def test_bad_filter_options_name_the_option(kw: dict[str, str], option: str) -> None:
    with pytest.raises(InputError) as exc:
        filter_from_options(**kw)
    assert str(exc.value).startswith(option)
    assert "\n" not in str(exc.value)


def test_inconsistent_filters_are_refused() -> None:
    with pytest.raises(InputError):
        filter_from_options(sport="53")  # a port needs a protocol
    with pytest.raises(InputError):
        filter_from_options(proto="udp", state="ESTABLISHED")
    with pytest.raises(InputError):
        filter_from_options(src="192.0.2.1", dst="2001:db8::1")
    with pytest.raises(InputError):
        filter_from_options(family="ipv6", src="192.0.2.1")


def test_prefix_matching() -> None:
    p = Prefix.parse("192.0.2.77/24", "x")
    assert str(p) == "192.0.2.0/24" and not p.exact
    assert p.matches("192.0.2.1") and not p.matches("192.0.3.1") and not p.matches("2001:db8::1")
    q = Prefix.parse("2001:db8:1::/48", "x")
    assert q.matches("2001:db8:1:ffff::1") and not q.matches("2001:db8:2::1")
    assert Prefix.parse("2001:DB8::0001", "x").text == "2001:db8::1"


FILTERS = st.builds(
    lambda fam, proto, src, sport, status, mark, states, tb, zone, labels, rdst: _mk(
        family=fam, proto=proto, src=src, sport=sport, status=status, mark=mark,
        state=states, timeout_below=tb, zone=zone, label=labels, reply_dst=rdst),
    st.sampled_from([None, "ipv4", "ipv6"]), st.sampled_from([None, "tcp", "udp"]),
    st.sampled_from([None, "192.0.2.1", "192.0.2.0/24", "2001:db8::1", "2001:db8::/32"]),
    st.sampled_from([None, "1000"]), st.sampled_from([None, "ASSURED", "UNREPLIED", "SEEN_REPLY,ASSURED"]),
    st.sampled_from([None, "1", "4/4", "0/0"]), st.sampled_from([None, "ESTABLISHED,TIME_WAIT"]),
    st.sampled_from([None, "100"]), st.sampled_from([None, "0", "3"]), st.sampled_from([None, "5"]),
    st.sampled_from([None, "198.51.100.2", "2001:db8::2/64"]))


def _mk(**kw: str | None) -> Filter | None:
    if kw.get("state"):
        kw["proto"] = "tcp"
    if kw.get("sport") and not kw.get("proto"):
        kw["proto"] = "udp"
    try:
        return filter_from_options(**{k: v for k, v in kw.items() if v is not None})
    except InputError:
        return None


@given(FILTERS, entries())
@settings(max_examples=250, deadline=None)
def test_kernel_part_and_residue_together_mean_the_filter(flt: Filter | None, e: Entry) -> None:
    if flt is None:
        return
    kernel, residue = flt.split()
    assert flt.matches(e) == (kernel.matches(e) and residue.matches(e))
    # nothing the kernel cannot do is left in the kernel part
    assert kernel.states is None and not kernel.labels and kernel.timeout_below is None
    for p in (kernel.src, kernel.dst, kernel.reply_src, kernel.reply_dst):
        assert p is None or (p.exact and p.family == 2)


@given(entries())
@settings(max_examples=150, deadline=None)
def test_line_pattern_reads_what_json_reads(e: Entry) -> None:
    line = formats.entry_json(e)
    slow = formats.entry_from_json(json.loads(line))
    fast = formats.entry_from_json_line(line)
    if e.proto in (6, 17, 132) and e.zone is None and not e.labels:
        assert fast is not None
    if fast is not None:
        for name in Entry.__slots__:
            assert getattr(fast, name) == getattr(slow, name), name


@pytest.mark.parametrize("line", [
    '{"family":"ipv4","proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":70000,"dport":1},'
    '"status":[],"timeout":1,"mark":0}',
    '{"family":"ipv4","proto":"udp","orig":{"src":"192.0.2.1","dst":"2001:db8::1","sport":7,"dport":1},'
    '"status":[],"timeout":1,"mark":0}',
    '{"family":"ipv6","proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":7,"dport":1},'
    '"status":[],"timeout":1,"mark":0}',
    '{"family":"ipv4","proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":7,"dport":1},'
    '"status":["BOGUS"],"timeout":1,"mark":0}',
    '{"family":"ipv4","proto":"udp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":7,"dport":1},'
    '"status":[],"state":"ESTABLISHED","timeout":1,"mark":0}',
    '{"family":"ipv4","proto":"tcp","orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":7,"dport":1},'
    '"status":[],"timeout":1,"mark":4294967296}',
    '{"family":"ipv4","proto":"tcp","orig":{"src":"192.0.2.999","dst":"198.51.100.2","sport":7,"dport":1},'
    '"status":[],"timeout":1,"mark":4}',
])
def test_line_pattern_leaves_bad_lines_to_the_careful_reader(line: str) -> None:
    assert formats.entry_from_json_line(line) is None
    with pytest.raises(InputError):
        formats.entry_from_json(json.loads(line))
