"""The conntrack table over ctnetlink: dump, get, create, update, delete, flush, stats, events.

This module owns the conversations with the kernel about conntrack entries:
which requests to send for an operation, in which order, and what the
answers mean (ENOENT on a delete is an entry that vanished meanwhile, not a
failure).  Message layouts are `wire`'s, filter meaning is `filter`'s; this
module must not format anything for people.
"""

from __future__ import annotations

import errno as _errno
import math
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from nfkit import netns
from nfkit.conntrack import wire
from nfkit.conntrack.filter import Filter
from nfkit.conntrack.labels import HOW_TO_ENABLE, LabelsUnavailable
from nfkit.conntrack.model import Entry, Tuple
from nfkit.errors import EventsLost, InputError, NetlinkError
from nfkit.netlink.codec import Message, MessageWriter, next_seq
from nfkit.netlink.consts import (
    NFNLGRP_CONNTRACK_DESTROY,
    NFNLGRP_CONNTRACK_NEW,
    NFNLGRP_CONNTRACK_UPDATE,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_DUMP_INTR,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_MIN_TYPE,
)
from nfkit.netlink.exchange import Event as ExchangeEvent
from nfkit.netlink.exchange import Exchange, ending_error
from nfkit.netlink.socket import HoldsSocket, NetlinkSocket
from nfkit.netlink.specs import ctnetlink as S

_HDR = struct.Struct("=IHHII")
_ERRNO = struct.Struct("=i")
DUMP_BUFFER = 1 << 20
# bytes of delete requests sent at once while a dump is still being read
_DELETE_CHUNK = 128 * 1024

Progress = Callable[[int], None]

# the longest wait poll(2) takes (a C int of milliseconds), in whole seconds
MAX_QUIET_SECONDS = (2**31 - 1) // 1000


def check_quiet_timeout(seconds: float) -> float:
    """``seconds`` if it is a usable quiet timeout for `events`; raises InputError otherwise."""
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_QUIET_SECONDS):
        raise InputError(f"quiet timeout {seconds} is not a number of seconds in (0, {MAX_QUIET_SECONDS}]")
    return seconds


@dataclass
class DeleteResult:
    """What a selective delete did.

    ``deleted``: entries removed; ``matched``: entries selected (dump path);
    ``vanished``: entries that matched but were
    gone by the time their delete arrived (ENOENT); ``failed``: errno -> count
    of other refusals; ``method``: "kernel" (one filtered flush request per
    family, count taken from the table size before and after) or "dump"
    (dump, match, pipelined deletes).
    """

    deleted: int = 0
    vanished: int = 0
    matched: int = 0
    failed: dict[int, int] = field(default_factory=dict)
    method: str = "dump"


@dataclass
class CreateResult:
    """What a bulk create did: ``created``, ``exists`` (EEXIST) and other ``failed`` errno -> count."""

    created: int = 0
    exists: int = 0
    failed: dict[int, int] = field(default_factory=dict)


@dataclass
class Event:
    """One conntrack event: ``kind`` is new, update, destroy, or (after lost events)
    lost, then sync (one per entry of a fresh dump), then synced."""

    kind: str
    entry: Entry | None = None
    portid: int = 0  # the netlink port whose request caused it (0: the kernel itself)


