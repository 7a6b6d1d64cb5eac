"""`cli.guard.one_shot`, the one way a bulk command pauses the collector and ends fast;
no command group turns the collector off for its other commands."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

RUN = r'''
import gc, sys
from nfkit.cli.guard import guarded, one_shot
from nfkit.errors import InputError

@one_shot
def command(what):
    print("collector", "on" if gc.isenabled() else "off")
    if what == "refuse":
        raise InputError("FILE: refused")
    return 3 if what == "three" else None

guarded(command, sys.argv[1])
print("not reached")
'''


@pytest.mark.parametrize(("what", "status", "out", "err"), [
    ("three", 3, "collector off\n", ""),
    ("none", 0, "collector off\n", ""),
    ("refuse", 2, "collector off\n", "nfkit: FILE: refused\n"),
])
def test_one_shot_runs_without_the_collector_and_ends_with_its_status(what, status, out, err) -> None:
    p = subprocess.run([sys.executable, "-c", RUN, what], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (status, out, err)


def test_the_rules_group_leaves_the_collector_on() -> None:
    from nfkit.cli.rules import rules

    assert gc.isenabled()
    try:
        rules.callback()  # type: ignore[misc]
        assert gc.isenabled()  # only one_shot commands (load, check, list, exists) turn it off
    finally:
        gc.enable()
