"""The netmap flag (nft's `snat prefix to P`): encoded as nft does, refused where nfkit
cannot write it exactly.  Kernel conformance is rulesets/47-nat-netmap.nft."""

from __future__ import annotations

import pytest

from nfkit.errors import InputError
from nfkit.nftables.compiler import RuleCompiler
from nfkit.nftables.expressions import NAT_NETMAP, parse_exprs
from nfkit.nftables.nfttext import to_json
from nfkit.nftables.textfmt import statement

PREFIX = {"prefix": {"addr": "2001:db8:1::", "len": 64}}


def _nat_attrs(stmts: list[dict]) -> dict:  # type: ignore[type-arg]
    exprs, _ = RuleCompiler("ip6", "t").compile(stmts)
    attrs = dict(next(a for name, a in parse_exprs(b"".join(exprs)) if name == "nat"))
    return {k: int.from_bytes(v, "big") if k == "flags" else v for k, v in attrs.items()}


@pytest.mark.parametrize("addr", [PREFIX, "2001:db8:1::1", {"range": ["2001:db8:1::1", "2001:db8:1::ff"]}])
def test_netmap_sets_the_flag_and_both_address_registers(addr) -> None:  # type: ignore[no-untyped-def]
    a = _nat_attrs([{"snat": {"addr": addr, "flags": "netmap", "type_flags": "prefix"}}])
    assert a["flags"] & NAT_NETMAP and a["flags"] & 1 and "reg_addr_max" in a


def test_type_flags_prefix_alone_changes_nothing_as_in_nft() -> None:
    a = _nat_attrs([{"snat": {"addr": PREFIX, "type_flags": "prefix"}}])
    assert not a["flags"] & NAT_NETMAP


@pytest.mark.parametrize("body, why", [
    ({"snat": {"addr": {"map": {"key": {"payload": {"protocol": "ip6", "field": "saddr"}},
                                "data": "@m"}}, "flags": "netmap"}}, "from a map"),
    ({"snat": {"flags": "netmap"}}, "constant address"),
    ({"masquerade": {"flags": "netmap"}}, "needs an address"),
    ({"snat": {"addr": PREFIX, "type_flags": "interval"}}, "type_flags 'interval'"),
])
def test_what_nfkit_cannot_write_is_refused(body, why) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=why):
        RuleCompiler("ip6", "t").compile([body])


def test_text_both_ways() -> None:
    doc = to_json("add rule inet t c snat ip6 prefix to 2001:db8:1::/64 persistent\n")
    (stmt,) = doc["nftables"][0]["add"]["rule"]["expr"]
    assert stmt == {"snat": {"family": "ip6", "addr": PREFIX, "flags": ["netmap", "persistent"]}}
    assert statement(stmt) == "snat ip6 prefix to 2001:db8:1::/64 persistent"
