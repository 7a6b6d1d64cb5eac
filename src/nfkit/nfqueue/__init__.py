"""nfnetlink_queue on nfkit's netlink core (the role of libnetfilter_queue).

`wire` is the sans-I/O half (queued packets in; config, verdicts and batch
verdicts out); `queue.Queue` binds one queue and does the I/O.  Reference:
docs/nfqueue.md.
"""

from nfkit.nfqueue.queue import Queue, queue_counters
from nfkit.nfqueue.wire import (
    COPY_MODES,
    FLAG_NAMES,
    NF_ACCEPT,
    NF_DROP,
    NF_REPEAT,
    Packet,
    parse_packet,
    verdict_bytes,
)

__all__ = ["COPY_MODES", "FLAG_NAMES", "NF_ACCEPT", "NF_DROP", "NF_REPEAT", "Packet", "Queue",
           "parse_packet", "queue_counters", "verdict_bytes"]
