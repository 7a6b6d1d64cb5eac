"""Committing changes: a change set encoded into one Batch, sent in one sendmsg.

This module owns turning commands into messages (through messages.Encoder) and
sending them as one atomic transaction (all or nothing, or checked only),
with the kernel's refusals mapped to the objects that caused them; and the
single-rule changes built on that.  It reads the kernel only to learn the sets
elements are added to (listing.dump) and whether the kernel has the nft queue
expression (asked once, when a queue statement is compiled).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from nfkit.errors import (
    InputError,
    TransactionError,
)
from nfkit.netlink.codec import Batch
from nfkit.netlink.codec import be16_attr as be16
from nfkit.nftables import validate
from nfkit.nftables.bulkjson import RuleRun
from nfkit.nftables.dumpreq import generation_request
from nfkit.nftables.expressions import A, expr
from nfkit.nftables.jsonfmt import Command
from nfkit.nftables.listing import dump, list_ruleset, open_socket
from nfkit.nftables.messages import (
    FAMILY_NUM,
    Encoder,
)
from nfkit.nftables.model import OBJECT_KINDS, Chain, Rule, Ruleset, Set, Table


def _mark_dynamic(cmds: Sequence[Command]) -> None:
    """Sets updated from the packet path need the dynamic flag; nft 1.0.6 listings drop it."""
    if not any(c.kind in ("set", "map") for c in cmds):
        return
    updated: set[tuple[str, str, str]] = set()
    for c in cmds:
        if c.kind == "rule" and c.verb in ("add", "create", "insert", "replace"):
            r = c.obj
            for st in r.expr:
                if "set" not in st and "map" not in st:
                    continue
                for k in ("set", "map"):
                    b = st.get(k)
                    if type(b) is dict and "op" in b:
                        name = b.get(k) or b.get("set") or b.get("map")
                        if isinstance(name, str):
                            updated.add((r.family, r.table, name.lstrip("@")))
    if not updated:
        return
    for c in cmds:
        if c.kind in ("set", "map") and c.verb in ("add", "create") and c.obj.key in updated:
            if "dynamic" not in c.obj.flags:
                c.obj.flags = [*c.obj.flags, "dynamic"]


def encode_commands(cmds: Sequence[Command], enc: Encoder) -> None:
    """Write each command into the encoder's batch (raises InputError naming the object)."""
    _mark_dynamic(cmds)
    at = [0]
    try:
        _encode(cmds, enc, at)
    except _ENCODE_FAULTS as exc:
        # validate.py checks every value first; what still cannot be encoded is
        # named here, never a traceback.
        c = cmds[at[0]]
        raise InputError(f"{validate.label(c.kind, c.obj)}: cannot be encoded ({exc})") from None


_ENCODE_FAULTS = (struct.error, OverflowError, ValueError, TypeError, KeyError, AttributeError,
                  IndexError, RecursionError, UnicodeError)


