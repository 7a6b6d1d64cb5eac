"""Raw payload writes (`@th,128,128 set ip6 daddr`): what nfkit cannot write exactly is
refused.  Kernel conformance against nft is rulesets/48-raw-payload-write.nft."""

from __future__ import annotations

import pytest

from nfkit.errors import InputError
from nfkit.nftables.compiler import RuleCompiler


@pytest.mark.parametrize("key, value, why", [
    ({"protocol": "comp", "field": "cpi"}, 1, "not encoded by nfkit"),
    ({"protocol": "ip6", "field": "dscp"}, {"meta": {"key": "mark"}}, "a constant only"),
    ({"protocol": "ip6", "field": "daddr"}, {"meta": {"key": "mark"}}, "the value is 32 bits"),
    ({"base": "th", "offset": 4, "len": 8}, 1, "whole bytes only"),
    ({"base": "th", "offset": 0, "len": 136}, 1, "at most 16"),
    ({"base": "th", "offset": 128, "len": 64}, {"payload": {"protocol": "ip6", "field": "daddr"}},
     "the value is 128 bits long"),
])
def test_refused(key, value, why) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=why):
        RuleCompiler("ip6", "t").compile([{"mangle": {"key": {"payload": key}, "value": value}}])
