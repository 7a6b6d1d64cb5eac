"""The conntrack table's size: a maximum and hash buckets that fit a memory budget.

Raising ``nf_conntrack_max`` alone leaves the hash as it was, so each bucket's
chain grows with the table; the buckets only change through the module's
``hashsize`` parameter, and only from the initial network namespace (as does
``nf_conntrack_max``: read-only inside any other).  A plan takes the memory
the table may use and the kernel's own entry size (the ``nf_conntrack`` slab
object, from /sys/kernel/slab or /proc/slabinfo) and gives the maximum and the
buckets (``entries_per_bucket`` entries per bucket, the buckets rounded up as
the kernel rounds them: a page of bucket heads at a time).

Counted per entry: the slab object and its share of the bucket array (one
pointer per bucket).  Not counted: the small separate allocation of an entry's
extensions (NAT, accounting, labels...), whose size depends on what is loaded;
leave room for it in the budget.  `plan` reads only; `apply` writes the two
values and is refused outside the initial namespace.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nfkit.errors import CapabilityError, InputError

SLAB_OBJECT_SIZE = Path("/sys/kernel/slab/nf_conntrack/object_size")
SLABINFO = Path("/proc/slabinfo")
MAX_SYSCTL = Path("/proc/sys/net/netfilter/nf_conntrack_max")
BUCKETS_SYSCTL = Path("/proc/sys/net/netfilter/nf_conntrack_buckets")
HASHSIZE = Path("/sys/module/nf_conntrack/parameters/hashsize")
BUCKET_BYTES = 8       # struct hlist_nulls_head: one pointer
PAGE_BYTES = 4096      # the kernel allocates bucket heads by the page
MAX_ENTRIES = 2**31 - 1


def entry_size(object_size: Path = SLAB_OBJECT_SIZE, slabinfo: Path = SLABINFO) -> tuple[int, str]:
    """The size of one conntrack entry in bytes and where it was read.

    Raises CapabilityError when neither source is readable (no nf_conntrack
    module loaded, or /proc/slabinfo closed to this user).
    """
    try:
        return int(object_size.read_text().split()[0]), str(object_size)
    except (OSError, ValueError, IndexError):
        pass
    try:
        for line in slabinfo.read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == "nf_conntrack":  # name active num objsize ...
                return int(fields[3]), str(slabinfo)
    except (OSError, ValueError, IndexError):
        pass
    raise CapabilityError(f"conntrack entry size: neither {object_size} nor an nf_conntrack line "
                          f"in {slabinfo} can be read (nf_conntrack not loaded, or not root)")


def initial_namespace() -> bool:
    """Is this process in the initial network namespace (the one of PID 1)?"""
    try:
        return os.stat("/proc/self/ns/net").st_ino == os.stat("/proc/1/ns/net").st_ino
    except OSError:
        return False


def round_buckets(n: int) -> int:
    """``n`` buckets rounded up as the kernel rounds its hash: whole pages of heads."""
    per_page = PAGE_BYTES // BUCKET_BYTES
    return max(per_page, math.ceil(n / per_page) * per_page)


@dataclass(frozen=True)
class Plan:
    memory: int               # bytes the table may take
    entry_bytes: int          # one slab object
    entry_source: str
    entries_per_bucket: float
    max: int                  # nf_conntrack_max to write
    buckets: int              # hashsize to write
    table_bytes: int          # what max entries and the buckets take
    current_max: int
    current_buckets: int
    initial_namespace: bool

    @property
    def writes(self) -> dict[str, int]:
        return {str(MAX_SYSCTL): self.max, str(HASHSIZE): self.buckets}

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "writes": self.writes}


def plan(memory: int, entries_per_bucket: float, entry: tuple[int, str] | None = None,
         current: tuple[int, int] | None = None, initial: bool | None = None) -> Plan:
    """The largest maximum whose entries and buckets fit in ``memory`` bytes.

    ``entry`` (size, source), ``current`` (max, buckets) and ``initial`` are
    read from the kernel when not given.  InputError when not even one page of
    buckets and its entries fit.
    """
    if entries_per_bucket <= 0:
        raise InputError(f"entries_per_bucket {entries_per_bucket}: must be above 0")
    size, source = entry if entry is not None else entry_size()
    if current is None:
        current = (_read_int(MAX_SYSCTL), _read_int(BUCKETS_SYSCTL))
    # per entry: the object and 1/entries_per_bucket of a bucket head; then the buckets
    # rounded up to whole pages may not fit any more: step down until they do
    n = min(MAX_ENTRIES, int(memory / (size + BUCKET_BYTES / entries_per_bucket)))
    while n > 0:
        buckets = round_buckets(math.ceil(n / entries_per_bucket))
        used = n * size + buckets * BUCKET_BYTES
        if used <= memory:
            break
        n -= max(1, (used - memory) // size)
    if n <= 0:
        raise InputError(f"memory {memory} bytes: too small for a conntrack table "
                         f"({size}-byte entries, {PAGE_BYTES}-byte pages of buckets)")
    return Plan(memory, size, source, entries_per_bucket, n, buckets, used, current[0], current[1],
                initial_namespace() if initial is None else initial)


def apply(p: Plan) -> None:
    """Write the plan's buckets, then its maximum (CapabilityError outside the initial
    namespace, where the kernel keeps both read-only)."""
    if not p.initial_namespace:
        raise CapabilityError("conntrack size: nf_conntrack_max and hashsize can be written only "
                              "from the initial network namespace")
    HASHSIZE.write_text(f"{p.buckets}\n")
    MAX_SYSCTL.write_text(f"{p.max}\n")


def _read_int(path: Path) -> int:
    return int(path.read_text().split()[0])


def parse_size(text: str) -> int:
    """Bytes from ``N``, ``NK``, ``NM``, ``NG`` (powers of 1024); ValueError saying why."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in units and t[-1:] else ""
    try:
        value = int(t[: len(t) - len(unit)]) * units[unit]
    except ValueError:
        raise ValueError(f"{text!r} is not a size (N, NK, NM or NG)") from None
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive size")
    return value