def _encode(cmds: Sequence[Command], enc: Encoder, at: list[int]) -> None:
    # Consecutive rule runs are written together (`Encoder.rule_runs`), with the rules
    # between them (each a function that encodes it, in its place).
    runs: list[Any] = []
    for i, c in enumerate(cmds):
        o = c.obj
        if c.kind == "rule" and type(o) is RuleRun:
            runs.append(o)
            continue
        if runs and c.kind == "rule" and c.verb in ("add", "create"):
            runs.append(partial(_encode_rule, c, enc, at, i))
            continue
        if runs:
            enc.rule_runs(runs)
            runs = []
        at[0] = i
        if c.kind == "ruleset":
            if c.verb not in ("flush", "delete"):
                raise InputError(f"{c.verb} ruleset is not a command")
            enc.flush_ruleset(o)  # o: a family (as nft flush ruleset FAMILY) or None
            continue
        if c.kind == "table":
            if c.verb in ("add", "create"):
                enc.table(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_table(o.family, o.name)
            elif c.verb == "flush":
                enc.flush_table(o)
            else:
                raise InputError(f"{c.verb} table is not a command")
        elif c.kind == "chain":
            if c.verb in ("add", "create"):
                enc.chain(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_chain(o)
            elif c.verb == "flush":
                enc.del_chain(o, flush_only=True)
            else:
                raise InputError(f"{c.verb} chain is not a command")
        elif c.kind == "rule":
            if c.verb in ("add", "create"):
                _encode_rule(c, enc, at, i)
            elif c.verb in ("insert", "replace"):
                if c.verb == "insert" and o.handle is not None and o.position is None:
                    o.position = o.handle
                enc.rule(o, c.verb)
            elif c.verb == "delete":
                enc.del_rule(o)
            else:
                raise InputError(f"{c.verb} rule is not a command")
        elif c.kind in ("set", "map"):
            if c.verb in ("add", "create"):
                enc.set(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_set(o)
            elif c.verb == "flush":
                enc.flush_set(o)
            else:
                raise InputError(f"{c.verb} {c.kind} is not a command")
        elif c.kind == "element":
            known = enc.known_sets.get(o.key)
            if known is None:
                raise InputError(f"element for {o}: set not found (list it in the file or "
                                 "create it first)")
            enc.set_elements(known, c.items or [], delete=c.verb == "delete")
        elif c.kind in OBJECT_KINDS:
            if c.verb in ("add", "create"):
                enc.obj(o, c.verb == "create")
            elif c.verb == "delete":
                enc.del_obj(o)
            else:
                raise InputError(f"{c.verb} {c.kind} is not a command")
        else:
            raise InputError(f"unknown object kind {c.kind!r}")
    if runs:
        enc.rule_runs(runs)


def _encode_rule(c: Command, enc: Encoder, at: list[int], i: int) -> None:
    """Command ``i`` of the batch, adding a rule."""
    at[0] = i
    o = c.obj
    if o.handle is not None and o.position is None and not c.listing:
        o.position = o.handle
    if o.position is not None or o.comment or not enc.add_rule_templated(o):
        enc.rule(o, "add")


def known_sets(cmds: Sequence[Command], sock: Any | None) -> dict[tuple[str, str, str], Set]:
    known = {c.obj.key: c.obj for c in cmds if c.kind in ("set", "map") and c.verb in
             ("add", "create")}
    missing = [c.obj.key for c in cmds if c.kind == "element" and c.obj.key not in known]
    if missing and sock is not None:
        rs = dump(sock, rules=False, elements=False)
        for s in rs.sets:
            known.setdefault(s.key, s)
    return known


def queue_probe(sock: Any) -> Callable[[], str]:
    """The compiler's question whether to use the nft queue expression ("nft") or the xt
    NFQUEUE target ("xt", a kernel without nft_queue), answered by ``sock``'s kernel the
    first time it is asked (when the first queue statement is compiled), then remembered."""
    answer: list[str] = []

    def queue_mode() -> str:
        if not answer:
            answer.append("nft" if _kernel_has_expr(sock, "queue") else "xt")
        return answer[0]

    return queue_mode


def _kernel_has_expr(sock: Any, name: str) -> bool:
    """True if the kernel knows expression ``name`` (tried in a batch that is not committed)."""
    b = Batch()
    enc = Encoder(b)
    t = Table("inet", "__nfkit_probe")
    enc.table(t)
    enc.chain(Chain("inet", t.name, "c"))
    q = A["queue"]
    enc.rule(Rule("inet", t.name, "c", []), exprs=[expr(name, be16(q["num"], 0))], sets=[])
    try:
        _send(sock, b, enc, check=True)
    except TransactionError as exc:
        return not any(e.errno == 2 for e in exc.errors)
    return True


def _send(sock: Any, batch: Batch, enc: Encoder, check: bool = False) -> None:
    """Send the batch in one sendmsg, fenced by GETGEN, and collect every refusal."""
    sock.ensure_sndbuf(len(batch.buffer) + 65536)
    if check:
        sock.send_batch(batch, what=enc.what, check=True, fence=generation_request())
        return
    from nfkit.nftables.commitguard import interrupts_held

    with interrupts_held(f"the transaction ({len(enc.what)} messages)"):
        sock.send_batch(batch, what=enc.what, fence=generation_request())


def _send_named(sock: Any, batch: Batch, enc: Encoder, check: bool) -> None:
    """_send, with the anonymous sets named as the kernel would name them (see
    nfkit.nftables.anonnames); the batch as encoded when a name was taken after all."""
    from nfkit.nftables import anonnames

    # the encoder's set ids count every set it created (anonymous ones among them)
    few = enc.set_ids[0] - Encoder.FIRST_SET_ID < anonnames.MIN_SETS
    renamed = None if few else anonnames.named(batch, anonnames.existing_names(sock))
    if renamed is None:
        _send(sock, batch, enc, check)
        return
    try:
        _send(sock, renamed[0], enc, check)
    except TransactionError as exc:
        if not anonnames.refused_a_name(exc.errors, renamed[1]):
            raise
        _send(sock, batch, enc, check)


def run_commands(cmds: Sequence[Command], check: bool = False, sock: Any | None = None) -> int:
    """Commit ``cmds`` as one atomic transaction (or only validate with ``check``).

    Returns the number of messages sent.  Raises InputError before anything is
    sent for input nfkit cannot translate, and TransactionError (nothing
    committed) naming each object the kernel refused, with its extended ACK."""
    from nfkit.nftables.jsonfmt import no_gc

    validate.commands(cmds)
    own = sock is None
    sock = sock or open_socket()
    try:
        with no_gc():
            return _run(cmds, check, sock)
    finally:
        if own:
            sock.close()


def _run(cmds: Sequence[Command], check: bool, sock: Any) -> int:
    batch = Batch()
    enc = Encoder(batch, known_sets(cmds, sock), queue_probe(sock))
    encode_commands(cmds, enc)
    _send_named(sock, batch, enc, check)
    if check:
        _trial_commit(cmds, sock)
    return len(enc.what)


def _trial_commit(cmds: Sequence[Command], sock: Any) -> None:
    """The commit-time checks of a check (see nfkit.nftables.trialcommit); a note on
    stderr when they cannot be made."""
    import sys

    from nfkit.nftables import trialcommit
    from nfkit.nftables.jsonfmt import load_json
    from nfkit.nftables.listing import list_json_text

    note = trialcommit.skipped_because(cmds)
    if note is None:
        copies = []
        for fam, table in trialcommit.tables_touched(cmds):
            text = list_json_text(fam, table, sock=sock)
            if '"table"' in text:
                copies.append(text)
        note = trialcommit.trial(cmds, copies, run_commands, load_json)
    if note is not None:
        print(f"nfkit: note: the commit-time checks (chain types and hooks, jump loops) were "
              f"not made: {note}", file=sys.stderr)


def commit(obj: Ruleset | Sequence[Command], sock: Any | None = None) -> int:
    """Create everything in ``obj`` in one atomic transaction; see run_commands."""
    return run_commands(_as_commands(obj), sock=sock)


def check(obj: Ruleset | Sequence[Command], sock: Any | None = None) -> int:
    """Let the kernel validate ``obj`` as one transaction; nothing is committed."""
    return run_commands(_as_commands(obj), check=True, sock=sock)


def _as_commands(obj: Ruleset | Sequence[Command]) -> list[Command]:
    if isinstance(obj, Ruleset):
        cmds = [Command("add", "table", t) for t in obj.tables]
        cmds += [Command("add", "chain", c) for c in obj.chains]
        cmds += [Command("add", s.kind, s) for s in obj.sets]
        cmds += [Command("add", o.kind, o) for o in obj.objs]
        cmds += [Command("add", "rule", r) for r in obj.rules]
        return cmds
    return list(obj)


def flush(family: str | None = None, table: str | None = None, sock: Any | None = None) -> None:
    """Flush the whole ruleset (delete every table; with ``family`` only that family's
    tables), or the rules of one table.  Raises InputError for an unknown family."""
    if family is not None and family not in FAMILY_NUM:
        raise InputError(f"unknown family {validate.shown(family)}")
    if table is None:
        cmds = [Command("flush", "ruleset", family)]
    else:
        fams = [family] if family else list(FAMILY_NUM)
        rs = list_ruleset(sock=sock, rules=False)
        cmds = [Command("flush", "table", t) for t in rs.tables
                if t.name == table and t.family in fams]
        if not cmds:
            raise InputError(f"table {family or ''} {table}: no such table".replace("  ", " "))
    run_commands(cmds, sock=sock)


# ---- single changes --------------------------------------------------------------

def add_rule(rule: Rule, verb: str = "add", sock: Any | None = None) -> None:
    """Add (append, or after ``rule.position``), insert or replace one rule atomically."""
    run_commands([Command(verb, "rule", rule)], sock=sock)


def delete_rule(rule: Rule, sock: Any | None = None) -> None:
    """Delete the rule with ``rule.handle``."""
    run_commands([Command("delete", "rule", rule)], sock=sock)
