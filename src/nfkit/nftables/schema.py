"""The shape of every statement and expression the rule compiler encodes, as data.

This module owns one rule of nfkit's input: no JSON key of a statement is ever
ignored.  `STATEMENTS` and `EXPRESSIONS` list, for each statement and
expression the compiler (nfkit.nftables.compiler) encodes, the keys it reads
and what each holds (an expression, a value, a statement list, a flag word...);
`check_statement` walks a statement against them and raises InputError at the
first key, flag or form that nothing reads, so a rule is refused rather than
loaded shorter than it was written (a rate limit dropped from a meter, a level
dropped from a log).  A statement or expression added to the compiler is added
here with the keys it reads; one the compiler does not encode is not listed,
and is refused by name.

It knows nothing of encodings, netlink or the kernel; it stands on nfkit.errors.
"""

from __future__ import annotations

from typing import Any

from nfkit.errors import InputError

# Roles of a key: what its value must be.
EXPR, VALUE, SCALAR, INT, STRING, FLAGS, STMTS, BOOL, SETREF, MAPBODY, STMT = (
    "expr", "value", "scalar", "int", "string", "flags", "stmts", "bool", "setref", "mapbody",
    "stmt")

# Statement kind -> (body may be null, body may be a string (a named object), {key: role}).
STATEMENTS: dict[str, tuple[bool, bool, dict[str, str]]] = {
    "match": (False, False, {"op": STRING, "left": EXPR, "right": VALUE}),
    "accept": (True, False, {}),
    "drop": (True, False, {}),
    "continue": (True, False, {}),
    "return": (True, False, {}),
    "jump": (False, False, {"target": STRING}),
    "goto": (False, False, {"target": STRING}),
    "vmap": (False, False, {"key": EXPR, "data": VALUE}),
    "counter": (True, True, {"packets": INT, "bytes": INT}),
    "limit": (False, True, {"rate": INT, "rate_unit": STRING, "per": STRING, "burst": INT,
                            "burst_unit": STRING, "inv": BOOL}),
    "quota": (False, True, {"val": INT, "val_unit": STRING, "used": INT, "used_unit": STRING,
                            "inv": BOOL}),
    "ct count": (False, False, {"val": INT, "inv": BOOL}),
    "ct helper": (False, True, {"map": MAPBODY}),
    "ct timeout": (False, True, {}),
    "ct expectation": (False, True, {}),
    "synproxy": (True, True, {"mss": INT, "wscale": INT, "flags": FLAGS}),
    "log": (True, False, {"prefix": STRING, "group": INT, "snaplen": INT,
                          "queue-threshold": INT, "level": STRING, "flags": FLAGS}),
    "reject": (True, False, {"type": STRING, "expr": STRING}),
    "snat": (True, False, {"addr": VALUE, "family": STRING, "port": VALUE, "flags": FLAGS,
                           "type_flags": FLAGS}),
    "dnat": (True, False, {"addr": VALUE, "family": STRING, "port": VALUE, "flags": FLAGS,
                           "type_flags": FLAGS}),
    "masquerade": (True, False, {"port": VALUE, "flags": FLAGS}),
    "redirect": (True, False, {"port": VALUE, "flags": FLAGS}),
    "mangle": (False, False, {"key": EXPR, "value": VALUE}),
    "notrack": (True, False, {}),
    "set": (False, False, {"op": STRING, "elem": VALUE, "set": SETREF, "stmt": STMTS}),
    "map": (False, False, {"op": STRING, "elem": VALUE, "data": VALUE, "map": SETREF,
                           "stmt": STMTS}),
    "meter": (False, False, {"name": STRING, "key": VALUE, "stmt": STMT, "size": INT}),
    "queue": (True, False, {"num": VALUE, "flags": FLAGS}),
    "dup": (False, False, {"addr": VALUE, "dev": STRING}),
    "fwd": (False, False, {"dev": STRING, "addr": VALUE, "family": STRING}),
    "tproxy": (False, False, {"family": STRING, "addr": VALUE, "port": VALUE}),
    "snpt": (False, False, {"prefix": STRING, "to": STRING}),
    "dnpt": (False, False, {"prefix": STRING, "to": STRING}),
}

