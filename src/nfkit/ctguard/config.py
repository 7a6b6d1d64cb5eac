"""ctguard's configuration file: every key, its type, default and meaning.

    [daemon]
    status = "/run/nfkit/ctguard.sock"
    metrics = ""                 # "127.0.0.1:9167": Prometheus metrics

    [limits]
    budget = 0                   # entries allowed; 0: the kernel's nf_conntrack_max
    interval = 0.2               # seconds between two looks at the fill level
    timeouts_at = 0.70           # shorten embryonic/closing/unreplied timeouts from here
    restore_below = 0.60         # ... and restore them below this
    short_timeout = 10           # seconds, those states' timeout under pressure
    evict_at = 0.90              # evict from here ...
    evict_to = 0.80              # ... down to here
    min_share = 16               # a source's fair share is never below this many entries
    batch = 2048                 # most evictions per round
    timeout_updates = 2048       # most existing entries shortened per round (after evictions)
    resync_interval = 30         # seconds, at least, between two resync dumps after lost events
    source_limit = true          # at evict_at, a source over its share: install a ct count rule
    source_limit_sets = 65535    # sources each of its sets (IPv4, IPv6) can count

    [scheduler]                  # ctguard's CPU scheduling (as conntrackd's General Scheduler)
    type = "normal"              # "normal", or "rr" / "fifo" (real-time: needs CAP_SYS_NICE)
    priority = 10                # 1-99, the real-time priority (below conntrackd's 99)

    [size]                       # the table's maximum and hash buckets (initial namespace)
    memory = ""                  # "512M": memory the table may take; empty: no plan
    entries_per_bucket = 1.0     # entries per hash bucket at the maximum
    apply = false                # write the plan (nf_conntrack_max, hashsize) at start

    [[topology]]                 # what a change on an interface flushes; none: as "*" below
    interface = "*"              # an interface, or "*": every one without an entry of its own
    address_removed = "unreplied"  # entries source-NATed to a removed address
    link_down = "none"           # entries source-NATed to the link's addresses
    link_up = "none"             # unreplied source-NATed entries ("none" or "unreplied")
    route_change = "none"        # entries to the destination of a route added or removed
    mark = 0                     # with mask: entries carrying this ct mark go at link down
    mask = 0                     # (an uplink's flows, steered by mark)

    Each of address_removed, link_down and route_change is "none", "unreplied"
    (only entries that never saw a reply) or "all".
"""

from __future__ import annotations

from pathlib import Path

from nfkit.ctguard.policy import Thresholds, check_thresholds
from nfkit.ctguard.size import parse_size
from nfkit.service.config import (
    Config,
    Key,
    Schema,
    Section,
    fraction,
    ifname,
    in_range,
    load,
    one_of,
)

MODES = ("none", "unreplied", "all")


def _interface(v: str) -> str:
    return v if v == "*" else ifname(v)


def _memory(v: str) -> str:
    if v:
        parse_size(v)
    return v


def _budget(v: int) -> int:
    if not 0 <= v <= 2**31 - 1:
        raise ValueError(f"{v} is out of range (0, or 1-{2**31 - 1})")
    return v


_T = Thresholds()

