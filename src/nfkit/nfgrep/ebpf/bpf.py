"""bpf(2) from Python: maps, program loading with the verifier's log, test runs, links.

This module owns the system call (through ctypes, no libbpf) and the file
descriptors it returns: `Map`, `Prog` and `Link` close their descriptor on
`close()` or at the end of a ``with`` block, so a program is unloaded and its
maps freed when the last descriptor goes.  Attribute layouts are those of
``union bpf_attr`` (include/uapi/linux/bpf.h), built with struct formats.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import struct
from types import TracebackType

from nfkit.errors import NfkitError
from nfkit.nfgrep.ebpf.insn import Insn, encode
from nfkit.nfgrep.ebpf.spec import ATTACH_TYPE, CMD, MAP_TYPE, PROG_TYPE, SKB_CTX_SIZE

SYS_BPF = 321  # x86_64
ATTR_SIZE = 144  # bytes of union bpf_attr nfkit passes (the kernel zero-checks the rest)
LOG_SIZE = 1 << 24  # verifier log buffer on refusal: the kernel caps it at UINT_MAX >> 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(NfkitError):
    """The kernel refused a bpf(2) command; ``log`` holds the verifier's log when it gave one."""

    def __init__(self, what: str, errno: int, log: str = "") -> None:
        self.errno = errno
        self.what = what
        self.log = log
        text = f"{what}: {os.strerror(errno)} ({_errno.errorcode.get(errno, errno)})"
        if log:
            text += "\nkernel verifier log:\n" + log.rstrip("\n")
        super().__init__(text)


def bpf(cmd: str, attr: bytes | bytearray, what: str) -> int:
    """One bpf(2) call; returns its result, raises BpfError naming ``what``."""
    buf = ctypes.create_string_buffer(bytes(attr).ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    r = _libc.syscall(SYS_BPF, CMD[cmd], buf, ATTR_SIZE)
    if r < 0:
        raise BpfError(what, ctypes.get_errno())
    if isinstance(attr, bytearray):
        attr[:] = buf.raw[:len(attr)]
    return int(r)


def possible_cpus() -> int:
    """CPUs the kernel may ever run (what per-CPU map values are sized by)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


class _Fd:
    """A bpf object's file descriptor, closed once."""

    fd: int

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> _Fd:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass


def _addr(buf: ctypes.Array[ctypes.c_char] | None) -> int:
    return ctypes.addressof(buf) if buf is not None else 0


class Map(_Fd):
    """A BPF map: create, update, lookup, delete, iterate keys."""

    def __init__(self, kind: str, key_size: int, value_size: int, max_entries: int,
                 name: str = "", flags: int = 0) -> None:
        self.fd = -1
        self.key_size = key_size
        self.value_size = value_size
        self.name = name
        self.per_cpu = "PERCPU" in kind
        attr = struct.pack("<IIIIIII", MAP_TYPE[kind], key_size, value_size, max_entries, flags,
                           0, 0) + struct.pack("<16s", name.encode()[:15])
        # map_name sits after map_flags, inner_map_fd, numa_node
        self.fd = bpf("BPF_MAP_CREATE", bytearray(attr), f"map {name or kind}: create")

    def _elem(self, cmd: str, key: bytes, value: ctypes.Array[ctypes.c_char] | None,
              flags: int, what: str) -> int:
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name}: key of {len(key)} bytes, expected {self.key_size}")
        kbuf = ctypes.create_string_buffer(key, len(key))
        attr = struct.pack("<IIQQQ", self.fd, 0, _addr(kbuf), _addr(value), flags)
        return bpf(cmd, bytearray(attr), f"map {self.name}: {what}")

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"map {self.name}: value of {len(value)} bytes, "
                             f"expected {self.value_size}")
        if self.per_cpu:  # one 8-aligned copy per possible CPU, as the kernel reads it
            value = value.ljust((self.value_size + 7) & ~7, b"\0") * possible_cpus()
        self._elem("BPF_MAP_UPDATE_ELEM", key, ctypes.create_string_buffer(value, len(value)),
                   flags, "update")

    def _found(self, cmd: str, key: bytes, value: ctypes.Array[ctypes.c_char] | None,
               what: str) -> bool:
        """`_elem` of ``cmd`` on ``key``; False when the map has no such key (ENOENT)."""
        try:
            self._elem(cmd, key, value, 0, what)
        except BpfError as exc:
            if exc.errno == _errno.ENOENT:
                return False
            raise
        return True

    def lookup(self, key: bytes) -> bytes | None:
        """The value under ``key`` (for a per-CPU map, the first CPU's), or None."""
        if self.per_cpu:
            values = self.lookup_cpus(key)
            return None if values is None else values[0]
        vbuf = ctypes.create_string_buffer(self.value_size)
        return vbuf.raw if self._found("BPF_MAP_LOOKUP_ELEM", key, vbuf, "lookup") else None

    def lookup_cpus(self, key: bytes) -> list[bytes] | None:
        """A per-CPU map's values under ``key``, one per possible CPU (each 8-aligned in
        the kernel's answer), or None."""
        stride = (self.value_size + 7) & ~7
        vbuf = ctypes.create_string_buffer(stride * possible_cpus())
        if not self._found("BPF_MAP_LOOKUP_ELEM", key, vbuf, "lookup"):
            return None
        return [vbuf.raw[i:i + self.value_size] for i in range(0, len(vbuf.raw), stride)]

    def delete(self, key: bytes) -> bool:
        return self._found("BPF_MAP_DELETE_ELEM", key, None, "delete")

    def keys(self) -> list[bytes]:
        out: list[bytes] = []
        prev: bytes | None = None
        nbuf = ctypes.create_string_buffer(self.key_size)
        while True:
            pbuf = ctypes.create_string_buffer(prev, self.key_size) if prev is not None else None
            attr = struct.pack("<IIQQ", self.fd, 0, _addr(pbuf), _addr(nbuf))
            try:
                bpf("BPF_MAP_GET_NEXT_KEY", bytearray(attr), f"map {self.name}: next key")
            except BpfError as exc:
                if exc.errno == _errno.ENOENT:
                    return out
                raise
            prev = nbuf.raw[:self.key_size]
            out.append(prev)


