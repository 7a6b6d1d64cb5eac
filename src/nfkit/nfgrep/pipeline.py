"""A mapped pcap file's batches parsed ahead of the classify walk, in parse workers (``--jobs``).

Owns: the stateless front of `nfkit.nfgrep.classify.Classifier.read` for a
mapped pcap file (records found span by span, batch by batch their heads
gathered and parsed: `PcapFront`), the parse workers that run it ahead of
the walk (forked processes), the transport of their batches to the walking
process, and how that ends (the file's end or damage, a worker's death or
failure, an interrupt).  Must not know: what a batch's columns are (a
`Batch` is pickled whole, whatever its attributes; its frames stay in the
file, which every process maps), flows, the engine.

The walk takes the batches in file order whoever parsed them, so its
results are those of one process by construction.  Transport: a batch's
arrays travel out of band (pickle protocol 5) in one of a few slots of
shared memory per worker (the walk reads them in place; the worker
reuses a slot once the walk holds nothing of its batch: at most `SLOTS`
batches ahead per worker), the rest of the pickle over a pipe; a reference
to the file's mapping is sent as such and stands for the walking process's
own mapping.  A worker that dies or fails leaves the batches from its
first missing one to the walking process itself (`PcapFront.batches`), so
the run ends as one process's would.
"""

from __future__ import annotations

import gc
import io
import mmap
import os
import pickle
import signal
import stat
import struct
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from nfkit.errors import InputError
from nfkit.nfgrep.batch import HEAD, Batch, frame_heads
from nfkit.nfgrep.capture import CaptureReader, pcap_records

# a pcap file smaller than this is parsed by the walking process itself: the walk of one span's
# batch overlaps the parse of the next only from two spans (`classify.SPAN`, 64 MiB) on; below,
# the fork and the transfer cost about what they save (measured: 64 MiB 1.10x the time of one
# process, 128 MiB 1.02x, on a loaded 2-core machine; docs/nfgrep.md)
PIPELINE_MIN = 128 << 20
SLOTS = 3  # batches a worker may have parsed and handed over, not yet walked past
SLOT_BYTES_PER_FRAME = 512  # a slot's size per frame of a batch (today's columns: ~200 bytes)
_ALIGN = 64


class Parsed:
    """One batch from the front: its frames' columns and where it lies in the file."""

    __slots__ = ("batch", "span", "index", "after")

    def __init__(self, batch: Batch, span: int, index: int, after: int) -> None:
        self.batch = batch
        self.span = span  # file offset the batch's span of records was found from
        self.index = index  # the batch's first record's index in its span (a multiple of the batch size)
        self.after = after  # file offset past the batch's last record


class PcapFront:
    """The stateless front of a classify run over one mapped pcap file.

    ``data``: the mapping, ``link``, ``rec`` and ``divisor`` as
    `CaptureReader.pcap_map` gives them; ``batch``: frames per batch;
    ``span``: bytes of the file whose records are found at once.  After
    `batches` ran out, ``pos`` is where the records ended (the file's end,
    or the damage `CaptureReader.stopped_at` explains).
    """

    def __init__(self, data: Any, link: int, rec: struct.Struct, divisor: float, batch: int,
                 span: int, path: str = "") -> None:
        self.path = path  # for notes
        self.data, self.link, self.rec, self.divisor = data, link, rec, divisor
        self.batch, self.span = batch, span
        self.little = rec.format[0] == "<"
        self.rec_word = np.dtype(f"{rec.format[0]}u4")
        self.pos = 24

    def batches(self, start: int = 24, skip: int = 0, every: int = 1,
                mine: int = 0) -> Iterator[Parsed | tuple[int, int, int]]:
        """The batches from the span found from ``start``, its first ``skip`` records left out.

        Only every ``every``-th batch (counting from 0, from ``mine``) is
        parsed; the others are given as ``(span, index, after)``.
        """
        data, size = self.data, self.batch
        pos, stopped, k = start, False, 0
        while not stopped:
            span = pos
            offsets, pos, stopped = pcap_records(data, span, span + self.span, self.little, self.divisor)
            for lo in range(skip, len(offsets), size):
                after = int(offsets[lo + size]) if lo + size < len(offsets) else pos
                if k % every == mine:
                    yield Parsed(self.parse(offsets[lo:lo + size]), span, lo, after)
                else:
                    yield span, lo, after
                k += 1
            skip = 0
        self.pos = pos

    def parse(self, at: np.ndarray) -> Batch:
        """The batch of the records at offsets ``at``."""
        # each record's header and its frame's first bytes in one gather: the parse's and
        # the header's columns read from rows that are in cache
        head = frame_heads(self.data, at, 16 + HEAD)
        sec, frac, caplen = (np.ndarray(shape=(len(at),), dtype=self.rec_word, buffer=head, offset=k,
                                        strides=(16 + HEAD,)) for k in (0, 4, 8))
        ts = sec.astype(np.float64) + frac.astype(np.float64) / self.divisor
        return Batch(self.data, ts, at + 16, caplen.astype(np.int64), self.link, head=head, skip=16)


