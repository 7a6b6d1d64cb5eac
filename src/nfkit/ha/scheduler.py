"""The daemon's CPU scheduling, as conntrackd 1.4.7 sets its own.

Owns: the policy the configuration names (General Scheduler { Type RR|FIFO;
Priority 1-99 }; without the block 1.4.7 runs SCHED_RR at priority 99, and so
does nfkit), set by `nfkit.service.scheduler`.  A sync daemon late by a
loaded machine's time slices misses heartbeats and peers' deadlines: in a
cluster a peer starved for DeadTime is taken for dead.
Must not know: the protocol, sockets, the kernel's tables.
"""

from __future__ import annotations

import logging

from nfkit.ha.conf import Conf
from nfkit.service import scheduler

log = logging.getLogger("nfkit.ha")


def apply(conf: Conf) -> str:
    """Set this process's policy; returns it as text ("RR 99").  Raises CapabilityError when a
    Scheduler block was given and the kernel refused it; without the block (conntrackd's default)
    a refusal (no CAP_SYS_NICE, e.g. in a container) is a warning and the daemon runs as it is."""
    kind, prio = conf.scheduler
    had = scheduler.apply(kind, prio, given=conf.scheduler_given, setting=f"General Scheduler {kind} priority {prio}",
                          risk="a loaded machine can delay the sync", log=log)
    if had != "normal":
        log.info("scheduler %s priority %d", kind, prio)
    return had