SCHEMA = Schema((
    Section("daemon", (
        Key("status", str, "status socket (`nfkit ctguard status`)", "/run/nfkit/ctguard.sock"),
        Key("metrics", str, "HOST:PORT serving Prometheus metrics (empty: none)", ""),
    ), "the daemon"),
    Section("limits", (
        Key("budget", int, "entries allowed (0: the kernel's nf_conntrack_max)", 0, _budget),
        Key("interval", (float, int), "seconds between two looks at the fill level", 0.2, in_range(0.01, 60)),
        Key("timeouts_at", (float, int), "shorten timeouts from this fill", _T.timeouts_at, fraction),
        Key("restore_below", (float, int), "restore them below this fill", _T.restore_below, fraction),
        Key("short_timeout", int, "seconds, embryonic/closing/unreplied under pressure",
            _T.short_timeout, in_range(1, 3600)),
        Key("evict_at", (float, int), "evict from this fill", _T.evict_at, fraction),
        Key("evict_to", (float, int), "evict down to this fill", _T.evict_to, fraction),
        Key("min_share", int, "a source's fair share is never below this", _T.min_share,
            in_range(1, 2**31 - 1)),
        Key("batch", int, "most evictions per round", _T.batch, in_range(1, 1 << 20)),
        Key("timeout_updates", int, "most existing entries whose timeout is shortened per round "
            "(after the evictions; the rest the next rounds)", 2048, in_range(1, 1 << 20)),
        Key("resync_interval", (float, int), "seconds, at least, between two resync dumps after "
            "lost events (in between: the picture is inexact, the fill comes from the kernel)", 30,
            in_range(0, 3600)),
        Key("source_limit", bool, "at evict_at, when a source holds more than its share: install "
            "table inet nfkit_ctguard, new connections limited per source to the share "
            "(`ct count over N` drop); removed below restore_below and on exit", True),
        Key("source_limit_sets", int, "sources each set of that rule (IPv4, IPv6) can count",
            65535, in_range(1, 1 << 24)),
    ), "when and how hard to act"),
    Section("scheduler", (
        Key("type", str, "CPU scheduling: normal, or rr / fifo (real-time, as conntrackd runs; the "
            "kernel's refusal, without CAP_SYS_NICE, stops the start)", "normal",
            one_of("normal", "rr", "fifo")),
        Key("priority", int, "the real-time priority (1-99)", 10, in_range(1, 99)),
    ), "ctguard's CPU scheduling: under a flood it must keep up with the events to relieve the table"),
    Section("size", (
        Key("memory", str, "memory the table may take (\"512M\"; empty: no plan)", "", _memory),
        Key("entries_per_bucket", (float, int), "entries per hash bucket at the maximum", 1.0,
            in_range(0.125, 64)),
        Key("apply", bool, "write the plan (nf_conntrack_max, hashsize) at start; "
            "initial namespace only", False),
    ), "the table's maximum and hash buckets, within a memory budget (`nfkit ctguard plan`)"),
    Section("topology", (
        Key("interface", str, "an interface, or \"*\": every one without an entry of its own",
            check=_interface),
        Key("address_removed", str, "entries source-NATed to a removed address: none, unreplied, all",
            "unreplied", one_of(*MODES)),
        Key("link_down", str, "entries source-NATed to the link's addresses: none, unreplied, all",
            "none", one_of(*MODES)),
        Key("link_up", str, "unreplied source-NATed entries: none, unreplied", "none",
            one_of("none", "unreplied")),
        Key("route_change", str, "entries to a route's destination when it is added or removed "
            "through the interface: none, unreplied, all", "none", one_of(*MODES)),
        Key("mark", int, "with mask: entries carrying this ct mark go when the link goes down", 0,
            in_range(0, 0xFFFFFFFF)),
        Key("mask", int, "mask of that mark (0: no mark flush)", 0, in_range(0, 0xFFFFFFFF)),
    ), "per interface, the entries a topology change makes stale (none given: one \"*\" "
       "entry with its defaults)", many=True),
))


def thresholds(cfg: Config) -> Thresholds:
    lim = cfg["limits"]
    return Thresholds(lim["timeouts_at"], lim["restore_below"], lim["evict_at"], lim["evict_to"],
                      lim["min_share"], lim["short_timeout"], lim["batch"])


def read(path: str | Path) -> Config:
    """Read and check a ctguard file (ConfigError: file:line: key: why)."""
    cfg = load(path, SCHEMA)
    seen: set[str] = set()
    for i, rule in enumerate(cfg["topology"]):
        if rule["interface"] in seen:
            raise cfg.error(("topology", i, "interface"), f"{rule['interface']} has an earlier entry")
        seen.add(rule["interface"])
    if cfg["size"]["apply"] and not cfg["size"]["memory"]:
        raise cfg.error(("size", "apply"), "needs size.memory (the budget the plan fits in)")
    try:
        check_thresholds(thresholds(cfg))
    except ValueError as exc:
        raise cfg.error(("limits", "evict_to" if "evict" in str(exc) else "restore_below"),
                        str(exc)) from None
    return cfg
