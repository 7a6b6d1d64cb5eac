"""Verified bytecode -> one Python function per step (generated source, compiled once).

This module owns the translation that makes the engine fast: each step of a
verified program becomes straight-line Python (blocks are inlined as
``while True`` bodies that a failure leaves with a result code, repeats as
``for`` loops over their constant bound, the operand stack becomes local
temporaries and constants are used in place), compiled once with `compile()`.
Running a step is then one Python call, with no dispatch loop.

The generated text holds only opcodes' templates, integers and pool indexes:
literals, names and maps are passed in the function's globals, never pasted
into the source, so a crafted program cannot inject code.

A step function is ``fn(buf, b0, n, final, V, K, X, C, F={}) -> int``:
``buf`` the bytes of one direction (``n`` = len), ``b0`` where the step starts,
``final`` whether more data may come, ``V`` the protocol's variables (list of
ints, updated in place), ``K`` kept fields and ``X`` expectations appended as
(name, text) and (label, transport, to, port), ``C`` a one-item cost counter
(updated only when generated with ``counting=True``), ``F`` the flow's fields
kept by its verdicts so far (for ``field ... is``).  It returns the cursor
(>= 0, index in buf) when the step holds, FAIL, NEED (more data may decide)
or GIVE_UP.

Every load is guarded at both ends: offsets are unsigned and added to
``b0``, and compared with ``n`` (the data) and ``E`` (the region a repeat
confines it to) before the read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, cast

from nfkit.nfgrep.bytecode import BINOPS, CMPS, MAX_KEEP_BYTES, OPS, Block, Instr, Program, nest

if TYPE_CHECKING:  # the loader imports the verifier only for rules it has not cached
    from nfkit.nfgrep.verifier import Verified

FAIL, NEED, GIVE_UP = -1, -2, -3
# a literal test's first literal in line, one-literal searches by `_find1`, a variable read
# right after it is set taken from its slot; False gives the plain translation, for tests
# comparing the two
INLINE = True
MASK = (1 << 64) - 1
BIG = 1 << 62

StepFunction = Callable[..., int]


def _text(raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8", "replace")
    except AttributeError:  # a memoryview
        return bytes(raw).decode("utf-8", "replace")


def _match(buf: bytes, p: int, n: int, E: int, final: bool, lits: tuple[bytes, ...]) -> int:
    """First literal, in the order written, at p: end offset, FAIL or NEED."""
    for lit in lits:
        k = p + len(lit)
        if k > E:
            continue
        if buf.startswith(lit, p):
            return k
        if k > n and not final and lit.startswith(buf[p:n]):
            return NEED  # an earlier alternative may still hold: decide in order
    return FAIL


def _match_by(buf: bytes, p: int, n: int, E: int, final: bool, lits: tuple[bytes, ...],
              by_first: dict[int, tuple[bytes, ...]]) -> int:
    """_match of many literals: only those starting with the byte at p (``by_first``, in
    the order written) can hold or wait; all of them when there is no byte at p yet."""
    if p >= n:
        return _match(buf, p, n, E, final, lits)
    return _match(buf, p, n, E, final, by_first.get(buf[p], ()))


def _match_nc_by(buf: bytes, p: int, n: int, E: int, final: bool, lits: tuple[bytes, ...],
                 longest: int, by_first: dict[int, tuple[bytes, ...]]) -> int:
    """_match_nc of many literals (see `_match_by`)."""
    if p >= n:
        return _match_nc(buf, p, n, E, final, lits, longest)
    window = buf[p:min(n, p + longest)].lower()
    r = _match(window, 0, len(window), E - p, final, by_first.get(window[0], ()))
    return r + p if r >= 0 else r


def _find(buf: bytes, p: int, n: int, E: int, final: bool, lits: tuple[bytes, ...],
          within: int, before: bytes | None) -> int:
    """End of the literal that ends first within `within` bytes of p, unless `before` ends first."""
    hard = p + within
    if hard > E:
        hard = E
    stop = hard if hard < n else n
    best = -1
    for lit in lits:
        i = buf.find(lit, p, stop)
        if i >= 0:
            end = i + len(lit)
            if best < 0 or end < best:
                best = end
    if before is not None:
        j = buf.find(before, p, stop if best < 0 else min(stop, best))
        if j >= 0 and (best < 0 or j + len(before) <= best):
            return FAIL
    if best >= 0:
        return best
    if final or stop >= hard:
        return FAIL
    return NEED


def _match_nc(buf: bytes, p: int, n: int, E: int, final: bool, lits: tuple[bytes, ...],
              longest: int) -> int:
    """_match without case: only the bytes it may compare are lowered."""
    window = buf[p:min(n, p + longest)].lower()
    r = _match(window, 0, len(window), E - p, final, lits)
    return r + p if r >= 0 else r


def _find1(buf: bytes, p: int, n: int, E: int, final: bool, lit: bytes, within: int,
           before: bytes | None) -> int:
    """_find of one literal."""
    hard = p + within
    if hard > E:
        hard = E
    stop = hard if hard < n else n
    i = buf.find(lit, p, stop)
    if before is not None:
        end = i + len(lit)
        j = buf.find(before, p, stop if i < 0 or stop < end else end)
        if j >= 0 and (i < 0 or j + len(before) <= end):
            return FAIL
    if i >= 0:
        return i + len(lit)
    if final or stop >= hard:
        return FAIL
    return NEED


_NOCASE: dict[bytes, re.Pattern[bytes]] = {}  # literal -> it, escaped, ignoring ASCII case


def _find1_nc(buf: bytes, p: int, n: int, E: int, final: bool, lit: bytes, size: int,
              within: int, before: bytes | None) -> int:
    """_find_nc of one lower-case literal (``size`` its length) before a literal without
    letters: searched in place ignoring ASCII case, nothing lowered."""
    hard = p + within
    if hard > E:
        hard = E
    stop = hard if hard < n else n
    pattern = _NOCASE.get(lit)
    if pattern is None:  # (a pattern is no constant a step's cache entry can keep)
        pattern = _NOCASE[lit] = re.compile(re.escape(lit), re.IGNORECASE)
    m = pattern.search(buf, p, stop)
    if before is not None:
        end = m.start() + size if m else -1
        j = buf.find(before, p, stop if end < 0 or stop < end else end)
        if j >= 0 and (end < 0 or j + len(before) <= end):
            return FAIL
    if m:
        return m.start() + size
    if final or stop >= hard:
        return FAIL
    return NEED


def _find_nc(buf: bytes, p: int, n: int, E: int, final: bool, lits: tuple[bytes, ...],
             within: int, before: bytes | None) -> int:
    """_find without case: only the searched bytes are lowered."""
    hard = min(p + within, E)
    window = buf[p:min(hard, n)].lower()
    r = _find(window, 0, len(window), E - p, final, lits, within, before)
    return r + p if r >= 0 else r


def _keep_until(buf: bytes, p: int, n: int, E: int, final: bool, term: bytes,
                within: int) -> tuple[int, str]:
    hard = p + within + len(term)
    if hard > E:
        hard = E
    stop = hard if hard < n else n
    i = buf.find(term, p, stop)
    if i >= 0:
        return i + len(term), _text(buf[p:i])
    return (FAIL if final or stop >= hard else NEED), ""


def _decimal(buf: bytes, p: int, n: int, E: int, final: bool, digits: int) -> tuple[int, int]:
    q = p
    lim = p + digits
    if lim > E:
        lim = E
    while q < lim and q < n and 48 <= buf[q] <= 57:
        q += 1
    if q < lim and q >= n and not final:
        return NEED, 0
    if q == p:
        return FAIL, 0
    return q, int(buf[p:q])


def _labels(buf: bytes, p: int, n: int, E: int, final: bool) -> tuple[int, str]:
    parts: list[bytes] = []
    q = p
    total = 0
    for _ in range(128):
        if q >= E:
            return FAIL, ""
        if q >= n:
            return (FAIL if final else NEED), ""
        size = buf[q]
        if size == 0:
            raw = b".".join(parts)
            if raw.isascii():  # decoded whole: the same text as label by label
                return q + 1, raw.decode("ascii")
            return q + 1, ".".join(map(_text, parts))
        if size > 63:
            return FAIL, ""
        end = q + 1 + size
        total += size + 1
        if end > E or total > 255:
            return FAIL, ""
        if end > n:
            return (FAIL if final else NEED), ""
        parts.append(buf[q + 1:end])
        q = end
    return FAIL, ""


def _fold(op: str, x: int, y: int) -> int:
    """A binary operator on two constants, with the run-time semantics (modulo 2**64)."""
    if op == "+":
        return (x + y) & MASK
    if op == "-":
        return (x - y) & MASK
    if op == "*":
        return (x * y) & MASK
    if op == "&":
        return x & y
    if op == "|":
        return x | y
    if op == "<<":
        return (x << (y & 63)) & MASK
    return x >> (y & 63)


def _plus(base: str, offset: str) -> str:
    """``base + offset`` without adding a constant 0."""
    return base if offset == "0" else f"{base} + {offset}"


def _short(ind: str, end: str) -> list[str]:
    """Guard: `end` (an offset expression) must not pass the data nor the region."""
    # L is min(n, E): one comparison on the fast path
    return [f"{ind}if {end} > L:",
            f"{ind}    return -1 if final or {end} > E else -2"]


class _Generator:
    def __init__(self, program: Program, counting: bool) -> None:
        self.program = program
        self.counting = counting
        self.inline = INLINE
        self.names: dict[str, object] = {}
        self.blocks = 0
        self.lazy: dict[int, str] = {}  # stack slot -> constant not yet materialized
        # (slot, variable, value) of a LET just emitted: a PUSH_VAR of that variable right
        # after it reads the value it was given (None across anything else, blocks included)
        self.let: tuple[int, int, str] | None = None

    def const(self, prefix: str, index: int, value: object) -> str:
        name = f"{prefix}{index}"
        self.names[name] = value
        return name

    def literal_set(self, index: int) -> tuple[str, bool]:
        ls = self.program.sets[index]
        lits = tuple(self.program.strings[i] for i in ls.strings)
        return self.const("S", index, lits), ls.nocase

    def step(self, code: list[Instr]) -> str:
        body = self.block(nest(code), "    ", top=True)
        head = ["def step(buf, b0, n, final, V, K, X, C, F=NOFIELDS):",
                "    E = BIG",
                "    L = n",
                "    p = b0",
                "    r = 0"]
        return "\n".join(head + body + ["    return p", ""])

    @staticmethod
    def _effects(block: Block) -> tuple[set[int], bool]:
        """The variables a block sets, and whether it keeps fields or expects flows."""
        sets: set[int] = set()
        keeps = False
        for item in block.items:
            if isinstance(item, Block):
                s, k = _Generator._effects(item)
                sets |= s
                keeps = keeps or k
            else:
                name = OPS[item.op].name
                if name == "LET":
                    sets.add(int(item.a))
                keeps = keeps or name.startswith("KEEP") or name == "EXPECT"
        return sets, keeps

    @staticmethod
    def _first_effect(block: Block) -> int:
        """The index of the first item of a block that may set a variable, keep a field or
        expect a flow (len(items) if none does)."""
        for i, item in enumerate(block.items):
            if isinstance(item, Block):
                sets, keeps = _Generator._effects(item)
                if sets or keeps:
                    return i
            else:
                name = OPS[item.op].name
                if name == "LET" or name.startswith("KEEP") or name == "EXPECT":
                    return i
        return len(block.items)

    def block(self, block: Block, ind: str, top: bool = False,
              inject: tuple[int, list[str]] | None = None) -> list[str]:
        """Straight-line code for a block.  Blocks are inlined: each body runs inside a
        ``while True`` that a failure leaves with ``r`` set (``return`` at the top).
        ``inject``: lines put before the item of that index."""
        lines: list[str] = []
        depth = 0
        leave = "return r" if top else "break"
        self.let = None
        for index, item in enumerate(block.items):
            if inject is not None and index == inject[0]:
                lines += [f"{ind}{x}" for x in inject[1]]
                self.let = None
            if not isinstance(item, Block):
                start = len(lines)
                depth = self.instr(item, ind, depth, lines)
                for slot in [k for k in self.lazy if k >= depth]:
                    del self.lazy[slot]
                if not top:  # failures leave the block instead of the step
                    for i in range(start, len(lines)):
                        line = lines[i]
                        at = line.find("return ")
                        if at >= 0:
                            lines[i] = line[:at] + "r = " + line[at + 7:] + "; break"
                continue
            self.let = None
            self.blocks += 1
            n = self.blocks
            sets, keeps = self._effects(item)
            kept: list[str] = []
            restored: list[str] = []
            if keeps:
                kept.append(f"k{n} = len(K); x{n} = len(X)")
                restored.append(f"del K[k{n}:]; del X[x{n}:]")
            for var in sorted(sets):  # only what the block may change is saved
                kept.append(f"v{n}_{var} = V[{var}]")
                restored.append(f"V[{var}] = v{n}_{var}")
            first = self._first_effect(item)
            saves_at = None  # (item index, lines) for the body
            if kept and first and self.inline:
                # saved where the first change may happen: a block that fails before it
                # (a tag that is not its own, say) saves and restores nothing
                save = [f"p{n} = p", f"s{n} = 0"]
                undo = [f"p = p{n}", f"if s{n}:"] + [f"    {x}" for x in restored]
                saves_at = (first, [f"s{n} = 1"] + kept)
            else:
                save = [f"p{n} = p"] + kept
                undo = [f"p = p{n}"] + restored
            if self.counting:
                lines.append(f"{ind}C[0] += 1")
            if item.kind == "OPT_BEGIN":
                if self.counting:
                    lines.append(f"{ind}C[0] += 2")
                lines += [f"{ind}{x}" for x in save]
                lines.append(f"{ind}while True:")
                lines += self.block(item, ind + "    ", inject=saves_at)
                lines += [f"{ind}    break",
                          f"{ind}if r:",
                          f"{ind}    if r != -1: {leave}"]
                lines += [f"{ind}    {x}" for x in undo]
                lines.append(f"{ind}    r = 0")
                continue
            assert item.begin is not None
            count, region = item.begin.a, item.begin.b
            if region:
                depth -= 1
                region_len = self.v(depth)
                self.lazy.clear()
                lines += [f"{ind}e{n} = E",
                          f"{ind}q = p + {region_len}",
                          f"{ind}if q < E: E = q",
                          f"{ind}L = n if n < E else E"]
            lines.append(f"{ind}for i{n} in range({int(count)}):")
            inner = ind + "    "
            if region:
                lines.append(f"{inner}if p >= E: break")
            if self.counting:
                lines.append(f"{inner}C[0] += 2")
            lines += [f"{inner}{x}" for x in save]
            lines.append(f"{inner}while True:")
            lines += self.block(item, inner + "    ", inject=saves_at)
            lines += [f"{inner}    break",
                      f"{inner}if r:",
                      f"{inner}    if r != -1: break"]
            lines += [f"{inner}    {x}" for x in undo]
            lines += [f"{inner}    r = 0",
                      f"{inner}    break",
                      f"{inner}if p == p{n}: break"]
            if region:
                lines.append(f"{ind}E = e{n}")
                lines.append(f"{ind}L = n if n < E else E")
            lines.append(f"{ind}if r: {leave}")
            self.let = None
        self.let = None
        if not lines:
            lines.append(f"{ind}pass")
        return lines

    def v(self, slot: int) -> str:
        """The value in a stack slot: a constant in place, or its temporary."""
        return self.lazy.get(slot, f"t{slot}")

    def w(self, slot: int) -> str:
        """The temporary a value is written to (it is no longer a known constant)."""
        self.lazy.pop(slot, None)
        return f"t{slot}"

    def instr(self, ins: Instr, ind: str, d: int, out: list[str]) -> int:
        info = OPS[ins.op]
        name, a, b, c = info.name, ins.a, ins.b, ins.c
        let, self.let = self.let, None
        if self.counting:
            out.append(f"{ind}C[0] += {info.cost(self.program, a, b, c)}")
        if name == "PUSH_INT":  # a constant: consumers use it in place
            self.lazy[d] = str(int(self.program.ints[a]))
            return d + 1
        if name == "PUSH_VAR":
            if let is not None and let[0] == d and let[1] == int(a) and self.inline:
                # `let x = ...` then `x`: the value is still in its slot (or a constant)
                if let[2] != f"t{d}":
                    self.lazy[d] = let[2]
                return d + 1
            out.append(f"{ind}{self.w(d)} = V[{int(a)}]")
            return d + 1
        if name == "PUSH_HERE":
            out.append(f"{ind}{self.w(d)} = p - b0")
            return d + 1
        if name == "PUSH_LENGTH":
            if a:  # not a monotone test: decided only on the final data
                out.append(f"{ind}if not final: return -2")
            out.append(f"{ind}{self.w(d)} = n - b0")
            return d + 1
        if name == "READ":
            w = int(a)
            order = "little" if b else "big"
            if c:
                d -= 1
                out.append(f"{ind}q = {_plus('b0', self.v(d))}")
                start = "q"
            else:
                start = "p"
            out += _short(ind, f"{start} + {w}")
            if w == 1:
                out.append(f"{ind}{self.w(d)} = buf[{start}]")
            elif w <= 4:  # shifts beat slicing for small integers
                idx = range(w) if not b else range(w - 1, -1, -1)
                terms = [f"buf[{start} + {i}]" if i else f"buf[{start}]" for i in idx]
                expr = " | ".join(f"({t} << {8 * (w - 1 - k)})" if k < w - 1 else t
                                  for k, t in enumerate(terms))
                out.append(f"{ind}{self.w(d)} = {expr}")
            else:
                out.append(f"{ind}{self.w(d)} = int.from_bytes(buf[{start}:{start} + {w}], '{order}')")
            out.append(f"{ind}p = {start} + {w}")
            return d + 1
        if name == "DECIMAL":
            out += [f"{ind}q, {self.w(d)} = _decimal(buf, p, n, E, final, {int(a)})",
                    f"{ind}if q < 0: return q",
                    f"{ind}p = q"]
            return d + 1
        if name == "BINOP":
            x, y = self.v(d - 2), self.v(d - 1)
            op = BINOPS[a]
            if x.isdigit() and y.isdigit():  # both constants: fold
                self.lazy[d - 2] = str(_fold(op, int(x), int(y)))
                return d - 1
            if op in ("+", "-", "*"):
                expr = f"({x} {op} {y}) & MASK"
            elif op == "<<":
                expr = f"({x} << ({y} & 63)) & MASK"
            elif op == ">>":
                expr = f"{x} >> ({y} & 63)"
            else:
                expr = f"{x} {op} {y}"
            out.append(f"{ind}{self.w(d - 2)} = {expr}")
            return d - 1
        if name == "CMP":
            fail = "(-1 if final else -2)" if b else "-1"
            out.append(f"{ind}if not ({self.v(d - 2)} {CMPS[a]} {self.v(d - 1)}): return {fail}")
            return d - 2
        if name == "RANGE":
            fail = "(-1 if final else -2)" if c else "-1"
            lo, hi = int(self.program.ints[a]), int(self.program.ints[b])
            out.append(f"{ind}if not ({lo} <= {self.v(d - 1)} <= {hi}): return {fail}")
            return d - 1
        if name == "MATCH":
            lits, nocase = self.literal_set(a)
            strings = self.program.sets[a].strings
            if b:
                d -= 1
                out.append(f"{ind}q = {_plus('b0', self.v(d))}")
                at = "q"
            else:
                at = "p"
            if not self.inline:
                if nocase:
                    longest = max(len(self.program.strings[i]) for i in strings)
                    out.append(f"{ind}q = _match_nc(buf, {at}, n, E, final, {lits}, {longest})")
                else:
                    out.append(f"{ind}q = _match(buf, {at}, n, E, final, {lits})")
                out += [f"{ind}if q < 0: return q", f"{ind}p = q"]
                return d
            # the first literal tested in line; the helper (which tests it again) otherwise
            first = self.const("F", a, self.program.strings[strings[0]])
            k = len(self.program.strings[strings[0]])
            by = ""
            if len(strings) >= 3:  # many: only those starting with the byte there are tried
                firsts: dict[int, tuple[bytes, ...]] = {}
                for i in strings:
                    lit = self.program.strings[i]
                    if lit:
                        firsts[lit[0]] = (*firsts.get(lit[0], ()), lit)
                if all(self.program.strings[i] for i in strings):  # (an empty one holds anywhere)
                    by = f", {self.const('D', a, firsts)}"
            if nocase:  # the helper lowers only the bytes it compares, within the data
                longest = max(len(self.program.strings[i]) for i in strings)
                out += [f"{ind}if {at} + {k} <= L and buf[{at}:{at} + {k}].lower() == {first}:",
                        f"{ind}    p = {at} + {k}",
                        f"{ind}else:",
                        f"{ind}    q = _match_nc{'_by' if by else ''}(buf, {at}, n, E, final, "
                        f"{lits}, {longest}{by})"]
            else:
                out += [f"{ind}if {at} + {k} <= E and buf.startswith({first}, {at}):",
                        f"{ind}    p = {at} + {k}",
                        f"{ind}else:",
                        f"{ind}    q = _match{'_by' if by else ''}(buf, {at}, n, E, final, {lits}{by})"]
            out += [f"{ind}    if q < 0: return q", f"{ind}    p = q"]
            return d
        if name == "FIND":
            lits, nocase = self.literal_set(a)
            helper = "_find_nc" if nocase else "_find"
            before = self.const("B", c - 1, self.program.strings[c - 1]) if c else "None"
            strings = self.program.sets[a].strings
            if len(strings) == 1 and self.inline:
                lit = self.program.strings[strings[0]]
                if not nocase:
                    helper = "_find1"
                    lits = self.const("F", a, lit)
                elif lit == lit.lower() and (not c or not any(
                        ch.isalpha() for ch in self.program.strings[c - 1].decode("latin-1")
                        if ch.isascii())):
                    # searched in place ignoring ASCII case: the same first match as in the
                    # lowered bytes; `before` has no letters, so lowering cannot change its place
                    out += [f"{ind}q = _find1_nc(buf, p, n, E, final, {self.const('F', a, lit)}, "
                            f"{len(lit)}, {int(b)}, {before})",
                            f"{ind}if q < 0: return q",
                            f"{ind}p = q"]
                    return d
            out += [f"{ind}q = {helper}(buf, p, n, E, final, {lits}, {int(b)}, {before})",
                    f"{ind}if q < 0: return q",
                    f"{ind}p = q"]
            return d
        if name in ("SETPOS", "SKIP"):
            base = "b0" if name == "SETPOS" else "p"
            out.append(f"{ind}q = {_plus(base, self.v(d - 1))}")
            out += _short(ind, "q")
            out.append(f"{ind}p = q")
            return d - 1
        if name == "LET":
            value = self.v(d - 1)
            out.append(f"{ind}V[{int(a)}] = {value}")
            self.let = (d - 1, int(a), value)
            return d - 1
        if name == "KEEP_UNTIL":
            field = self.const("T", a, self.program.text(a))
            term = self.const("B", b, self.program.strings[b])
            out += [f"{ind}q, s = _keep_until(buf, p, n, E, final, {term}, {int(c)})",
                    f"{ind}if q < 0: return q",
                    f"{ind}K.append(({field}, s))",
                    f"{ind}p = q"]
            return d
        if name == "KEEP_BYTES":
            field = self.const("T", a, self.program.text(a))
            out.append(f"{ind}if {self.v(d - 1)} > {MAX_KEEP_BYTES}: return -1")
            out.append(f"{ind}q = p + {self.v(d - 1)}")
            out += _short(ind, "q")
            out += [f"{ind}K.append(({field}, _text(buf[p:q])))", f"{ind}p = q"]
            return d - 1
        if name == "KEEP_INT":
            field = self.const("T", a, self.program.text(a))
            if b:
                table = self.const("M", b - 1, {k: self.program.text(v)
                                                for k, v in self.program.maps[b - 1]})
                value = self.v(d - 1)
                out.append(f"{ind}K.append(({field}, {table}.get({value}) or str({value})))")
            else:
                out.append(f"{ind}K.append(({field}, str({self.v(d - 1)})))")
            return d - 1
        if name == "KEEP_LABELS":
            field = self.const("T", a, self.program.text(a))
            out += [f"{ind}q, s = _labels(buf, p, n, E, final)",
                    f"{ind}if q < 0: return q",
                    f"{ind}K.append(({field}, s))",
                    f"{ind}p = q"]
            return d
        if name == "EXPECT":
            label = self.const("T", a, self.program.text(a))
            transport = "'tcp'" if b == 1 else "'udp'"
            port = self.v(d - 1)
            out.append(f"{ind}if not 1 <= {port} <= 65535: return -1")
            if c == 2:
                octets = [self.v(d - 5 + i) for i in range(4)]
                out.append(f"{ind}if max({', '.join(octets)}) > 255: return -1")
                to = "'%d.%d.%d.%d' % (" + ", ".join(octets) + ")"
                d -= 4
            else:
                to = "'client'" if c == 0 else "'server'"
            out.append(f"{ind}X.append(({label}, {transport}, {to}, {port}))")
            return d - 1
        if name == "GIVEUP":
            out.append(f"{ind}return -3")
            return d
        if name == "FIELD_IS":
            field = self.const("T", a, self.program.text(a))
            ls = self.program.sets[b]
            texts = tuple(_text(self.program.strings[i]) for i in ls.strings)
            values = self.const("W", b, texts)
            get = f"F.get({field}, '')" + (".lower()" if ls.nocase else "")
            out.append(f"{ind}if {get} not in {values}: return -1")
            return d
        raise AssertionError(f"opcode {name} reached the generator")  # pragma: no cover


def first_bytes(program: Program, code: list[Instr]) -> frozenset[int] | None:
    """The bytes a step's data may start with, when its first test says so (else None).

    Sound by construction: only the shapes "literal(s) at 0" and "u8 at 0
    compared with / in a constant" are read; anything else admits every byte.
    Lets the engine drop, on a flow's first byte, candidates that would fail.
    """
    ops = [OPS[i.op].name for i in code[:4]]
    args = code[:4]
    start = None
    if ops[:2] == ["PUSH_INT", "MATCH"] and program.ints[args[0].a] == 0 and args[1].b == 1:
        start = 1
    elif ops[:1] == ["MATCH"] and args[0].b == 0:
        start = 0
    if start is not None:
        ls = program.sets[args[start].a]
        out = set()
        for i in ls.strings:
            b = program.strings[i][0]
            out.add(b)
            if ls.nocase:
                out.update(bytes([b]).upper())
        return frozenset(out)
    if ops[:2] == ["PUSH_INT", "READ"] and program.ints[args[0].a] == 0 and \
            args[1].a == 1 and args[1].c == 1:
        rest = 2
    elif ops[:1] == ["READ"] and args[0].a == 1 and args[0].c == 0:
        rest = 1
    else:
        return None
    tail = ops[rest:]
    if tail[:2] == ["PUSH_INT", "CMP"] and CMPS[args[rest + 1].a] == "==":
        value = program.ints[args[rest].a]
        return frozenset([value] if value < 256 else [])
    if tail[:1] == ["RANGE"]:
        low, high = program.ints[args[rest].a], program.ints[args[rest].b]
        return frozenset(range(low, min(high, 255) + 1))
    return None


_HELPERS: dict[str, object] = {
    "_match": _match, "_find": _find, "_find1": _find1, "_find1_nc": _find1_nc,
    "_match_nc": _match_nc, "_match_by": _match_by, "_match_nc_by": _match_nc_by,
    "_find_nc": _find_nc, "_keep_until": _keep_until, "_decimal": _decimal, "_labels": _labels, "_text": _text,
    "MASK": MASK, "BIG": BIG,
}
_BUILTINS = {"int": int, "str": str, "max": max, "len": len, "range": range}

TranslatedStep = tuple[CodeType, dict[str, object], str]
"""A step function's code, the constants it reads by name (pool values only), its source."""