def workers_for(jobs: int) -> int:
    """Parse workers for ``--jobs`` (0: one process per core): all but the walking process."""
    if jobs == 0:
        try:
            jobs = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            jobs = os.cpu_count() or 1
    return max(jobs - 1, 0)


# -- the wire ---------------------------------------------------------------------

_BATCH, _END, _FAILED = 1, 2, 3
_HEADER = struct.Struct("<6Q")  # kind, slot, span, index, after, pickle length
_BUFFER = struct.Struct("<2Q")  # one out-of-band buffer: slot offset (or in-band length), length
_NO_SLOT = (1 << 64) - 1
_ACK = struct.Struct("<I")
_PINNED = 1 << 31  # an ack's flag: the walk keeps using that slot's batch; never reuse it


def _in_file(offset: int, dtype: str, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
    """Stands, in a pickle, for the file's mapping or an array over it (the walker's `_Unpickler`
    gives its own); not called otherwise."""
    raise RuntimeError("a reference to a mapped capture outside a parse pipeline")


class _Pickler(pickle.Pickler):
    """Pickles a batch with its arrays out of band and the file's mapping by reference."""

    def __init__(self, file: Any, data: Any, lo: int, buffers: list[pickle.PickleBuffer]) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffers.append)
        self.data = data
        self.lo, self.hi = lo, lo + len(data)  # the mapping's addresses here

    def reducer_override(self, obj: Any) -> Any:
        if obj is self.data:
            return _in_file, (-1, "", (), ())
        if isinstance(obj, np.ndarray) and obj.size:
            base: Any = obj
            while isinstance(base, np.ndarray):
                base = base.base
            if isinstance(base, memoryview):
                base = base.obj
            if base is self.data:
                start = obj.__array_interface__["data"][0]
                if self.lo <= start < self.hi:
                    return _in_file, (start - self.lo, obj.dtype.str, obj.shape, obj.strides)
        if isinstance(obj, memoryview) and obj.obj is self.data and obj.contiguous and obj.nbytes:
            start = np.frombuffer(obj, dtype=np.uint8).ctypes.data
            return _in_file, (start - self.lo, "", (obj.nbytes,), ())
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, data: Any, buffers: list[Any]) -> None:
        super().__init__(file, buffers=buffers)
        self.data = data

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_in_file":
            data = self.data  # (not a bound method: the memo would hold the batch in a cycle)

            def in_file(offset: int, dtype: str, shape: tuple[int, ...], strides: tuple[int, ...]) -> Any:
                if offset < 0:
                    return data
                if not dtype:  # a memoryview of the mapping's bytes
                    return memoryview(data)[offset:offset + shape[0]]
                return np.ndarray(shape=shape, dtype=dtype, buffer=data, offset=offset, strides=strides)

            return in_file
        return super().find_class(module, name)


def _write(fd: int, *parts: Any) -> None:
    for part in parts:
        with memoryview(part) as mv, mv.cast("B") as left:
            while len(left):
                n = os.write(fd, left)
                left = left[n:]


def _read_into(fd: int, buf: Any) -> bool:
    """Fill ``buf`` from ``fd``; False at the end of the pipe (the writer is gone)."""
    with memoryview(buf) as mv:
        got = 0
        while got < len(mv):
            n = os.readv(fd, [mv[got:]])
            if not n:
                return False
            got += n
    return True


