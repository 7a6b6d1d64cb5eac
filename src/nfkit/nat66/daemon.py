"""`nfkit nat66 run`: the file's NAT66 kept true while uplinks come, go and change prefix.

On `nfkit.service.daemon`: at start the file is applied for the uplinks as
the kernel shows them; then every link or address event (rtnetlink) and every
change of a prefix file re-reads the uplinks (`uplinks.Topology`) and, when one
changed, re-maps in one transaction (NPT chains and the steering map) and
flushes the conntrack entries of each uplink that went down or changed prefix
(`nfkit.conntrack.stale`, the one flush shared with ctguard): they re-establish
over a live uplink, or under the new prefix, instead of hanging.  SIGTERM ends
it and removes nothing unless the file (or `--remove-on-exit`) asks.
"""

from __future__ import annotations

import collections
import logging
import selectors
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from nfkit.conntrack.stale import flush_stale, uplink_filter
from nfkit.conntrack.table import ConntrackTable
from nfkit.errors import EventsLost
from nfkit.nat66 import routing, rules
from nfkit.nat66.uplinks import Topology, UplinkState
from nfkit.nftables import run_commands
from nfkit.route.rtnl import RouteEvents, Rtnl
from nfkit.service.config import Config
from nfkit.service.daemon import Service
from nfkit.service.owntable import Owned

log = logging.getLogger("nfkit.nat66")

FILE_POLL = 0.1  # seconds between two looks at the prefix files


class Nat66(Service):
    name = "nat66"

    def __init__(self, cfg: Config, remove_on_exit: bool = False) -> None:
        self.cfg = cfg
        self.remove_on_exit = remove_on_exit or cfg["daemon"]["remove_on_exit"]
        self.topology = Topology(cfg["uplink"])
        self.watch_files = any(u["outside"].startswith("file:") for u in cfg["uplink"])
        self.rt: Rtnl | None = None
        self.events: RouteEvents | None = None
        self.table: ConntrackTable | None = None
        self.changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self.remaps = 0
        self.flushed = 0
        self.registry = CollectorRegistry()
        r = self.registry
        self.m_live = Gauge("nfkit_nat66_uplink_live", "1 when the uplink carries new flows",
                            ["interface"], registry=r)
        self.m_remaps = Counter("nfkit_nat66_remaps_total", "transactions after a change",
                                registry=r)
        self.m_flushed = Counter("nfkit_nat66_stale_flushed_total",
                                 "conntrack entries flushed after an uplink change", registry=r)
        self.m_reaction = Histogram("nfkit_nat66_reaction_seconds",
                                    "from noticing a change to rules committed and entries "
                                    "flushed", registry=r,
                                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

    # ------------------------------------------------------------ lifecycle
    def start(self, selector: selectors.BaseSelector) -> None:
        self.rt = Rtnl()
        self.table = ConntrackTable()
        self.events = RouteEvents()  # subscribed before the first read: nothing is missed
        selector.register(self.events, selectors.EVENT_READ, self.on_route)
        self.topology.update(self.rt.links(), self.rt.addresses(6))
        cmds = rules.changes(self.cfg, self.topology)
        if cmds:
            run_commands(cmds)
        self.ensure_routing()
        self.record("start", [], time.monotonic(), len(cmds), 0)

    def stop(self) -> None:
        try:
            if self.remove_on_exit:
                remove(self.cfg, self.rt)
                log.info("removed nfkit's NAT66 rules, policy rules and routes")
        finally:
            for sock in (self.events, self.table, self.rt):
                if sock is not None:
                    sock.close()

    def tick(self) -> float | None:
        if not self.watch_files:
            return None
        self.react(time.monotonic())
        return FILE_POLL

    # ------------------------------------------------------------ changes
    def on_route(self) -> None:
        assert self.events is not None
        noticed = time.monotonic()
        try:
            relevant = any(kind in ("link", "address") for kind, _, _ in self.events.pending())
        except EventsLost:
            relevant = True  # read everything again
        if relevant:
            self.react(noticed)

    def react(self, noticed: float) -> None:
        """Read the uplinks again; on a change, re-map in one transaction, then flush
        the entries of every uplink that stopped carrying flows or changed prefix."""
        assert self.rt is not None and self.table is not None
        changed = self.topology.update(self.rt.links(), self.rt.addresses(6))
        if not changed:
            return
        cmds = rules.changes(self.cfg, self.topology)
        if cmds:
            run_commands(cmds)
        stale = [before for before, after in changed
                 if before.live and (not after.live or before.outside != after.outside)]
        filters = [uplink_filter(s) for u in stale if (s := u.as_stale()) is not None]
        deleted = flush_stale(self.table, filters).deleted if filters else 0
        self.remaps += 1
        self.flushed += deleted
        self.m_remaps.inc()
        self.m_flushed.inc(deleted)
        if any(after.running and not before.running for before, after in changed):
            self.ensure_routing()  # a link that came back may have lost its routes
        self.record("change", changed, noticed, len(cmds), deleted)

    def ensure_routing(self) -> None:
        assert self.rt is not None
        for problem in routing.ensure(self.rt, self.cfg["uplink"], self.topology):
            log.warning("%s (added when the link is up)", problem)

    # ------------------------------------------------------------ reporting
    def record(self, what: str, changed: list[tuple[UplinkState, UplinkState]], noticed: float,
               commands: int, flushed: int) -> None:
        took = time.monotonic() - noticed
        self.m_reaction.observe(took)
        for u in self.topology.uplinks:
            self.m_live.labels(u.interface).set(1 if u.live else 0)
        why = "; ".join(_describe(b, a) for b, a in changed) or "started"
        log.info("%s: %s: %d command(s), %d stale entries flushed in %.1f ms",
                 what, why, commands, flushed, took * 1000)
        self.changes.append({"time": time.time(), "what": why, "commands": commands,
                             "flushed": flushed, "seconds": round(took, 6)})

    def status(self) -> dict[str, Any]:
        return {"uplinks": self.topology.status(),
                "npt": [{"inside": str(e["inside"]), "outside": str(e["outside"]),
                         "interface": e["interface"]} for e in self.cfg["npt"]],
                "inside": self.cfg["multihoming"]["inside"] or None,
                "balance": self.cfg["multihoming"]["balance"],
                "remaps": self.remaps, "stale_flushed": self.flushed,
                "changes": list(self.changes)}


def _describe(before: UplinkState, after: UplinkState) -> str:
    parts = []
    if before.running != after.running:
        parts.append("up" if after.running else "down")
    if before.outside != after.outside:
        parts.append(f"prefix {before.outside or '-'} -> {after.outside or '-'}")
    return f"{after.interface} {', '.join(parts) or 'changed'}"


def remove(cfg: Config, rt: Rtnl | None = None) -> None:
    """Remove all nfkit's NAT66 holds: its NPT chains, its table, the uplinks' policy
    routing."""
    rules.NPT_CHAINS.remove()
    Owned(rules.FAMILY, rules.TABLE).remove()
    if cfg["uplink"]:
        own = rt is None
        rt = rt or Rtnl()
        try:
            routing.remove(rt, cfg["uplink"])
        finally:
            if own:
                rt.close()
