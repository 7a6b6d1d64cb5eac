"""Received entries put into the kernel as conntrackd 1.4.7 puts them (external_inject.c).

Owns: the requests that inject a peer's word on an entry, and what to do when
the kernel refuses one: a NEW that exists is deleted and created again, an
UPD of an entry that is not there creates it, an UPD the kernel refuses
otherwise (a status bit it cannot clear) deletes and creates it, a DEL of an
entry already gone is no failure.  TCP entries are created with liberal
window tracking (and SACK permitted) unless ``window_tracking``, as
conntrackd does: the survivor never saw the connection's windows.
Its own socket's port id is what the sync engine uses to recognise the
kernel events its injections cause, and ignore them.
Must not know: the sync protocol, sockets other than its netlink one.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

from nfkit.conntrack import expect as ctexpect
from nfkit.conntrack import wire as ctwire
from nfkit.conntrack.model import Entry, Status
from nfkit.conntrack.table import ConntrackTable
from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NLM_F_CREATE, NLM_F_EXCL
from nfkit.netlink.specs.conntrack_tcp import TcpState

NEW, UPD, DEL = "new", "update", "destroy"

# a status the kernel takes on update: CONFIRMED kept, the bits it will not change left alone
_UPDATE_KEEP = ~int(Status.EXPECTED | Status.DYING)


@dataclass
class InjectStats:
    created: int = 0
    create_failed: int = 0
    updated: int = 0
    update_failed: int = 0
    destroyed: int = 0
    destroy_failed: int = 0
    exp_created: int = 0
    exp_failed: int = 0
    exp_destroyed: int = 0


class Injector:
    """Puts entries into the kernel table of ``table``'s namespace over its own netlink socket."""

    def __init__(self, table: ConntrackTable, *, window_tracking: bool = False,
                 commit_timeout: int = 0) -> None:
        self.sock = table.open_socket()
        self.portid = self.sock.portid
        self.window_tracking = window_tracking
        self.commit_timeout = commit_timeout
        self.stats = InjectStats()
        # one message template per entry shape: most of a big resync's cost otherwise
        self._creator = ctwire.CreateEncoder(NLM_F_CREATE | NLM_F_EXCL, tcp_flags=self._tcp_flags,
                                             with_helper=True)

    def close(self) -> None:
        self.sock.close()

    def _tcp_flags(self, e: Entry) -> int | None:
        if e.proto != 6 or e.state is None:
            return None
        flags = ctwire.TCP_FLAG_SACK_PERM
        flags |= ctwire.TCP_FLAG_WINDOW_SCALE if self.window_tracking else ctwire.TCP_FLAG_BE_LIBERAL
        if e.state >= TcpState.TIME_WAIT:
            flags |= ctwire.TCP_FLAG_CLOSE_INIT
        return flags

    def _prepared(self, e: Entry) -> Entry:
        if self.commit_timeout:
            e.timeout = self.commit_timeout
        e.status &= ~int(Status.EXPECTED)
        e.id = None
        return e

    def _create(self, w: MessageWriter, e: Entry) -> int:
        return self._creator.add(w, e)

    def _update(self, w: MessageWriter, e: Entry) -> int:
        return ctwire.encode_update(w, e, timeout=e.timeout, status=(e.status | Status.CONFIRMED) & _UPDATE_KEEP,
                                    mark=e.mark, tcp_state=e.state if e.proto == 6 else None,
                                    tcp_flags=self._tcp_flags(e))

    def apply(self, changes: Iterable[tuple[str, Entry]]) -> None:
        """Apply (kind, entry) changes in order (kind NEW, UPD or DEL); failures are counted."""
        batch: list[tuple[str, Entry]] = []
        keys: set[object] = set()
        for kind, e in changes:
            if e.key in keys:  # two words on one entry: the first must land first
                self._round(batch)
                batch, keys = [], set()
            batch.append((kind, self._prepared(e)))
            keys.add(e.key)
        if batch:
            self._round(batch)

    def _round(self, batch: list[tuple[str, Entry]]) -> None:
        w = MessageWriter()
        first: dict[int, tuple[str, Entry]] = {}
        for kind, e in batch:
            if kind == DEL:
                seq = ctwire.encode_delete(w, e)
            elif kind == NEW:
                seq = self._create(w, e)
            else:
                seq = self._update(w, e)
            first[seq] = (kind, e)
        failures = self.sock.pipeline(w)
        s = self.stats
        again = MessageWriter()
        second: dict[int, tuple[str, Entry]] = {}
        for seq, (kind, e) in first.items():
            err = failures.get(seq)
            if kind == DEL:
                if err is None:
                    s.destroyed += 1
                elif err != errno.ENOENT:
                    s.destroy_failed += 1
                continue
            if err is None:
                if kind == NEW:
                    s.created += 1
                else:
                    s.updated += 1
                continue
            if kind == UPD and err == errno.ETIME:  # dying: skip, as conntrackd does
                continue
            if not (kind == UPD and err == errno.ENOENT):
                if kind == NEW and err != errno.EEXIST:
                    s.create_failed += 1
                    continue
                ctwire.encode_delete(again, e)  # exists (NEW) or refused the update: replace it
            second[self._create(again, e)] = (kind, e)
        if not second:
            return
        failures = self.sock.pipeline(again)
        for seq, (kind, _e) in second.items():
            ok = seq not in failures
            if kind == NEW:
                s.created += ok
                s.create_failed += not ok
            else:
                s.updated += ok
                s.update_failed += not ok

    def apply_expectations(self, changes: Iterable[tuple[str, ctexpect.Expectation]]) -> None:
        """Create (NEW, UPD: one that exists is replaced) or delete (DEL) expectations, in order.

        The master entry must be in the table already, with its helper (apply entries first)."""
        s = self.stats
        for kind, x in changes:
            x.id = None
            w = MessageWriter()
            if kind == DEL:
                ctexpect.encode_delete(w, x)
                err = self.sock.pipeline(w)
                s.exp_destroyed += not err
                continue
            ctexpect.encode_create(w, x)
            err = self.sock.pipeline(w)
            if err and next(iter(err.values())) == errno.EEXIST:
                again = MessageWriter()
                ctexpect.encode_delete(again, x)
                ctexpect.encode_create(again, x)
                err = {k: v for k, v in self.sock.pipeline(again).items() if v != errno.ENOENT}
            if err:
                s.exp_failed += 1
            else:
                s.exp_created += 1
