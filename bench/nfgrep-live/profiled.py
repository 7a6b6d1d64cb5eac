"""bench/nfgrep-live/profiled.py: `nfkit ARGS...` with each queue worker under cProfile.

`profiled.py PREFIX nfgrep live ...`: every worker process writes its profile to
PREFIX-qN-PID.prof when it ends (SIGTERM), for `python -m pstats`.  bench.py's
--cprofile starts the daemon through this; cProfile's own cost inflates the
figures of that run (compare functions within the profile, not runs).
"""

from __future__ import annotations

import cProfile
import os
import sys
from typing import Any

import nfkit.nfgrep.live as live
from nfkit.cli.entry import run

prefix = sys.argv[1]
worker = live.run_worker


def profiled_worker(num: int, *args: Any, **kwargs: Any) -> None:
    prof = cProfile.Profile()
    prof.enable()
    try:
        worker(num, *args, **kwargs)
    finally:
        prof.disable()
        prof.dump_stats(f"{prefix}-q{num}-{os.getpid()}.prof")


live.run_worker = profiled_worker  # the daemon forks its workers with the module's name
run(sys.argv[2:])
