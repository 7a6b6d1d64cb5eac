"""The engine's fast paths against its general one: the same verdicts, fields and expectations.

The in-line step of `Engine._stream` and the first-byte gate of children
(`CHILD_GATE`) run only without a trace; with one, every step goes through
`_advance_stream` and every child is made and called.  Hypothesis cuts
real conversations (and conversations with a byte changed) into random
segments and compares the two.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from nfkit.nfgrep import engine as engine_module
from nfkit.nfgrep.compiler import compile_text
from nfkit.nfgrep.engine import WINDOW, Engine, FlowState, signatures_of
from nfkit.nfgrep.errors import VerifierError
from nfkit.nfgrep.loader import load_rules
from nfkit.nfgrep.verifier import verify

from .test_engine import FTP, HTTP, TLS, split_chunks
from .test_random_programs import programs, traffic

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


# -- a flow's first bytes without runs (`Engine._first`, off with FIRST_FEED) --------------

DNS_QUERY = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")
UDP_CONVERSATIONS = {
    "dns": [(0, DNS_QUERY), (1, b"\x12\x34\x81\x80" + DNS_QUERY[4:])],
    "dns-response-first": [(1, b"\x12\x34\x81\x80" + DNS_QUERY[4:]), (0, DNS_QUERY)],
    "junk": [(0, b"\x00\x01junk"), (1, b"x")],
}
# protocols decided by their first call beside ones that are not (a second step, a watch, a
# child, a step from either), sharing first bytes and ports so candidates come in both orders
FIRST_TEXT = """
protocol one over tcp, udp ports 7 { step a from client { "ONE" at 0 ; keep rest until "." within 20 } }
protocol one-more over tcp, udp ports 9 {
    step a from client { "ON" at 0 ; expect one-early over udp to client port 3000 }
    step b from server { "OK" at 0 ; expect one-data over tcp to server port 2000 }
}
protocol watched over tcp, udp ports 8 {
    step a from client { "ONCE" at 0 }
    watch w from client { find "PORT " within 100 ; let p = u8 ; expect w-data over tcp to client port p + 1 }
}
protocol parent over tcp, udp { step a from client { "OP" at 0 } }
protocol kid over tcp, udp after parent { step k from client { find "KID" within 50 } }
protocol kid-s over tcp, udp after parent { step k from server { "S" at 0 } }
protocol kid-z over tcp, udp after parent { step k from client { "Z" at 0 } }
protocol kid-2 over tcp, udp after parent {
    step k from client { "OPQ" at 0 ; expect kid-data over udp to server port 4000 }
    step l from client { "!" at 0 }
}
protocol parent-e over tcp, udp { step a from client { "PQ" at 0 } }
protocol kid-e over tcp, udp after parent-e { step k from either { "E" at 0 } }
protocol loose over tcp, udp { step a from client { find "?" within 30 } }
protocol talker over tcp, udp ports 7, 9 { step a from server { "ON" at 0 } }
protocol twice over tcp, udp { step a from client { "TW" at 0 } step b from client { "ICE" at 0 } }
"""
FIRST_RULES = signatures_of(verify(compile_text(FIRST_TEXT, "first.nfg")))
FIRST_CONVERSATIONS = {
    "one": [(0, b"ONE thing."), (1, b"OK")],
    "one-more": [(0, b"ON"), (1, b"OK")],
    "watched": [(0, b"ONCE PORT a PORT b"), (0, b" PORT c")],
    "parent": [(0, b"OP KID"), (1, b"x")],
    "parent-2": [(0, b"OPQ!"), (1, b"S")],
    "parent-3": [(0, b"OP"), (0, b"KID")],
    "parent-s": [(0, b"OPx"), (1, b"S")],
    "parent-e": [(0, b"PQ E"), (1, b"E")],
    "loose": [(0, b"ON?"), (1, b"ON")],
    "talker": [(1, b"ON"), (0, b"ONE.")],
    "twice": [(0, b"TWICE"), (0, b"TWICE")],
    "tls": TLS,
    "http": HTTP,
    "ftp": FTP,
}


def _first_feed(rules: list[Any], chunks: list[tuple[int, bytes | bytearray | memoryview]],
                transport: str, port: int, first: bool) -> tuple[object, ...]:
    engine = Engine(rules)
    saved = engine_module.FIRST_FEED
    engine_module.FIRST_FEED = first
    try:
        flow = engine.new_flow(transport, 40000, port, "192.0.2.1", "198.51.100.2")
        steps = []
        for d, data in chunks:
            engine.feed(flow, d, data)
            steps.append(_outcome(flow))
        later = engine.new_flow("tcp", 40001, 2000, "192.0.2.1", "198.51.100.2")  # expected?
    finally:
        engine_module.FIRST_FEED = saved
    return (steps, engine._seq, engine.expected, _outcome(later))


@settings(max_examples=200, deadline=None)
@given(which=st.sampled_from(sorted(FIRST_CONVERSATIONS) + sorted(UDP_CONVERSATIONS)),
       cuts=st.lists(st.integers(0, 3000), max_size=12),
       change=st.none() | st.tuples(st.integers(0, 7), st.integers(0, 1 << 16), st.integers(0, 255)),
       port=st.sampled_from([0, 7, 8, 9, 53, 80, 443, 6379, 40000]),
       transport=st.sampled_from(["tcp", "udp"]), client_only=st.booleans(),
       kind=st.sampled_from([bytes, bytearray, memoryview]))
@example(which="http", cuts=[], change=None, port=0, transport="tcp", client_only=True, kind=bytes)
def test_the_first_feed_gives_the_general_paths_answers(
        which: str, cuts: list[int], change: tuple[int, int, int] | None, port: int,
        transport: str, client_only: bool, kind: Any) -> None:
    chunks = list(UDP_CONVERSATIONS.get(which) or FIRST_CONVERSATIONS[which])
    if change is not None:
        k, at, value = change
        d, data = chunks[k % len(chunks)]
        b = bytearray(data)
        b[at % len(b)] = value
        chunks[k % len(chunks)] = (d, bytes(b))
    if transport == "tcp":
        chunks = split_chunks(chunks, cuts)
    rules = list(LIBRARY) + FIRST_RULES
    if client_only:  # no protocol starts from the server: a flow may end on its first bytes
        rules = [s for s in FIRST_RULES if s.steps[0].direction == 0]
    given = [(d, kind(data)) for d, data in chunks]
    assert _first_feed(rules, given, transport, port, True) == \
        _first_feed(rules, chunks, transport, port, False)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(text=programs, chunks=traffic, transport=st.sampled_from(["tcp", "udp"]),
       port=st.sampled_from([0, 2000]))
def test_the_first_feed_of_random_programs_gives_the_general_paths_answers(
        text: str, chunks: list[tuple[int, bytes]], transport: str, port: int) -> None:
    try:
        sigs = signatures_of(verify(compile_text(text, "random.nfg")))
    except VerifierError:
        return
    rules = sigs + FIRST_RULES
    assert _first_feed(rules, chunks, transport, port, True) == \
        _first_feed(rules, chunks, transport, port, False)


def test_a_flow_decided_by_its_first_bytes_keeps_no_stream() -> None:
    engine = Engine(LIBRARY)
    flow = engine.new_flow("tcp", 40000, 80)
    engine.feed(flow, 0, HTTP[0][1])
    assert flow.done and flow.app == "http" and flow._bufs == [] and flow._runs == []
    flow = engine.new_flow("tcp", 40000, 443)
    engine.feed(flow, 0, TLS[0][1])  # a second step to come: streams and a run
    assert not flow.done and flow._bufs is not None and [r.sig.name for r in flow._runs] == ["tls"]


@pytest.mark.parametrize("chunks", [
    [(0, b"TW"), (0, b"ICE")],   # held, its next step on the same bytes waits
    [(0, b"TWO"), (0, b"ICE")],  # held, its next step fails
    [(0, b"TWICE")],             # held twice: classified by the hand-over
    [(0, b"ONCE PORT a")],       # classified with a watch
    [(0, b"OP KID")],            # classified with a child
    [(0, b"OP")],                # children waiting: for more bytes, for the server
    [(0, b"OPQ!")],              # a child held twice: classified by the hand-over
    [(0, b"OPQ")],               # a child held, its next step waits
    [(0, b"OPx")],               # every child from the client fails
    [(0, b"PQ E")],              # a child from either
])
@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_the_first_feeds_hand_over(chunks: list[tuple[int, bytes]], transport: str) -> None:
    rules = list(LIBRARY) + FIRST_RULES
    assert _first_feed(rules, chunks, transport, 8, True) == \
        _first_feed(rules, chunks, transport, 8, False)


def test_a_done_flows_answers_are_not_changed_again() -> None:
    """The module docstring's promise: a caller may keep `fields`/`chain` of a done flow."""
    engine = Engine(LIBRARY)
    flow = engine.new_flow("tcp", 40000, 80)
    engine.feed(flow, 0, HTTP[0][1])
    assert flow.done
    fields, chain, seen = flow.fields, flow.chain, (dict(flow.fields), list(flow.chain))
    engine.feed(flow, 0, b"GET /other HTTP/1.1\r\nHost: elsewhere\r\n\r\n")
    engine.feed(flow, 1, b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    assert flow.fields is fields and flow.chain is chain and (fields, chain) == seen