class Btf(_Fd):
    """A BTF object loaded into the kernel (BPF_BTF_LOAD)."""

    def __init__(self, blob: bytes, what: str) -> None:
        self.fd = -1
        buf = ctypes.create_string_buffer(blob, len(blob))
        log = ctypes.create_string_buffer(1 << 16)
        attr = struct.pack("<QQIII", _addr(buf), _addr(log), len(blob), len(log), 1)
        try:
            self.fd = bpf("BPF_BTF_LOAD", bytearray(attr), f"{what}: load BTF")
        except BpfError as exc:
            raise BpfError(exc.what, exc.errno, log.value.decode("utf-8", "replace")) from None


class Prog(_Fd):
    """A loaded program.  Refused programs raise BpfError carrying the full verifier log.

    ``functions``: the slot where each subprogram starts (main first) and its name;
    given, a BTF object declaring them is loaded with the program (callbacks need it).
    """

    def __init__(self, kind: str, insns: list[Insn], name: str, license: str = "GPL",
                 attach: str | None = None, log_level: int = 0,
                 functions: list[tuple[int, str]] | None = None) -> None:
        self.fd = -1
        self.name = name
        self.btf: Btf | None = None
        self.func_info = b""
        if functions:
            from nfkit.nfgrep.ebpf.btf import functions_blob

            self.btf = Btf(functions_blob([n for _, n in functions]), f"program {name}")
            self.func_info = b"".join(struct.pack("<II", slot, 4 + i)
                                      for i, (slot, _) in enumerate(functions))
        code = encode(insns)
        cbuf = ctypes.create_string_buffer(code, len(code))
        lic = ctypes.create_string_buffer(license.encode())
        self.insn_count = len(code) // 8
        self.log = ""
        # with a log level asked for, the log comes back on success too (``log``)
        first = ctypes.create_string_buffer(LOG_SIZE) if log_level else None
        self.fd = self._load(kind, cbuf, lic, attach, log_level, first)

    def _load(self, kind: str, cbuf: ctypes.Array[ctypes.c_char], lic: ctypes.Array[ctypes.c_char],
              attach: str | None, log_level: int,
              log: ctypes.Array[ctypes.c_char] | None) -> int:
        finfo = ctypes.create_string_buffer(self.func_info, max(1, len(self.func_info)))
        attr = struct.pack("<IIQQIIQII16sIIIIQI", PROG_TYPE[kind], self.insn_count, _addr(cbuf),
                           _addr(lic), log_level if log is not None else 0,
                           len(log) if log is not None else 0, _addr(log), 0, 0,
                           self.name.encode()[:15], 0,
                           ATTACH_TYPE[attach] if attach else 0,
                           self.btf.fd if self.btf else 0, 8 if self.btf else 0,
                           _addr(finfo) if self.btf else 0, len(self.func_info) // 8)
        try:
            fd = bpf("BPF_PROG_LOAD", bytearray(attr), f"program {self.name}: load")
        except BpfError as exc:
            if log is None:
                # again with the verifier's log, to show why
                buf = ctypes.create_string_buffer(LOG_SIZE)
                return self._load(kind, cbuf, lic, attach, max(log_level, 1), buf)
            raise BpfError(exc.what, exc.errno, log.value.decode("utf-8", "replace")) from None
        if log is not None:
            self.log = log.value.decode("utf-8", "replace")
        return fd

    def close(self) -> None:
        super().close()
        if self.btf is not None:
            self.btf.close()

    def test_run(self, data: bytes, repeat: int = 1) -> tuple[int, int, int]:
        """Run the program once on a packet (BPF_PROG_TEST_RUN).

        Returns (return value, skb->mark after the run, nanoseconds per run).
        """
        din = ctypes.create_string_buffer(data, len(data))
        dout = ctypes.create_string_buffer(len(data) + 256)
        ctx_in = ctypes.create_string_buffer(SKB_CTX_SIZE)
        ctx_out = ctypes.create_string_buffer(SKB_CTX_SIZE)
        attr = bytearray(struct.pack("<IIIIQQIIIIQQ", self.fd, 0, len(data), len(dout),
                                     _addr(din), _addr(dout), repeat, 0, SKB_CTX_SIZE,
                                     SKB_CTX_SIZE, _addr(ctx_in), _addr(ctx_out)))
        bpf("BPF_PROG_TEST_RUN", attr, f"program {self.name}: test run")
        _fd, retval, _sin, _sout, _di, _do, _rep, duration = struct.unpack_from("<IIIIQQII", attr)
        mark = struct.unpack_from("<I", ctx_out.raw, 8)[0]
        return retval, mark, duration


class Link(_Fd):
    """A BPF link (tcx ingress/egress on an interface); closing it detaches the program."""

    def __init__(self, prog: Prog, ifindex: int, attach: str) -> None:
        self.fd = -1
        attr = struct.pack("<IIIIIIQ", prog.fd, ifindex, ATTACH_TYPE[attach], 0, 0, 0, 0)
        self.fd = bpf("BPF_LINK_CREATE", bytearray(attr),
                      f"program {prog.name}: attach {attach} to interface {ifindex}")

    def detach(self) -> None:
        """Detach now (the link stays a descriptor until closed)."""
        bpf("BPF_LINK_DETACH", bytearray(struct.pack("<I", self.fd)), "link: detach")
