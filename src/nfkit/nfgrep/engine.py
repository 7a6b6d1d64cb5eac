"""The nfgrep engine: runs verified signatures on the flows it is fed.

Interface (what the flow table and the `classify` command code against)::

    from nfkit.nfgrep.engine import Engine
    from nfkit.nfgrep.loader import load_rules

    rules = load_rules(paths)      # .nfg/.nfgb files or directories; None: the shipped library
    engine = Engine(rules)
    st = engine.new_flow(transport="tcp", client_port=40000, server_port=80,
                         client_addr="192.0.2.1", server_addr="192.0.2.2")  # addrs optional
    engine.feed(st, 0, b"GET / HTTP/1.1\\r\\nHost: example.org\\r\\n\\r\\n")   # client -> server
    engine.feed(st, 1, b"HTTP/1.1 200 OK\\r\\n\\r\\n")                         # server -> client
    st.done          # True: classified with nothing more to learn, or every candidate gave up
    st.app           # "http"  (the last protocol of the chain, or None)
    st.chain         # ["http"]; e.g. ["http", "websocket"] after an upgrade
    st.fields        # {"method": "GET", "host": "example.org"}
    st.expectations  # [Expectation(label, transport, addr, port), ...] announced by this flow

`feed(st, direction, data)`: direction 0 is client -> server, 1 server ->
client.  On TCP, `data` is the next in-order reassembled bytes of that
direction's stream (the engine keeps what it needs per flow, at most
WINDOW bytes per direction); on UDP, one datagram.  Once `st.done` is true
the caller may stop feeding (feeding more is a cheap no-op), and the engine
never changes that flow's `fields`, `chain` or `expectations` again: a caller
may keep them as they are, without copies.

A flow whose server address and port match an expectation announced earlier
(FTP PASV/EPSV/PORT) is labelled at `new_flow` (app "ftp-data", done at
once) without any signature of its own.  Pass the addresses to `new_flow` for
that; without them expectations match on transport and port alone.

Expectations are dated: each carries `Engine.now` as it was when announced
(a caller's clock, say the index of the packet being fed; 0 unless set), and
`new_flow(since=T)` / `expecting(since=T)` see only those announced before
``T``.  A caller that feeds flows in another order than their packets came
(one flow's packets together, then the next flow's) gets the answers of
capture order, as long as it starts flows in the order they began and feeds
each flow's own bytes in their order (`nfkit.nfgrep.classify`'s flow-major
walk).  Without ``since`` every expectation counts (live callers).

`engine.trace = True` records a `TraceEvent` per step tried in `st.events`;
a callable instead receives each event as it happens (`nfgrep test` uses it).

Semantics (docs/nfgrep.md has the full text): each protocol whose transport
fits is a candidate; port hints only order the candidates.  Its steps run in
order; a step that holds moves on to the next, a step that fails (or says
`give up`) drops the candidate, a step that lacks data waits.  The first
candidate to hold its last step classifies the flow; the other candidates
are dropped, the protocols declared `after` it become candidates, and its
watches start.  A flow is done when no candidate and no watch is left.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from nfkit.errors import InputError
from nfkit.nfgrep.bytecode import OPCODES, TCP, UDP
from nfkit.nfgrep.codegen import FAIL, GIVE_UP, NEED, StepFunction, bind, first_bytes, generate, unbind

if TYPE_CHECKING:  # verified programs come from the loader, which imports the verifier
    from nfkit.nfgrep.verifier import Verified

WINDOW = 16384          # bytes kept per direction while candidates run
WATCH_BUDGET = 1 << 20  # bytes a watch may examine per direction before it ends
MAX_EXPECTATIONS = 4096  # engine-wide table of announced flows (oldest dropped first)
MAX_FIELD = 1024
# children (`after` protocols) ruled out by their first byte are never made (`_classified`);
# False gives the general path (every child runs and fails), for tests comparing the two
CHILD_GATE = True
# a flow's first bytes are tried on its candidates without runs or streams (`Engine._first`);
# False gives the general path (`_admit`, then `_stream` or `_datagram`), for tests comparing the two
FIRST_FEED = True


class Expectation(NamedTuple):
    """A flow announced by another: its label, transport, server address (or None) and port."""

    label: str
    transport: str
    addr: str | None
    port: int


@dataclass
class TraceEvent:
    """One step tried on one flow: what `nfgrep test` shows."""

    flow: FlowState
    protocol: str
    step: str
    direction: int
    result: str  # "held", "waits", "failed", "gave up", "classified", "expected"
    offset: int  # stream offset (TCP) or datagram offset where the step ended or started
    fields: list[tuple[str, str]] = field(default_factory=list)


class _Step:
    __slots__ = ("name", "watch", "direction", "fn", "cost", "source")

    def __init__(self, name: str, watch: bool, direction: int, fn: StepFunction, cost: int,
                 source: str) -> None:
        self.name = name
        self.watch = watch
        self.direction = direction
        self.fn = fn
        self.cost = cost
        self.source = source


class Signature:
    """One loaded protocol: its steps translated to Python functions."""

    def __init__(self, name: str, transports: int, ports: list[int], after: str | None,
                 nvars: int, steps: list[_Step], origin: str,
                 first: frozenset[int] | None = None, announces: bool = False) -> None:
        self.name = name
        self.transports = transports
        self.ports = frozenset(ports)
        self.after = after
        self.nvars = nvars
        self.steps = [s for s in steps if not s.watch]
        self.watches = [s for s in steps if s.watch]
        self.origin = origin
        self.zeros = (0,) * nvars  # its variables before the first step (steps work on a copy)
        self.announces = announces  # has an `expect`: the order of expectations matters
        # bytes the first step's direction may start with (None: any)
        self.first = first if self.steps[0].direction != 2 else None

    def __repr__(self) -> str:
        return f"<Signature {self.name} from {self.origin}>"


_EXPECT = OPCODES["EXPECT"]


class Rules(list[Signature]):
    """Signatures in load order (what `nfkit.nfgrep.loader.load_rules` returns)."""


def signatures_of(verified: Verified, counting: bool = False) -> list[Signature]:
    """Translate a verified program into Signatures (one per protocol)."""
    program = verified.program
    out = []
    for pi, (proto, funcs) in enumerate(zip(program.protocols, generate(verified, counting), strict=True)):
        steps = [_Step(program.text(s.name), s.watch, s.direction, fn, verified.costs[(pi, si)],
                       src)
                 for si, (s, (fn, src)) in enumerate(zip(proto.steps, funcs, strict=True))]
        out.append(Signature(program.text(proto.name), proto.transports, proto.ports,
                             None if proto.after is None else program.text(proto.after),
                             len(proto.variables), steps, program.origin,
                             first_bytes(program, proto.steps[0].code),
                             any(ins.op == _EXPECT for st in proto.steps for ins in st.code)))
    return out


def record_of(sig: Signature) -> tuple[Any, ...]:
    """A loaded signature as plain values (marshal keeps them: the loader's cache);
    `from_record` gives the signature back."""
    return (sig.name, sig.transports, sorted(sig.ports), sig.after, sig.nvars,
            [(s.name, s.watch, s.direction, *unbind(s.fn), s.cost, s.source) for s in sig.steps + sig.watches],
            sig.origin, sig.first, sig.announces)


def from_record(record: tuple[Any, ...]) -> Signature:
    """The signature `record_of` wrote.  Raises ValueError or TypeError for a record of
    another shape."""
    name, transports, ports, after, nvars, steps, origin, first, announces = record
    return Signature(name, transports, ports, after, nvars,
                     [_Step(n, w, d, bind(code, names), cost, src)
                      for n, w, d, code, names, cost, src in steps],
                     origin, first, announces)


_ORIGIN = (0, 0)
_UNSEEN = (-1, -1)


class _Run:
    """One candidate protocol (or one watch) on one flow.

    Its per-direction pairs (``base``, ``seen``) are tuples replaced when they
    change, and ``vars``/``fields``/``expects`` start as shared empty values: a
    candidate that fails on its first call allocates nothing of its own.
    """

    __slots__ = ("sig", "index", "base", "vars", "fields", "expects", "seen", "watch", "budget", "at")

    def __init__(self, sig: Signature, watch: _Step | None = None) -> None:
        self.sig = sig
        self.index = 0
        self.base = _ORIGIN  # stream offset where its next step starts, per direction
        self.vars: Sequence[int] = sig.zeros  # never changed in place: a step returns a new list
        self.fields: Sequence[tuple[str, str]] = ()
        self.expects: Sequence[tuple[str, str, str, int]] = ()
        self.seen = _UNSEEN  # stream end, per direction, where its step last needed more
        self.watch = watch
        self.budget = WATCH_BUDGET
        self.at = _ORIGIN  # when its last step ended (see Engine._when)


# a flow's streams before `Engine._open` makes them: tuples, so that a write would fail loudly
_NO_OFFS: Any = (0, 0)
_NO_FULL: Any = (False, False)
_NO_ARRIVALS: Any = ((), ())


def _held(sig: Signature, V: list[int], K: list[tuple[str, str]],
          X: list[tuple[str, str, str, int]]) -> _Run:
    """A candidate whose first step held with variables ``V``, fields ``K`` and
    expectations ``X`` (as `Engine._step_taken` leaves it; the caller sets where)."""
    run = _Run(sig)
    run.vars = V
    if K:
        run.fields = K
    if X:
        run.expects = X
    run.index = 1
    return run


class FlowState:
    """What the engine knows of one flow.  Read `done`, `app`, `fields`, `chain`, `expectations`."""

    __slots__ = ("transport", "client_port", "server_port", "client_addr", "server_addr",
                 "done", "app", "fields", "chain", "_expectations", "_events", "_runs",
                 "_watches", "_bufs", "_offs", "_full", "_pending", "_arrivals", "_xkeys")

    def __init__(self, transport: str, client_port: int, server_port: int,
                 client_addr: str | None, server_addr: str | None) -> None:
        self.transport = transport
        self.client_port = client_port
        self.server_port = server_port
        self.client_addr = client_addr
        self.server_addr = server_addr
        self.done = False
        self.app: str | None = None
        self.fields: dict[str, str] = {}
        self.chain: list[str] = []
        self._expectations: list[Expectation] | None = None  # made when read or announced
        self._events: list[TraceEvent] | None = None
        self._runs: list[_Run] = []
        self._pending = 0
        self._xkeys: list[tuple[object, ...]] | None = None  # order keys of `expectations`
        self._watches: list[_Run] = []
        # TCP streams, made (`Engine._open`) when the first bytes must be kept: a flow
        # decided on its first segment never has them
        self._bufs: list[bytearray] | None = None
        self._offs: list[int] = _NO_OFFS
        self._full: list[bool] = _NO_FULL
        # (stream end offset, arrival number) per chunk, kept only when something reads them
        self._arrivals: list[list[tuple[int, int]]] = _NO_ARRIVALS

    @property
    def expectations(self) -> list[Expectation]:
        """[Expectation(label, transport, addr, port), ...] announced by this flow."""
        if self._expectations is None:
            self._expectations = []
        return self._expectations

    @property
    def events(self) -> list[TraceEvent]:
        """The `TraceEvent`s recorded while `Engine.trace` is True."""
        if self._events is None:
            self._events = []
        return self._events

    def __repr__(self) -> str:
        return (f"<FlowState {self.transport} {self.client_port}->{self.server_port} "
                f"app={self.app} done={self.done}>")


_RESULT = {FAIL: "failed", NEED: "waits", GIVE_UP: "gave up"}


# a `_first` gate entry: candidates, their ports, those decided in one call
_FirstGate = tuple[tuple[Signature, ...], frozenset[int], frozenset[Signature],
                   dict[tuple[int, int], tuple[Signature, ...]]]


class Engine:
    """Classifies flows with a set of loaded signatures (see the module docstring)."""

    def __init__(self, rules: Iterable[Signature]) -> None:
        sigs = list(rules)
        names = {s.name for s in sigs}
        seen: dict[tuple[str, int], Signature] = {}
        for s in sigs:
            for bit in (TCP, UDP):
                if s.transports & bit:
                    other = seen.setdefault((s.name, bit), s)
                    if other is not s:
                        raise InputError(
                            f"protocol {s.name} over {'tcp' if bit == TCP else 'udp'} is loaded "
                            f"twice ({other.origin} and {s.origin}): load one of them")
        for s in sigs:
            if s.after is not None and s.after not in names:
                raise InputError(f"protocol {s.name} ({s.origin}) runs after {s.after}, "
                                 f"but no loaded protocol is named {s.after}")
        self.signatures = sigs
        self._roots = {
            "tcp": [s for s in sigs if s.after is None and s.transports & TCP],
            "udp": [s for s in sigs if s.after is None and s.transports & UDP],
        }
        # per transport, direction and first byte: the roots whose first step reads that
        # direction (or either) and admits that byte; they become candidates on it
        self._gate: dict[tuple[str, int], list[tuple[Signature, ...]]] = {}
        for tr, roots in self._roots.items():
            for d in (0, 1):
                self._gate[(tr, d)] = [
                    tuple(s for s in roots if s.steps[0].direction in (d, 2)
                          and (s.first is None or b in s.first)) for b in range(256)]
        self._starts = {tr: sum(1 << d for d in (0, 1)
                                if any(s.steps[0].direction in (d, 2) for s in roots))
                        for tr, roots in self._roots.items()}
        self._children: dict[tuple[str, str], list[Signature]] = {}
        for s in sigs:
            if s.after is not None:
                for tr, bit in (("tcp", TCP), ("udp", UDP)):
                    if s.transports & bit:
                        self._children.setdefault((tr, s.after), []).append(s)
        # a flow's first bytes (`_first`): per gate entry, its candidates, the union of their
        # port hints, which of them are decided by that one call alone (one step, no watch,
        # no child) and their orders by hinted ports (`_hinted_first`); None where a
        # candidate's first step reads from either direction
        self._first_gate: dict[tuple[str, int], list[_FirstGate | None]] = {}
        for (tr, d), entries in self._gate.items():
            made: dict[tuple[Signature, ...], _FirstGate | None] = {}
            for cands in entries:
                if cands not in made:
                    made[cands] = None if any(c.steps[0].direction != d for c in cands) else (
                        # (one candidate: no order to choose)
                        cands, frozenset().union(*(c.ports for c in cands)) if len(cands) > 1
                        else frozenset(),
                        frozenset(c for c in cands if len(c.steps) == 1 and not c.watches
                                  and (tr, c.name) not in self._children), {})
            self._first_gate[(tr, d)] = [made[cands] for cands in entries]
        # (transport, address, port) -> its announcements not yet taken, as (date, number,
        # label) in date order; keys in the order they were last announced
        self._expected: OrderedDict[tuple[str, str | None, int], list[tuple[int, int, str]]] = \
            OrderedDict()
        self._announced = 0  # numbers announcements: the later of two on one date wins
        self.now = 0  # the caller's clock: expectations are dated with it (module docstring)
        self._expected_ports: dict[tuple[str, int], int] = {}
        self.trace: bool | Callable[[TraceEvent], None] = False
        self._cost = [0]  # cost units spent (counted only by rules loaded with counting=True)
        self._either = any(s.direction == 2 for sig in sigs for s in sig.steps + sig.watches)
        # segment arrivals are kept only when something reads them: a step from either
        # direction, or expectations (ordered by when their bytes came, see `_when`)
        self._timed = self._either or any(sig.announces for sig in sigs)
        self._seq = 0

    # -- flows
    def expecting(self, transport: str, server_port: int, since: int | None = None) -> bool:
        """Could a new flow to this port, begun at ``since``, be labelled by an expectation
        (see `new_flow`)?"""
        if not self._expected or (transport, server_port) not in self._expected_ports:
            return False
        if since is None:
            return True
        return any(key[0] == transport and key[2] == server_port and dates[0][0] < since
                   for key, dates in self._expected.items())

    def new_flow(self, transport: str = "tcp", client_port: int = 0, server_port: int = 0,
                 client_addr: str | None = None, server_addr: str | None = None,
                 expected: bool = True, since: int | None = None) -> FlowState:
        """Start tracking a flow; it may be labelled at once by an expectation.

        ``expected=False``: do not look expectations up (a caller that starts
        the engine late, and asked `expecting` when the flow began).
        ``since``: when the flow began on the caller's clock (`now`); only
        expectations announced before it count (None: all).
        """
        if transport not in ("tcp", "udp"):
            raise InputError(f"transport {transport!r}: nfgrep classifies tcp and udp flows")
        st = FlowState(transport, client_port, server_port, client_addr, server_addr)
        if expected and self._expected and (transport, server_port) in self._expected_ports:
            label = self._take_expected(transport, server_addr, server_port, since)
            if label is not None:
                st.app = label
                st.chain = [label]
                st.done = True
                st._bufs = []
                if self.trace:
                    self._event(st, label, "expectation", 1, "expected", 0, [])
                return st
        if not self._roots[transport]:
            st.done = True
        # directions whose first bytes have not come and that some root starts on
        st._pending = self._starts[transport]
        return st

    def _admit(self, st: FlowState, d: int, first: int) -> None:
        """First bytes of direction d: the roots starting on d and admitting them join."""
        st._pending &= ~(1 << d)
        sigs = self._gate[(st.transport, d)][first]
        if not sigs:
            return
        cp, sp = st.client_port, st.server_port
        hinted: list[_Run] = []
        rest: list[_Run] = []
        for s in sigs:  # one pass, the gate's order kept within each part
            ports = s.ports
            (hinted if sp in ports or cp in ports else rest).append(_Run(s))
        st._runs = hinted + st._runs + rest if hinted else st._runs + rest

    @staticmethod
    def _hinted_first(sigs: tuple[Signature, ...], hints: frozenset[int],
                      orders: dict[tuple[int, int], tuple[Signature, ...]], sp: int,
                      cp: int) -> tuple[Signature, ...]:
        """``sigs`` in the order `_admit` gives their runs: those hinted by the flow's ports
        (``sp``, ``cp``, one of them in ``hints``) first, the gate's order kept within each
        part; kept in ``orders`` (few keys: the ports the loaded protocols name)."""
        key = (sp if sp in hints else -1, cp if cp in hints else -1)
        order = orders.get(key)
        if order is None:
            order = orders[key] = (*(s for s in sigs if sp in s.ports or cp in s.ports),
                                   *(s for s in sigs if not (sp in s.ports or cp in s.ports)))
        return order

    def feed(self, st: FlowState, direction: int, data: bytes) -> None:
        """Give the engine the next bytes (TCP) or datagram (UDP) of one direction."""
        if st.done or not data:
            return
        if st._pending & (1 << direction):
            if st._bufs is None and not st._runs and not st._watches and not self.trace \
                    and FIRST_FEED and self._first(st, direction, data):
                return
            self._admit(st, direction, data[0])
        if st.transport == "udp":
            self._datagram(st, direction, bytes(data))
            self._seq += 1
        else:
            if st._bufs is None:
                self._open(st)
                assert st._bufs is not None
            buf = st._bufs[direction]
            room = WINDOW - len(buf)
            if room <= 0:
                return
            if len(data) >= room:
                buf += data[:room]
                st._full[direction] = True
            else:
                buf += data
            if self._timed:
                st._arrivals[direction].append((st._offs[direction] + len(buf), self._seq))
                self._seq += 1
            self._stream(st, direction)
        if not st._runs and not st._watches and not st._pending:
            st.done = True
            st._bufs = []

    def _open(self, st: FlowState) -> None:
        """A TCP flow's streams, made when its first bytes must be kept."""
        st._bufs = [bytearray(), bytearray()]
        st._offs = [0, 0]
        st._full = [False, False]
        st._arrivals = [[], []]

    def _first(self, st: FlowState, d: int, data: bytes) -> bool:
        """`feed` of a flow's first bytes (nothing fed before, no trace): each candidate of
        the gate is called once, in `_admit`'s order, with no `_Run` for one that fails,
        and none, no stream and no copy of the bytes when one is decided by that call
        alone.  The same verdicts, fields, expectations and state as `_admit` then
        `_stream` / `_datagram` (tests/nfgrep/test_engine_fastpath.py compares them).
        False: nothing done, the general path goes on."""
        entry = self._first_gate[(st.transport, d)][data[0]]
        tcp = st.transport == "tcp"
        n = len(data)
        if entry is None or (tcp and n >= WINDOW):  # a step from either; a full window
            return False
        if type(data) is not bytes:
            data = bytes(data)
        st._pending &= ~(1 << d)
        sigs, hints, plain, orders = entry
        sp, cp = st.server_port, st.client_port
        order = self._hinted_first(sigs, hints, orders, sp, cp) \
            if sp in hints or cp in hints else sigs
        cost, fields = self._cost, st.fields
        # `_when` of one segment (TCP), or the datagram's number
        at0 = self._seq if self._timed or not tcp else 1 << 62
        waiting: list[_Run] = []  # candidates still running, in order
        for k, s in enumerate(order):
            V = [0] * s.nvars
            K: list[tuple[str, str]] = []
            X: list[tuple[str, str, str, int]] = []
            r = s.steps[0].fn(data, 0, n, not tcp, V, K, X, cost, fields)
            if r < 0:
                if r == NEED and tcp:  # (a datagram that needs more fails)
                    run = _Run(s)
                    run.seen = (n, -1) if d == 0 else (-1, n)
                    waiting.append(run)
                continue
            if s in plain:  # classified, with nothing to follow: the others go
                st.app = s.name
                st.chain.append(s.name)
                for name, value in K:  # (`_commit`)
                    fields[name] = value[:MAX_FIELD]
                if X:
                    self._commit(st, (), X, (at0, r if tcp else 0))
                if self._timed or not tcp:
                    self._seq += 1
                st._pending = 0
                st.done = True
                st._bufs = []
                return True
            if tcp and len(s.steps) == 1 and not s.watches:  # classified, its children come
                st.app = s.name
                st.chain.append(s.name)
                self._commit(st, K, X, (at0, r))
                st._pending = 0
                self._first_children(st, d, data, s)
                return True
            run = _held(s, V, K, X)
            if tcp:
                run.base = (r, 0) if d == 0 else (0, r)
                run.at = (at0, r)
                if len(s.steps) > 1 and s.steps[1].direction == 1 - d:
                    waiting.append(run)  # its next step waits for bytes not here yet
                    continue
            else:
                run.at = (at0, 0)
                if len(s.steps) > 1:
                    waiting.append(run)  # its next step waits for the next datagram
                    continue
            self._hand_over(st, d, data, waiting, run, order[k + 1:])
            return True
        if tcp:
            if waiting or st._pending:
                self._keep(st, d, data)
                st._runs = waiting
                return True
            if self._timed:  # the arrival number `_keep` would have given them
                self._seq += 1
        else:
            self._seq += 1
            if waiting or st._pending:
                st._runs = waiting
                return True
        st.done = True
        st._bufs = []
        return True

    def _first_children(self, st: FlowState, d: int, data: bytes, parent: Signature) -> None:
        """`_first` of a TCP flow its first bytes classified (``parent``, no watch): its
        children made and called as `_classified` then `_stream` would, with no stream
        and no run for those that fail at once."""
        n = len(data)
        children = self._children[("tcp", parent.name)]
        if CHILD_GATE:  # (`_classified`: a child its first byte here rules out is not made)
            children = [c for c in children if c.first is None or c.steps[0].direction != d
                        or data[0] in c.first]
        cost, fields = self._cost, st.fields
        at0 = self._seq if self._timed else 1 << 62
        waiting: list[_Run] = []
        for k, c in enumerate(children):
            cd = c.steps[0].direction
            if cd != d:
                if cd == 2:  # from either: the general path from here
                    st._runs = waiting + [_Run(x) for x in children[k:]]
                    self._keep(st, d, data)
                    self._stream(st, d, len(waiting))
                    break
                waiting.append(_Run(c))  # waits for the other direction
                continue
            V = [0] * c.nvars
            K: list[tuple[str, str]] = []
            X: list[tuple[str, str, str, int]] = []
            r = c.steps[0].fn(data, 0, n, False, V, K, X, cost, fields)
            if r < 0:
                if r == NEED:
                    run = _Run(c)
                    run.seen = (n, -1) if d == 0 else (-1, n)
                    waiting.append(run)
                continue
            run = _held(c, V, K, X)
            run.base = (r, 0) if d == 0 else (0, r)
            run.at = (at0, r)
            self._hand_over(st, d, data, waiting, run, children[k + 1:])
            return
        else:
            if waiting:
                st._runs = waiting
                self._keep(st, d, data)
                return
            if self._timed:  # the arrival number `_keep` would have given them
                self._seq += 1
        if not st._runs and not st._watches:
            st.done = True
            st._bufs = []

    def _keep(self, st: FlowState, d: int, data: bytes) -> None:
        """A TCP flow's first bytes into its new streams (what `feed` does with them)."""
        self._open(st)
        assert st._bufs is not None
        st._bufs[d] += data
        if self._timed:
            st._arrivals[d].append((len(data), self._seq))
            self._seq += 1

    def _hand_over(self, st: FlowState, d: int, data: bytes, waiting: list[_Run], held: _Run,
                   rest: Sequence[Signature]) -> None:
        """`_first` goes on as the general path after ``held``, a candidate whose first
        step held and that classifies the flow (with children or watches) or goes on
        on the bytes here: ``waiting`` before it, ``rest`` not called yet."""
        if st.transport == "tcp":
            self._keep(st, d, data)
            verdict = 0 if held.index == len(held.sig.steps) else self._advance_stream(st, held)
            if verdict == 0:
                st._runs = waiting
                self._classified(st, held)
                self._stream(st, d)
            else:
                runs = waiting + [held] if verdict == NEED else waiting
                st._runs = runs + [_Run(s) for s in rest]
                self._stream(st, d, len(runs))
        else:  # classified (a datagram's other held runs wait in `_first`)
            st._runs = waiting
            self._classified(st, held)
            self._datagram_watches(st, d, data)
            self._seq += 1
        if not st._runs and not st._watches and not st._pending:
            st.done = True
            st._bufs = []

    # -- TCP
    def _stream(self, st: FlowState, d: int, i: int = 0) -> None:
        """Run the candidates (from the ``i``-th) and watches on new bytes of direction d."""
        runs = st._runs
        assert st._bufs is not None
        bufs, offs, full = st._bufs, st._offs, st._full
        # the common case, a step reading direction d with no trace, is run here in line
        # (the same tests and commits as `_advance_stream`, without its call and loop)
        flat = not self.trace
        buf, off, fulld = bufs[d], offs[d], full[d]
        n = len(buf)
        end = off + n
        cost, fields = self._cost, st.fields
        while i < len(runs):
            run = runs[i]
            steps = run.sig.steps
            step = steps[run.index]
            sd = step.direction
            if sd == d and flat:
                b0 = run.base[d] - off
                seen = run.seen
                if (n <= b0 and not fulld) or seen[d] == end:
                    i += 1
                    continue
                V = [*run.vars]
                K: list[tuple[str, str]] = []
                X: list[tuple[str, str, str, int]] = []
                r = step.fn(buf, b0, n, fulld, V, K, X, cost, fields)
                if r == NEED:
                    run.seen = (end, seen[1]) if d == 0 else (seen[0], end)
                    i += 1
                    continue
                if r < 0:  # FAIL or GIVE_UP
                    del runs[i]
                    continue
                self._step_taken(st, run, d, off + r, V, K, X)
                verdict = 0 if run.index == len(steps) else self._advance_stream(st, run)
            else:
                if sd != d and sd != 2:
                    # waits on the other direction: nothing new there, no call
                    m = len(bufs[sd])
                    if run.seen[sd] == offs[sd] + m or (m <= run.base[sd] - offs[sd]
                                                        and not full[sd]):
                        i += 1
                        continue
                verdict = self._advance_stream(st, run)
            if verdict == NEED:
                i += 1
                continue
            if verdict == FAIL:
                del runs[i]
                continue
            # classified: siblings go, children come
            self._classified(st, run)
            runs = st._runs
            i = 0
        if st._watches:
            self._watch_stream(st)

    @staticmethod
    def _either_order(st: FlowState, base: tuple[int, int]) -> tuple[int, ...]:
        """For a step from either: the direction whose unread bytes came first goes first.

        Deciding by arrival (not by which direction fed last) keeps the verdict
        independent of how each direction's stream was cut into segments.
        """
        first = []
        for d in (0, 1):
            arrivals = st._arrivals[d]
            i = bisect.bisect_right(arrivals, (base[d], 1 << 62))
            first.append(arrivals[i][1] if i < len(arrivals) else 1 << 62)
        return (0, 1) if first[0] <= first[1] else (1, 0)

    @staticmethod
    def _when(st: FlowState, d: int, end: int) -> tuple[int, int]:
        """When the byte before stream offset ``end`` of direction ``d`` arrived: (the
        arrival number of its segment, ``end``).  Ordered the same however the traffic
        was cut into segments (a segment split keeps its place among the other
        direction's), unlike the order in which runs happen to be called."""
        arrivals = st._arrivals[d]
        i = bisect.bisect_right(arrivals, (end - 1, 1 << 62))
        return (arrivals[i][1] if i < len(arrivals) else 1 << 62, end)

    def _step_taken(self, st: FlowState, run: _Run, d: int, at: int, V: list[int],
                    K: list[tuple[str, str]], X: list[tuple[str, str, str, int]]) -> None:
        """A candidate's step held, ending at stream offset ``at`` of direction ``d``: its
        variables, fields and expectations kept, the next step starts there."""
        run.vars = V
        if K:
            run.fields = [*run.fields, *K]
        if X:
            run.expects = [*run.expects, *X]
        b = run.base
        run.base = (at, b[1]) if d == 0 else (b[0], at)
        run.at = self._when(st, d, at)
        run.seen = _UNSEEN
        run.index += 1

    def _advance_stream(self, st: FlowState, run: _Run) -> int:
        """Run a candidate's steps on the buffered data: NEED, FAIL or 0 (classified)."""
        sig = run.sig
        steps = sig.steps
        bufs = st._bufs
        assert bufs is not None
        while True:
            step = steps[run.index]
            dirs = self._either_order(st, run.base) if step.direction == 2 else \
                (step.direction,)
            waiting = False
            for d in dirs:
                buf = bufs[d]
                n = len(buf)
                b0 = run.base[d] - st._offs[d]
                if n <= b0 and not st._full[d]:
                    waiting = True
                    continue
                if run.seen[d] == st._offs[d] + n:
                    waiting = True
                    continue
                V = [*run.vars]
                K: list[tuple[str, str]] = []
                X: list[tuple[str, str, str, int]] = []
                r = step.fn(buf, b0, n, st._full[d], V, K, X, self._cost, st.fields)
                if self.trace:
                    self._event(st, sig.name, step.name, d, _RESULT.get(r, "held"),
                                st._offs[d] + (r if r >= 0 else b0), K if r >= 0 else [])
                if r >= 0:
                    self._step_taken(st, run, d, st._offs[d] + r, V, K, X)
                    break
                if r == NEED:
                    seen = run.seen
                    run.seen = (st._offs[d] + n, seen[1]) if d == 0 else (seen[0], st._offs[d] + n)
                    waiting = True
                elif r == GIVE_UP:
                    return FAIL
            else:
                return NEED if waiting else FAIL
            if run.index == len(steps):
                return 0

    def _watch_stream(self, st: FlowState) -> None:
        for run in list(st._watches):
            step = run.watch
            assert step is not None
            dirs = self._either_order(st, run.base) if step.direction == 2 else \
                (step.direction,)
            alive = True
            for d in dirs:
                assert st._bufs is not None
                buf = st._bufs[d]
                for _ in range(64):  # announcements per feed call, bounded
                    n = len(buf)
                    b0 = run.base[d] - st._offs[d]
                    if n <= b0 or run.seen[d] == st._offs[d] + n:
                        break
                    V = [*run.vars]
                    K: list[tuple[str, str]] = []
                    X: list[tuple[str, str, str, int]] = []
                    r = step.fn(buf, b0, n, st._full[d], V, K, X, self._cost, st.fields)
                    if self.trace:
                        self._event(st, run.sig.name, step.name, d, _RESULT.get(r, "held"),
                                    st._offs[d] + (r if r >= 0 else b0), K if r >= 0 else [])
                    if r == NEED:  # stream offsets: trimming must not fool this
                        seen = run.seen
                        end = st._offs[d] + n
                        run.seen = (end, seen[1]) if d == 0 else (seen[0], end)
                        break
                    if r < 0 or r == b0:
                        alive = False
                        break
                    run.vars = V
                    self._commit(st, K, X, self._when(st, d, st._offs[d] + r))
                    run.budget -= r - b0
                    base = run.base
                    run.base = (st._offs[d] + r, base[1]) if d == 0 else (base[0], st._offs[d] + r)
                    if run.budget <= 0:
                        alive = False
                        break
                if not alive:
                    break
            if not alive:
                st._watches.remove(run)
        if not st._runs:
            self._trim(st)

    def _trim(self, st: FlowState) -> None:
        """Drop stream bytes no watch will read again (only watches remain)."""
        assert st._bufs is not None
        for d in (0, 1):
            readers = [r.base[d] for r in st._watches
                       if r.watch is not None and r.watch.direction in (d, 2)]
            # nobody reads this direction any more: keep none of it
            low = min(readers) if readers else st._offs[d] + len(st._bufs[d])
            cut = low - st._offs[d]
            if cut > 0:
                arrivals = st._arrivals[d]
                del arrivals[:bisect.bisect_right(arrivals, (low, 1 << 62))]
                del st._bufs[d][:cut]
                st._offs[d] = low
                st._full[d] = False

    # -- UDP
    def _datagram(self, st: FlowState, d: int, data: bytes) -> None:
        runs = st._runs
        i = 0
        n = len(data)
        while i < len(runs):
            run = runs[i]
            step = run.sig.steps[run.index]
            if step.direction != 2 and step.direction != d:
                i += 1
                continue
            V = [*run.vars]
            K: list[tuple[str, str]] = []
            X: list[tuple[str, str, str, int]] = []
            r = step.fn(data, 0, n, True, V, K, X, self._cost, st.fields)
            if self.trace:
                self._event(st, run.sig.name, step.name, d, _RESULT.get(r, "held"),
                            r if r >= 0 else 0, K if r >= 0 else [])
            if r < 0:
                runs.remove(run)
                continue
            run.vars = V
            if K:
                run.fields = [*run.fields, *K]
            if X:
                run.expects = [*run.expects, *X]
            run.at = (self._seq, 0)
            run.index += 1
            if run.index == len(run.sig.steps):
                self._classified(st, run)
                runs = st._runs
                # children wait for the next datagram
                i = len(runs)
                continue
            i += 1
        if st._watches:
            self._datagram_watches(st, d, data)

    def _datagram_watches(self, st: FlowState, d: int, data: bytes) -> None:
        n = len(data)
        for run in list(st._watches):
            watch = run.watch
            assert watch is not None
            if watch.direction != 2 and watch.direction != d:
                continue
            V = [*run.vars]
            K: list[tuple[str, str]] = []
            X: list[tuple[str, str, str, int]] = []
            r = watch.fn(data, 0, n, True, V, K, X, self._cost, st.fields)
            if self.trace:
                self._event(st, run.sig.name, watch.name, d, _RESULT.get(r, "held"),
                            r if r >= 0 else 0, K if r >= 0 else [])
            if r >= 0:
                run.vars = V
                self._commit(st, K, X, (self._seq, 0))
                run.budget -= n
            if r == GIVE_UP or run.budget <= 0:
                st._watches.remove(run)

    # -- verdicts
    def _classified(self, st: FlowState, run: _Run) -> None:
        sig = run.sig
        st.app = sig.name
        st.chain.append(sig.name)
        if self.trace:
            self._event(st, sig.name, sig.steps[-1].name, -1, "classified", 0, run.fields)
        if run.fields or run.expects:
            self._commit(st, run.fields, run.expects, run.at)
        children = self._children.get((st.transport, sig.name), ())
        if children and CHILD_GATE and not self.trace and st.transport == "tcp":
            # a child whose first step reads a direction whose first byte is already here
            # and that byte cannot start it would fail on its first call: not made at all
            bufs, offs = st._bufs, st._offs
            assert bufs is not None
            runs = []
            for c in children:
                first = c.first
                if first is not None:
                    cd = c.steps[0].direction
                    if not offs[cd] and bufs[cd] and bufs[cd][0] not in first:
                        continue
                runs.append(_Run(c))
            st._runs = runs
        else:
            st._runs = [_Run(c) for c in children]
        st._pending = 0
        if sig.watches:
            watches = []
            for w in sig.watches:
                wr = _Run(sig, w)
                wr.vars = run.vars  # never changed in place (a step returns a new list)
                wr.base = run.base
                watches.append(wr)
            st._watches = st._watches + watches

    def _commit(self, st: FlowState, fields: Sequence[tuple[str, str]],
                expects: Sequence[tuple[str, str, str, int]], at: tuple[int, int]) -> None:
        for name, value in fields:
            st.fields[name] = value[:MAX_FIELD]
        if not expects:
            return
        if st._xkeys is None:
            st._xkeys = []
        xkeys, expectations = st._xkeys, st.expectations
        for label, transport, to, port in expects:
            if to == "server":
                addr = st.server_addr
            elif to == "client":
                addr = st.client_addr
            else:
                addr = to
            # in the order of the bytes that announced them (when the announcing step ended,
            # by arrival, then stream offset), whatever the cutting into segments: the
            # engine's loop order within one feed call is not an order of the traffic
            order = (*at, label, transport, addr or "", port)
            i = bisect.bisect_right(xkeys, order)
            xkeys.insert(i, order)
            expectations.insert(i, Expectation(label, transport, addr, port))
            key = (transport, addr, port)
            dates = self._expected.get(key)
            if dates is not None:
                self._expected.move_to_end(key)
            else:
                dates = self._expected[key] = []
                self._expected_ports[(transport, port)] = \
                    self._expected_ports.get((transport, port), 0) + 1
            self._announced += 1
            bisect.insort(dates, (self.now, self._announced, label))
            while len(self._expected) > MAX_EXPECTATIONS:
                old, _ = self._expected.popitem(last=False)
                self._forget_port(old)

    def _forget_port(self, key: tuple[str, str | None, int]) -> None:
        ports = (key[0], key[2])
        left = self._expected_ports[ports] - 1
        if left:
            self._expected_ports[ports] = left
        else:
            del self._expected_ports[ports]

    def _take_expected(self, transport: str, addr: str | None, port: int,
                       since: int | None) -> str | None:
        """Consume the expectation a new flow to addr:port begun at ``since`` fulfils (addr
        None: any address): every announcement of its key dated before ``since`` goes, the
        latest one's label is the flow's; later ones stay for later flows."""
        keys: list[tuple[str, str | None, int]] = [(transport, addr, port), (transport, None, port)]
        if addr is None:
            keys += [k for k in self._expected if k[0] == transport and k[2] == port]
        for key in keys:
            dates = self._expected.get(key)
            if dates is None:
                continue
            upto = len(dates) if since is None else bisect.bisect_left(dates, (since,))
            if not upto:
                continue
            label = dates[upto - 1][2]
            del dates[:upto]
            if not dates:
                del self._expected[key]
                self._forget_port(key)
            return label
        return None

    def _event(self, st: FlowState, proto: str, step: str, d: int, result: str, offset: int,
               fields: Sequence[tuple[str, str]]) -> None:
        event = TraceEvent(st, proto, step, d, result, offset, list(fields))
        if callable(self.trace):
            self.trace(event)
        else:
            st.events.append(event)

    @property
    def expected(self) -> list[Expectation]:
        """Announced flows not yet seen, oldest first."""
        return [Expectation(dates[-1][2], tr, addr, port)
                for (tr, addr, port), dates in self._expected.items()]


__all__ = ["Engine", "Expectation", "FlowState", "Rules", "Signature", "TraceEvent",
           "signatures_of", "WINDOW"]
