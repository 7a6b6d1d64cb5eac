"""Diff and apply: the smallest change set that makes tables equal to a wanted ruleset.

This module owns comparing a wanted Ruleset with the kernel's (read through
listing) and committing the difference (through commits).
"""

from __future__ import annotations

from typing import Any

from nfkit.nftables.commits import run_commands
from nfkit.nftables.jsonfmt import Command
from nfkit.nftables.listing import list_ruleset, normalize, open_socket, strip_counters
from nfkit.nftables.model import Rule, Ruleset, Set


def diff(wanted: Ruleset, sock: Any | None = None) -> list[Command]:
    """The smallest change set that makes the tables named in ``wanted`` equal to it.

    Objects that are equal are kept; rules are compared semantically, kept
    where equal in order, others added (after the previous kept rule) or deleted
    by handle; chains and sets that differ are replaced."""
    have = list_ruleset(sock=sock)
    tables = {t.key for t in wanted.tables} | wanted.table_keys()
    cmds: list[Command] = []
    have_tables = {t.key for t in have.tables}
    for t in wanted.tables:
        if t.key not in have_tables:
            cmds.append(Command("add", "table", t))
    have_chains = {c.key: c for c in have.chains if (c.family, c.table) in tables}
    want_chains = {c.key: c for c in wanted.chains}
    for k, c in want_chains.items():
        h = have_chains.get(k)
        if h is None or (h.type, h.hook, h.prio, h.policy) != (c.type, c.hook, c.prio, c.policy):
            cmds.append(Command("add", "chain", c))
    have_sets = {s.key: s for s in have.sets if (s.family, s.table) in tables}
    for s in wanted.sets:
        hs = have_sets.get(s.key)
        if hs is None:
            cmds.append(Command("add", s.kind, s))
        elif _set_sig(hs) != _set_sig(s):
            want_elems = _norm_elems(s)
            if _set_sig(hs, False) == _set_sig(s, False):
                cmds.append(Command("flush", s.kind, hs))
                cmds.append(Command("add", "element", s, want_elems))
            else:
                cmds.append(Command("delete", s.kind, hs))
                cmds.append(Command("add", s.kind, s))
    have_objs = {o.key: o for o in have.objs if (o.family, o.table) in tables}
    for o in wanted.objs:
        if o.key not in have_objs:
            cmds.append(Command("add", o.kind, o))
    # rules, per chain
    by_chain: dict[tuple[str, str, str], list[Rule]] = {}
    for r in have.rules:
        by_chain.setdefault(r.chain_key, []).append(r)
    want_by_chain: dict[tuple[str, str, str], list[Rule]] = {}
    for r in wanted.rules:
        want_by_chain.setdefault(r.chain_key, []).append(r)
    named: dict[tuple[str, str], dict[str, Set]] = {}
    for s in (*have_sets.values(), *wanted.sets):  # the wanted copy wins
        named.setdefault((s.family, s.table), {})[s.name] = s
    for key in want_chains:
        cmds += _diff_rules(by_chain.get(key, []), want_by_chain.get(key, []),
                            named.get(key[:2], {}))
    # deletions: rules of chains not wanted, then chains, sets, objects
    for key in have_chains:
        if key not in want_chains:
            for r in by_chain.get(key, []):
                cmds.append(Command("delete", "rule", r))
    for key, c in have_chains.items():
        if key not in want_chains:
            cmds.append(Command("delete", "chain", c))
    want_set_keys = {s.key for s in wanted.sets}
    for key, s in have_sets.items():
        if key not in want_set_keys:
            cmds.append(Command("delete", s.kind, s))
    want_obj_keys = {o.key for o in wanted.objs}
    for okey, o in have_objs.items():
        if okey not in want_obj_keys:
            cmds.append(Command("delete", o.kind, o))
    return cmds


def _norm_elems(s: Set) -> list[Any]:
    return list(s.elem)


def _set_sig(s: Set, with_elems: bool = True) -> tuple[Any, ...]:
    t = s.type if isinstance(s.type, list) else [p.strip() for p in s.type.split(".")]
    elems = sorted(map(repr, s.elem)) if with_elems else None
    return (tuple(t), repr(s.map), tuple(sorted(s.flags)), s.timeout, elems)


def _diff_rules(have: list[Rule], want: list[Rule], named_sets: dict[str, Set]) -> list[Command]:
    fam = want[0].family if want else "ip"
    want_norm = [repr(strip_counters(normalize(r.expr, fam, named_sets, r.table))) + repr(r.comment)
                 for r in want]
    have_norm = [repr(strip_counters(r.expr)) + repr(r.comment) for r in have]
    # longest common subsequence keeps the most rules in place
    n, m = len(have_norm), len(want_norm)
    if n * m > 4_000_000:
        keep_pairs = _greedy_pairs(have_norm, want_norm)
    else:
        lcs = [[0] * (m + 1) for _ in range(n + 1)]
        for i in range(n - 1, -1, -1):
            for j in range(m - 1, -1, -1):
                lcs[i][j] = lcs[i + 1][j + 1] + 1 if have_norm[i] == want_norm[j] else \
                    max(lcs[i + 1][j], lcs[i][j + 1])
        keep_pairs = []
        i = j = 0
        while i < n and j < m:
            if have_norm[i] == want_norm[j]:
                keep_pairs.append((i, j))
                i += 1
                j += 1
            elif lcs[i + 1][j] >= lcs[i][j + 1]:
                i += 1
            else:
                j += 1
    kept_have = {i for i, _ in keep_pairs}
    kept_want = dict((j, i) for i, j in keep_pairs)
    cmds = [Command("delete", "rule", have[i]) for i in range(n) if i not in kept_have]
    # New rules go before the next kept rule (in order), or at the end of the chain.
    next_kept: list[int | None] = [None] * (m + 1)
    for j in range(m - 1, -1, -1):
        next_kept[j] = have[kept_want[j]].handle if j in kept_want else next_kept[j + 1]
    for j, r in enumerate(want):
        if j in kept_want:
            continue
        nr = Rule(r.family, r.table, r.chain, r.expr, r.comment)
        if next_kept[j] is not None:
            nr.position = next_kept[j]
            cmds.append(Command("insert", "rule", nr))
        else:
            cmds.append(Command("add", "rule", nr))
    return cmds


def _greedy_pairs(have: list[str], want: list[str]) -> list[tuple[int, int]]:
    pairs = []
    i = 0
    for j, w in enumerate(want):
        k = i
        while k < len(have) and have[k] != w:
            k += 1
        if k < len(have):
            pairs.append((k, j))
            i = k + 1
    return pairs


def apply(wanted: Ruleset, dry_run: bool = False, sock: Any | None = None) -> list[Command]:
    """Make the kernel's tables named in ``wanted`` equal to it (smallest change set).

    Returns the change set; with ``dry_run`` nothing is sent."""
    own = sock is None
    sock = sock or open_socket()
    try:
        cmds = diff(wanted, sock=sock)
        if cmds and not dry_run:
            run_commands(cmds, sock=sock)
        return cmds
    finally:
        if own:
            sock.close()
