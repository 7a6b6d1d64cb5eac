"""What the running kernel offers nfkit, found over netlink and /proc.

Nothing here changes the kernel: the nf_tables probe is a batch that always
ends in a deliberate error, so the kernel rejects it whole and commits
nothing; each message of it still reports its own verdict (present, or
"no such expression").  It runs in whatever network namespace it is called in.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nfkit.errors import CapabilityError, NetlinkError, TransactionError
from nfkit.netlink.codec import Batch, Message, MessageWriter, get_be32, iter_attrs
from nfkit.netlink.consts import (
    NFNL_SUBSYS_CTNETLINK,
    NFNL_SUBSYS_NFT_COMPAT,
    NFNL_SUBSYS_NFTABLES,
    NFNL_SUBSYS_QUEUE,
    NFNLGRP_CONNTRACK_NEW,
    NFPROTO_INET,
    NFPROTO_IPV4,
    NFPROTO_IPV6,
    NLM_F_CREATE,
    NLM_F_REQUEST,
    nfnl_msg_type,
)
from nfkit.netlink.socket import NetlinkSocket
from nfkit.netlink.specs import ctnetlink

# The few nf_tables / compat / queue numbers the probe needs (checked by tests/netlink/test_uapi.py).
NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, NFT_MSG_DELTABLE, NFT_MSG_GETGEN = 0, 3, 6, 2, 16
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_TYPE = 1, 3, 4, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_LIST_ELEM, NFTA_EXPR_NAME = 1, 1
NFTA_GEN_ID = 1
NFNL_MSG_COMPAT_GET = 0
NFTA_COMPAT_NAME, NFTA_COMPAT_REV, NFTA_COMPAT_TYPE = 1, 2, 3
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQNL_CFG_CMD_PF_UNBIND = 4
NF_INET_POST_ROUTING = 4
UAPI_NUMBERS = {
    "linux/netfilter/nf_tables.h": {
        "NFT_MSG_NEWTABLE": NFT_MSG_NEWTABLE, "NFT_MSG_NEWCHAIN": NFT_MSG_NEWCHAIN,
        "NFT_MSG_NEWRULE": NFT_MSG_NEWRULE, "NFT_MSG_DELTABLE": NFT_MSG_DELTABLE,
        "NFT_MSG_GETGEN": NFT_MSG_GETGEN, "NFTA_TABLE_NAME": NFTA_TABLE_NAME,
        "NFTA_CHAIN_TABLE": NFTA_CHAIN_TABLE, "NFTA_CHAIN_NAME": NFTA_CHAIN_NAME,
        "NFTA_CHAIN_HOOK": NFTA_CHAIN_HOOK, "NFTA_CHAIN_TYPE": NFTA_CHAIN_TYPE,
        "NFTA_HOOK_HOOKNUM": NFTA_HOOK_HOOKNUM, "NFTA_HOOK_PRIORITY": NFTA_HOOK_PRIORITY,
        "NFTA_RULE_TABLE": NFTA_RULE_TABLE, "NFTA_RULE_CHAIN": NFTA_RULE_CHAIN,
        "NFTA_RULE_EXPRESSIONS": NFTA_RULE_EXPRESSIONS, "NFTA_LIST_ELEM": NFTA_LIST_ELEM,
        "NFTA_EXPR_NAME": NFTA_EXPR_NAME, "NFTA_GEN_ID": NFTA_GEN_ID,
    },
    "linux/netfilter/nf_tables_compat.h": {
        "NFNL_MSG_COMPAT_GET": NFNL_MSG_COMPAT_GET, "NFTA_COMPAT_NAME": NFTA_COMPAT_NAME,
        "NFTA_COMPAT_REV": NFTA_COMPAT_REV, "NFTA_COMPAT_TYPE": NFTA_COMPAT_TYPE,
    },
    "linux/netfilter/nfnetlink_queue.h": {
        "NFQNL_MSG_CONFIG": NFQNL_MSG_CONFIG, "NFQA_CFG_CMD": NFQA_CFG_CMD,
        "NFQNL_CFG_CMD_PF_UNBIND": NFQNL_CFG_CMD_PF_UNBIND,
    },
    "linux/netfilter.h": {"NF_INET_POST_ROUTING": NF_INET_POST_ROUTING},
}

# Expressions nfkit may emit; the probe tells which this kernel has.
EXPRESSIONS = (
    "immediate", "cmp", "lookup", "bitwise", "byteorder", "payload", "range", "dynset",
    "counter", "meta", "ct", "limit", "quota", "log", "reject", "nat", "masq", "redir",
    "queue", "numgen", "hash", "fib", "notrack", "exthdr", "rt", "socket", "tproxy",
    "synproxy", "connlimit", "objref", "flow_offload", "last", "xfrm", "osf", "tunnel",
    "inner", "match", "target",
)

PROC_NF = Path("/proc/sys/net/netfilter")


@dataclass
class KernelInfo:
    """What nfkit found; see `probe`."""

    kernel: str
    netns: str
    nf_tables: bool = False
    nf_tables_genid: int | None = None
    expressions: dict[str, bool] = field(default_factory=dict)
    queue_expression: bool = False
    xt_nfqueue_target: bool = False
    conntrack: bool = False
    conntrack_count: int | None = None
    conntrack_max: int | None = None
    conntrack_buckets: int | None = None
    conntrack_events: bool = False
    conntrack_events_sysctl: int | None = None
    nfqueue: bool = False
    ipv6_nat: bool = False
    ipv4_nat: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _netns_id() -> str:
    try:
        return os.readlink("/proc/thread-self/ns/net")
    except OSError:
        return "unknown"


def probe() -> KernelInfo:
    """Find out what this kernel (in this network namespace) offers nfkit.

    Raises CapabilityError when no netfilter netlink socket can be opened.
    """
    info = KernelInfo(kernel=os.uname().release, netns=_netns_id())
    with NetlinkSocket() as sock:
        _probe_nftables(sock, info)
        _probe_conntrack(sock, info)
        _probe_nfqueue(sock, info)
    return info


def _ask(sock: NetlinkSocket, info: KernelInfo, subsys: int, msg: int, family: int,
         label: str) -> list[Message] | None:
    """One attribute-less GET; None (and a note) when the kernel refuses it."""
    w = MessageWriter()
    w.begin(nfnl_msg_type(subsys, msg), family=family)
    w.end()
    try:
        return sock.request(w)
    except NetlinkError as exc:
        info.notes.append(f"{label}: {exc}")
        return None


def _probe_nftables(sock: NetlinkSocket, info: KernelInfo) -> None:
    replies = _ask(sock, info, NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN, 0, "nf_tables")
    if replies is None:
        return
    info.nf_tables = True
    for reply in replies:
        for t, v in _attrs(reply):
            if t == NFTA_GEN_ID:
                info.nf_tables_genid = get_be32(v)
    table = f"nfkit-probe-{os.getpid()}"
    batch = Batch()
    _new_table(batch, NFPROTO_INET, table)
    _new_chain(batch, NFPROTO_INET, table, "c")
    for name in EXPRESSIONS:
        batch.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWRULE),
                    NLM_F_REQUEST | NLM_F_CREATE, family=NFPROTO_INET)
        batch.string(NFTA_RULE_TABLE, table)
        batch.string(NFTA_RULE_CHAIN, "c")
        with batch.nest(NFTA_RULE_EXPRESSIONS), batch.nest(NFTA_LIST_ELEM):
            batch.string(NFTA_EXPR_NAME, name)
        batch.end()
    nat_tables = {}
    for family in (NFPROTO_IPV4, NFPROTO_IPV6):
        nat_tables[family] = batch.count()
        _new_table(batch, family, table)
        _new_chain(batch, family, table, "nat", hook=(NF_INET_POST_ROUTING, 100, "nat"))
    # The sentinel: deleting a table that cannot exist makes the kernel reject the whole batch.
    batch.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_DELTABLE), family=NFPROTO_INET)
    batch.string(NFTA_TABLE_NAME, f"{table}-absent")
    batch.end()
    sentinel = batch.count() - 1
    fence = MessageWriter()  # GETGEN: its ACK comes after every answer to the batch
    fence.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_GETGEN), NLM_F_REQUEST)
    fence.end()
    try:
        sock.send_batch(batch, fence=fence)
    except TransactionError as exc:
        failed = {e.index: e for e in exc.errors}
    else:  # pragma: no cover - the sentinel cannot succeed
        raise CapabilityError("nf_tables probe was committed; this should be impossible")
    if sentinel not in failed or failed[sentinel].errno != errno.ENOENT:
        info.notes.append("nf_tables probe: unexpected answer to the sentinel message")
    first_rule = 2
    for i, name in enumerate(EXPRESSIONS):
        err = failed.get(first_rule + i)
        # A known expression with no attributes is refused (EINVAL, EOPNOTSUPP) or
        # accepted; only an unknown expression type is ENOENT.
        info.expressions[name] = err is None or err.errno != errno.ENOENT
    info.queue_expression = info.expressions.get("queue", False)
    for family, attr in ((NFPROTO_IPV4, "ipv4_nat"), (NFPROTO_IPV6, "ipv6_nat")):
        start = nat_tables[family]
        ok = all(start + k not in failed for k in (0, 1))
        setattr(info, attr, ok)
    info.xt_nfqueue_target = _compat_exists(sock, "NFQUEUE", target=True)


def _new_table(w: MessageWriter, family: int, name: str) -> None:
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWTABLE), NLM_F_REQUEST | NLM_F_CREATE,
            family=family)
    w.string(NFTA_TABLE_NAME, name)
    w.end()


def _new_chain(w: MessageWriter, family: int, table: str, name: str,
               hook: tuple[int, int, str] | None = None) -> None:
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFTABLES, NFT_MSG_NEWCHAIN), NLM_F_REQUEST | NLM_F_CREATE,
            family=family)
    w.string(NFTA_CHAIN_TABLE, table)
    w.string(NFTA_CHAIN_NAME, name)
    if hook is not None:
        hooknum, priority, chain_type = hook
        with w.nest(NFTA_CHAIN_HOOK):
            w.be32(NFTA_HOOK_HOOKNUM, hooknum)
            w.be32(NFTA_HOOK_PRIORITY, priority)
        w.string(NFTA_CHAIN_TYPE, chain_type)
    w.end()


def _compat_exists(sock: NetlinkSocket, name: str, target: bool) -> bool:
    w = MessageWriter()
    w.begin(nfnl_msg_type(NFNL_SUBSYS_NFT_COMPAT, NFNL_MSG_COMPAT_GET), family=NFPROTO_IPV4)
    w.string(NFTA_COMPAT_NAME, name)
    w.be32(NFTA_COMPAT_REV, 0)
    w.be32(NFTA_COMPAT_TYPE, 1 if target else 0)
    w.end()
    try:
        sock.request(w)
    except NetlinkError:
        return False
    return True


def _attrs(msg: Message) -> list[tuple[int, memoryview]]:
    return list(iter_attrs(msg.attrs))


def _probe_conntrack(sock: NetlinkSocket, info: KernelInfo) -> None:
    replies = _ask(sock, info, NFNL_SUBSYS_CTNETLINK, ctnetlink.IPCTNL_MSG_CT_GET_STATS,
                   socket.AF_UNSPEC, "ctnetlink")
    if replies is None:
        return
    info.conntrack = True
    for reply in replies:
        stats = ctnetlink.STATS_GLOBAL.decode(reply.attrs)
        info.conntrack_count = stats.get("entries")  # type: ignore[assignment]
        info.conntrack_max = stats.get("max_entries")  # type: ignore[assignment]
    info.conntrack_buckets = _read_int(PROC_NF / "nf_conntrack_buckets")
    if info.conntrack_max is None:
        info.conntrack_max = _read_int(PROC_NF / "nf_conntrack_max")
    info.conntrack_events_sysctl = _read_int(PROC_NF / "nf_conntrack_events")
    try:
        with NetlinkSocket(groups=(NFNLGRP_CONNTRACK_NEW,)):
            info.conntrack_events = info.conntrack_events_sysctl != 0
    except CapabilityError:
        info.conntrack_events = False


def _probe_nfqueue(sock: NetlinkSocket, info: KernelInfo) -> None:
    # PF_UNBIND is a no-op the kernel still accepts: it proves nfnetlink_queue is there.
    w = MessageWriter()
    w.begin(nfnl_msg_type(NFNL_SUBSYS_QUEUE, NFQNL_MSG_CONFIG), family=socket.AF_INET)
    w.binary(NFQA_CFG_CMD, bytes([NFQNL_CFG_CMD_PF_UNBIND, 0]) + socket.htons(socket.AF_INET).to_bytes(2, "little"))
    w.end()
    try:
        sock.request(w)
        info.nfqueue = True
    except NetlinkError as exc:
        info.nfqueue = exc.errno not in (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT)
        if not info.nfqueue:
            info.notes.append(f"nfqueue: {exc}")
