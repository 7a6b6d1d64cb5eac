"""The daemon's CPU scheduling, as conntrackd 1.4.7 sets its own.

Owns: putting the process under the real-time policy the configuration names
(General Scheduler { Type RR|FIFO; Priority 1-99 }; without the block 1.4.7
runs SCHED_RR at priority 99, and so does nfkit).  A sync daemon late by a
loaded machine's time slices misses heartbeats and peers' deadlines: in a
cluster a peer starved for DeadTime is taken for dead.
Must not know: the protocol, sockets, the kernel's tables.
"""

from __future__ import annotations

import logging
import os

from nfkit.errors import CapabilityError
from nfkit.ha.conf import Conf

log = logging.getLogger("nfkit.ha")

POLICIES = {"RR": os.SCHED_RR, "FIFO": os.SCHED_FIFO}


def apply(conf: Conf) -> str:
    """Set this process's policy; returns it as text ("RR 99").  Raises CapabilityError when a
    Scheduler block was given and the kernel refused it; without the block (conntrackd's default)
    a refusal (no CAP_SYS_NICE, e.g. in a container) is a warning and the daemon runs as it is."""
    kind, prio = conf.scheduler
    try:
        os.sched_setscheduler(0, POLICIES[kind], os.sched_param(prio))
    except OSError as exc:
        why = f"General Scheduler {kind} priority {prio}: {exc.strerror or exc}"
        if conf.scheduler_given:
            raise CapabilityError(why) from None
        log.warning("%s: running under the normal scheduler (a loaded machine can delay the sync)", why)
        return "normal"
    log.info("scheduler %s priority %d", kind, prio)
    return f"{kind} {prio}"
