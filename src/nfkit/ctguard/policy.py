"""What ctguard does at a fill level: pure decisions over a `Picture`, no I/O.

In order, each from its own threshold (fractions of the limit: the kernel's
maximum, or the file's per-namespace budget):

1. ``timeouts_at``: shorter timeouts for embryonic and closing TCP states and
   unreplied UDP (the namespace's sysctls for new entries, a timeout update
   for the existing ones); restored below ``restore_below``.
2. ``evict_at``: evict down to ``evict_to``, by value:
   - fairness first: a source holding more than its fair share (the limit
     divided among the active sources, never below ``min_share``) loses its
     excess, and no source within its share loses anything while another
     exceeds its own (once every excess is taken, the order below goes on
     if more must go);
   - then unreplied and not ASSURED entries, oldest first; then other not
     ASSURED ones; then closing TCP entries (FIN_WAIT ... TIME_WAIT, CLOSE);
     then the longest-idle ASSURED entries (idleness is read for a few
     candidates only, the youngest, by the caller's ``idleness`` function,
     to the second: among entries equally idle the youngest goes first, as a
     table filling up is filled by its newest entries; at most
     ``idle_reads`` a round, beyond which the youngest go).  A source over
     its share loses its entries in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nfkit.ctguard.picture import Key, Picture, Record, entry_key

# sysctl (under net.netfilter) -> the states whose entries it times out
SHORTENED_STATES: dict[str, tuple[str, ...]] = {
    "nf_conntrack_tcp_timeout_syn_sent": ("SYN_SENT", "SYN_SENT2"),
    "nf_conntrack_tcp_timeout_syn_recv": ("SYN_RECV",),
    "nf_conntrack_tcp_timeout_fin_wait": ("FIN_WAIT",),
    "nf_conntrack_tcp_timeout_close_wait": ("CLOSE_WAIT",),
    "nf_conntrack_tcp_timeout_last_ack": ("LAST_ACK",),
    "nf_conntrack_tcp_timeout_time_wait": ("TIME_WAIT",),
    "nf_conntrack_udp_timeout": ("UNREPLIED",),
}


@dataclass(frozen=True)
class Thresholds:
    timeouts_at: float = 0.70
    restore_below: float = 0.60
    evict_at: float = 0.90
    evict_to: float = 0.80
    min_share: int = 16
    short_timeout: int = 10  # seconds, for the states of SHORTENED_STATES
    batch: int = 2048        # most evictions per round
    idle_candidates: int = 4  # idleness read for this many ASSURED candidates per eviction
    idle_reads: int = 512     # ... and for at most this many a round (a get each)


@dataclass
class Eviction:
    records: list[Record] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)  # reason -> count

    def add(self, r: Record, reason: str) -> None:
        self.records.append(r)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def fair_share(picture: Picture, limit: int, t: Thresholds) -> int:
    sources = max(1, len(picture.by_source))
    return max(t.min_share, limit // sources)


def to_evict(count: int, limit: int, t: Thresholds) -> int:
    """How many entries a round evicts at this fill: 0 below ``evict_at``, else down to
    ``evict_to``, at most ``batch``."""
    if limit <= 0 or count < t.evict_at * limit:
        return 0
    return min(t.batch, count - int(t.evict_to * limit))


def _order(r: Record) -> tuple[int, float]:
    """The order a source's entries are considered in: by tier; within the cheap tiers the
    oldest first (they have waited longest for a reply or their end); ASSURED ones the
    youngest first (whose idleness is then read: the oldest are the connections that were
    there before the pressure, and a table filling up is filled by its newest entries)."""
    return (r.tier, -r.first_seen if r.tier == 3 else r.first_seen)


def _idlest(pool: Sequence[Record], idle: dict[Key, float]) -> list[Record]:
    """``pool`` with the idlest first; equally idle (idleness is read to the second), the
    youngest first; those whose idleness was not read after all of those it was read for."""
    known = [r for r in pool if entry_key(r.entry) in idle]
    unknown = [r for r in pool if entry_key(r.entry) not in idle]
    return sorted(known, key=lambda r: (-idle[entry_key(r.entry)], -r.first_seen)) + unknown


REASONS = ("unreplied", "not assured", "closing")


def choose(picture: Picture, count: int, limit: int, t: Thresholds,
           idleness: Callable[[Sequence[Record]], dict[Key, float]], *,
           need: int | None = None, sources_only: bool = False) -> Eviction:
    """The entries to evict now (empty below ``evict_at``); see the module's docstring.
    ``need``: how many (default: `to_evict`); ``sources_only``: only the excess of the
    sources over their share (the first step; the caller takes the rest otherwise).

    Touches only the entries it may take (the picture's per-tier and per-source
    indexes), and reads idleness for at most ``t.idle_reads`` entries a round.
    """
    out = Eviction()
    if need is None:
        need = to_evict(count, limit, t)
    if need <= 0:
        return out
    reads = t.idle_reads
    share = fair_share(picture, limit, t)
    excess = {src: n - share for src, n in picture.by_source.items() if n > share}
    for src in sorted(excess, key=excess.__getitem__, reverse=True):
        if len(out.records) >= need:
            break
        rows = sorted(picture.of_source[src].values(), key=_order)
        cheap = [r for r in rows if r.tier < 3]
        assured = rows[len(cheap):]
        wanted = min(excess[src], need - len(out.records))
        if len(cheap) < wanted and reads > 0:  # among its ASSURED entries, the idlest go first
            pool = assured[: min(reads, t.idle_candidates * (wanted - len(cheap)))]
            reads -= len(pool)
            rows = cheap + _idlest(pool, idleness(pool)) + assured[len(pool):]
        for r in rows[:wanted]:
            out.add(r, f"source over its share ({share})")
    if sources_only:
        return out
    # fairness first: only once no source exceeds its share (all excess taken) does anyone
    # else pay, by tier: the cheap tiers oldest first, then the idlest ASSURED entries
    taken = {entry_key(r.entry) for r in out.records}
    for tier in (0, 1, 2):
        if len(out.records) >= need:
            return out
        for key, r in picture.tiers[tier].items():
            if len(out.records) >= need:
                break
            if key not in taken:
                out.add(r, REASONS[tier])
    left = need - len(out.records)
    if left > 0:
        pool = []
        for key, r in reversed(picture.tiers[3].items()):  # the youngest first
            if len(pool) >= min(t.idle_candidates * left, max(reads, left)):
                break
            if key not in taken:
                pool.append(r)
        read = pool[:reads]
        order = (_idlest(read, idleness(read)) if read else []) + pool[len(read):]
        for i, r in enumerate(order[:left]):
            out.add(r, "longest idle" if i < len(read) else "youngest")
    return out


def timeouts_wanted(count: int, limit: int, shortened: bool, t: Thresholds) -> bool | None:
    """True: shorten now; False: restore now; None: leave as is."""
    if limit <= 0:
        return None
    fill = count / limit
    if not shortened and fill >= t.timeouts_at:
        return True
    if shortened and fill < t.restore_below:
        return False
    return None


def check_thresholds(t: Thresholds) -> None:
    """ValueError naming the pair out of order."""
    if not 0 < t.restore_below < t.timeouts_at <= 1:
        raise ValueError("need 0 < restore_below < timeouts_at <= 1")
    if not 0 < t.evict_to < t.evict_at <= 1:
        raise ValueError("need 0 < evict_to < evict_at <= 1")
