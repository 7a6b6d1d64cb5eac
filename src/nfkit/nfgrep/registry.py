"""Application ids and conntrack label names: one registry for every nfgrep back end and the user's rules.

Owns: the number of each application (its id), how an id travels in a packet
or conntrack mark under a mask, and the label names nfkit merges into
connlabel.conf.  Read by `nfgrep live` (NFQUEUE) and by the kernel (eBPF)
back end; documented for users in docs/nfgrep.md ("Application ids and
labels").  Must not know: how flows are classified, or sockets.

Rules kept forever (scripts and rulesets depend on them):

- An application's id is also its conntrack label bit: app ``http`` is id 2,
  mark value ``2 << shift`` under the mark mask, and ct label bit 2, named
  ``http`` in connlabel.conf.  So `ct label "http"` and `meta mark & MASK ==
  2 << shift` mean the same flows.
- Ids 1-63 are the shipped library's (`SHIPPED`, never renumbered; new
  shipped protocols take the next free number).  Id 1 is ``unknown``: a flow
  still undecided after the live mode's packet or byte bound.  Id 0 means
  "not classified yet" and never names an application.
- Ids 64-127 go to applications of the user's own rule files, the first free
  bit of connlabel.conf in that range, recorded there, so an application
  keeps its id from one run to the next.
- The mark mask is contiguous and at least 8 bits wide: the id (up to 127)
  sits at the mask's lowest 7 bits; the 8th (`direction_bit`) tells the live
  mode's worker that a queued packet goes in the reply direction, and never
  leaves the queue's verdict or nfkit's chains set.  Bits outside the mask
  are the user's and nfkit leaves them as they are.

connlabel.conf: nfkit appends the lines it needs (``BIT NAME``) after a
comment line of its own and never changes, moves or removes the user's lines.
A name the user already gave another bit, or a bit the user gave another
name, is an error naming the file, the line and both meanings.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nfkit.errors import InputError

UNKNOWN = "unknown"
SHIPPED: dict[str, int] = {
    UNKNOWN: 1, "http": 2, "tls": 3, "ssh": 4, "dns": 5, "ftp": 6, "ftp-data": 7, "smtp": 8,
    "pop3": 9, "imap": 10, "redis": 11, "mqtt": 12, "postgresql": 13, "mysql": 14,
    "websocket": 15, "http-connect": 16,
}
SHIPPED_LAST = 63
USER_FIRST, USER_LAST = 64, 127
DEFAULT_MARK_MASK = 0xFF
CONNLABEL_CONF = "/etc/connlabel.conf"  # where nft reads label names (nftables 1.0)
HEADER = "# nfkit nfgrep: application labels (lines below are added by nfkit; see docs/nfgrep.md)"


def mark_shift(mask: int) -> int:
    """The bit position of the id under ``mask``; InputError when the mask cannot hold ids."""
    if not 0 < mask <= 0xFFFFFFFF:
        raise InputError(f"--mark-mask {mask:#x}: a 32-bit mask with at least 8 bits set")
    shift = (mask & -mask).bit_length() - 1
    run = mask >> shift
    if run & (run + 1):
        raise InputError(f"--mark-mask {mask:#x}: the bits must be contiguous")
    if run < 2 * USER_LAST + 1:
        raise InputError(f"--mark-mask {mask:#x}: {run.bit_length()} bits cannot hold app ids up to "
                         f"{USER_LAST} and the direction bit (8 bits needed)")
    return shift


def direction_bit(mask: int) -> int:
    """The mark bit, right above the id's 7, that flags a reply-direction packet in the queue."""
    return 1 << (mark_shift(mask) + 7)


def parse_mask(text: str) -> int:
    """``--mark-mask`` as given (decimal or 0x hex); InputError naming it."""
    try:
        mask = int(text, 0)
    except ValueError:
        raise InputError(f"--mark-mask {text!r}: not a number") from None
    mark_shift(mask)
    return mask


