"""The verifier: decides whether a Program is safe to translate and run.

This module owns the rules a program must keep, checked on the bytecode alone
(it never trusts the compiler, a .nfgb file may be crafted):

- every opcode is known and every operand is in range (pool indexes, widths,
  variables, bounds of searches and repeats);
- the operand stack is balanced: no pop from an empty stack, at most
  MAX_STACK deep, empty at every block boundary and at the end of a step;
- blocks (optional, repeat) are properly nested, at most MAX_DEPTH deep, and
  every repeat has a constant bound, so there is no unbounded loop;
- the static cost of every step (instructions and bytes examined, repeats
  multiplied by their bound) is at most MAX_STEP_COST.

Loads need no check here: the code generator guards every load against both
ends of the data (a load outside fails or waits, it never reads out of
bounds).  A refused program raises VerifierError naming protocol, step and
instruction; `Verified` is the only thing the engine accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nfkit.nfgrep.bytecode import BINOPS, CMPS, OPCODES, OPS, Program
from nfkit.nfgrep.errors import VerifierError

MAX_STACK = 16
MAX_DEPTH = 8
MAX_REPEAT = 256
MAX_FIND = 65536
MAX_KEEP_UNTIL = 1024
MAX_KEEP_BYTES = 1024
MAX_LABELS = 255
MAX_DIGITS = 20
MAX_STEP_COST = 1 << 21
MAX_CODE = 4096
MAX_VARIABLES = 32
MAX_STEPS = 64
MAX_SET = 32
MAX_LITERAL = 255

NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_\-]{0,63}\Z")


@dataclass(frozen=True)
class Verified:
    """A program that passed the verifier, with the cost bound of every (protocol, step)."""

    program: Program
    costs: dict[tuple[int, int], int]


def step_cost(info_name: str, a: int, b: int, c: int, program: Program) -> int:
    """Cost units of one instruction: 1 plus the bytes it may examine."""
    if info_name == "READ":
        return 1 + a
    if info_name == "DECIMAL":
        return 1 + a
    if info_name == "MATCH":
        return 1 + sum(len(program.strings[i]) for i in program.sets[a].strings)
    if info_name == "FIELD_IS":
        return 1 + sum(len(program.strings[i]) for i in program.sets[b].strings)
    if info_name == "FIND":
        lits = program.sets[a].strings
        extra = len(program.strings[c - 1]) if c else 0
        return 1 + (len(lits) + (1 if c else 0)) * (b + MAX_LITERAL + extra)
    if info_name == "KEEP_UNTIL":
        return 1 + c + len(program.strings[b])
    if info_name == "KEEP_BYTES":
        return 1 + MAX_KEEP_BYTES
    if info_name == "KEEP_LABELS":
        return 1 + MAX_LABELS
    return 1


def verify(program: Program) -> Verified:
    """Check a program against every rule above; raises VerifierError with the reason."""
    origin = program.origin
    p = program

    def refuse(where: str, reason: str) -> VerifierError:
        return VerifierError(f"{origin}: {where}: {reason}; program refused")

    for i, s in enumerate(p.strings):
        if len(s) > MAX_LITERAL:
            raise refuse(f"string {i}", f"{len(s)} bytes long, at most {MAX_LITERAL}")
    for i, ls in enumerate(p.sets):
        if not 1 <= len(ls.strings) <= MAX_SET:
            raise refuse(f"literal set {i}", f"{len(ls.strings)} literals, 1 to {MAX_SET} allowed")
        for j in ls.strings:
            if j >= len(p.strings) or not p.strings[j]:
                raise refuse(f"literal set {i}", f"string {j} is missing or empty")
            if ls.nocase and p.strings[j].lower() != p.strings[j]:
                raise refuse(f"literal set {i}", "a nocase literal must be stored in lower case")
    for i, m in enumerate(p.maps):
        for _, name in m:
            if name >= len(p.strings):
                raise refuse(f"map {i}", f"string {name} is missing")

    def name_ok(index: int | None) -> bool:
        return index is not None and index < len(p.strings) and bool(NAME.match(p.strings[index]))

    costs: dict[tuple[int, int], int] = {}
    if not p.protocols:
        raise refuse("program", "no protocol")
    for pi, proto in enumerate(p.protocols):
        pname = p.text(proto.name) if proto.name < len(p.strings) else f"#{pi}"
        where = f"protocol {pname}"
        if not name_ok(proto.name):
            raise refuse(where, "its name is not a valid name")
        if proto.transports not in (1, 2, 3):
            raise refuse(where, f"transports {proto.transports} is neither tcp, udp nor both")
        if proto.after is not None and not name_ok(proto.after):
            raise refuse(where, "the name it runs after is not a valid name")
        if any(not 1 <= port <= 65535 for port in proto.ports):
            raise refuse(where, "a port hint is 0")
        if len(proto.variables) > MAX_VARIABLES:
            raise refuse(where, f"{len(proto.variables)} variables, at most {MAX_VARIABLES}")
        if any(not name_ok(v) for v in proto.variables):
            raise refuse(where, "a variable name is not a valid name")
        if not 1 <= len(proto.steps) <= MAX_STEPS:
            raise refuse(where, f"{len(proto.steps)} steps, 1 to {MAX_STEPS} allowed")
        if proto.steps[0].watch:
            raise refuse(where, "its first step is a watch")
        watching = False
        for si, step in enumerate(proto.steps):
            sname = p.text(step.name) if step.name < len(p.strings) else f"#{si}"
            swhere = f"{where} step {sname}"
            if not name_ok(step.name):
                raise refuse(swhere, "its name is not a valid name")
            if step.direction > 2:
                raise refuse(swhere, f"direction {step.direction} is unknown")
            if watching and not step.watch:
                raise refuse(swhere, "a step comes after a watch")
            watching = watching or step.watch
            if len(step.code) > MAX_CODE:
                raise refuse(swhere, f"{len(step.code)} instructions, at most {MAX_CODE}")
            costs[(pi, si)] = _verify_code(p, proto.variables, step.code, swhere, refuse)
    return Verified(program, costs)


def _verify_code(p: Program, variables: list[int], code: list, where: str, refuse) -> int:  # type: ignore[no-untyped-def]
    depth = 0
    # each open block: (kind, cost so far outside, multiplier)
    blocks: list[tuple[str, int, int]] = []
    cost = 0
    for n, ins in enumerate(code):
        info = OPS.get(ins.op)
        at = f"{where} instruction {n}"
        if info is None:
            raise refuse(at, f"unknown opcode {ins.op:#x}")
        a, b, c = ins.a, ins.b, ins.c
        for kind, value in zip(info.operands, (a, b, c), strict=False):
            bad = None
            if kind == "int" and value >= len(p.ints):
                bad = f"integer {value} is not in the pool"
            elif kind == "var" and value >= len(variables):
                bad = f"variable {value} is not declared"
            elif kind == "set" and value >= len(p.sets):
                bad = f"literal set {value} is not in the pool"
            elif kind == "string" and (value >= len(p.strings) or not p.strings[value]):
                bad = f"string {value} is missing or empty"
            elif kind == "before" and value and (value - 1 >= len(p.strings)
                                                  or not p.strings[value - 1]):
                bad = f"string {value - 1} is missing or empty"
            elif kind == "map" and value > len(p.maps):
                bad = f"map {value - 1} is not in the pool"
            elif kind == "width" and not 1 <= value <= 8:
                bad = f"width {value}, 1 to 8 bytes allowed"
            elif kind in ("order", "mode", "grows", "region", "final") and value > 1:
                bad = f"{kind} {value} is neither 0 nor 1"
            elif kind == "digits" and not 1 <= value <= MAX_DIGITS:
                bad = f"{value} digits, 1 to {MAX_DIGITS} allowed"
            elif kind == "binop" and value >= len(BINOPS):
                bad = f"operator {value} is unknown"
            elif kind == "cmp" and value >= len(CMPS):
                bad = f"comparison {value} is unknown"
            elif kind == "within":
                limit = MAX_KEEP_UNTIL if info.name == "KEEP_UNTIL" else MAX_FIND
                if not 1 <= value <= limit:
                    bad = f"search bound {value}, 1 to {limit} allowed"
            elif kind == "count" and not 1 <= value <= MAX_REPEAT:
                bad = f"repeat bound {value}, 1 to {MAX_REPEAT} allowed"
            elif kind == "transport" and value not in (1, 2):
                bad = f"transport {value} is neither tcp nor udp"
            elif kind == "addr" and value > 2:
                bad = f"address mode {value} is unknown"
            if bad:
                raise refuse(at, f"{info.name}: {bad}")
        if info.name in ("KEEP_UNTIL", "KEEP_BYTES", "KEEP_INT", "KEEP_LABELS", "EXPECT",
                         "FIELD_IS"):
            if not NAME.match(p.strings[a]):
                raise refuse(at, f"{info.name}: {p.strings[a]!r} is not a valid name")
        if info.name == "RANGE" and p.ints[a] > p.ints[b]:
            raise refuse(at, "RANGE: empty range")
        pops = info.pops if isinstance(info.pops, int) else \
            {"mode": b if info.name == "MATCH" else c, "region": b}.get(info.pops, 0)
        if info.name == "EXPECT":
            pops = 5 if c == 2 else 1
        if pops > depth:
            raise refuse(at, f"{info.name} pops {pops} value(s) from a stack of {depth}")
        depth = depth - pops + info.pushes
        if depth > MAX_STACK:
            raise refuse(at, f"stack deeper than {MAX_STACK}")
        if info.name in ("OPT_BEGIN", "LOOP_BEGIN", "OPT_END", "LOOP_END") and depth != 0:
            raise refuse(at, f"{info.name} with {depth} value(s) left on the stack")
        if info.name in ("OPT_BEGIN", "LOOP_BEGIN"):
            if len(blocks) >= MAX_DEPTH:
                raise refuse(at, f"blocks nested deeper than {MAX_DEPTH}")
            blocks.append((info.name, cost + 1, a if info.name == "LOOP_BEGIN" else 1))
            cost = 0
            continue
        if info.name in ("OPT_END", "LOOP_END"):
            opener = "OPT_BEGIN" if info.name == "OPT_END" else "LOOP_BEGIN"
            if not blocks or blocks[-1][0] != opener:
                raise refuse(at, f"{info.name} without its {opener}")
            _, outside, times = blocks.pop()
            cost = outside + times * (cost + 2)
            if cost > MAX_STEP_COST:
                raise refuse(at, f"cost bound over {MAX_STEP_COST}")
            continue
        cost += step_cost(info.name, a, b, c, p)
        if cost > MAX_STEP_COST:
            raise refuse(at, f"cost bound over {MAX_STEP_COST}")
    if blocks:
        raise refuse(where, f"{blocks[-1][0]} never closed")
    if depth:
        raise refuse(where, f"{depth} value(s) left on the stack at the end")
    return cost


__all__ = ["Verified", "verify", "MAX_STEP_COST", "OPCODES"]
