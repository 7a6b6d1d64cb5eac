"""`jsonfmt.no_gc`: the collector paused, then the objects made meanwhile in the
oldest generation (not the youngest, where the next allocation would scan them all),
still collectable, and a caller's frozen objects left frozen."""

from __future__ import annotations

import gc
from typing import Any

from nfkit.nftables.jsonfmt import no_gc


class _Node:
    def __init__(self) -> None:
        self.other: Any = None


def _cycle() -> Any:
    import weakref

    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_objects_made_in_the_pause_go_to_the_oldest_generation_and_stay_collectable() -> None:
    assert gc.isenabled()
    gc.collect()
    with no_gc():
        assert not gc.isenabled()
        made = [[i] for i in range(20000)]
        ref = _cycle()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0
    assert gc.get_count()[0] < 1000  # not 20,000 objects waiting in the youngest
    assert ref() is not None
    gc.collect()
    assert ref() is None  # the cycle made in the pause is garbage like any other
    del made


def test_a_callers_frozen_objects_stay_frozen() -> None:
    gc.collect()
    keep = [[i] for i in range(100)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with no_gc():
            _ = [[i] for i in range(100)]
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    del keep


def test_nested_pause_keeps_the_collector_off_until_the_outer_one_ends() -> None:
    with no_gc():
        with no_gc():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