class ConntrackTable(HoldsSocket):
    """The conntrack table of the current network namespace (a context manager).

    Raises CapabilityError when the netlink socket cannot be opened.
    """

    def __init__(self, sock: NetlinkSocket | None = None) -> None:
        self.sock = sock or NetlinkSocket()
        self._own = sock is None
        self.decoder = wire.EntryDecoder()
        # the namespace this table lives in, for the sockets it opens later (events)
        self._netns_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    def open_socket(self, **kw: Any) -> NetlinkSocket:
        """A new netlink socket in this table's network namespace (whatever the thread's)."""
        here = os.stat("/proc/thread-self/ns/net").st_ino
        if os.fstat(self._netns_fd).st_ino == here:
            return NetlinkSocket(**kw)
        with netns.enter(f"/proc/self/fd/{self._netns_fd}"):
            return NetlinkSocket(**kw)

    def close(self) -> None:
        if self._own:
            self.sock.close()
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1

    # ---------------------------------------------------------------- dumps
    def _dump_request(self, msg_type: int, family: int, flt: Filter | None) -> tuple[bytes, int]:
        w = MessageWriter()
        seq = w.begin(msg_type, NLM_F_REQUEST | NLM_F_DUMP, family=family)
        if flt is not None:
            flt.put_kernel_attrs(w, family)
        w.end()
        return bytes(w.buffer), seq

    def _walk_dump(self, request: bytes, seq: int, what: str,
                   each: Callable[[bytearray, int, int, int], Any] | str) -> Iterator[list[Any]]:
        """Send a dump request and yield, per datagram, the list of results.

        ``each`` is either a function ``each(buf, attrs_off, attrs_len, family)``
        called per object message before the buffer is reused (None results
        are dropped), or the name of a layout function of the decoder
        ("build", "text", "json"), run inline (the hot path of listings).
        """
        exchange = Exchange.dump(seq, request, what, self.sock.describe)
        self.sock.send(request)
        reader = _Datagrams(self.sock, exchange, what)
        kind = each if isinstance(each, str) else ""
        slow: Callable[[Any, int, int, int], Any] = self.decoder.decode if kind else each  # type: ignore[assignment]
        try:
            yield from self._walk_datagrams(reader, exchange, kind, slow, self.decoder.find, _HDR.unpack_from)
        finally:
            reader.close()

    @staticmethod
    def _walk_datagrams(reader: _Datagrams, exchange: Exchange, kind: str,
                        slow: Callable[[Any, int, int, int], Any],
                        find: Callable[..., tuple[Any, tuple[Any, ...]]], unpack: Any) -> Iterator[list[Any]]:
        seq = exchange.seq
        for buf in reader:
            n = len(buf)
            off = 0
            out: list[Any] = []
            append = out.append
            while off + 16 <= n:
                length, mtype, flags, mseq, _pid = unpack(buf, off)
                if (mseq != seq or mtype < NLMSG_MIN_TYPE or flags & NLM_F_DUMP_INTR
                        or length < 16 or off + length > n):
                    # not a plain entry of this dump: the exchange says what it is
                    events = exchange.message(buf, off)
                    if exchange.over:
                        if out:
                            yield out
                        _end_of_dump(events, reader.what)
                        return
                    if not events:  # another request's message, or NLMSG_NOOP
                        off += (length + 3) & ~3
                        continue
                if length > 20:
                    if kind:
                        lay, v = find(buf, off + 20, length - 20, buf[off + 16])
                        fn = getattr(lay, kind)
                        append(fn(v) if fn is not None else wire.EntryDecoder.line(kind, lay, v))
                    else:
                        r = slow(buf, off + 20, length - 20, buf[off + 16])
                        if r is not None:
                            append(r)
                off += (length + 3) & ~3
            if off < n:
                exchange.feed(buf[off:n])  # a truncated header: raises DecodeError
            if out:
                yield out

    def entries(self, flt: Filter | None = None, *, kernel: bool = True) -> Iterator[Entry]:
        """Every entry selected by ``flt`` (all without).

        With ``kernel`` the kernel applies the part of the filter it can and
        Python the rest; without, Python applies all of it to a full dump (the
        same entries either way).  Raises NetlinkError if the kernel refuses.
        """
        for batch in self.entry_batches(flt, kernel=kernel):
            yield from batch

    def entry_batches(self, flt: Filter | None = None, *, kernel: bool = True) -> Iterator[list[Entry]]:
        """Like `entries`, a list per received datagram (less overhead per entry)."""
        flt = flt or Filter()
        residue, families, push = _dump_plan(flt, kernel)
        check = None if residue.empty else residue.matches
        for family in families:
            req, seq = self._dump_request(wire.MSG_GET, family, push)
            for batch in self._walk_dump(req, seq, "conntrack dump", "build"):
                yield batch if check is None else [e for e in batch if check(e)]

    def lines(self, flt: Filter | None = None, *, form: str = "text", kernel: bool = True) -> Iterator[list[str]]:
        """The selected entries as output lines, a list per received datagram:
        ``form`` "text" (conntrack -L) or "json".

        Same lines as formatting `entries` with `formats.entry_text` /
        `formats.entry_json`, written straight from the dump where the
        filter needs no Python check (the fast path of `nfkit ct list`).
        """
        flt = flt or Filter()
        residue = flt.split()[1] if kernel else flt
        if not residue.empty:
            from nfkit.conntrack import formats

            fmt = formats.entry_json if form == "json" else formats.entry_text
            for batch in self.entry_batches(flt, kernel=kernel):
                yield [fmt(e) for e in batch]
            return
        for family in flt.families():
            req, seq = self._dump_request(wire.MSG_GET, family, flt)
            yield from self._walk_dump(req, seq, "conntrack dump", form)

    def count(self, flt: Filter | None = None) -> int:
        """How many entries ``flt`` selects (the table's size without a filter)."""
        flt = flt or Filter()
        if flt.empty:
            return self.stats()["entries"]
        _, residue = flt.split()
        if not residue.empty:
            return sum(1 for _ in self.entries(flt))
        total = 0
        for family in flt.families():
            req, seq = self._dump_request(wire.MSG_GET, family, flt)
            for batch in self._walk_dump(req, seq, "conntrack count", _one):
                total += len(batch)
        return total

    def get(self, orig: Tuple, zone: int = 0) -> Entry:
        """The entry whose original tuple is ``orig``; raises NetlinkError (ENOENT) if none."""
        w = MessageWriter()
        w.begin(wire.MSG_GET, NLM_F_REQUEST, family=orig.family)
        e = Entry(orig)
        e.zone = zone or None
        wire.put_entry_key(w, e)
        w.end()
        replies = self.sock.request(w, what=f"conntrack entry {_tuple_text(orig)}")
        for msg in replies:
            return self.decoder.decode_attrs(msg.attrs, msg.family)
        raise NetlinkError(_errno.ENOENT, what=f"conntrack entry {_tuple_text(orig)}")

    # ---------------------------------------------------------------- changes
    def create(self, entry: Entry, *, replace: bool = False) -> None:
        """Create ``entry`` (with ``replace``, update it if it exists).  Raises NetlinkError
        (EEXIST when it exists and not ``replace``)."""
        w = MessageWriter()
        wire.encode_create(w, entry, NLM_F_CREATE | (0 if replace else NLM_F_EXCL))
        self.sock.request(w, what=f"conntrack entry {_tuple_text(entry.orig)}")
        if entry.labels and not replace:
            self._check_labels_kept(entry)

    def _check_labels_kept(self, entry: Entry) -> None:
        """The kernel creates an entry without the labels it was asked for where labels are
        not enabled: read it back, and if they are missing delete it (it is the one just
        created) and raise LabelsUnavailable."""
        what = f"conntrack entry {_tuple_text(entry.orig)}"
        try:
            got = self.get(entry.orig, entry.zone or 0)
        except NetlinkError as exc:
            if exc.errno == _errno.ENOENT:
                return  # already expired (a timeout of 0): no labels left to lose
            raise
        wanted = entry.labels or 0
        if (got.labels or 0) & wanted == wanted:
            return
        self.delete(got)
        raise LabelsUnavailable(f"{what}: labels {wanted:#x} were not kept: conntrack labels are not "
                                f"enabled in this network namespace; nothing was created ({HOW_TO_ENABLE})")

    def _create_labelled_first(self, entries: list[Entry], result: CreateResult) -> list[Entry]:
        """Create labelled entries one by one until one proves the namespace keeps labels
        (created and read back with them, or found existing with labels); return the
        entries still to create.  Raises LabelsUnavailable (the probe entry deleted again)
        when the kernel drops labels here, before any other entry was sent."""
        done: set[int] = set()
        for i, e in enumerate(entries):
            if not e.labels:
                continue
            done.add(i)
            try:
                self.create(e)
            except NetlinkError as exc:
                if exc.errno != _errno.EEXIST:
                    result.failed[exc.errno] = result.failed.get(exc.errno, 0) + 1
                    continue
                result.exists += 1
                try:
                    have = self.get(e.orig, e.zone or 0)
                except NetlinkError:
                    continue
                if have.labels:
                    break
                continue
            result.created += 1
            break
        return [e for i, e in enumerate(entries) if i not in done]

    def create_many(self, entries: Iterable[Entry], *, batch: int = 4096,
                    progress: Progress | None = None) -> CreateResult:
        """Create many entries, pipelined (several requests per send, errors by sequence).

        Encoding runs in the calling thread while a second thread sends the
        previous batch: the kernel's insertion work (in sendmsg, without the
        GIL) overlaps with Python's encoding.  Raises InputError for an entry
        whose values do not fit (entries of batches already sent stay created).

        Entries with labels: where the namespace does not keep labels the kernel
        would create them without; so the first labelled entry goes alone and is
        read back, and LabelsUnavailable is raised (that entry deleted again, no
        other sent) when its labels were dropped.
        """
        enc = wire.CreateEncoder(NLM_F_CREATE | NLM_F_EXCL)
        result = CreateResult()
        if not isinstance(entries, list):
            entries = list(entries)
        if any(e.labels for e in entries):
            before = len(entries)
            entries = self._create_labelled_first(entries, result)
            if progress:
                progress(before - len(entries))
        todo: queue.Queue[tuple[MessageWriter, int] | None] = queue.Queue(maxsize=2)
        crashed: list[BaseException] = []

        def sender() -> None:
            while True:
                item = todo.get()
                if item is None:
                    return
                if crashed:
                    continue
                w, pending = item
                try:
                    failures = self.sock.pipeline(w, ack=False)
                except BaseException as exc:  # handed to the caller below
                    crashed.append(exc)
                    continue
                for err in failures.values():
                    if err == _errno.EEXIST:
                        result.exists += 1
                    else:
                        result.failed[err] = result.failed.get(err, 0) + 1
                result.created += pending - len(failures)
                if progress:
                    progress(pending)

        thread = threading.Thread(target=sender, name="ct-create-sender", daemon=True)
        thread.start()
        try:
            w = MessageWriter()
            pending = 0
            for e in entries:
                enc.add(w, e)
                pending += 1
                if pending >= batch:
                    todo.put((w, pending))
                    w, pending = MessageWriter(), 0
                    if crashed:
                        break
            if pending and not crashed:
                todo.put((w, pending))
        finally:
            todo.put(None)
            thread.join()
        if crashed:
            raise crashed[0]
        return result

    def update(self, entry: Entry, *, mark: int | None = None, mark_mask: int | None = None,
               timeout: int | None = None, status: int | None = None, labels: int | None = None,
               labels_mask: int | None = None) -> None:
        """Change one entry in place.  Raises NetlinkError (ENOENT if it is gone)."""
        w = MessageWriter()
        wire.encode_update(w, entry, mark=mark, mark_mask=mark_mask, timeout=timeout,
                           status=status, labels=labels, labels_mask=labels_mask)
        self.sock.request(w, what=f"conntrack entry {_tuple_text(entry.orig)}")

    def update_matching(self, flt: Filter, *, mark: int | None = None, mark_mask: int | None = None,
                        timeout: int | None = None, labels: int | None = None,
                        labels_mask: int | None = None, add_status: int = 0) -> DeleteResult:
        """Update every entry ``flt`` selects (dump, then pipelined updates).

        ``add_status``: status bits to set (the kernel lets userspace set, not
        clear, SEEN_REPLY and ASSURED).  Returns counts like a delete:
        ``deleted`` holds the number updated.
        """
        entries = list(self.entries(flt))
        result = None
        if labels is not None:
            # labels first, alone: an entry without room for them (ENOSPC) must not
            # keep the other changes of the same request, nor the others their labels
            result = self._set_labels(entries, labels, labels_mask)
            if mark is None and timeout is None and not add_status:
                return result
        rest = self.update_many(entries, mark=mark, mark_mask=mark_mask, timeout=timeout,
                                add_status=add_status)
        if result is not None:  # an entry that vanished or failed in either step counts once
            rest.vanished = max(rest.vanished, result.vanished)
            for err, k in result.failed.items():
                rest.failed[err] = max(rest.failed.get(err, 0), k)
            rest.deleted = min(rest.deleted, result.deleted)
        return rest

    def _set_labels(self, entries: list[Entry], labels: int, labels_mask: int | None) -> DeleteResult:
        """Set ``labels`` (under ``labels_mask``) on every entry; if any has no room for
        labels, give the others back their old labels and raise LabelsUnavailable."""
        w = MessageWriter()
        by_seq = {wire.encode_update(w, e, labels=labels, labels_mask=labels_mask): e for e in entries}
        failures = self.sock.pipeline(w, ack=False) if by_seq else {}
        nospace = sum(1 for err in failures.values() if err == _errno.ENOSPC)
        if nospace:
            undo = MessageWriter()
            for seq, e in by_seq.items():
                if seq not in failures:
                    # the kernel computes (old & ~mask) ^ labels: the old bits, under the mask
                    old = (e.labels or 0) & (labels_mask if labels_mask is not None else -1)
                    wire.encode_update(undo, e, labels=old, labels_mask=labels_mask)
            if undo.seqs:
                self.sock.pipeline(undo, ack=False)
            raise LabelsUnavailable(
                f"{nospace} of {len(by_seq)} selected conntrack entries have no room for labels "
                "(labels are not enabled in this network namespace, or were enabled after these "
                f"entries were created); no entry was changed ({HOW_TO_ENABLE}; only entries "
                "created afterwards get the room)")
        return self._count(failures, len(by_seq), "dump")

    def delete_many(self, entries: Iterable[Entry]) -> DeleteResult:
        """Delete these entries by pipelined requests (by tuple, zone and id).

        Entries already gone are counted in ``vanished`` (ENOENT), not raised.
        """
        enc = wire.DeleteEncoder()
        w = MessageWriter()
        n = 0
        for e in entries:
            enc.add(w, e)
            n += 1
        return self._settle(w, n, "dump")

    def update_many(self, entries: Iterable[Entry], *, mark: int | None = None,
                    mark_mask: int | None = None, timeout: int | None = None,
                    add_status: int = 0) -> DeleteResult:
        """Change mark, timeout or status bits of these entries by pipelined requests
        (``deleted`` = updated).  Entries gone meanwhile are counted in ``vanished``
        (ENOENT), not raised."""
        w = MessageWriter()
        n = 0
        for e in entries:
            wire.encode_update(w, e, mark=mark, mark_mask=mark_mask, timeout=timeout,
                               status=(e.status | add_status) if add_status else None)
            n += 1
        return self._settle(w, n, "dump")

    def delete(self, entry: Entry) -> bool:
        """Delete one entry (by original tuple, zone and id if known).

        Returns False if it was already gone (ENOENT); raises NetlinkError otherwise.
        """
        w = MessageWriter()
        wire.encode_delete(w, entry)
        try:
            self.sock.request(w, what=f"conntrack entry {_tuple_text(entry.orig)}")
        except NetlinkError as exc:
            if exc.errno == _errno.ENOENT:
                return False
            raise
        return True

    def flush(self) -> None:
        """Delete every entry of the table (one request)."""
        w = MessageWriter()
        w.begin(wire.MSG_DELETE, NLM_F_REQUEST, family=0)
        w.end()
        self.sock.request(w, what="conntrack flush")

    def flush_filtered(self, flt: Filter) -> None:
        """One filtered flush request per family (the kernel deletes what matches).

        Raises InputError when the kernel cannot apply all of ``flt``.
        """
        if not flt.kernel_only:
            raise InputError(f"filter {flt.describe()!r} cannot be applied by the kernel alone")
        for family in flt.families():
            self._flush_family(flt, family)

    def _flush_family(self, flt: Filter, family: int) -> None:
        w = MessageWriter()
        # version 1: the kernel honours nfgen_family for a flush (0 means all families)
        w.begin(wire.MSG_DELETE, NLM_F_REQUEST, family=family, version=1)
        flt.put_kernel_attrs(w, family)
        w.end()
        self.sock.request(w, what=f"conntrack flush {flt.describe()}")

    def delete_matching(self, flt: Filter, *, kernel: bool = True,
                        progress: Progress | None = None) -> DeleteResult:
        """Selective flush: delete every entry ``flt`` selects.

        When the kernel can apply the whole filter, one flush request per
        family does it; otherwise the entries are dumped (with the kernel's
        part of the filter), matched, and deleted by pipelined requests whose
        errors are matched by sequence number (ENOENT counted as vanished).
        Raises InputError for an empty filter (use `flush`).
        """
        if flt.empty:
            raise InputError("refusing to delete with an empty filter; use flush for everything")
        if kernel and flt.kernel_only:
            families = flt.families()
            before = self.stats()["entries"]
            self._flush_family(flt, families[0])
            after = self.stats()["entries"]
            result = DeleteResult(deleted=max(0, before - after), method="kernel")
            # CTA_FILTER needs a family, so a filter without one takes a request per
            # family; a flush always walks the whole hash table (bucket by bucket, each
            # with a reschedule point), where a filtered dump of the same table costs a
            # fraction of that.  So the other family is dumped with the same filter, and
            # whatever matches there is deleted by pipelined requests.
            for family in families[1:]:
                rest = self.delete_many(e for batch in self.entry_batches(replace(flt, family=family))
                                        for e in batch)
                result.deleted += rest.deleted
                result.vanished += rest.vanished
                for err, n in rest.failed.items():
                    result.failed[err] = result.failed.get(err, 0) + n
            return result
        # The deletes go out on a second socket while the dump is still being read,
        # 128 KiB at a time: every delete is of an entry the dump has already passed
        # (the entry a dump resumes from is never in a datagram received yet), so the
        # walk is not disturbed, and the requests never pile up in memory.  Only
        # errors come back (no acks).
        w = MessageWriter()
        result = DeleteResult(method="dump")
        failures: dict[int, int] = {}
        dsock = self.open_socket()
        try:
            for batch in self._raw_deletes(flt, kernel, w):
                result.matched += batch
                if len(w.buffer) >= _DELETE_CHUNK:
                    failures.update(dsock.pipeline(w, ack=False))
                    del w.buffer[:]
                    w.seqs.clear()
            if w.seqs:
                failures.update(dsock.pipeline(w, ack=False))
        finally:
            dsock.close()
        if progress:
            progress(result.matched)
        for err in failures.values():
            if err == _errno.ENOENT:
                result.vanished += 1
            else:
                result.failed[err] = result.failed.get(err, 0) + 1
        result.deleted = result.matched - len(failures)
        return result

    def _raw_deletes(self, flt: Filter, kernel: bool, w: MessageWriter) -> Iterator[int]:
        """Dump, match, and append a delete for each selected entry to ``w`` (its
        original tuple, zone and id copied as the dump gave them); yields counts."""
        residue, families, push = _dump_plan(flt, kernel)
        matches = residue.matches
        # a residue of only protocol, TCP states and remaining timeout is decided
        # entirely by the layout's test on the unpacked values: no Entry is built
        exact = replace(residue, proto=None, states=None, timeout_below=None).empty
        layout = self.decoder.layout
        plans: dict[int, tuple[Callable[..., bool], list[tuple[int, int]], int]] = {}
        pack_header = struct.Struct("=IHHIIBBH").pack
        buffer = w.buffer
        extend = buffer.extend
        append_seq = w.seqs.append
        msg_delete = wire.MSG_DELETE

        def each(buf: Any, off: int, n: int, family: int) -> int | None:
            lay, v = layout(buf, off, n, family)
            plan = plans.get(id(lay))
            if plan is None:
                if exact:
                    pre = lay.prefilter(residue.states, residue.timeout_below, residue.proto)
                else:
                    pre = lay.prefilter(residue.states, residue.timeout_below)
                plan = plans[id(lay)] = (pre, list(lay.key_spans),
                                         sum(ln for _, ln in lay.key_spans))
            pre, spans, keylen = plan
            if not pre(v) or not (exact or matches(lay.build(v))):
                return None
            seq = next_seq()
            append_seq((seq, len(buffer)))
            # nlmsghdr (host order) + nfgenmsg (family, version 0, res_id 0)
            extend(pack_header(20 + keylen, msg_delete, NLM_F_REQUEST, seq, 0, family, 0, 0))
            for o, ln in spans:
                extend(buf[off + o:off + o + ln])
            return 1

        for family in families:
            req, seq = self._dump_request(wire.MSG_GET, family, push)
            for batch in self._walk_dump(req, seq, "conntrack dump", each):
                yield len(batch)

    def _settle(self, w: MessageWriter, n: int, method: str) -> DeleteResult:
        if not n:
            return DeleteResult(method=method, matched=n)
        return self._count(self.sock.pipeline(w, ack=False), n, method)

    @staticmethod
    def _count(failures: dict[int, int], n: int, method: str) -> DeleteResult:
        result = DeleteResult(method=method, matched=n)
        for err in failures.values():
            if err == _errno.ENOENT:
                result.vanished += 1
            else:
                result.failed[err] = result.failed.get(err, 0) + 1
        result.deleted = n - len(failures)
        return result

    # ---------------------------------------------------------------- statistics
    def stats(self) -> dict[str, int]:
        """Global statistics: ``entries`` (this namespace) and ``max_entries``."""
        w = MessageWriter()
        w.begin(wire.MSG_GET_STATS, NLM_F_REQUEST, family=0)
        w.end()
        for msg in self.sock.request(w, what="conntrack statistics"):
            d = S.STATS_GLOBAL.decode(msg.attrs)
            return {"entries": int(d.get("entries", 0)), "max_entries": int(d.get("max_entries", 0))}
        raise NetlinkError(_errno.ENODATA, what="conntrack statistics")

    def stats_cpu(self) -> list[dict[str, int]]:
        """Per-CPU statistics, one dict per CPU with its ``cpu`` number."""
        w = MessageWriter()
        w.begin(wire.MSG_GET_STATS_CPU, NLM_F_REQUEST | NLM_F_DUMP, family=0)
        w.end()
        out = []
        for msg in self.sock.dump(w, what="conntrack per-CPU statistics"):
            d = {k: int(v) for k, v in S.STATS_CPU.decode(msg.attrs).items() if isinstance(k, str)}
            d = {"cpu": msg.res_id, **d}
            out.append(d)
        return out

    # ---------------------------------------------------------------- events
    def events(self, flt: Filter | None = None, *, kinds: Iterable[str] = ("new", "update", "destroy"),
               timeout: float | None = None, resync: bool = True,
               rcvbuf: int = 16 << 20) -> EventStream:
        """Subscribe now; iterate the result for events as they happen (see `EventStream`)."""
        return EventStream(self, flt, kinds=kinds, timeout=timeout, resync=resync, rcvbuf=rcvbuf)


