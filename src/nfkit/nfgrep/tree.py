"""The checked tree of an nfgrep rule file: what the parser builds and the compiler reads.

This module owns the node classes only; it knows nothing of text (parser.py)
nor of bytecode (compiler.py).  Every node carries the line and column where
it was written so the checker and the compiler can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Where:
    """A place in a rule file: 1-based line and column."""

    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


# ---------------------------------------------------------------- expressions

@dataclass
class Num:
    value: int
    at: Where


@dataclass
class Var:
    name: str
    at: Where


@dataclass
class Here:
    """The cursor: offset of the byte after the last thing matched or read."""

    at: Where


@dataclass
class Length:
    """Bytes available from the start of the step (a datagram's whole length on UDP)."""

    at: Where


@dataclass
class Read:
    """An unsigned integer of ``width`` bytes at the cursor or at an offset."""

    width: int
    little: bool
    offset: Expr | None
    at: Where


@dataclass
class Decimal:
    """ASCII decimal digits at the cursor, read as a number (at most ``digits`` of them)."""

    digits: int
    at: Where


@dataclass
class BinOp:
    op: str
    left: Expr
    right: Expr
    at: Where


Expr = Num | Var | Here | Length | Read | Decimal | BinOp


# ---------------------------------------------------------------- statements

@dataclass
class Match:
    """Bytes at the cursor (or at an offset): one literal or the first of several alternatives."""

    literals: list[bytes]
    nocase: bool
    offset: Expr | None
    at: Where


@dataclass
class Find:
    """A bounded search for a literal (or alternatives) ending within ``within`` bytes."""

    literals: list[bytes]
    nocase: bool
    within: int
    before: bytes | None
    at: Where


@dataclass
class Compare:
    op: str
    left: Expr
    right: Expr
    at: Where


@dataclass
class InRange:
    value: Expr
    low: int
    high: int
    at: Where


@dataclass
class SetCursor:
    offset: Expr
    at: Where


@dataclass
class Let:
    name: str
    value: Expr
    at: Where


@dataclass
class Skip:
    count: Expr
    at: Where


@dataclass
class KeepUntil:
    field: str
    terminator: bytes
    within: int
    at: Where


@dataclass
class KeepBytes:
    field: str
    count: Expr
    at: Where


@dataclass
class KeepNumber:
    field: str
    value: Expr
    names: dict[int, str] | None
    at: Where


@dataclass
class KeepLabels:
    field: str
    at: Where


@dataclass
class Expect:
    """Announce a related flow: ``label`` over ``transport`` to an address and port."""

    label: str
    transport: str
    to: str | list[Expr]  # "client", "server" or four octet expressions
    port: Expr
    at: Where


@dataclass
class FieldIs:
    """A field kept by the verdicts the flow already has (chaining) is one of the literals."""

    field: str
    literals: list[bytes]
    nocase: bool
    at: Where


@dataclass
class Optional:
    body: list[Stmt]
    at: Where


@dataclass
class Repeat:
    limit: int
    region: Expr | None
    body: list[Stmt]
    at: Where


@dataclass
class GiveUp:
    at: Where


Stmt = (Match | Find | Compare | InRange | SetCursor | Let | Skip | KeepUntil | KeepBytes
        | KeepNumber | KeepLabels | Expect | FieldIs | Optional | Repeat | GiveUp)


# ---------------------------------------------------------------- declarations

CLIENT, SERVER, EITHER = 0, 1, 2
DIRECTION_NAMES = {CLIENT: "client", SERVER: "server", EITHER: "either"}


@dataclass
class Step:
    name: str
    watch: bool
    direction: int
    body: list[Stmt]
    at: Where


@dataclass
class Protocol:
    name: str
    transports: list[str]
    ports: list[int]
    after: str | None
    steps: list[Step]
    at: Where
    variables: list[str] = field(default_factory=list)


@dataclass
class RuleFile:
    path: str
    protocols: list[Protocol]
