"""Minimal hand-built nf_tables messages for the netlink core's own tests.

(The nftables package has the real encoder; these tests must not depend on it.)
Numbers from linux/netfilter/nf_tables.h.
"""

from __future__ import annotations

from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import (
    NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    nfnl_msg_type,
)

NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_GETRULE = 0, 3, 6, 7
NFT_MSG_GETGEN = 16
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME = 1, 3
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM, NFTA_EXPR_NAME = 1, 1


def new_table(w: MessageWriter, name: str) -> int:
    seq = w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE),
                  NLM_F_REQUEST | NLM_F_CREATE, family=NFPROTO_INET)
    w.string(NFTA_TABLE_NAME, name)
    w.end()
    return seq


def new_chain(w: MessageWriter, table: str, name: str) -> int:
    seq = w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWCHAIN),
                  NLM_F_REQUEST | NLM_F_CREATE, family=NFPROTO_INET)
    w.string(NFTA_CHAIN_TABLE, table)
    w.string(NFTA_CHAIN_NAME, name)
    w.end()
    return seq


def new_counter_rule(w: MessageWriter, table: str, chain: str) -> int:
    seq = w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE),
                  NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND, family=NFPROTO_INET)
    w.string(NFTA_RULE_TABLE, table)
    w.string(NFTA_RULE_CHAIN, chain)
    with w.nest(NFTA_RULE_EXPRESSIONS), w.nest(NFTA_LIST_ELEM):
        w.string(NFTA_EXPR_NAME, "counter")
    w.end()
    return seq


def get_rules(w: MessageWriter, table: str | None = None) -> int:
    seq = w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETRULE), family=NFPROTO_INET)
    if table is not None:
        w.string(NFTA_RULE_TABLE, table)
    w.end()
    return seq


def counter_chain(w: MessageWriter, table: str, chain: str, rules: int) -> None:
    """A table, a chain in it and ``rules`` counter rules, into ``w`` (a Batch)."""
    new_table(w, table)
    new_chain(w, table, chain)
    for _ in range(rules):
        new_counter_rule(w, table, chain)


def fence() -> MessageWriter:
    """GETGEN, the request nf_tables batches are fenced with (its ACK ends the batch's answers)."""
    w = MessageWriter()
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN), NLM_F_REQUEST)
    w.end()
    return w