def translate(verified: Verified, counting: bool = False) -> list[list[TranslatedStep]]:
    """Every step of a verified program compiled: [protocol][step] -> (code, constants,
    source), plain values a cache can keep (marshal); `bind` makes the functions."""
    out: list[list[TranslatedStep]] = []
    program = verified.program
    for proto in program.protocols:
        steps: list[TranslatedStep] = []
        for step in proto.steps:
            gen = _Generator(program, counting)
            src = gen.step(step.code)
            label = f"<nfgrep {program.text(proto.name)}.{program.text(step.name)}>"
            # the source is one ``def step``: its code is the module's one code constant
            code = next(c for c in compile(src, label, "exec").co_consts if isinstance(c, CodeType))
            steps.append((code, gen.names, src))
        out.append(steps)
    return out


def bind(code: CodeType, names: dict[str, object]) -> StepFunction:
    """The step function of `translate`'s code with its constants, as ``def step`` would
    make it (the helpers above and five builtins are all it can reach besides them)."""
    env: dict[str, object] = {**_HELPERS, "NOFIELDS": {}, "__builtins__": dict(_BUILTINS)}
    env.update(names)
    return FunctionType(code, env, "step", (env["NOFIELDS"],))  # F=NOFIELDS (`_Generator.step`)


def unbind(fn: StepFunction) -> tuple[CodeType, dict[str, object]]:
    """The code and constants a step function was bound with (`bind`'s arguments)."""
    f = cast(FunctionType, fn)
    return f.__code__, {k: v for k, v in f.__globals__.items()
                        if k not in _HELPERS and k not in ("NOFIELDS", "__builtins__")}


def generate(verified: Verified, counting: bool = False) -> list[list[tuple[StepFunction, str]]]:
    """Translate every step of a verified program: [protocol][step] -> (function, source)."""
    return [[(bind(code, names), src) for code, names, src in steps]
            for steps in translate(verified, counting)]