@dataclass
class Registry:
    """Application name <-> id (= label bit) for one set of rule files."""

    ids: dict[str, int] = field(default_factory=lambda: dict(SHIPPED))

    def id(self, app: str | None) -> int:
        """The id of ``app`` (None: unknown); KeyError for an application not registered."""
        return self.ids[app or UNKNOWN]

    def name(self, app_id: int) -> str | None:
        for n, i in self.ids.items():
            if i == app_id:
                return n
        return None

    def mark(self, app: str | None, mask: int) -> int:
        """The mark bits of ``app`` under ``mask``."""
        return self.id(app) << mark_shift(mask)

    def app_of_mark(self, mark: int, mask: int) -> str | None:
        """The application whose id is in ``mark`` under ``mask`` (None: none there)."""
        return self.name((mark & mask) >> mark_shift(mask))


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file") from None


def _entries(path: Path, lines: list[str]) -> tuple[dict[str, tuple[int, int]], dict[int, str]]:
    """name -> (bit, line number), bit -> name, from connlabel.conf lines."""
    by_name: dict[str, tuple[int, int]] = {}
    by_bit: dict[int, str] = {}
    for no, line in enumerate(lines, 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[0].isdigit() or not 0 <= int(parts[0]) <= 127:
            raise InputError(f"{path}:{no}: {line.strip()!r} is not 'BIT NAME' with BIT 0-127")
        bit, name = int(parts[0]), parts[1]
        by_name.setdefault(name, (bit, no))
        by_bit.setdefault(bit, name)
    return by_name, by_bit


def merge_connlabel(apps: Iterable[str], path: str | os.PathLike[str] = CONNLABEL_CONF,
                    write: bool = True) -> Registry:
    """The registry for ``apps`` (shipped and the user's own), with connlabel.conf at
    ``path`` made to name every one of them (see the module docstring).

    The file is rewritten (atomically, mode kept) only when a line is missing;
    the user's lines are kept byte for byte.  ``write=False``: the same ids,
    the file left as it is (a back end that only needs the numbers).  Raises
    InputError on a conflict.
    """
    p = Path(path)
    lines = _read_lines(p)
    by_name, by_bit = _entries(p, lines)
    reg = Registry()
    wanted = list(dict.fromkeys([*SHIPPED, *apps]))
    for name in wanted:
        if name in SHIPPED:
            bit = SHIPPED[name]
            if name in by_name and by_name[name][0] != bit:
                have, no = by_name[name]
                raise InputError(f"{p}:{no}: label {name!r} is bit {have} there; nfkit's registry "
                                 f"gives application {name!r} bit {bit}")
            if by_bit.get(bit, name) != name:
                raise InputError(f"{p}:{by_name[by_bit[bit]][1]}: bit {bit} is named "
                                 f"{by_bit[bit]!r} there; nfkit's registry gives it to {name!r}")
        elif name in by_name:
            bit, no = by_name[name]
            if not USER_FIRST <= bit <= USER_LAST:
                raise InputError(f"{p}:{no}: label {name!r} is bit {bit}; applications of your own "
                                 f"rule files take bits {USER_FIRST}-{USER_LAST}")
        else:
            free = [b for b in range(USER_FIRST, USER_LAST + 1)
                    if b not in by_bit and b not in reg.ids.values()]
            if not free:
                raise InputError(f"{p}: no free label bit in {USER_FIRST}-{USER_LAST} for {name!r}")
            bit = free[0]
        reg.ids[name] = bit
    missing = [(n, b) for n, b in reg.ids.items() if n not in by_name]
    if missing and write:
        out = list(lines)
        if HEADER not in out:
            out.append(HEADER)
        out += [f"{b} {n}" for n, b in missing]
        _write(p, "\n".join(out) + "\n")
    return reg


def _write(path: Path, text: str) -> None:
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror}") from None


__all__ = ["CONNLABEL_CONF", "DEFAULT_MARK_MASK", "SHIPPED", "UNKNOWN", "USER_FIRST", "USER_LAST",
           "Registry", "direction_bit", "mark_shift", "merge_connlabel", "parse_mask"]
