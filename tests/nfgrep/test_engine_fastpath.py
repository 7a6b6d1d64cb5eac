"""The engine's fast paths against its general one: the same verdicts, fields and expectations.

The in-line step of `Engine._stream` and the first-byte gate of children
(`CHILD_GATE`) run only without a trace; with one, every step goes through
`_advance_stream` and every child is made and called.  Hypothesis cuts
real conversations (and conversations with a byte changed) into random
segments and compares the two.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from nfkit.nfgrep import engine as engine_module
from nfkit.nfgrep.compiler import compile_text
from nfkit.nfgrep.engine import WINDOW, Engine, FlowState, signatures_of
from nfkit.nfgrep.loader import load_rules
from nfkit.nfgrep.verifier import verify

from .test_engine import FTP, HTTP, TLS, split_chunks

LIBRARY = load_rules()

# a parent and children of every shape: a literal on the data already here (gated), a
# literal on the other direction (not here yet: made), a search (no first byte), either
CHAINED_TEXT = """
protocol hello over tcp {
    step hello from client { any of "HELLO", "AHOY" at 0 }
    watch more from client { find "MORE" within 64 }
}
protocol hello-a over tcp after hello {
    step a from client { "AHOYA" at 0 }
    step a2 from server { "A" at 0 }
}
protocol hello-b over tcp after hello {
    step b from server { "OK" at 0 }
    step b2 from client { find "X" within 100 }
}
protocol hello-c over tcp after hello {
    step c from client { find "C!" within 100 }
}
protocol hello-d over tcp after hello {
    step d from client { find "D" within 100 }
    step tail from client { keep tail until "." within 20 }
}
protocol hello-w over tcp after hello {
    step w from client { find "W" within 65536 }
    step bang from client { "!" at 0 }
}
protocol hello-e over tcp after hello {
    step e from either { "HELLOE" at 0 }
}
"""
CHAINED = signatures_of(verify(compile_text(CHAINED_TEXT, "chained.nfg")))

CONVERSATIONS = {
    "http": HTTP,
    "tls": TLS,
    "ftp": FTP,
    "websocket": [(0, b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\n\r\n"),
                  (1, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")],
    "http-connect": [(0, b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n"),
                     (1, b"HTTP/1.1 200 Connection established\r\n\r\n")],
    "redis": [(0, b"*1\r\n$4\r\nPING\r\n"), (1, b"+PONG\r\n")],
    "hello-a": [(0, b"AHOYA"), (1, b"A ok MORE")],
    "hello-b": [(0, b"HELLO there"), (1, b"OK"), (0, b"X MORE")],
    "hello-d": [(0, b"HELLO D1x."), (1, b"fine")],
    # hello-w holds on the window's last byte: its next step fails on the full window
    "hello": [(0, b"HELLO " + b"x" * (WINDOW - 7) + b"W"), (1, b"NO")],
    "hello-e": [(1, b"HELLOE"), (0, b"HELLOE MORE")],
}


def _run(rules: list[Any], chunks: list[tuple[int, bytes]], general: bool,
         port: int) -> FlowState:
    engine = Engine(rules)
    if general:
        engine.trace = lambda event: None  # every step through `_advance_stream`
    saved = engine_module.CHILD_GATE
    engine_module.CHILD_GATE = not general
    try:
        flow = engine.new_flow("tcp", 40000, port, "192.0.2.1", "198.51.100.2")
        for d, data in chunks:
            engine.feed(flow, d, data)
    finally:
        engine_module.CHILD_GATE = saved
    return flow


def _outcome(flow: FlowState) -> tuple[object, ...]:
    return (flow.done, flow.app, flow.chain, flow.fields, flow.expectations)


@settings(max_examples=150, deadline=None)
@given(which=st.sampled_from(sorted(CONVERSATIONS)),
       cuts=st.lists(st.integers(0, 5000), max_size=30),
       change=st.none() | st.tuples(st.integers(0, 7), st.integers(0, 1 << 16), st.integers(0, 255)),
       port=st.sampled_from([0, 80, 443, 6379]))
def test_fast_paths_give_the_general_paths_answers(which: str, cuts: list[int],
                                                   change: tuple[int, int, int] | None,
                                                   port: int) -> None:
    chunks = list(CONVERSATIONS[which])
    if change is not None:  # one byte of one chunk replaced: verdicts that fail late or early
        k, at, value = change
        d, data = chunks[k % len(chunks)]
        b = bytearray(data)
        b[at % len(b)] = value
        chunks[k % len(chunks)] = (d, bytes(b))
    rules = list(LIBRARY) + CHAINED
    pieces = split_chunks(chunks, cuts)
    fast = _run(rules, pieces, general=False, port=port)
    assert _outcome(fast) == _outcome(_run(rules, pieces, general=True, port=port))
    if change is None:
        assert fast.app == which


def test_a_child_ruled_out_by_its_first_byte_is_never_called() -> None:
    """hello's children on "HELLO": hello-a ("AHOYA" at 0) is neither made nor called;
    hello-b (from the server, not here yet), hello-c, hello-d, hello-w (searches), hello-e (either)
    are made."""
    calls: list[tuple[Any, ...]] = []
    rules = signatures_of(verify(compile_text(CHAINED_TEXT, "chained.nfg")))
    child = next(s for s in rules if s.name == "hello-a")
    fn = child.steps[0].fn

    def counted(*args: Any) -> int:
        calls.append(args)
        return fn(*args)

    child.steps[0].fn = counted
    engine = Engine(rules)
    flow = engine.new_flow("tcp", 40000, 7)
    engine.feed(flow, 0, b"HELLO you")
    assert flow.app == "hello" and not calls
    assert sorted(r.sig.name for r in flow._runs) == ["hello-b", "hello-c", "hello-d", "hello-e", "hello-w"]
    flow = engine.new_flow("tcp", 40000, 7)
    engine.feed(flow, 0, b"AHOYA")
    assert len(calls) == 1 and "hello-a" in [r.sig.name for r in flow._runs]
