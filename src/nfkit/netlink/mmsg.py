"""Many datagrams from one socket in one system call (recvmmsg(2)), into one reusable buffer.

Owns: the `mmsghdr` array (one slot of the buffer per datagram) and reading
what one call brought: each datagram's place in the buffer and its length.
For event sockets that deliver one message per datagram (ctnetlink's events):
a burst of 100,000 events is then 1,600 calls rather than 100,000.  Python's
socket module has no recvmmsg, so the call goes through ctypes, set up once.
Must not know: what the datagrams hold.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

from nfkit.errors import CapabilityError, EventsLost, NetlinkError
from nfkit.netlink.socket import recv_datagram

MSG_TRUNC = 0x20
MSG_WAITFORONE = 0x10000


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


# each slot's result, read for all slots at once: (msg_flags, msg_len)
_RESULT = struct.Struct(f"={_MsgHdr.msg_flags.offset}xi"
                        f"{_MMsgHdr.msg_len.offset - _MsgHdr.msg_flags.offset - 4}xI"
                        f"{ctypes.sizeof(_MMsgHdr) - _MMsgHdr.msg_len.offset - 4}x")
_libc: ctypes.CDLL | None = None


def _recvmmsg() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    try:
        fn = _libc.recvmmsg
    except AttributeError:
        raise CapabilityError("recvmmsg(2) is not in this C library") from None
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    fn.restype = ctypes.c_int
    return fn


class BatchReceiver:
    """Reads up to ``slots`` waiting datagrams of ``sock`` per call, each into its own
    ``slot_size`` bytes of `buffer`.  Raises CapabilityError without recvmmsg."""

    def __init__(self, sock: socket.socket, slots: int = 64, slot_size: int = 8192) -> None:
        self.fd = sock.fileno()
        self.slots = slots
        self.slot_size = slot_size
        self.buffer = bytearray(slots * slot_size)
        self._call = _recvmmsg()
        base = ctypes.addressof((ctypes.c_char * len(self.buffer)).from_buffer(self.buffer))
        self._iov = (_IoVec * slots)(*[_IoVec(base + i * slot_size, slot_size) for i in range(slots)])
        self._msgs = (_MMsgHdr * slots)()
        for i in range(slots):
            h = self._msgs[i].msg_hdr
            h.msg_iov = ctypes.pointer(self._iov[i])
            h.msg_iovlen = 1
        self._results = memoryview(self._msgs).cast("B")  # type: ignore[arg-type]
        self._size = ctypes.sizeof(_MMsgHdr)

    def receive(self, wait: bool = False) -> list[tuple[int, int]]:
        """The datagrams waiting now, without blocking: (offset in `buffer`, length) each,
        in order; [] when none (fewer than `slots`: none were left).  Raises EventsLost when the
        kernel dropped some (ENOBUFS), NetlinkError on other errors or a datagram larger than a slot.

        ``wait``: block until the first datagram comes, then take what else waits
        (MSG_WAITFORONE: no poll call before it); [] when the socket's receive timeout
        (SO_RCVTIMEO) passes first or a signal interrupts the wait (the caller's handler
        then runs)."""
        flags = MSG_WAITFORONE if wait else socket.MSG_DONTWAIT
        while True:
            n = self._call(self.fd, self._msgs, self.slots, flags, None)
            if n >= 0:
                break
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            if err == errno.EINTR:
                if wait:
                    return []
                continue
            if err == errno.ENOBUFS:
                raise EventsLost("the kernel dropped netlink messages for this socket "
                                 "(receive buffer full): resynchronise")
            raise NetlinkError(err, what="netlink receive")
        out = []
        size = self.slot_size
        for i, (flags, length) in enumerate(_RESULT.iter_unpack(self._results[:n * self._size])):
            if flags & MSG_TRUNC:
                raise NetlinkError(errno.EMSGSIZE, what=f"netlink receive: a datagram over {size} bytes")
            out.append((i * size, length))
        return out


class SingleReceiver:
    """`BatchReceiver`'s interface over one recv per call (where recvmmsg is missing)."""

    slots = 1  # datagrams a call reads at most

    def __init__(self, sock: socket.socket, size: int = 1 << 16) -> None:
        self.sock = sock
        self.buffer = bytearray(size)

    def receive(self, wait: bool = False) -> list[tuple[int, int]]:
        n = recv_datagram(self.sock, self.buffer, 0 if wait else socket.MSG_DONTWAIT)
        return [(0, n)] if n else []


def receiver(sock: socket.socket, slots: int = 64,
             slot_size: int = 8192) -> BatchReceiver | SingleReceiver:
    """A `BatchReceiver` of ``slots`` of ``slot_size`` bytes for ``sock``, or a `SingleReceiver`
    where the C library has no recvmmsg."""
    try:
        return BatchReceiver(sock, slots, slot_size)
    except CapabilityError:
        return SingleReceiver(sock, slot_size)
