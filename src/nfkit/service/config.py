"""TOML configuration against a typed schema, with errors naming file, line and key.

The standard library's tomllib parses but keeps no positions, so positions are
found afterwards in the text: a key's line is located by walking the table
headers (`[a]`, `[[a]]`, counting array entries) and the `key =` lines under
them.  A schema lists every key a section may hold, with its type, default and
documentation; a key the schema does not know is an error (an ignored key is
a setting the user believes is in force and is not).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nfkit.errors import InputError

Check = Callable[[Any], Any]  # returns the (converted) value or raises ValueError with the reason

_MISSING = object()


class ConfigError(InputError):
    """A configuration file that cannot be used: file:line: key: why."""


@dataclass(frozen=True)
class Key:
    """One key of a section: its type, default (absent = required), what it means."""

    name: str
    type: type | tuple[type, ...]
    doc: str
    default: Any = _MISSING
    check: Check | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING


@dataclass(frozen=True)
class Section:
    """A table (`[name]`) or, with ``many``, an array of tables (`[[name]]`)."""

    name: str
    keys: tuple[Key, ...]
    doc: str = ""
    many: bool = False
    required: bool = False


@dataclass(frozen=True)
class Schema:
    sections: tuple[Section, ...]

    def section(self, name: str) -> Section | None:
        return next((s for s in self.sections if s.name == name), None)

    def reference(self) -> str:
        """Every section and key with its type, default and meaning (for docs and --help)."""
        lines: list[str] = []
        for sec in self.sections:
            header = f"[[{sec.name}]]" if sec.many else f"[{sec.name}]"
            lines.append(f"{header}  {sec.doc}".rstrip())
            for key in sec.keys:
                default = "required" if key.required else f"default {_toml_value(key.default)}"
                lines.append(f"  {key.name} ({_type_name(key.type)}, {default}): {key.doc}")
        return "\n".join(lines)


@dataclass
class Config:
    """A file read against a schema: sections by name (lists for arrays of tables)."""

    path: Path
    text: str
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def error(self, where: tuple[str | int, ...], message: str) -> ConfigError:
        """A ConfigError for the key at ``where`` (e.g. ("npt", 0, "inside"))."""
        return ConfigError(f"{self.path}:{locate(self.text, where)}: {dotted(where)}: {message}")


def _type_name(t: type | tuple[type, ...]) -> str:
    types = t if isinstance(t, tuple) else (t,)
    names = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
             dict: "table"}
    return " or ".join(names.get(x, x.__name__) for x in types)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "(none)"
    return str(v)


def dotted(where: tuple[str | int, ...]) -> str:
    out = ""
    for part in where:
        if part == "_":  # the section itself (see locate)
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*=')


def locate(text: str, where: tuple[str | int, ...]) -> int:
    """The 1-based line of the key at ``where`` in TOML ``text`` (best effort: the
    section's header when the key is absent, 1 when the section is)."""
    section, index, key = _split(where)
    best = 1
    current: tuple[str, int] | None = ("", 0) if not section else None
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        m = _HEADER.match(line)
        if m:
            name = m.group(2).strip()
            n = counts[name] = counts.get(name, -1) + 1 if m.group(1) == "[[" else 0
            current = (name, n)
            if (name, n) == (section, index):
                best = number
            continue
        if current == (section, index) and key is not None:
            k = _KEY.match(line)
            if k and k.group(1).strip("\"'") == key:
                return number
    return best


def _split(where: tuple[str | int, ...]) -> tuple[str, int, str | None]:
    parts = list(where)
    section = str(parts.pop(0)) if parts and len(parts) > 1 else ""
    index = parts.pop(0) if parts and isinstance(parts[0], int) else 0
    key = str(parts[0]) if parts else None
    return section, int(index), key


def load(path: str | Path, schema: Schema) -> Config:
    """Read and check ``path``; raises ConfigError (file:line: key: why) on anything wrong."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{p}:{line}: not UTF-8 text") from None
    return parse(text, schema, p)


def parse(text: str, schema: Schema, path: Path = Path("<config>")) -> Config:
    try:
        doc = tomllib.loads(text)
    except RecursionError:  # tomllib parses arrays and inline tables recursively
        raise ConfigError(f"{path}:1: arrays or tables nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{m.group(1)}:{m.group(2)}" if m else "1"
        reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError(f"{path}:{where}: {reason}") from None
    cfg = Config(path, text)
    for name, value in doc.items():
        sec = schema.section(name)
        if sec is None:
            raise cfg.error((name, "_"), f"unknown section (known: "
                            f"{', '.join(s.name for s in schema.sections)})") if isinstance(
                value, (dict, list)) else cfg.error((name,), "unknown key at the top level")
        if sec.many and not isinstance(value, list):
            raise cfg.error((name, "_"), f"write it as [[{name}]] (one per entry)")
        if not sec.many and not isinstance(value, dict):
            raise cfg.error((name, "_"), f"write it as a table, [{name}]")
    for sec in schema.sections:
        value = doc.get(sec.name)
        if value is None:
            if sec.required:
                raise ConfigError(f"{path}:1: [{sec.name}]: section missing")
            cfg.values[sec.name] = [] if sec.many else _section_values(cfg, sec, {}, (sec.name,))
        elif sec.many:
            cfg.values[sec.name] = [_section_values(cfg, sec, entry, (sec.name, i))
                                    for i, entry in enumerate(value)]
        else:
            cfg.values[sec.name] = _section_values(cfg, sec, value, (sec.name,))
    return cfg


def _section_values(cfg: Config, sec: Section, given: Mapping[str, Any],
                    where: tuple[str | int, ...]) -> dict[str, Any]:
    known = {k.name: k for k in sec.keys}
    for name in given:
        if name not in known:
            raise cfg.error((*where, name), f"unknown key (known in [{sec.name}]: "
                            f"{', '.join(known)})")
    out: dict[str, Any] = {}
    for key in sec.keys:
        at = (*where, key.name)
        if key.name not in given:
            if key.required:
                raise cfg.error(at, "required key missing")
            out[key.name] = key.default
            continue
        value = given[key.name]
        types = key.type if isinstance(key.type, tuple) else (key.type,)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise cfg.error(at, f"must be {_type_name(key.type)}, not {_type_name(type(value))}")
        if key.check is not None:
            try:
                value = key.check(value)
            except (ValueError, InputError) as exc:
                raise cfg.error(at, str(exc)) from None
        out[key.name] = value
    return out


def entries(cfg: Config, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, values) of each entry of the array of tables ``name``."""
    yield from enumerate(cfg.values.get(name, []))


# ---------------------------------------------------------------- checks shared by the schemas

IFNAMSIZ = 16


def in_range(lo: float, hi: float) -> Check:
    """A check for a number within [lo, hi]."""
    def check(v: float) -> float:
        if not lo <= v <= hi:
            raise ValueError(f"{v} is out of range ({lo}-{hi})")
        return v
    return check


def one_of(*choices: str) -> Check:
    def check(v: str) -> str:
        if v not in choices:
            raise ValueError(f"{v!r} is not one of {', '.join(choices)}")
        return v
    return check


def ifname(v: str) -> str:
    """A Linux interface name: 1-15 bytes, no '/' and no spaces."""
    if not v or len(v.encode()) >= IFNAMSIZ or "/" in v or any(c.isspace() for c in v):
        raise ValueError(f"{v!r} is not an interface name (1-15 characters, no '/' or spaces)")
    return v


def fraction(v: float) -> float:
    """A share of a limit: 0 < x <= 1."""
    if not 0 < v <= 1:
        raise ValueError(f"{v} is not a fraction of the limit (0 < x <= 1)")
    return float(v)
