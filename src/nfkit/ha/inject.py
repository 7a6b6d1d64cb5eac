"""Received entries put into the kernel as conntrackd 1.4.7 puts them (external_inject.c).

Owns: the requests that inject a peer's word on an entry, and what to do when
the kernel refuses one: a NEW that exists is deleted and created again, an
UPD of an entry that is not there creates it, an UPD the kernel refuses
otherwise (a status bit it cannot clear) deletes and creates it, a DEL of an
entry already gone is no failure.  TCP entries are created with liberal
window tracking (and SACK permitted) unless ``window_tracking``, as
conntrackd does: the survivor never saw the connection's windows.
Its own socket's port id is what the sync engine uses to recognise the
kernel events its injections cause, and ignore them (`hide_own_events` has the
kernel drop them before they are queued: a peer's 100,000 entries would
otherwise come back as 100,000 events to read and throw away).
Must not know: the sync protocol, sockets other than its netlink one.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct
import sys
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from nfkit.conntrack import expect as ctexpect
from nfkit.conntrack import wire as ctwire
from nfkit.conntrack.model import Entry, Status
from nfkit.conntrack.table import ConntrackTable
from nfkit.ha.fastpath import entry_key
from nfkit.netlink.codec import MessageWriter
from nfkit.netlink.consts import NLM_F_CREATE, NLM_F_EXCL
from nfkit.netlink.specs.conntrack_tcp import TcpState

NEW, UPD, DEL = "new", "update", "destroy"

# a status the kernel takes on update: CONFIRMED kept, the bits it will not change left alone
_UPDATE_KEEP = ~int(Status.EXPECTED | Status.DYING)
_NOT_EXPECTED = ~int(Status.EXPECTED)
_CONFIRMED = int(Status.CONFIRMED)
_CREATE_KEEP = ctwire.create_status(-1)  # the status bits a create may give

# a classic BPF socket filter (linux/filter.h): struct sock_filter, the opcodes it uses
_BPF_INSN = struct.Struct("=HBBI")
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06
_SO_ATTACH_FILTER = 26
_NLMSG_PID_OFFSET = 12  # nlmsghdr: length, type, flags, seq, then the port id

# One received word on an entry: (kind, its sync key, the entry or a function making it (called
# only when needed), and for a planned one (create, update or delete) the values
# `fastpath.create_plan` made (its key first), else None).
Change = tuple[str, Hashable, "Entry | Callable[[], Entry]", "tuple[Any, ...] | None"]


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
        self._emitters: dict[tuple[int, int, bool, bool, bool, bool], Callable[..., int]] = {}
        self._plain: dict[int, Callable[..., int]] = {}  # creates without NAT, by shape number
        self._updaters: dict[tuple[int, int, bool, bool], Callable[..., int]] = {}
        self._deleters: dict[tuple[int, int], Callable[..., int]] = {}
        self._tcp_values: dict[int, tuple[int, ...]] = {}  # state -> (state, flags and mask x2)

    def close(self) -> None:
        self.sock.close()

    def hide_own_events(self, events: socket.socket) -> None:
        """Attach a socket filter to an event socket that drops the events this injector's
        own changes cause (their netlink header carries its port id), in the kernel."""
        # classic BPF on the netlink message: load nlmsg_pid (a word load is big-endian, the
        # field is in host order), drop on a match, else accept the whole message
        pid = int.from_bytes(self.portid.to_bytes(4, sys.byteorder), "big")
        program = b"".join(_BPF_INSN.pack(*insn) for insn in (
            (_BPF_LD_W_ABS, 0, 0, _NLMSG_PID_OFFSET), (_BPF_JEQ_K, 0, 1, pid), (_BPF_RET_K, 0, 0, 0),
            (_BPF_RET_K, 0, 0, 0xFFFFFFFF)))
        code = ctypes.create_string_buffer(program, len(program))
        events.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                          struct.pack("@HP", len(program) // _BPF_INSN.size, ctypes.addressof(code)))

    def _tcp_flags(self, e: Entry) -> int | None:
        if e.proto != 6 or e.state is None:
            return None
        return self._tcp_flags_of(e.state)

    def _tcp_flags_of(self, state: int) -> int:
        flags = ctwire.TCP_FLAG_SACK_PERM
        flags |= ctwire.TCP_FLAG_WINDOW_SCALE if self.window_tracking else ctwire.TCP_FLAG_BE_LIBERAL
        if state >= TcpState.TIME_WAIT:
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
                                    tcp_flags=self._tcp_flags(e), sctp_state=e.state)

    def apply(self, changes: Iterable[tuple[str, Entry]]) -> None:
        """Apply (kind, entry) changes in order (kind NEW, UPD or DEL); failures are counted."""
        self.apply_changes((kind, entry_key(e), e, None) for kind, e in changes)

    def apply_changes(self, changes: Iterable[Change]) -> None:
        """Apply `Change`s in order, many a sendmsg, acknowledged only on error; failures
        are counted (and refused creates and updates replaced, as conntrackd does)."""
        batch: list[Change] = []
        keys: set[Hashable] = set()
        for change in changes:
            if change[1] in keys:  # two words on one entry: the first must land first
                self._round(batch)
                batch, keys = [], set()
            batch.append(change)
            keys.add(change[1])
        if batch:
            self._round(batch)

    def _entry(self, entry: Entry | Callable[[], Entry]) -> Entry:
        return self._prepared(entry if isinstance(entry, Entry) else entry())

    def _create_planned(self, w: MessageWriter, planned: tuple[Any, ...]) -> int:
        """`_create` of the entry a create plan (`fastpath.create_plan`, key first) describes,
        from a compiled template: a burst's hot path, one template call a message."""
        _key, family, proto, src, dst, sport, dport, status, state, timeout, mark, nat = planned
        if self.commit_timeout:
            timeout = self.commit_timeout
        elif timeout is None:
            timeout = 30
        status = (status & _NOT_EXPECTED | _CONFIRMED) & _CREATE_KEEP
        tcp = state is not None and proto == 6
        if nat is None:  # the common case: the reply is the mirror
            # the shape as one int (a tuple key would be made and hashed per message)
            emit = self._plain.get(family << 10 | proto << 2 | tcp << 1 | (mark != 0))
            if emit is None:
                emit = self._plain[family << 10 | proto << 2 | tcp << 1 | (mark != 0)] = \
                    self._creator.template(family, proto, tcp, bool(mark)).compiled()
            if tcp:
                tv = self._tcp_values.get(state) or self._tcp_values_of(state)
                if mark:
                    return emit(w, src, dst, sport, dport, dst, src, dport, sport, timeout, status, mark, *tv)
                return emit(w, src, dst, sport, dport, dst, src, dport, sport, timeout, status, *tv)
            if mark:
                return emit(w, src, dst, sport, dport, dst, src, dport, sport, timeout, status, mark)
            return emit(w, src, dst, sport, dport, dst, src, dport, sport, timeout, status)
        # as encode_create: the mirror and the NAT ranges, or the reply as it is
        r_src, r_dst, r_sport, r_dport, dnat, snat = nat
        if dnat or snat:
            values: tuple[Any, ...] = (src, dst, sport, dport, dst, src, dport, sport)
            if dnat:
                values += (r_src, r_src, r_sport, r_sport)
            if snat:
                values += (r_dst, r_dst, r_dport, r_dport)
        else:
            values = (src, dst, sport, dport, r_src, r_dst, r_sport, r_dport)
        values += (timeout, status)
        if mark:
            values += (mark,)
        if tcp:
            values += self._tcp_values.get(state) or self._tcp_values_of(state)
        shape = (family, proto, tcp, bool(mark), dnat, snat)
        emit = self._emitters.get(shape)
        if emit is None:
            emit = self._emitters[shape] = self._creator.template(*shape).compiled()
        return emit(w, *values)

    def _tcp_values_of(self, state: int) -> tuple[int, ...]:
        """A TCP state's template values: the state, then its flags and mask both ways."""
        f = self._tcp_flags_of(state)
        v = self._tcp_values[state] = (state, f, f, f, f)
        return v

    def _update_planned(self, w: MessageWriter, planned: tuple[Any, ...]) -> int:
        """`_update` of the entry a create plan's values describe, from a compiled template."""
        _key, family, proto, src, dst, sport, dport, status, state, timeout, mark, _nat = planned
        if self.commit_timeout:
            timeout = self.commit_timeout
        tcp = state is not None and proto == 6
        values: tuple[Any, ...] = (src, dst, sport, dport)
        if timeout is not None:
            values += (timeout,)
        values += ((status & _NOT_EXPECTED | _CONFIRMED) & _UPDATE_KEEP,)
        if tcp:
            values += self._tcp_values.get(state) or self._tcp_values_of(state)
        shape = (family, proto, timeout is not None, tcp)
        emit = self._updaters.get(shape)
        if emit is None:
            emit = self._updaters[shape] = ctwire.update_template(family, proto, timeout=shape[2],
                                                                  tcp=tcp).compiled()
        return emit(w, *values, mark)

    def _delete_planned(self, w: MessageWriter, planned: tuple[Any, ...]) -> int:
        """`encode_delete` of the entry a create plan's values describe, from a compiled template."""
        _key, family, proto, src, dst, sport, dport = planned[:7]
        emit = self._deleters.get((family, proto))
        if emit is None:
            emit = self._deleters[(family, proto)] = ctwire.delete_template(family, proto).compiled()
        return emit(w, src, dst, sport, dport)

    def _round(self, batch: list[Change]) -> None:
        w = MessageWriter()
        first: dict[int, tuple[str, Entry | Callable[[], Entry]]] = {}
        sent = {NEW: 0, UPD: 0, DEL: 0}
        for kind, _key, entry, planned in batch:
            sent[kind] += 1
            if planned is not None:
                seq = (self._create_planned if kind == NEW else self._delete_planned if kind == DEL
                       else self._update_planned)(w, planned)
            elif kind == DEL:
                seq = ctwire.encode_delete(w, self._entry(entry))
            elif kind == NEW:
                seq = self._create(w, self._entry(entry))
            else:
                seq = self._update(w, self._entry(entry))
            first[seq] = (kind, entry)
        failures = self.sock.pipeline(w, ack=False)
        s = self.stats
        again = MessageWriter()
        second: dict[int, str] = {}
        failed = {NEW: 0, UPD: 0, DEL: 0}
        for seq, err in failures.items():
            if seq not in first:
                continue
            kind, entry = first[seq]
            failed[kind] += 1
            if kind == DEL:
                if err != errno.ENOENT:
                    s.destroy_failed += 1
                continue
            if kind == UPD and err == errno.ETIME:  # dying: skip, as conntrackd does
                continue
            e = self._entry(entry)
            if not (kind == UPD and err == errno.ENOENT):
                if kind == NEW and err != errno.EEXIST:
                    s.create_failed += 1
                    continue
                ctwire.encode_delete(again, e)  # exists (NEW) or refused the update: replace it
            second[self._create(again, e)] = kind
        s.created += sent[NEW] - failed[NEW]
        s.updated += sent[UPD] - failed[UPD]
        s.destroyed += sent[DEL] - failed[DEL]
        if not second:
            return
        failures = self.sock.pipeline(again)
        for seq, kind in second.items():
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