def _read(fd: int, n: int) -> bytes | None:
    buf = bytearray(n)
    return bytes(buf) if _read_into(fd, buf) else None


# -- the worker ---------------------------------------------------------------------

def _work(front: PcapFront, every: int, mine: int, out: int, acks: int, slots: list[mmap.mmap]) -> None:
    """A parse worker's life: its batches (every ``every``-th from ``mine``) to ``out``, then the end."""
    free = list(range(len(slots)))[::-1]
    pinned = 0
    released = 0
    data = front.data
    with memoryview(data) as whole:
        lo = np.frombuffer(whole, dtype=np.uint8).ctypes.data
    try:
        for item in front.batches(every=every, mine=mine):
            if isinstance(item, Parsed):
                buffers: list[pickle.PickleBuffer] = []
                payload = io.BytesIO()
                _Pickler(payload, data, lo, buffers).dump(item.batch)
                del item.batch
                raws = [b.raw() for b in buffers]
                need = sum(-(-r.nbytes // _ALIGN) * _ALIGN for r in raws)
                slot = _NO_SLOT
                if need <= min(len(s) for s in slots):
                    while not free and pinned < len(slots):
                        got = os.read(acks, _ACK.size * 16)
                        if not got:
                            return  # the walking process is gone
                        for (a,) in _ACK.iter_unpack(got):
                            if a & _PINNED:
                                pinned += 1
                            else:
                                free.append(a)
                    if free:
                        slot = free.pop()
                table = []
                if slot != _NO_SLOT:
                    at = 0
                    with memoryview(slots[slot]) as room:
                        for r in raws:
                            room[at:at + r.nbytes] = r
                            table.append(_BUFFER.pack(at, r.nbytes))
                            at += -(-r.nbytes // _ALIGN) * _ALIGN
                    extra: list[Any] = []
                else:
                    table = [_BUFFER.pack(r.nbytes, r.nbytes) for r in raws]
                    extra = raws
                body = payload.getbuffer()
                _write(out, _HEADER.pack(_BATCH, slot, item.span, item.index, item.after, len(body)),
                       struct.pack("<Q", len(raws)), body, b"".join(table), *extra)
                del body, payload, raws, buffers, extra
            # the pages walked so far are not needed again here
            after = item[2] if isinstance(item, tuple) else item.after
            done = min(after, len(data)) // mmap.PAGESIZE * mmap.PAGESIZE
            if done > released:
                data.madvise(mmap.MADV_DONTNEED, released, done - released)
                released = done
        _write(out, _HEADER.pack(_END, 0, front.pos, 0, 0, 0))
    except BrokenPipeError:
        return  # the walking process is gone
    except BaseException as exc:  # noqa: BLE001 - told to the walk, which goes on alone
        text = f"{type(exc).__name__}: {exc}".encode(errors="replace")
        try:
            _write(out, _HEADER.pack(_FAILED, 0, 0, 0, 0, len(text)), text)
        except OSError:
            pass


def _start_worker(front: PcapFront, every: int, mine: int, slots: list[mmap.mmap],
                  close: list[int]) -> tuple[int, int, int]:
    """Fork one parse worker; returns (pid, its batches' pipe, its acks' pipe)."""
    out_r, out_w = os.pipe()
    ack_r, ack_w = os.pipe()
    parent = os.getpid()
    prctl = _prctl()  # resolved here: the worker imports nothing (another thread may hold a lock)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the worker
        status = 1
        try:
            # Ctrl-C reaches the whole process group: the worker just ends (the walking
            # process reports it); and it ends with the walking process, however that ends
            # (SIGTERM: not the walking process's handler, which would kill the other workers)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if prctl is not None:
                prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)
            gc.disable()  # a collection would walk (and copy) the walking process's whole heap
            for fd in [out_r, ack_w, *close]:
                os.close(fd)
            _work(front, every, mine, out_w, ack_r, slots)
            status = 0
        finally:
            os._exit(status)
    os.close(out_w)
    os.close(ack_r)
    return pid, out_r, ack_w


_PR_SET_PDEATHSIG = 1


def _prctl() -> Any:
    """Linux's prctl(2), to give a worker the parent-death signal; None where there is none."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None


# -- the walking process's side ---------------------------------------------------------------

class _Worker:
    """One parse worker, as the walking process knows it."""

    def __init__(self, pid: int, batches: int, acks: int, slots: list[mmap.mmap]) -> None:
        self.pid = pid
        self.batches = batches  # pipe: its batches
        self.acks = acks  # pipe: slots it may reuse
        self.slots = slots
        # each slot's reference count when nothing uses it
        self.refs = [sys.getrefcount(slots[i]) for i in range(len(slots))]
        self.busy: dict[int, int] = {}  # slot -> index of the batch in it (not yet found free)


class Pipeline:
    """Parse workers forked for one file, and the batches they parse (`batches`).

    ``workers`` processes (batch k by worker k % workers) start at once:
    they parse ahead while the caller does other work (loads the rules).
    `close` (also at the end of `batches`) kills and reaps them.
    """

    def __init__(self, front: PcapFront, workers: int, slot_bytes: int | None = None) -> None:
        if slot_bytes is None:
            slot_bytes = front.batch * SLOT_BYTES_PER_FRAME
        self.front = front
        self.crew: list[_Worker] = []
        self.workers = workers
        self._signal = _StopOnSignal(self.crew)
        try:
            mine: list[int] = []
            for w in range(workers):
                slots = [mmap.mmap(-1, slot_bytes) for _ in range(SLOTS)]
                pid, fd, ack = _start_worker(front, workers, w, slots, list(mine))
                mine += [fd, ack]
                self.crew.append(_Worker(pid, fd, ack, slots))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill and reap the workers still running."""
        _stop(self.crew)
        self._signal.restore()

    def batches(self, notes: list[str] | None = None) -> Iterator[Parsed]:
        """The file's batches in order (then ``front.pos`` is where its records ended).

        The caller must drop its references to a batch before asking for the
        next one (a batch still referenced then keeps its slot for good).  A
        worker that dies or fails is said in ``notes``, and the batches from
        its first missing one are parsed here.  Closing the iterator (or an
        exception through it) closes the pipeline.
        """
        front, crew = self.front, self.crew
        last: tuple[int, int] | None = None  # (span, index) of the last batch taken
        k = 0
        try:
            while True:
                worker = crew[k % self.workers]
                got = _receive(front, worker, k)
                if isinstance(got, Parsed):
                    last = (got.span, got.index)
                    yield got
                    del got  # the walk's references are gone too: the slot may be free
                    _release(crew, k)
                    k += 1
                    continue
                if got is None:  # the end
                    return
                # the worker died or failed: the rest here, from its batch k
                if notes is not None:
                    notes.append(f"capture {front.path}: parse worker {got}; the rest of the file "
                                 "was parsed by the walking process itself (results unchanged)")
                self.close()
                start, skip = (24, 0) if last is None else (last[0], last[1] + front.batch)
                for item in front.batches(start, skip):
                    assert isinstance(item, Parsed)
                    yield item
                    del item
                return
        finally:
            self.close()


def parsed(front: PcapFront, workers: int, notes: list[str] | None = None,
           slot_bytes: int | None = None) -> Iterator[Parsed]:
    """`Pipeline.batches` of a pipeline started on the first request."""
    yield from Pipeline(front, workers, slot_bytes).batches(notes)


class Ahead:
    """A pcap file opened and mapped, its parse workers started (`start`)."""

    def __init__(self, reader: CaptureReader, mapped: tuple[bytes, int, struct.Struct, float],
                 pipeline: Pipeline) -> None:
        self.reader, self.mapped, self.pipeline = reader, mapped, pipeline


def start(path: str | os.PathLike[str], jobs: int, batch: int, span: int) -> Ahead | None:
    """Open ``path`` and start its parse workers for ``jobs`` (`workers_for`), so they parse
    while the caller loads what it needs; None when that does not pay (one process, a
    pcapng file, a file under `PIPELINE_MIN` bytes) or the file cannot be read (the
    caller's own reading says why, in its turn), or is not a regular file (a pipe)."""
    workers = workers_for(jobs)
    if not workers:
        return None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a pipe, say: what is read here would be gone for the caller
        reader = CaptureReader(path)
    except (InputError, OSError):
        return None
    if reader.format != "pcap" or reader.size < PIPELINE_MIN:
        reader.close()
        return None
    try:
        mapped = reader.pcap_map()
    except InputError:
        return None
    if mapped is None:
        reader.close()
        return None
    data, link, rec, divisor = mapped
    front = PcapFront(data, link, rec, divisor, batch, span, reader.path)
    return Ahead(reader, mapped, Pipeline(front, workers))


class _StopOnSignal:
    """While workers run: SIGTERM (left at its default) first kills and reaps them, then
    ends this process as it would have (an orphan would be left to init to reap)."""

    def __init__(self, crew: list[_Worker]) -> None:
        self.crew = crew
        self.before: Any = None
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                self.before = signal.signal(signal.SIGTERM, self._ended)
        except ValueError:  # not the main thread: the workers die with this process all the same
            pass

    def _ended(self, signum: int, _frame: Any) -> None:
        _stop(self.crew)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def restore(self) -> None:
        if self.before is not None:
            signal.signal(signal.SIGTERM, self.before)
            self.before = None


def _receive(front: PcapFront, worker: _Worker, k: int) -> Parsed | str | None:
    """Batch ``k`` from ``worker``; None at the end (``front.pos`` set), or what went wrong."""
    fd = worker.batches
    head = _read(fd, _HEADER.size)
    if head is None:
        return _death(worker)
    kind, slot, span, index, after, plen = _HEADER.unpack(head)
    if kind == _END:
        front.pos = span
        return None
    if kind == _FAILED:
        text = _read(fd, plen)
        return f"failed ({(text or b'').decode(errors='replace')})"
    count_raw = _read(fd, 8)
    body = _read(fd, plen) if count_raw is not None else None
    table = _read(fd, _BUFFER.size * struct.unpack("<Q", count_raw)[0]) \
        if count_raw is not None and body is not None else None
    if body is None or table is None:
        return _death(worker)
    buffers: list[Any] = []
    if slot == _NO_SLOT:
        for _, n in _BUFFER.iter_unpack(table):
            buf = bytearray(n)
            if not _read_into(fd, buf):
                return _death(worker)
            buffers.append(buf)
    else:
        with memoryview(worker.slots[slot]) as room:
            buffers = [room[at:at + n] for at, n in _BUFFER.iter_unpack(table)]
        batch = _Unpickler(io.BytesIO(body), front.data, buffers).load()
        del buffers  # the arrays keep what they use of the slot (its reference count says)
        worker.busy[slot] = k
        return Parsed(batch, span, index, after)
    batch = _Unpickler(io.BytesIO(body), front.data, buffers).load()
    return Parsed(batch, span, index, after)


def _release(crew: list[_Worker], k: int) -> None:
    """Give back the slots of the batches up to ``k`` (the walk is done with them); one whose
    arrays the walk still holds stays its own (pinned: the worker never writes it again)."""
    for worker in crew:
        for slot, at in list(worker.busy.items()):
            if at > k:
                continue
            ack = slot if sys.getrefcount(worker.slots[slot]) <= worker.refs[slot] else slot | _PINNED
            del worker.busy[slot]
            try:
                os.write(worker.acks, _ACK.pack(ack))
            except OSError:
                pass  # the worker is gone: its pipe says so


def _death(worker: _Worker) -> str:
    """What ended a worker whose pipe closed early."""
    try:
        pid, status = os.waitpid(worker.pid, 0)
    except ChildProcessError:
        return "ended"
    worker.pid = -1
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed ({name})"
    return f"ended (status {os.WEXITSTATUS(status)})"


def _stop(crew: list[_Worker]) -> None:
    """Kill and reap every worker still running; close the pipes (and forget them)."""
    while crew:
        worker = crew.pop()
        for fd in (worker.batches, worker.acks):
            try:
                os.close(fd)
            except OSError:
                pass
        if worker.pid > 0:
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(worker.pid, 0)
            except ChildProcessError:
                pass
            worker.pid = -1
