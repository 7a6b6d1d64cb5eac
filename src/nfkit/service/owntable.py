"""A daemon's own nf_tables objects: installed, replaced and removed atomically.

A daemon owns either a whole table (ctguard's, nfgrep live's) or, in a table it
must share, a set of chains named for it (nat66's NPT chains live in `ip6
mangle`, the only table name the kernel's NPT target accepts; nfkit never
flushes that table).  Each operation is one transaction: a leftover of a
killed run is replaced by the next start in the same commit that installs the
new objects, so the kernel never holds half of either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nfkit.errors import InputError
from nfkit.nftables import Chain, Command, Ruleset, Table, list_ruleset, run_commands


@dataclass(frozen=True)
class Owned:
    """What a daemon owns: table ``family name``, whole (``chains`` None) or those chains."""

    family: str
    table: str
    chains: tuple[str, ...] | None = None

    def _check(self, ruleset: Ruleset) -> None:
        for obj in (*ruleset.chains, *ruleset.sets, *ruleset.objs, *ruleset.rules):
            if (obj.family, obj.table) != (self.family, self.table):
                raise InputError(f"{obj}: outside {self.family} {self.table}, which is all "
                                 "this daemon may change")
            if self.chains is not None and not isinstance(obj, Chain) and hasattr(obj, "chain") \
                    and obj.chain not in self.chains:
                raise InputError(f"{obj}: chain {obj.chain} is not one of this daemon's")
        if self.chains is not None:
            for chain in ruleset.chains:
                if chain.name not in self.chains:
                    raise InputError(f"{chain}: not one of this daemon's chains")
            if ruleset.sets or ruleset.objs:
                raise InputError(f"{self.family} {self.table}: a daemon owning chains only "
                                 "cannot add sets or objects to a shared table")

    def _teardown(self, present: set[str] | None) -> list[Command]:
        table = Table(self.family, self.table)
        if self.chains is None:
            # add-then-delete: deleting works whether or not a leftover is there
            return [Command("add", "table", table), Command("delete", "table", table)]
        chains = [Chain(self.family, self.table, c) for c in self.chains
                  if present is None or c in present]
        return ([Command("add", "table", table)]
                + [Command("flush", "chain", c) for c in chains]
                + [Command("delete", "chain", c) for c in chains])

    def _present_chains(self) -> set[str]:
        found = list_ruleset(self.family, self.table, rules=False)
        return {c.name for c in found.chains} & set(self.chains or ())

    def _install(self, ruleset: Ruleset, present: set[str] | None) -> list[Command]:
        """Teardown of the earlier copy (``present``: its chains, for owned chains) and
        ``ruleset`` added, as one command list."""
        cmds = self._teardown(present)
        cmds += [Command("add", "table", Table(self.family, self.table))]
        cmds += [Command("add", "chain", c) for c in ruleset.chains]
        cmds += [Command("add", s.kind, s) for s in ruleset.sets]
        cmds += [Command("add", o.kind, o) for o in ruleset.objs]
        cmds += [Command("add", "rule", r) for r in ruleset.rules]
        return cmds

    def _holds(self, found: Ruleset, ruleset: Ruleset) -> bool:
        """Does the kernel's ``found`` (this table's listing) hold exactly ``ruleset`` as
        this daemon's: the same chains, the same rules in the same order?"""
        from nfkit.nftables.listing import normalize, strip_counters

        mine = set(self.chains) if self.chains is not None else {c.name for c in found.chains}
        have = {c.name: c for c in found.chains if c.name in mine}
        want = {c.name: c for c in ruleset.chains}
        if have.keys() != want.keys() or any(
                (have[n].type, have[n].hook, have[n].prio, have[n].policy)
                != (w.type, w.hook, w.prio, w.policy) for n, w in want.items()):
            return False
        if self.chains is None and (found.sets or found.objs or ruleset.sets or ruleset.objs):
            return False  # sets and objects are not compared: installed anew
        def by_chain(rules: list[Any], norm: bool) -> dict[str, list[str]]:
            out: dict[str, list[str]] = {}
            for r in rules:
                expr = normalize(r.expr, r.family, table=r.table) if norm else r.expr
                out.setdefault(r.chain, []).append(repr((strip_counters(expr), r.comment)))
            return out
        return by_chain([r for r in found.rules if r.chain in mine], False) == by_chain(ruleset.rules, True)

    def changes(self, ruleset: Ruleset) -> list[Command]:
        """The commands that make the kernel hold ``ruleset`` (of this table only) as this
        daemon's: none when it already does (chain by chain, rules in order as the kernel
        gives them back), else a teardown of the earlier copy and the new one."""
        self._check(ruleset)
        found = list_ruleset(self.family, self.table)
        if self._holds(found, ruleset):
            return []
        present = {c.name for c in found.chains} & set(self.chains) if self.chains is not None else None
        return self._install(ruleset, present)

    def replace(self, ruleset: Ruleset, sock: Any | None = None) -> int:
        """Install ``ruleset`` (of this table only), replacing any earlier copy, in one commit
        (on ``sock``, an nf_tables netlink socket the caller keeps, if given: closing one waits
        for the kernel's deferred destroy work of the replaced objects, which a normal-priority
        kernel worker runs; a daemon that replaces often keeps its socket open)."""
        self._check(ruleset)
        return run_commands(self._install(ruleset, self._present_chains() if self.chains is not None
                                          else None), sock=sock)

    def remove(self) -> None:
        """Remove what this daemon owns (nothing else), in one commit; absent is fine."""
        if self.chains is not None:
            present = self._present_chains()
            if not present:
                return
            cmds = self._teardown(present)
        else:
            cmds = self._teardown(None)
        run_commands(cmds)