# Keys a statement must carry (the compiler has no default for them).
REQUIRED: dict[str, tuple[str, ...]] = {
    "match": ("left", "right"), "vmap": ("key", "data"), "limit": ("rate",), "quota": ("val",),
    "ct count": ("val",), "mangle": ("key", "value"), "dup": ("addr",), "fwd": ("dev",), "set": ("op", "elem", "set"),
    "map": ("op", "elem", "data", "map"), "jump": ("target",), "goto": ("target",),
    "meter": ("name", "key", "stmt"),
}

# Statements a dynamic-set update may carry (the kernel's stateful expressions).
DYNSET_STATEMENTS = ("counter", "limit", "quota", "ct count")

# Expression kind -> {key: role}; "concat" and the binary operators hold lists.
EXPRESSIONS: dict[str, dict[str, str]] = {
    "payload": {"protocol": STRING, "field": STRING, "base": STRING, "offset": INT, "len": INT},
    "meta": {"key": STRING},
    "ct": {"key": STRING, "family": STRING, "dir": STRING},
    "numgen": {"mode": STRING, "mod": INT, "offset": INT},
    "jhash": {"mod": INT, "offset": INT, "expr": EXPR, "seed": INT},
    "symhash": {"mod": INT, "offset": INT},
    "fib": {"result": STRING, "flags": FLAGS},
    "map": {"key": EXPR, "data": VALUE},
    "socket": {"key": STRING, "level": INT},
    "exthdr": {"name": STRING, "field": STRING, "offset": INT},
    "osf": {"key": STRING, "ttl": STRING},
    "ipsec": {"key": STRING, "family": STRING, "dir": STRING, "spnum": INT},
    "tcp option": {"name": STRING, "field": STRING, "base": INT, "offset": INT, "len": INT},
    "ip option": {"name": STRING, "field": STRING},
    "sctp chunk": {"name": STRING, "field": STRING},
    "rt": {"key": STRING, "family": STRING},
}
_LIST_EXPRESSIONS = ("concat", "&", "|", "^", "<<", ">>")
_VERDICTS = ("accept", "drop", "continue", "return")
# Dict forms of a value besides expressions: key -> (role of its body).
_ELEM_KEYS = {"val": VALUE, "timeout": INT, "expires": INT, "comment": STRING,
              "counter": VALUE, "quota": VALUE, "limit": VALUE}


def _shown(v: Any, limit: int = 40) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "..."


def check_statement(kind: str, body: Any) -> None:
    """Raise InputError (without the rule's name: callers add it) unless every key of
    ``body`` is one the compiler encodes for statement ``kind``."""
    spec = STATEMENTS.get(kind)
    if spec is None:
        raise InputError(f"statement {kind!r}: not supported by nfkit (refused, not dropped)")
    nullable, named, keys = spec
    if body is None:
        if nullable:
            return
        raise InputError(f"statement {kind!r}: needs a body")
    if isinstance(body, str) and named:
        return
    if not isinstance(body, dict):
        raise InputError(f"statement {kind!r}: body {_shown(body)} is not an object")
    _keys(f"statement {kind!r}", body, keys)
    for k in REQUIRED.get(kind, ()):
        if k not in body:
            raise InputError(f"statement {kind!r}: key {k!r} is missing")
    for k, v in body.items():
        _role(f"statement {kind!r}", k, keys[k], v)


def _keys(what: str, body: dict[Any, Any], keys: dict[str, str]) -> None:
    unknown = [k for k in body if k not in keys]
    if unknown:
        raise InputError(f"{what}: key {_shown(unknown[0])} is not encoded by nfkit "
                         f"(known: {', '.join(keys) or 'none'}); refused rather than ignored")


