"""Every number in nfkit's netlink tables equals the installed uapi headers'."""

from __future__ import annotations

import importlib

import pytest

from nfkit.netlink import consts, uapi

SPEC_MODULES = ["nfkit.netlink.specs.ctnetlink", "nfkit.netlink.specs.nftables",
                "nfkit.netlink.specs.nfqueue"]


def _spec_tables():
    for modname in SPEC_MODULES:
        mod = importlib.import_module(modname)
        for aset, header, enum_name, prefix, *renames in mod.UAPI:
            yield pytest.param(aset, header, enum_name, prefix, renames[0] if renames else {}, id=f"{modname.rsplit('.', 1)[1]}:{enum_name}")


@pytest.mark.parametrize("aset,header,enum_name,prefix,renames", list(_spec_tables()))
def test_attribute_numbers_match_header(aset, header, enum_name, prefix, renames):
    members = uapi.enum_values(header, enum_name)
    for number, attr in aset.attrs.items():
        const = renames.get(attr.name, prefix + attr.name.upper())
        assert const in members, f"{const} not in enum {enum_name} of {header}"
        assert members[const] == number, f"{const}: table says {number}, header {members[const]}"
    # and nothing the header declares is missing from the table
    declared = {v for k, v in members.items() if not k.startswith("__") and not k.endswith("_UNSPEC")}
    assert declared <= set(aset.attrs), f"{enum_name}: table lacks {sorted(declared - set(aset.attrs))}"


@pytest.mark.parametrize("modname", ["ctnetlink", "nfqueue"])
def test_message_numbers_match_header(modname):
    mod = importlib.import_module(f"nfkit.netlink.specs.{modname}")
    for table, header, enum_name, prefix in mod.MESSAGES:
        members = uapi.enum_values(header, enum_name)
        for name, number in table.items():
            assert members[prefix + name] == number


NETLINK_H = "linux/netlink.h"
NFNETLINK_H = "linux/netfilter/nfnetlink.h"


@pytest.mark.parametrize("name", [
    "NETLINK_ROUTE", "NETLINK_NETFILTER", "NETLINK_GENERIC", "NLM_F_REQUEST", "NLM_F_MULTI",
    "NLM_F_ACK", "NLM_F_ECHO", "NLM_F_DUMP_INTR", "NLM_F_DUMP_FILTERED", "NLM_F_ROOT", "NLM_F_MATCH",
    "NLM_F_ATOMIC", "NLM_F_DUMP", "NLM_F_REPLACE", "NLM_F_EXCL", "NLM_F_CREATE", "NLM_F_APPEND",
    "NLM_F_CAPPED", "NLM_F_ACK_TLVS", "NLMSG_NOOP", "NLMSG_ERROR", "NLMSG_DONE", "NLMSG_OVERRUN",
    "NLMSG_MIN_TYPE", "NLA_F_NESTED", "NLA_F_NET_BYTEORDER", "NETLINK_ADD_MEMBERSHIP",
    "NETLINK_DROP_MEMBERSHIP", "NETLINK_NO_ENOBUFS", "NETLINK_CAP_ACK", "NETLINK_EXT_ACK",
    "NETLINK_GET_STRICT_CHK", "NLMSGERR_ATTR_MSG", "NLMSGERR_ATTR_OFFS", "NLMSGERR_ATTR_COOKIE",
    "NLMSGERR_ATTR_POLICY", "NLMSGERR_ATTR_MISS_TYPE", "NLMSGERR_ATTR_MISS_NEST",
])
def test_netlink_constants(name):
    assert getattr(consts, name) == uapi.all_constants(NETLINK_H)[name]


@pytest.mark.parametrize("name", [
    "NFNETLINK_V0", "NFNL_SUBSYS_CTNETLINK", "NFNL_SUBSYS_CTNETLINK_EXP", "NFNL_SUBSYS_QUEUE",
    "NFNL_SUBSYS_ULOG", "NFNL_SUBSYS_OSF", "NFNL_SUBSYS_IPSET", "NFNL_SUBSYS_ACCT",
    "NFNL_SUBSYS_CTNETLINK_TIMEOUT", "NFNL_SUBSYS_CTHELPER", "NFNL_SUBSYS_NFTABLES",
    "NFNL_SUBSYS_NFT_COMPAT", "NFNL_SUBSYS_HOOK",
    "NFNLGRP_CONNTRACK_NEW", "NFNLGRP_CONNTRACK_UPDATE", "NFNLGRP_CONNTRACK_DESTROY",
    "NFNLGRP_CONNTRACK_EXP_NEW", "NFNLGRP_NFTABLES", "NFNLGRP_ACCT_QUOTA", "NFNLGRP_NFTRACE",
])
def test_nfnetlink_constants(name):
    values = {**uapi.all_constants(NETLINK_H), **uapi.all_constants(NFNETLINK_H)}
    assert getattr(consts, name) == values[name]


