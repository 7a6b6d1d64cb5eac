"""The codec against datagrams a stock conntrackd 1.4.7 sent (tests/ha/captures/).

ftfw.hex and notrack.hex were captured from `conntrackd -C` (FTFW, NOTRACK) in a
namespace firewall doing SNAT (port range), DNAT and ct mark, with TCP, UDP,
ICMP over IPv4 and IPv6 (see docs/ha.md); notrack.conntrack is that
firewall's `conntrack -L` at the time.  extras.hex adds ct zone 7, ct labels 5
and 100, the ftp helper and TCPWindowTracking (window scale attributes);
expect.hex the same ftp flow outside a zone with the expectation its PORT
command made (ExpectationSync).  sctp.hex: SCTP entries made with `conntrack -I`,
updated and deleted; sctp.conntrack: their state and verification tags in the
kernel after each step.
tests/ha/capture.py makes them all again, except ftfw-batched.hex: an earlier FTFW
run (same lab, no held connection) in which conntrackd read the flush's destroy
events in one loop and packed their DEL messages into shared datagrams.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nfkit.conntrack.model import TCP_STATE_TEXT, Entry, Status, Tuple
from nfkit.errors import DecodeError, InputError
from nfkit.ha import convert, wire
from nfkit.ha.spec import Flag, MsgType

CAPTURES = Path(__file__).parent / "captures"


def captured(name: str) -> list[bytes]:
    return [bytes.fromhex(line) for line in (CAPTURES / name).read_text().split()]


@pytest.mark.parametrize("name", ["ftfw.hex", "ftfw-flush.hex", "ftfw-batched.hex", "notrack.hex", "notrack-flush.hex",
                                  "extras.hex", "expect.hex", "sctp.hex"])
def test_every_captured_datagram_decodes_and_encodes_back_byte_for_byte(name: str) -> None:
    for dg in captured(name):
        msgs = wire.decode_datagram(dg)
        assert wire.encode_datagram(msgs) == dg


def test_ftfw_capture_shows_hello_until_answered_and_alive_when_quiet() -> None:
    msgs = [m for dg in captured("ftfw.hex") for m in wire.decode_datagram(dg)]
    assert all(m.flags & Flag.HELLO for m in msgs)  # nobody said HELLO_BACK
    alive = [m for m in msgs if isinstance(m, wire.ControlMessage)]
    assert alive and all(m.flags == Flag.ALIVE | Flag.HELLO for m in alive)
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one counter for data and control


def test_several_messages_per_datagram() -> None:
    many = [wire.decode_datagram(dg) for dg in captured("ftfw-batched.hex")]
    biggest = max(many, key=len)
    assert len(biggest) >= 4 and {m.type for m in biggest if isinstance(m, wire.StateMessage)} == {MsgType.CT_DEL}


def last_messages(name: str) -> dict[object, wire.StateMessage]:
    """The last word on each entry still there at the end of the capture, by entry key."""
    last: dict[object, wire.StateMessage] = {}
    for dg in captured(name):
        for m in wire.decode_datagram(dg):
            if isinstance(m, wire.StateMessage) and m.is_ct:
                key = convert.to_entry(m).key
                if m.type is MsgType.CT_DEL:  # e.g. a connection refused while the server started
                    last.pop(key)
                else:
                    last[key] = m
    return last


def test_quirks_nat_port_and_icmp_id_byte_swapped_nat_address_network_order() -> None:
    """SNAT to 198.51.100.1:PORT: address as c6336401, PORT little-endian; ICMP id little-endian.

    The bytes are those of the captured datagrams: every one re-encodes byte for byte (above).
    """
    listing = (CAPTURES / "notrack.conntrack").read_text()
    seen = set()
    for m in last_messages("notrack.hex").values():
        a, raw = m.attrs, wire.encode_message(m)
        if "snat_ipv4" not in a:
            continue
        assert bytes.fromhex("0008000c" "c6336401") in raw  # NTA_SNAT_IPV4, network order
        if a["l4proto"] == 1:
            assert bytes.fromhex("00060018") + a["icmp_id"].to_bytes(2, "little") in raw
            assert f"id={a['icmp_id']} " in listing
            seen.add("icmp")
        elif "spat_port" in a:
            assert bytes.fromhex("0006000e") + a["spat_port"].to_bytes(2, "little") in raw
            assert bytes.fromhex("00080003") + a["port"][0].to_bytes(2, "big") in raw  # tuple: big-endian
            assert f"sport={a['port'][0]} dport={a['port'][1]} " in listing
            assert f"dport={a['spat_port']} " in listing
            seen.add("port")
    assert seen == {"icmp", "port"}


def _as_listing_fields(e: Entry) -> list[str]:
    o, r = e.orig, e.reply
    parts = []
    for t in (o, r):
        parts += [f"src={t.src}", f"dst={t.dst}"]
        if t.icmp_type is not None:
            parts += [f"type={t.icmp_type}", f"code={t.icmp_code}", f"id={t.icmp_id}"]
        else:
            parts += [f"sport={t.sport}", f"dport={t.dport}"]
    return parts


def test_notrack_capture_reproduces_the_senders_table() -> None:
    """Last message per flow -> Entry: tuples (NAT rebuilt), mark, as `conntrack -L` showed them."""
    last = {k: convert.to_entry(m) for k, m in last_messages("notrack.hex").items()}
    lines = [ln for ln in (CAPTURES / "notrack.conntrack").read_text().splitlines()
             if ln.strip() and "dport=3780" not in ln]
    assert len(last) == len(lines) == 7
    for e in last.values():
        fields = _as_listing_fields(e)
        match = [ln for ln in lines if all(f" {f} " in f" {ln} " for f in fields)]
        assert len(match) == 1, (e, fields)
        assert "mark=42" in match[0] and e.mark == 42
        if e.proto == 6:
            assert e.state is not None and f" {TCP_STATE_TEXT[e.state]} " in match[0]
            assert e.status & Status.ASSURED


def test_sctp_capture_carries_state_and_verification_tags_and_nfkit_says_it_alike() -> None:
    """1.4.7 sends an SCTP entry's state (u8) and both verification tags (be32, the
    kernel's values as ctnetlink gives them: no byte swap) after the ports; nfkit reads
    them into the entry and, from the entry, sends the same bytes, less the all-zero
    synproxy attribute 1.4.7 adds to SCTP as to TCP entries (nfkit sends none)."""
    kernel = set((CAPTURES / "sctp.conntrack").read_text().splitlines())
    kinds = []
    for dg in captured("sctp.hex"):
        (m,) = wire.decode_datagram(dg)
        assert isinstance(m, wire.StateMessage)
        kinds.append(m.type)
        e = convert.to_entry(m)
        assert e.proto == 132 and e.vtags is not None
        assert f"{e.orig.src} {e.orig.sport} state={e.state} vtags={e.vtags[0]:#x},{e.vtags[1]:#x}" in kernel
        assert convert.unmodelled(m) == {"synproxy": (0, 0, 0)}
        ours = convert.from_entry(e, m.type, seq=m.seq)
        assert ours.attrs == {k: v for k, v in m.attrs.items() if k != "synproxy"}
        synproxy = bytes.fromhex("0010001f") + bytes(12)  # NTA_SYNPROXY, last
        assert wire.encode_message(ours)[8:] + synproxy == dg[8:]
    assert kinds == [MsgType.CT_NEW, MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL, MsgType.CT_DEL]


def test_icmp_nat_ports_of_1_4_7_are_ignored_and_not_sent() -> None:
    icmp = [m for dg in captured("ftfw.hex") for m in wire.decode_datagram(dg)
            if isinstance(m, wire.StateMessage) and m.attrs.get("l4proto") == 1]
    assert icmp and all(m.attrs["spat_port"] == 0 for m in icmp)
    e = convert.to_entry(icmp[0])
    assert e.reply.icmp_id == e.orig.icmp_id and e.reply.dst == "198.51.100.1"
    assert "spat_port" not in convert.from_entry(e).attrs


def test_control_messages_round_trip() -> None:
    for msg in (wire.ControlMessage(Flag.ACK, 7, 1, 6), wire.ControlMessage(Flag.NACK | Flag.HELLO_BACK, 8, 3, 4),
                wire.ControlMessage(Flag.RESYNC, 9, 0, 0), wire.ControlMessage(Flag.ALIVE, 10)):
        raw = wire.encode_message(msg)
        assert len(raw) == (8 if msg.flags & Flag.ALIVE else 16)
        assert wire.decode_datagram(raw) == [msg]


def test_every_attribute_round_trips() -> None:
    ct = {
        "ipv6": ("2001:db8::1", "2001:db8::2"), "status": 0x19e, "l4proto": 132, "port": (1, 2),
        "tcp_state": 3, "tcp_wscale_orig": 7, "tcp_wscale_repl": 8, "sctp_state": 3,
        "sctp_vtag_orig": 0xDEADBEEF, "sctp_vtag_repl": 1, "dccp_state": 2, "dccp_role": 1,
        "icmp_type": 8, "icmp_code": 0, "icmp_id": 0x1234, "timeout": 30, "mark": 0xFFFFFFFF,
        "master_ipv4": ("192.0.2.1", "192.0.2.2"), "master_ipv6": ("::1", "::2"), "master_l4proto": 6,
        "master_port": (21, 1024), "snat_ipv4": "203.0.113.1", "dnat_ipv4": "203.0.113.2",
        "snat_ipv6": "2001:db8::99", "dnat_ipv6": "2001:db8::98", "spat_port": 0x1234, "dpat_port": 80,
        "nat_seq_adj": (1, 2, 3, 4, 5, 6), "helper": "ftp", "labels": (1 << 127) | 5,
        "synproxy": (7, 8, 9), "zone": 0x0102,
    }
    exp = {
        "master_ipv4": ("192.0.2.1", "192.0.2.2"), "master_l4proto": 6, "master_port": (1, 21),
        "expect_ipv4": ("192.0.2.1", "192.0.2.2"), "expect_l4proto": 6, "expect_port": (0, 2000),
        "mask_ipv4": ("255.255.255.255", "255.255.255.255"), "mask_l4proto": 255,
        "mask_port": (0, 0xFFFF), "timeout": 300, "flags": 0, "class": 0,
        "nat_ipv4": ("198.51.100.1", "0.0.0.0"), "nat_l4proto": 6, "nat_port": (0, 2000), "nat_dir": 1,
        "helper": "ftp", "fn": "", "master_ipv6": ("::1", "::2"), "expect_ipv6": ("::1", "::2"),
        "mask_ipv6": ("::", "::"),
    }
    msgs = [wire.StateMessage(t, ct, 5, Flag.HELLO) for t in (MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL)]
    msgs += [wire.StateMessage(t, exp, 6) for t in (MsgType.EXP_NEW, MsgType.EXP_UPD, MsgType.EXP_DEL)]
    raw = wire.encode_datagram(msgs)
    assert wire.decode_datagram(raw) == msgs
    assert raw.find(bytes.fromhex("0006000e" "3412")) > 0  # spat swapped
    assert raw.find(bytes.fromhex("00060020" "0102")) > 0  # zone in network order
    assert raw.find(bytes.fromhex("0014001c" "00000005" "00000000" "00000000" "80000000")) > 0  # labels words


@pytest.mark.parametrize(("hexdata", "why"), [
    ("", "empty"),
    ("100000", "header cut"),
    ("20000008" "00000001", "version 2"),
    ("17000008" "00000001", "unknown type 7"),
    ("10000010" "00000001", "length past the end"),
    ("10000004" "00000001", "length under the header"),
    ("1a080008" "00000001", "ACK without its range"),
    ("1a000008" "00000001", "control without a flag"),
    ("1a080010" "00000005" "00000009" "00000003", "ACK range backwards"),
    ("10100010" "00000001" "00050005" "01000000", "data message with ALIVE"),
    ("1000000c" "00000001" "0005002a", "unknown attribute"),
    ("1000000c" "00000001" "00060005", "status of 2 bytes"),
    ("10000010" "00000001" "00050005" "01000000" , "status cut"),
    ("10000014" "00000001" "00080005" "00000001" "00080005", "attribute past its message"),
    ("10000018" "00000001" "00080005" "00000001" "00080005" "00000002", "status twice"),
    ("10000014" "00000001" "0008001b" "66747000" "0000", "trailing bytes"),
    ("10000010" "00000001" "0008001b" "66747066", "helper without NUL"),
    ("10000020" "00000001" "0014001b" + "61" * 16, "helper over 16"),
    ("10000010" "00000001" "0007001c" "01000000", "labels not whole words"),
])
def test_malformed_datagrams_raise_decode_error(hexdata: str, why: str) -> None:
    with pytest.raises(DecodeError):
        wire.decode_datagram(bytes.fromhex(hexdata))


def test_entries_conntrackd_cannot_carry_are_refused() -> None:
    o = Tuple("192.0.2.2", "198.51.100.2", 6, 1000, 80)
    odd = Entry(o, Tuple("198.51.100.9", "198.51.100.1", 6, 80, 40000), status=int(Status.SRC_NAT_DONE))
    with pytest.raises(InputError, match="reply tuple"):
        convert.from_entry(odd)  # reply source changed without DST_NAT_DONE
    with pytest.raises(InputError, match="at most 11"):
        wire.encode_message(wire.StateMessage(MsgType.CT_NEW, {"helper": "a-very-long-name"}))
    with pytest.raises(InputError, match="unknown attribute"):
        wire.encode_message(wire.StateMessage(MsgType.CT_NEW, {"colour": 1}))
    with pytest.raises(DecodeError):
        convert.to_entry(wire.StateMessage(MsgType.CT_NEW, {"status": 1}))


def test_datagrams_split_at_the_limit() -> None:
    msgs = [convert.from_entry(Entry(Tuple("192.0.2.2", "198.51.100.2", 6, 1000 + i, 80), status=8, state=3,
                                     timeout=100), seq=i) for i in range(100)]
    grams = list(wire.datagrams(msgs, limit=1472))
    assert all(len(g) <= 1472 for g in grams) and len(grams) > 1
    assert [m for g in grams for m in wire.decode_datagram(g)] == msgs


def test_extras_capture_zone_labels_helper_window_scale() -> None:
    msgs = [m for dg in captured("extras.hex") for m in wire.decode_datagram(dg)
            if isinstance(m, wire.StateMessage)]
    last = msgs[-1]
    e = convert.to_entry(last)
    line = (CAPTURES / "extras.conntrack").read_text()
    assert f"sport={e.orig.sport} dport=21" in line and f"dport={e.reply.dport} [ASSURED]" in line
    assert "zone=7 helper=ftp" in line
    assert (e.zone, e.helper, e.labels, e.state, e.mark) == (7, "ftp", (1 << 5) | (1 << 100), 3, 42)
    assert convert.unmodelled(last) == {"tcp_wscale_orig": 10, "tcp_wscale_repl": 10}
    back = convert.from_entry(e, last.type, seq=last.seq, flags=last.flags, extra=convert.unmodelled(last))
    assert wire.encode_message(back) == wire.encode_message(last)


def test_expectation_capture_matches_conntrack_list_expect() -> None:
    """PORT 192,0,2,2,7,208 through SNAT: the server may connect to 198.51.100.1:2000."""
    (exp,) = [m for dg in captured("expect.hex") for m in wire.decode_datagram(dg)
              if isinstance(m, wire.StateMessage) and not m.is_ct]
    line = [ln for ln in (CAPTURES / "expect.conntrack").read_text().splitlines() if "master-src" in ln][0]
    a = exp.attrs
    assert exp.type is MsgType.EXP_NEW
    src, dst = a["expect_ipv4"]
    sport, dport = a["expect_port"]
    assert f"proto={a['expect_l4proto']} src={src} dst={dst} sport={sport} dport={dport} " in line
    msrc, mdst = a["mask_ipv4"]
    assert f"mask-src={msrc} mask-dst={mdst} sport={a['mask_port'][0]} dport={a['mask_port'][1]} " in line
    m_src, m_dst = a["master_ipv4"]
    assert f"master-src={m_src} master-dst={m_dst} sport={a['master_port'][0]} dport={a['master_port'][1]} " in line
    assert f"class={a['class']} helper={a['helper']}" in line and a["timeout"] >= int(line.split()[0])
    # the NAT part: 1.4.7 sends the saved port but zero addresses (libnetfilter_conntrack keeps
    # the saved address where build.c does not look), the direction, the NAT function
    assert a["nat_ipv4"] == ("0.0.0.0", "0.0.0.0") and a["nat_port"] == (2000, 0)
    assert (a["nat_l4proto"], a["nat_dir"], a["fn"], a["flags"]) == (6, 1, "nat-follow-master", 0)