class EventStream(HoldsSocket):
    """Conntrack events of the current namespace, subscribed at creation.

    Iterating yields `Event`s (new, update, destroy) selected by the filter
    (applied in Python: ctnetlink has no event filter) and stops after
    ``timeout`` seconds of quiet (never, with None).  When the kernel drops
    events (ENOBUFS) it yields Event("lost") and, with ``resync``, the
    current table as Event("sync", entry) for each entry selected, then
    Event("synced"), and carries on.  A context manager; `close` unsubscribes.
    Raises InputError when no event kind is asked for, or for a timeout
    that is not finite, above 0 and at most `MAX_QUIET_SECONDS`.
    """

    def __init__(self, table: ConntrackTable, flt: Filter | None = None, *,
                 kinds: Iterable[str] = ("new", "update", "destroy"), timeout: float | None = None,
                 resync: bool = True, rcvbuf: int = 16 << 20) -> None:
        kinds = set(kinds)
        groups = []
        if "new" in kinds:
            groups.append(NFNLGRP_CONNTRACK_NEW)
        if "update" in kinds:
            groups.append(NFNLGRP_CONNTRACK_UPDATE)
        if "destroy" in kinds:
            groups.append(NFNLGRP_CONNTRACK_DESTROY)
        if not groups:
            raise InputError("no event kind to watch (new, update, destroy)")
        if timeout is not None:
            check_quiet_timeout(timeout)
        self.table = table
        self.filter = flt or Filter()
        self._everything = self.filter.empty  # once: an event stream is a hot path
        self.timeout = timeout
        self.resync = resync
        self.sock = table.open_socket(groups=tuple(groups), rcvbuf=rcvbuf)

    def _event(self, msg: Message) -> Event | None:
        if msg.type >> 8 != 1:  # not ctnetlink
            return None
        sub = msg.type & 0xFF
        if sub == S.IPCTNL_MSG_CT_DELETE:
            kind = "destroy"
        elif msg.flags & (NLM_F_CREATE | NLM_F_EXCL) == (NLM_F_CREATE | NLM_F_EXCL):
            kind = "new"
        else:
            kind = "update"
        e = self.table.decoder.decode_attrs(msg.attrs, msg.family)
        if self._everything or self.filter.matches(e):
            return Event(kind, e, msg.pid)
        return None

    def pending(self) -> Iterator[Event]:
        """The events waiting now, without blocking (for a selector loop).

        Raises EventsLost when the kernel dropped events: the caller resynchronises.
        """
        for msg in self.sock.waiting():
            event = self._event(msg)
            if event is not None:
                yield event

    def __iter__(self) -> Iterator[Event]:
        while True:
            try:
                for msg in self.sock.events(timeout=self.timeout):
                    event = self._event(msg)
                    if event is not None:
                        yield event
                return
            except EventsLost:
                yield Event("lost")
                if self.resync:
                    for e in self.table.entries(self.filter):
                        yield Event("sync", e)
                    yield Event("synced")


