"""A daemon's CPU scheduling: the real-time policy its configuration names (conntrackd's
General Scheduler block is the model; ha and ctguard both set theirs here).

Owns: putting the process under SCHED_RR or SCHED_FIFO at a priority, and what a refusal
means: an error when the configuration asked for the policy, a warning (and the normal
scheduler) when it is only the daemon's default (no CAP_SYS_NICE, e.g. in a container).
Must not know: any daemon's configuration format.
"""

from __future__ import annotations

import logging
import os

from nfkit.errors import CapabilityError

POLICIES = {"RR": os.SCHED_RR, "FIFO": os.SCHED_FIFO}


def apply(kind: str, priority: int, *, given: bool, setting: str, risk: str, log: logging.Logger) -> str:
    """Put this process under policy ``kind`` ("RR" or "FIFO") at ``priority`` (1-99); returns
    it as text ("RR 99").  ``setting`` names the configuration that asked (for messages),
    ``risk`` what the normal scheduler costs the daemon.  Raises CapabilityError when the
    kernel refused a policy the configuration gave (``given``); a refused default is logged
    as a warning and the daemon runs as it is ("normal")."""
    try:
        os.sched_setscheduler(0, POLICIES[kind], os.sched_param(priority))
    except OSError as exc:
        why = f"{setting}: {exc.strerror or exc}"
        if given:
            raise CapabilityError(why) from None
        log.warning("%s: running under the normal scheduler (%s)", why, risk)
        return "normal"
    return f"{kind} {priority}"
