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
        if self.chains is None:
            return set()
        found = list_ruleset(self.family, self.table, rules=False)
        return {c.name for c in found.chains}

    def changes(self, ruleset: Ruleset) -> list[Command]:
        """The commands that make the kernel hold ``ruleset`` (of this table only) as this
        daemon's: none when it already does (compared chain by chain, rules as the kernel
        gives them back), else a teardown of the earlier copy and the new one."""
        from nfkit.nftables.listing import normalize, strip_counters

        self._check(ruleset)
        found = list_ruleset(self.family, None)
        have_chains = {c.name: c for c in found.chains if c.table == self.table}
        mine = set(self.chains) if self.chains is not None else set(have_chains)
        want_chains = {c.name: c for c in ruleset.chains}
        same = set(have_chains) & mine == set(want_chains) and all(
            (h.type, h.hook, h.prio, h.policy) == (w.type, w.hook, w.prio, w.policy)
            for name, w in want_chains.items() for h in (have_chains[name],))
        if same and self.chains is None:
            same = ({s.name for s in found.sets if s.table == self.table} == {s.name for s in ruleset.sets}
                    and not ruleset.sets and not ruleset.objs)
        if same:
            have = [(r.chain, strip_counters(r.expr), r.comment) for r in found.rules
                    if r.table == self.table and r.chain in mine]
            want = [(r.chain, strip_counters(normalize(r.expr, r.family, table=r.table)), r.comment)
                    for r in ruleset.rules]
            if sorted(map(repr, have)) == sorted(map(repr, want)):
                return []
        present = set(have_chains) & mine if self.chains is not None else None
        cmds = self._teardown(present)
        cmds += [Command("add", "table", Table(self.family, self.table))]
        cmds += [Command("add", "chain", c) for c in ruleset.chains]
        cmds += [Command("add", s.kind, s) for s in ruleset.sets]
        cmds += [Command("add", o.kind, o) for o in ruleset.objs]
        cmds += [Command("add", "rule", r) for r in ruleset.rules]
        return cmds

    def replace(self, ruleset: Ruleset) -> int:
        """Install ``ruleset`` (of this table only), replacing any earlier copy, in one commit."""
        self._check(ruleset)
        cmds = self._teardown(self._present_chains() if self.chains is not None else None)
        cmds += [Command("add", "table", Table(self.family, self.table))]
        cmds += [Command("add", "chain", c) for c in ruleset.chains]
        cmds += [Command("add", s.kind, s) for s in ruleset.sets]
        cmds += [Command("add", o.kind, o) for o in ruleset.objs]
        cmds += [Command("add", "rule", r) for r in ruleset.rules]
        return run_commands(cmds)

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
