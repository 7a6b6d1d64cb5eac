"""Read constants out of the installed uapi headers (Debian's linux-libc-dev).

Used by the tests that keep nfkit's attribute tables honest: every number in
a table is compared with what the kernel's own header says.  Handles the forms
those headers use: enums with implicit and explicit values (including
references to earlier members and simple expressions) and object-like
#defines of integers.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from nfkit.errors import InputError

INCLUDE_DIR = Path("/usr/include")

_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_ENUM = re.compile(r"enum\s*(\w*)\s*\{(.*?)\}", re.S)
_INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)\s+(.+?)\s*$", re.M)


@functools.cache
def _source(header: str) -> str:
    path = INCLUDE_DIR / header
    try:
        return _COMMENT.sub(" ", path.read_text())
    except OSError as exc:
        raise InputError(f"uapi header {path}: {exc.strerror}") from None


def _evaluate(expr: str, names: dict[str, int]) -> int:
    expr = expr.strip().rstrip("UuLl")
    tokens = re.sub(r"\b(\d+)[UuLl]+\b", r"\1", expr)
    for name in sorted(set(re.findall(r"\b[A-Za-z_]\w*", tokens)), key=len, reverse=True):
        if name not in names:
            raise InputError(f"cannot evaluate {expr!r}: unknown name {name}")
        tokens = re.sub(rf"\b{name}\b", str(names[name]), tokens)
    if not re.fullmatch(r"[\d\sxXa-fA-F()+\-*/<>|&~]+", tokens):
        raise InputError(f"cannot evaluate {expr!r}")
    return int(eval(tokens, {"__builtins__": {}}))  # noqa: S307 - digits and operators only


@functools.cache
def defines(header: str) -> dict[str, int]:
    """Integer-valued object-like #defines of ``header`` (relative to /usr/include).

    Names from the headers it includes are known while evaluating (not returned).
    """
    known = _included(header)
    out: dict[str, int] = {}
    for name, value in _DEFINE.findall(_source(header)):
        try:
            out[name] = _evaluate(value, {**known, **out})
        except (InputError, SyntaxError, ValueError):
            continue
    return out


@functools.cache
def _included(header: str) -> dict[str, int]:
    known: dict[str, int] = {}
    for inc in _INCLUDE.findall(_source(header)):
        if (INCLUDE_DIR / inc).exists() and inc.startswith("linux/"):
            known.update(all_constants(inc))
    return known


@functools.cache
def enums(header: str) -> dict[str, dict[str, int]]:
    """Every named enum of ``header``: enum name -> member -> value."""
    out: dict[str, dict[str, int]] = {}
    known = {**_included(header), **defines(header)}
    for i, (ename, body) in enumerate(_ENUM.findall(_source(header))):
        ename = ename or f"<anonymous {i}>"
        members: dict[str, int] = {}
        nxt = 0
        body = re.sub(r"^\s*#.*$", "", body, flags=re.M)  # #defines inside enums
        for item in body.split(","):
            item = item.strip()
            if not item or item.startswith("#"):
                continue
            if "=" in item:
                name, expr = (s.strip() for s in item.split("=", 1))
                value = _evaluate(expr, {**known, **members})
            else:
                name, value = item.split()[0], nxt
            members[name] = value
            nxt = value + 1
        known.update(members)
        out[ename] = members
    return out


def enum_values(header: str, enum_name: str) -> dict[str, int]:
    try:
        return enums(header)[enum_name]
    except KeyError:
        raise InputError(f"{header} has no enum {enum_name}") from None


def define_value(header: str, name: str) -> int:
    try:
        return defines(header)[name]
    except KeyError:
        raise InputError(f"{header} has no integer #define {name}") from None


@functools.cache
def all_constants(header: str) -> dict[str, int]:
    """Every enum member and integer #define of ``header`` by name."""
    out = dict(defines(header))
    for members in enums(header).values():
        out.update(members)
    return out


def evaluate_define(header: str, name: str, *context: str) -> int:
    """Value of #define ``name`` of ``header``, with names from ``context`` headers known
    (for headers that use a name without including its header, as nfnetlink.h does)."""
    known: dict[str, int] = {}
    for ctx in context:
        known.update(all_constants(ctx))
    known.update(all_constants(header))
    for dname, value in _DEFINE.findall(_source(header)):
        if dname == name:
            return _evaluate(value, known)
    raise InputError(f"{header} has no #define {name}")