@pytest.mark.parametrize("name", ["NFNL_MSG_BATCH_BEGIN", "NFNL_MSG_BATCH_END"])
def test_batch_message_types(name):
    # nfnetlink.h defines these from NLMSG_MIN_TYPE without including netlink.h
    assert getattr(consts, name) == uapi.evaluate_define(NFNETLINK_H, name, NETLINK_H)


@pytest.mark.parametrize("name,header", [
    ("NFPROTO_INET", "linux/netfilter.h"), ("NFPROTO_IPV4", "linux/netfilter.h"),
    ("NFPROTO_ARP", "linux/netfilter.h"), ("NFPROTO_NETDEV", "linux/netfilter.h"),
    ("NFPROTO_BRIDGE", "linux/netfilter.h"), ("NFPROTO_IPV6", "linux/netfilter.h"),
])
def test_nfproto_constants(name, header):
    assert getattr(consts, name) == uapi.all_constants(header)[name]


def test_tcp_conntrack_states_match_header():
    from nfkit.netlink.specs.conntrack_tcp import UAPI_HEADER, UAPI_RENAMES, TcpState

    members = uapi.enum_values(UAPI_HEADER, "tcp_conntrack")
    for state in TcpState:
        assert members[UAPI_RENAMES.get(state.name, "TCP_CONNTRACK_" + state.name)] == state
    # every real state (those below TCP_CONNTRACK_MAX) is declared
    assert {v for v in members.values() if v < members["TCP_CONNTRACK_MAX"]} == {int(s) for s in TcpState}


def _attribute_enums():
    from nfkit.netlink.specs import nftables

    for cls, header, enum_name, prefix in nftables.ENUMS:
        yield pytest.param(cls, header, enum_name, prefix, id=cls.__name__)


# members whose enum name in the header is an older spelling (kept as a #define alias there)
_ENUM_RENAMES = {"NFT_META_IIFTYPE": "NFT_META_IFTYPE"}


@pytest.mark.parametrize("cls,header,enum_name,prefix", list(_attribute_enums()))
def test_attribute_enums_match_header(cls, header, enum_name, prefix):
    """The enums attributes carry (nf_tables' cmp ops, meta keys, flags...) equal the header's.

    Members newer than the installed header (values past its last one) are
    checked against the kernel's YAML spec only (tests/netlink/test_spec.py)."""
    members = uapi.enum_values(header, enum_name) if enum_name else uapi.defines(header)
    known = {v for k, v in members.items() if k.startswith(prefix) and not k.startswith("__")
             and "MAX" not in k and "MASK" not in k}
    for member in cls:
        const = _ENUM_RENAMES.get(prefix + member.name, prefix + member.name)
        if const in members:
            assert members[const] == member.value, const
        else:
            assert member.value > max(known), f"{const} is not in {header}"
    if enum_name:  # and nothing the header declares is missing
        assert known <= {m.value for m in cls}, f"{enum_name}: lacks {sorted(known - {m.value for m in cls})}"


@pytest.mark.parametrize("name", [
    "NFQA_CFG_F_FAIL_OPEN", "NFQA_CFG_F_CONNTRACK", "NFQA_CFG_F_GSO", "NFQA_CFG_F_UID_GID",
    "NFQA_CFG_F_SECCTX", "NFQA_SKB_CSUMNOTREADY", "NFQA_SKB_GSO", "NFQA_SKB_CSUM_NOTVERIFIED",
])
def test_nfqueue_flags(name):
    from nfkit.netlink.specs import nfqueue

    assert getattr(nfqueue, name) == uapi.all_constants("linux/netfilter/nfnetlink_queue.h")[name]