class _Datagrams:
    """The datagrams of one dump, as views into one reusable buffer (valid until the next).

    Iteration stops when the dump's exchange is over; `close` reads the rest
    through the exchange if the caller stopped early, so the kernel's dump is
    over and the socket is free for the next request (else EBUSY).
    """

    def __init__(self, sock: NetlinkSocket, exchange: Exchange, what: str) -> None:
        self.sock = sock
        self.exchange = exchange
        self.what = what
        self.buf = bytearray(DUMP_BUFFER)
        self.view = memoryview(self.buf)

    def recv(self) -> memoryview:
        try:
            n = self.sock.recv_into(self.buf)
        except NetlinkError as exc:
            self.exchange.over = True
            raise exc.describe(self.what) from None
        return self.view[:n]

    def __iter__(self) -> Iterator[memoryview]:
        while not self.exchange.over:
            yield self.recv()

    def close(self) -> None:
        if self.sock.fileno() < 0:
            # the table was closed first (a reader that went away, Ctrl-C): nothing to drain
            self.exchange.over = True
            return
        while not self.exchange.over:
            self.exchange.feed(self.recv())


def _end_of_dump(events: list[ExchangeEvent], what: str) -> None:
    """Raise what ended a dump, if not plain DONE: the kernel's refusal or DumpInterrupted."""
    for event in events:
        error = ending_error(event, what)
        if error is not None:
            raise error


def _dump_plan(flt: Filter, kernel: bool) -> tuple[Filter, list[int], Filter | None]:
    """How a dump applies ``flt``: (the part Python checks, the families to dump, the
    filter whose kernel part goes into the request).  With ``kernel`` the kernel takes
    what it can; without, one dump of every family and Python checks all of it."""
    if kernel:
        return flt.split()[1], flt.families(), flt
    return flt, [0], None


def _one(buf: bytearray, off: int, n: int, family: int) -> int:
    return 1


def _tuple_text(t: Tuple) -> str:
    if t.sport or t.dport:
        return f"{t.src}:{t.sport} -> {t.dst}:{t.dport} proto {t.proto}"
    return f"{t.src} -> {t.dst} proto {t.proto}"


__all__ = ["MAX_QUIET_SECONDS", "ConntrackTable", "CreateResult", "DeleteResult", "Event", "EventStream",
           "check_quiet_timeout"]
