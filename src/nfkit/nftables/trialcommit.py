"""The commit-time half of `nfkit rules check`: a trial commit in a scratch namespace.

A batch sent without BATCH_END (what `check` sends, as `nft -c` does) is
validated message by message and then aborted.  The kernel checks some things
only when it commits: that every statement suits the type and hook of each
base chain that reaches it (masquerade only in nat chains, reject only in
input/forward/output), jump loops and depth.  On the abort path it runs those
checks too, but (Linux 6.x) a table created in the same batch is re-created
for the error report without them, so the refusal is never sent: `nft -c`
says "ok" for a file `nft -f` refuses.  Putting the namespace in the state
where every rule is validated as it is added would make a big check
quadratic (20 s instead of 0.4 s for 20,000 rules) and slow every later load.

So this module commits the same commands for real in a throw-away network
namespace (a forked child, unshare(CLONE_NEWNET)) that holds a copy of the
tables they touch, read from the real one, and reports what the kernel
refused there.  Nothing is committed in the caller's namespace.  It does not
know how batches are encoded (nfkit.nftables.transaction does).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nfkit.errors import NetlinkError, NfkitError, TransactionError

CLONE_NEWNET = 0x40000000


def skipped_because(cmds: Sequence[Any]) -> str | None:
    """Why a trial commit of ``cmds`` in a copy would not say what the real one does, or None.

    Handles differ in a copy (rules are numbered anew), and devices of netdev
    chains do not exist in a new namespace."""
    for c in cmds:
        o = c.obj
        if c.kind == "rule" and (c.verb in ("replace", "delete")
                                 or getattr(o, "position", None) is not None
                                 or (c.verb == "insert" and o.handle is not None)):
            return "it refers to rule handles, which differ in a copy"
        if c.kind == "chain" and getattr(o, "dev", None):
            return "it names network devices, which a scratch namespace does not have"
        if c.verb == "delete" and getattr(o, "handle", None) is not None:
            return "it refers to handles, which differ in a copy"
    return None


def tables_touched(cmds: Sequence[Any]) -> list[tuple[str, str]]:
    """(family, table) of every object the commands name, in first-seen order."""
    seen: dict[tuple[str, str], None] = {}
    for c in cmds:
        o = c.obj
        if o is None or c.kind == "ruleset":
            continue
        key = (o.family, o.name if c.kind == "table" else o.table)
        seen.setdefault(key, None)
    return list(seen)


def trial(cmds: Sequence[Any], copies: list[str], commit: Callable[[Sequence[Any]], Any],
          load: Callable[[str], Sequence[Any]]) -> str | None:
    """Commit ``cmds`` in a scratch namespace after loading ``copies`` (JSON listings).

    ``commit`` commits commands on a new socket, ``load`` parses a listing.
    Returns None when the kernel committed them there, or a note (a string)
    when the trial could not be made; raises TransactionError with what the
    kernel refused."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(rfd)
        out: dict[str, Any] = {}
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWNET) != 0:
                out["note"] = f"no scratch namespace ({os.strerror(ctypes.get_errno())})"
            else:
                try:
                    for text in copies:
                        commit(load(text))
                except NfkitError as exc:
                    out["note"] = f"the tables could not be copied into a scratch namespace ({exc})"
                else:
                    try:
                        commit(cmds)
                    except TransactionError as exc:
                        out["errors"] = [{"errno": e.errno, "extack": e.extack, "what": e.what,
                                          "index": e.index} for e in exc.errors]
                        out["message"] = str(exc)
        except BaseException as exc:  # noqa: BLE001 - the child reports everything and exits
            out["note"] = f"the trial commit failed ({type(exc).__name__}: {exc})"
        with os.fdopen(wfd, "w") as f:
            json.dump(out, f)
        sys.stdout.flush()
        os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        text = f.read()
    os.waitpid(pid, 0)
    try:
        out = json.loads(text) if text else {"note": "the trial commit ended without an answer"}
    except ValueError:
        out = {"note": "the trial commit gave no readable answer"}
    if "errors" in out:
        errors = [NetlinkError(e["errno"], extack=e["extack"], what=e["what"], index=e["index"])
                  for e in out["errors"]]
        raise TransactionError(errors, out.get("message"))
    return out.get("note")
