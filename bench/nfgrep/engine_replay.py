"""bench/nfgrep/engine_replay: the nfgrep engine alone, on the calls a real classify run made.

    record CAPTURE OUT.pickle    run `classify` on CAPTURE, keeping every Engine.new_flow and
                                 Engine.feed call (arguments, `now`, bytes) in order
    replay OUT.pickle [--runs N] [--digest]
                                 make those calls again on a fresh Engine (the engine of the
                                 PYTHONPATH in use): CPU seconds per run (median of N), and with
                                 --digest a hash of every flow's done/app/fields/chain/
                                 expectations after each of its feeds, to compare two trees

The recording is the engine's whole input, so two engines that print the same
digest gave every flow the same answers at every step of that run.
"""

from __future__ import annotations

import hashlib
import pickle
import statistics
import sys
import time
from typing import Any


def record(capture: str, out: str) -> None:
    from nfkit.nfgrep import classify as classify_module
    from nfkit.nfgrep.engine import Engine

    calls: list[tuple[Any, ...]] = []
    ids: dict[int, int] = {}
    new_flow, feed = Engine.new_flow, Engine.feed

    def recording_new_flow(self: Engine, *args: Any, **kwargs: Any) -> Any:
        st = new_flow(self, *args, **kwargs)
        ids[id(st)] = len(ids)
        calls.append(("n", args, kwargs))
        keep.append(st)  # ids stay unique while recording
        return st

    def recording_feed(self: Engine, st: Any, direction: int, data: bytes) -> None:
        calls.append(("f", ids[id(st)], self.now, direction, bytes(data)))
        feed(self, st, direction, data)

    keep: list[Any] = []
    Engine.new_flow = recording_new_flow  # type: ignore[method-assign]
    Engine.feed = recording_feed  # type: ignore[method-assign]
    try:
        classify_module.classify([capture])
    finally:
        Engine.new_flow, Engine.feed = new_flow, feed  # type: ignore[method-assign]
    with open(out, "wb") as f:
        pickle.dump(calls, f, protocol=pickle.HIGHEST_PROTOCOL)
    flows = sum(1 for c in calls if c[0] == "n")
    print(f"{flows} flows, {len(calls) - flows} feeds -> {out}")


def _outcome(st: Any) -> bytes:
    return repr((st.done, st.app, sorted(st.fields.items()), list(st.chain),
                 list(st.expectations))).encode()


def replay(calls: list[tuple[Any, ...]], rules: Any, digest: bool) -> tuple[float, str]:
    from nfkit.nfgrep.engine import Engine

    engine = Engine(rules)
    flows: list[Any] = []
    h = hashlib.sha256()
    new_flow, feed = engine.new_flow, engine.feed
    t0 = time.process_time()
    if digest:
        for c in calls:
            if c[0] == "f":
                st = flows[c[1]]
                engine.now = c[2]
                feed(st, c[3], c[4])
                h.update(b"%d:" % c[1] + _outcome(st))
            else:
                st = new_flow(*c[1], **c[2])
                flows.append(st)
                h.update(b"n%d:" % (len(flows) - 1) + _outcome(st))
    else:
        for c in calls:
            if c[0] == "f":
                engine.now = c[2]
                feed(flows[c[1]], c[3], c[4])
            else:
                flows.append(new_flow(*c[1], **c[2]))
    elapsed = time.process_time() - t0
    for st in flows:
        h.update(_outcome(st))
    return elapsed, h.hexdigest()


def main(argv: list[str]) -> None:
    if argv[:1] == ["record"] and len(argv) == 3:
        record(argv[1], argv[2])
        return
    if argv[:1] == ["replay"] and len(argv) >= 2:
        from nfkit.nfgrep.loader import load_rules

        rules = load_rules()
        runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 5
        with open(argv[1], "rb") as f:
            calls = pickle.load(f)
        times = []
        digest = ""
        for _ in range(runs):
            elapsed, digest = replay(calls, rules, "--digest" in argv)
            times.append(elapsed)
        print(f"median {statistics.median(times):.4f} s CPU over {runs} runs, min {min(times):.4f} "
              f"({' '.join(f'{t:.4f}' for t in times)}); digest {digest[:16]}")
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
