"""nf_tables expression elements and nft_data on the netlink core's codec."""

from __future__ import annotations

import pytest

from nfkit.errors import DecodeError, InputError
from nfkit.netlink.codec import be32_attr, iter_attr_spans, nest_bytes
from nfkit.nftables.expressions import (
    EXPRESSIONS,
    A,
    data_value,
    data_verdict,
    expr,
    parse_exprs,
    retag,
    value_of_data,
    verdict_of_data,
)


def _cmp(value: bytes) -> bytes:
    a = A["cmp"]
    return expr("cmp", be32_attr(a["sreg"], 1), be32_attr(a["op"], 0), data_value(a["data"], value))


def test_parse_exprs_round_trip() -> None:
    blob = _cmp(b"\x0a\0\0\x01") + _cmp(b"\0\x16")
    got = parse_exprs(blob)
    assert [name for name, _ in got] == ["cmp", "cmp"]
    assert value_of_data(got[1][1]["data"]) == b"\0\x16"


@pytest.mark.parametrize("cut", [3, 9, 30])
def test_truncated_expression_list_raises(cut: int) -> None:
    # The old walker stopped at the first bad header and returned what it had.
    blob = _cmp(b"\x0a\0\0\x01") + _cmp(b"\0\x16")
    bad = blob[: len(blob) - cut]
    with pytest.raises(DecodeError):
        parse_exprs(bad)


def test_attribute_length_past_container_raises() -> None:
    blob = bytearray(be32_attr(1, 7))
    blob[0] = 40  # claims more than there is
    with pytest.raises(DecodeError):
        list(iter_attr_spans(bytes(blob)))


@pytest.mark.parametrize("v", [{"accept": None}, {"drop": None}, {"return": None},
                               {"continue": None}, {"jump": {"target": "c2"}},
                               {"goto": {"target": "x"}}])
def test_verdict_round_trip(v: dict) -> None:
    t = A["immediate"]["data"]
    nest = data_verdict(t, v)
    (_t, s, e), = iter_attr_spans(nest)
    assert verdict_of_data(nest[s:e]) == v


@pytest.mark.parametrize("v", [{"jump": None}, {"maybe": None}, "accept", {"goto": {}}])
def test_bad_verdict_is_input_error(v: object) -> None:
    with pytest.raises(InputError):
        data_verdict(1, v)


def test_retag_keeps_the_expression() -> None:
    e = _cmp(b"\1\2\3\4")
    r = retag(e, A["set"]["expr"])
    assert r[4:] == e[4:] and r[:2] == e[:2]
    assert parse_exprs(nest_bytes(1, r[4:])) == parse_exprs(e)


_SAMPLE = {"be16": 0x1234, "be32": 0x89ABCDEF, "be64": 1 << 40, "u8": 7, "string": "x1",
           "binary": b"\1\2\3", "data": b"\xc0\0\2\1", "nested": b"", "nested_array": b""}


def _kinds(name: str) -> list[tuple[str, str]]:
    from nfkit.netlink.specs.nftables import TABLES

    return [("data" if kind == "nested" and sub == "data" else kind, attr)
            for attr, kind, sub in TABLES[name][2]]


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
def test_every_expression_round_trips_through_the_registry(name: str) -> None:
    kx = EXPRESSIONS[name]
    values = [(attr, _SAMPLE[kind]) for kind, attr in _kinds(name)] if name != "notrack" else []
    (got_name, raw), = parse_exprs(kx.encode(*values))
    assert got_name == name
    got = kx.decode(raw)
    for kind, attr in _kinds(name) if name != "notrack" else []:
        want = _SAMPLE[kind]
        if kind == "data":
            assert value_of_data(got[attr]) == want
        elif kind.startswith("nested"):
            assert got[attr] == b""
        else:
            assert got[attr] == want, (attr, kind)


def test_wrong_size_is_a_raw_form_with_the_error() -> None:
    # a cmp whose sreg is 2 bytes instead of 4: the decoder says so instead of guessing
    from nfkit.netlink.codec import attr_bytes
    from nfkit.nftables.decompiler import RuleDecoder

    a = A["cmp"]
    bad = expr("cmp", attr_bytes(a["sreg"], b"\0\1"), be32_attr(a["op"], 0),
               data_value(a["data"], b"\0\x16"))
    with pytest.raises(DecodeError):
        EXPRESSIONS["cmp"].decode(parse_exprs(bad)[0][1])
    (stmt,) = RuleDecoder("ip").decode(parse_exprs(bad))
    assert stmt["nfkit-raw"]["expr"] == "cmp" and "bytes" in stmt["nfkit-raw"]["error"]


def test_payload_write_that_fixes_checksums_is_kept_raw() -> None:
    # nfkit prints no statement for a checksum-fixing payload write: the kernel's
    # expression, as given; a raw write (no checksum) is the statement nft prints
    from nfkit.nftables.decompiler import RuleDecoder

    blob = (EXPRESSIONS["immediate"].encode(("dreg", 1), ("data", b"\xc0\0\2\1"))
            + EXPRESSIONS["payload"].encode(("sreg", 1), ("base", 1), ("offset", 12), ("len", 4),
                                            ("csum_type", 1)))
    out = RuleDecoder("ip").decode(parse_exprs(blob))
    assert out[-1] == {"nfkit-raw": {"expr": "payload", "attrs": {
        "sreg": "00000001", "base": "00000001", "offset": "0000000c", "len": "00000004",
        "csum_type": "00000001"}}}
    blob = (EXPRESSIONS["immediate"].encode(("dreg", 1), ("data", b"\xc0\0\2\1"))
            + EXPRESSIONS["payload"].encode(("sreg", 1), ("base", 1), ("offset", 12), ("len", 4)))
    assert RuleDecoder("ip").decode(parse_exprs(blob))[-1] == {"mangle": {
        "key": {"payload": {"base": "nh", "offset": 96, "len": 32}}, "value": 0xC0000201}}
