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
import sysconfig
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
    """What nfkit found; see `probe`.

    A value nfkit could not find out is None, with the reason in ``unknown``
    (field name -> reason): never a "no" or a 0 it did not see.
    """

    kernel: str
    netns: str
    nf_tables: bool | None = False
    nf_tables_genid: int | None = None
    expressions: dict[str, bool] | None = field(default_factory=dict)
    queue_expression: bool | None = False
    xt_nfqueue_target: bool | None = False
    xt_nfqueue_module: str | None = None  # iptables' libxt_NFQUEUE.so, which nft prints xt targets with
    conntrack: bool | None = False
    conntrack_count: int | None = None
    conntrack_max: int | None = None
    conntrack_buckets: int | None = None
    conntrack_events: bool | None = False
    conntrack_events_sysctl: int | None = None
    nfqueue: bool | None = False
    ipv6_nat: bool | None = False
    ipv4_nat: bool | None = False
    notes: list[str] = field(default_factory=list)
    unknown: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def not_known(self, names: tuple[str, ...], reason: str) -> None:
        """Mark ``names`` as not found out, for ``reason``."""
        for name in names:
            setattr(self, name, None)
            self.unknown[name] = reason


# netfilter's netlink answers every message with EPERM without CAP_NET_ADMIN in the
# namespace, before it looks at what was asked: EPERM says nothing about the kernel
PERMISSION_DENIED = "permission denied (needs CAP_NET_ADMIN in this network namespace)"
_DENIED = (errno.EPERM, errno.EACCES)
NFTABLES_FIELDS = ("nf_tables", "nf_tables_genid", "expressions", "queue_expression",
                   "xt_nfqueue_target", "ipv4_nat", "ipv6_nat")
CONNTRACK_FIELDS = ("conntrack", "conntrack_events")
NFQUEUE_FIELDS = ("nfqueue",)
# the /proc/sys/net/netfilter files behind the conntrack numbers (readable by anyone)
PROC_FIELDS = {"conntrack_count": "nf_conntrack_count", "conntrack_max": "nf_conntrack_max",
               "conntrack_buckets": "nf_conntrack_buckets",
               "conntrack_events_sysctl": "nf_conntrack_events"}


def _read_proc(info: KernelInfo) -> None:
    """The conntrack numbers from /proc, each None with its reason when unreadable."""
    for name, leaf in PROC_FIELDS.items():
        path = PROC_NF / leaf
        try:
            value: int | None = int(path.read_text().split()[0])
        except FileNotFoundError:
            value = None
            info.unknown[name] = f"{path} does not exist (nf_conntrack not loaded)"
        except PermissionError:
            value = None
            info.unknown[name] = f"{path}: permission denied"
        except (OSError, ValueError, IndexError) as exc:
            value = None
            info.unknown[name] = f"{path}: {exc}"
        setattr(info, name, value)


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
        for part, names in ((_probe_nftables, NFTABLES_FIELDS), (_probe_conntrack, CONNTRACK_FIELDS),
                            (_probe_nfqueue, NFQUEUE_FIELDS)):
            try:
                part(sock, info)
            except NetlinkError as exc:
                if exc.errno not in _DENIED:
                    raise
                info.not_known(names, PERMISSION_DENIED)
        if info.conntrack is None:
            _read_proc(info)  # what /proc tells anyone
    if info.unknown:
        info.notes.append("some answers are unknown: netfilter's netlink tells nothing without "
                          "CAP_NET_ADMIN (run nfkit info as root in the namespace)")
    info.xt_nfqueue_module = xt_extension_module("NFQUEUE")
    if not info.queue_expression and info.xt_nfqueue_target and info.xt_nfqueue_module is None:
        info.notes.append(
            "queue rules go through the xt NFQUEUE target here, and `nft list ruleset` prints "
            "them without their verdict: nft needs iptables' extension module libxt_NFQUEUE.so "
            f"(Debian package iptables), not found in {':'.join(xt_extension_dirs())}")
    return info


def xt_extension_dirs() -> list[str]:
    """Where libxtables (and so nft, when it prints an xt target) looks for extension modules."""
    configured = os.environ.get("XTABLES_LIBDIR")
    if configured:
        return [d for d in configured.split(":") if d]
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    return [f"/usr/lib/{multiarch}/xtables", "/usr/lib64/xtables", "/usr/lib/xtables",
            "/usr/local/lib/xtables"]


def xt_extension_module(target: str) -> str | None:
    """Path of the libxt_TARGET.so that nft would load to print ``target``, or None."""
    for directory in xt_extension_dirs():
        path = Path(directory) / f"libxt_{target}.so"
        if path.is_file():
            return str(path)
    return None


def _ask(sock: NetlinkSocket, info: KernelInfo, subsys: int, msg: int, family: int,
         label: str) -> list[Message] | None:
    """One attribute-less GET; None (and a note) when the kernel refuses it."""
    w = MessageWriter()
    w.begin(nfnl_msg_type(subsys, msg), family=family)
    w.end()
    try:
        return sock.request(w)
    except NetlinkError as exc:
        if exc.errno in _DENIED:
            raise  # the caller marks what it would have found as unknown
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
    expressions: dict[str, bool] = {}
    for i, name in enumerate(EXPRESSIONS):
        err = failed.get(first_rule + i)
        # A known expression with no attributes is refused (EINVAL, EOPNOTSUPP) or
        # accepted; only an unknown expression type is ENOENT.
        expressions[name] = err is None or err.errno != errno.ENOENT
    info.expressions = expressions
    info.queue_expression = expressions.get("queue", False)
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
    _read_proc(info)
    for reply in replies:
        stats = ctnetlink.STATS_GLOBAL.decode(reply.attrs)
        for name, key in (("conntrack_count", "entries"), ("conntrack_max", "max_entries")):
            if key in stats:  # the kernel's own numbers for this namespace
                setattr(info, name, stats[key])
                info.unknown.pop(name, None)
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
        if exc.errno in _DENIED:
            raise
        info.nfqueue = exc.errno not in (errno.EOPNOTSUPP, errno.EPROTONOSUPPORT)
        if not info.nfqueue:
            info.notes.append(f"nfqueue: {exc}")