def _role(what: str, key: str, role: str, v: Any) -> None:
    where = f"{what} key {key!r}"
    if role == EXPR:
        check_expression(v, where)
    elif role == MAPBODY:  # the body of a map expression (ct helper set ... map {...})
        check_expression({"map": v}, where)
    elif role == VALUE:
        check_value(v, where)
    elif role in (STMTS, STMT):
        if role == STMT:  # a meter's one statement
            v = [v]
        if not isinstance(v, list) or not v:
            raise InputError(f"{where}: expected a non-empty list of statements")
        for st in v:
            if not isinstance(st, dict) or len(st) != 1:
                raise InputError(f"{where}: {_shown(st)} is not a statement")
            (k2, b2), = st.items()
            if k2 not in DYNSET_STATEMENTS:
                raise InputError(f"{where}: statement {k2!r} cannot be carried by a set "
                                 f"update (the kernel takes {', '.join(DYNSET_STATEMENTS)})")
            check_statement(k2, b2)
    elif role == FLAGS:
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
            raise InputError(f"{where}: expected a flag or a list of flags, got {_shown(v)}")
    elif role in (STRING, SETREF):
        if not isinstance(v, str):
            raise InputError(f"{where}: expected a string, got {_shown(v)}")
    elif role == INT:
        if type(v) is not int:
            raise InputError(f"{where}: expected an integer, got {_shown(v)}")
    elif role == BOOL:
        if not isinstance(v, bool):
            raise InputError(f"{where}: expected true or false, got {_shown(v)}")


def check_expression(e: Any, what: str) -> None:
    """An expression (a left-hand side): one key, a kind the compiler encodes, its keys."""
    if not isinstance(e, dict) or len(e) != 1:
        raise InputError(f"{what}: {_shown(e)} is not an expression (an object with one key)")
    (kind, body), = e.items()
    if kind in _LIST_EXPRESSIONS:
        if not isinstance(body, list) or (kind != "concat" and len(body) != 2):
            raise InputError(f"{what}: {kind!r} expects a list"
                             + ("" if kind == "concat" else " of two operands"))
        for i, part in enumerate(body):
            if kind == "concat" or i == 0:
                check_expression(part, what)
            else:
                check_value(part, what)
        return
    keys = EXPRESSIONS.get(kind)
    if keys is None:
        raise InputError(f"{what}: expression {kind!r} is not supported by nfkit "
                         "(refused, not dropped)")
    if not isinstance(body, dict):
        raise InputError(f"{what}: expression {kind!r}: {_shown(body)} is not an object")
    _keys(f"{what}: expression {kind!r}", body, keys)
    for k, v in body.items():
        _role(f"{what}: expression {kind!r}", k, keys[k], v)


def check_value(v: Any, what: str) -> None:
    """A right-hand value: a literal, a list of flags, or one of nft's value forms
    (set, range, prefix, concat, elem, |, a verdict) or an expression."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return
    if isinstance(v, list):
        for x in v:
            check_value(x, what)
        return
    if not isinstance(v, dict) or len(v) != 1:
        raise InputError(f"{what}: {_shown(v)} is not a value (an object with one key)")
    (kind, body), = v.items()
    if kind == "set":
        for item in body if isinstance(body, list) else [body]:
            if isinstance(item, list) and len(item) != 2:
                raise InputError(f"{what}: map element {_shown(item)} is not [key, value]")
            check_value(item, what)
    elif kind in ("range", "concat", "|"):
        if not isinstance(body, list) or (kind == "range" and len(body) != 2):
            raise InputError(f"{what}: {kind!r} expects a list"
                             + (" of two values" if kind == "range" else ""))
        for x in body:
            check_value(x, what)
    elif kind == "prefix":
        if not isinstance(body, dict):
            raise InputError(f"{what}: prefix {_shown(body)} is not an object")
        _keys(f"{what}: prefix", body, {"addr": VALUE, "len": INT})
        check_value(body.get("addr"), what)
    elif kind == "elem":
        if not isinstance(body, dict):
            raise InputError(f"{what}: elem {_shown(body)} is not an object")
        _keys(f"{what}: elem", body, _ELEM_KEYS)
        for k, x in body.items():
            if k in ("counter", "quota", "limit"):  # an element's own statements
                check_statement(k, x)
            else:
                _role(f"{what}: elem", k, _ELEM_KEYS[k], x)
    elif kind in _VERDICTS:
        if body is not None:
            raise InputError(f"{what}: verdict {kind!r} takes no body, got {_shown(body)}")
    elif kind in ("jump", "goto"):
        if not isinstance(body, dict):
            raise InputError(f"{what}: {kind} {_shown(body)} is not an object")
        _keys(f"{what}: {kind}", body, {"target": STRING})
    else:
        check_expression(v, what)
