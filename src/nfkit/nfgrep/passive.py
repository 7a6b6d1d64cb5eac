"""Classify the traffic passing an interface, watching only (`nfkit nfgrep classify -i`).

Owns: running `Classifier` on the frames of a `Ring` until a packet count,
a duration, SIGTERM or SIGINT; with ``workers`` > 1, one process per fanout
member (the kernel's symmetric hash keeps each connection on one worker),
their reports merged.  Must not know: how frames are classified (classify),
how the ring works (ring).

The frames go through the same batches as a capture file's, so the flows
and verdicts are those of a capture of the same traffic.  One limit with
several workers: a flow announced by another (FTP data) is labelled by the
expectation only when both land on the same worker.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import signal
import time
from collections.abc import Iterable
from typing import Any

from nfkit.errors import InputError
from nfkit.nfgrep.capture import CaptureStop
from nfkit.nfgrep.classify import Classifier, ClassifyReport
from nfkit.nfgrep.ring import Ring, fanout_id

POLL_MS = 100


def _classifier(rules: Iterable[str] | None, options: dict[str, Any]) -> Classifier:
    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules

    return Classifier(Engine(load_rules(list(rules) if rules else None)), **options)


def _run(ring: Ring, classifier: Classifier, stop: multiprocessing.synchronize.Event,
         count: Any, limit: int | None, deadline: float | None,
         signalled: list[bool] | None = None) -> tuple[ClassifyReport, int]:
    """Read blocks until told to stop; the report and the frames the kernel dropped."""
    def done() -> bool:
        return (stop.is_set() or (signalled is not None and signalled[0])
                or (deadline is not None and time.monotonic() >= deadline))

    while not done():
        frames = ring.read(POLL_MS, done)
        if not frames:
            continue
        if limit is not None and count is not None:
            with count.get_lock():
                room = limit - count.value
                frames = frames[:max(room, 0)]
                count.value += len(frames)
            if room <= len(frames):
                stop.set()
        if frames:
            classifier.feed(frames)
    ring.close()
    return classifier.finish(), ring.dropped


def _worker(interface: str, group: int, rules: list[str] | None, options: dict[str, Any],
            stop: multiprocessing.synchronize.Event, ready: Any, results: Any,
            count: Any, limit: int | None, deadline: float | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        ring = Ring(interface, fanout=group)
        classifier = _classifier(rules, options)
    except Exception as exc:  # the parent reports it and stops: no worker missing silently
        ready.put(str(exc) or type(exc).__name__)
        return
    ready.put("")
    report, dropped = _run(ring, classifier, stop, count, limit, deadline)
    results.put((report, dropped))


def watch(interface: str, rules: Iterable[str] | None = None, workers: int = 1,
          count: int | None = None, duration: float | None = None,
          ready: Any = None, **options: Any) -> tuple[ClassifyReport, int]:
    """Classify what passes ``interface`` until ``count`` packets, ``duration`` seconds, SIGTERM or SIGINT.

    Returns the report (flows in order of first packet, every worker's) and
    the number of frames the kernel dropped because a ring was full.
    ``ready()`` is called once every ring is bound.  Raises `InputError`
    for an unknown interface, `OSError` when the kernel refuses the socket.
    """
    rules = list(rules) if rules else None
    stop = multiprocessing.get_context("fork").Event()
    deadline = time.monotonic() + duration if duration is not None else None
    # a handler only sets a flag: it may run while the main thread holds the Event's lock
    signalled = [False]

    def handler(signum: int, frame: object) -> None:
        signalled[0] = True

    old: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if workers <= 1:
            ring = Ring(interface)
            classifier = _classifier(rules, options)
            counter = multiprocessing.get_context("fork").Value("q", 0) if count is not None else None
            if ready is not None:
                ready()
            return _run(ring, classifier, stop, counter, count, deadline, signalled)
        return _fanout(interface, rules, workers, count, deadline, stop, signalled, ready, options)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _fanout(interface: str, rules: list[str] | None, workers: int, count: int | None,
            deadline: float | None, stop: multiprocessing.synchronize.Event,
            signalled: list[bool], ready: Any, options: dict[str, Any]) -> tuple[ClassifyReport, int]:
    ctx = multiprocessing.get_context("fork")
    up, results = ctx.Queue(), ctx.Queue()
    counter = ctx.Value("q", 0)
    group = fanout_id()
    procs = [ctx.Process(target=_worker, args=(interface, group, rules, options, stop, up, results,
                                               counter, count, deadline), daemon=True)
             for _ in range(workers)]
    for p in procs:
        p.start()
    try:
        errors = [e for e in (up.get(timeout=60) for _ in procs) if e]
        if errors:
            stop.set()
            raise InputError(f"interface {interface}: {errors[0]}")
        if ready is not None:
            ready()
        while not signalled[0] and not stop.is_set() and (deadline is None
                                                            or time.monotonic() < deadline):
            time.sleep(POLL_MS / 1000)
        stop.set()
        parts = [results.get() for _ in procs]
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():  # pragma: no cover - a worker stuck in the kernel
                p.kill()
                p.join()
    return merge([r for r, _ in parts]), sum(d for _, d in parts)


def merge(reports: list[ClassifyReport]) -> ClassifyReport:
    """One report from the workers' (flows in order of first packet)."""
    flows = sorted((f for r in reports for f in r.flows), key=lambda f: (f.first, f.order))
    stops: list[CaptureStop] = [s for r in reports for s in r.stops]
    first = reports[0]
    return ClassifyReport(flows=flows, stops=stops, packets=sum(r.packets for r in reports),
                          skipped=sum(r.skipped for r in reports),
                          evicted=sum(r.evicted for r in reports), gaps=sum(r.gaps for r in reports),
                          budget_evicted=sum(r.budget_evicted for r in reports),
                          max_memory=first.max_memory)
