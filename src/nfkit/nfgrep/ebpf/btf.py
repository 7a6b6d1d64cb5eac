"""A minimal reader of BTF (the kernel's type format): enough to read enums.

Reads /sys/kernel/btf/vmlinux (or any raw BTF blob): the header, the type
section and the string section, and returns the enumerators of a named
enum.  Used to check nfkit's constant tables (spec.py) against the running
kernel.  Layout: include/uapi/linux/btf.h (header, struct btf_type, kinds).
"""

from __future__ import annotations

import struct

from nfkit.errors import InputError

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F
_HEADER = struct.Struct("<HBBIIIII")  # magic version flags hdr_len type_off type_len str_off str_len
_TYPE = struct.Struct("<III")  # name_off, info, size/type
# extra bytes after struct btf_type, per kind (vlen: the info's low 16 bits)
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO = 8, 9, 10, 11, 12, 13
KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 14, 15, 16, 17, 18, 19


def _extra(kind: int, vlen: int) -> int:
    if kind == KIND_INT:
        return 4
    if kind == KIND_ARRAY:
        return 12
    if kind in (KIND_STRUCT, KIND_UNION):
        return 12 * vlen
    if kind == KIND_ENUM:
        return 8 * vlen
    if kind == KIND_FUNC_PROTO:
        return 8 * vlen
    if kind == KIND_VAR:
        return 4
    if kind == KIND_DATASEC:
        return 12 * vlen
    if kind == KIND_DECL_TAG:
        return 4
    if kind == KIND_ENUM64:
        return 12 * vlen
    return 0


def enums(blob: bytes, origin: str = VMLINUX) -> dict[str, dict[str, int]]:
    """Every named enum in a BTF blob: {enum name: {enumerator: value}}.

    Raises InputError on a blob that is not BTF or is cut short.
    """
    if len(blob) < _HEADER.size:
        raise InputError(f"{origin}: too short for BTF")
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = \
        _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise InputError(f"{origin}: not BTF (magic {magic:#x})")
    types = blob[hdr_len + type_off:hdr_len + type_off + type_len]
    strings = blob[hdr_len + str_off:hdr_len + str_off + str_len]
    if len(types) != type_len or len(strings) != str_len:
        raise InputError(f"{origin}: BTF sections cut short")

    def name(off: int) -> str:
        end = strings.index(b"\0", off)
        return strings[off:end].decode()

    out: dict[str, dict[str, int]] = {}
    pos = 0
    while pos < len(types):
        name_off, info, size = _TYPE.unpack_from(types, pos)
        pos += _TYPE.size
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        if kind in (KIND_ENUM, KIND_ENUM64) and name_off:
            values: dict[str, int] = {}
            signed = bool(info >> 31)
            for i in range(vlen):
                if kind == KIND_ENUM:
                    n, v = struct.unpack_from("<Ii" if signed else "<II", types, pos + 8 * i)
                else:
                    n, lo, hi = struct.unpack_from("<III", types, pos + 12 * i)
                    v = lo | (hi << 32)
                values[name(n)] = v
            out[name(name_off)] = values
        pos += _extra(kind, vlen)
    return out


def enum_values(enum: str, path: str = VMLINUX) -> dict[str, int]:
    """The enumerators of one enum of the running kernel (e.g. ``bpf_prog_type``)."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the kernel's BTF: {exc.strerror}") from None
    table = enums(blob, path)
    if enum not in table:
        raise InputError(f"{path}: no enum {enum} in the kernel's BTF")
    return table[enum]


def functions_blob(names: list[str]) -> bytes:
    """A BTF blob declaring one static function per subprogram (for func_info).

    The kernel wants func_info, and so BTF, for a program whose subprograms
    include callbacks (bpf_loop).  Types: [1] long, [2] void *, [3] long (void *),
    then [4 + i] a FUNC named ``names[i]`` of type [3].  Returns the blob;
    function i has type id 4 + i.
    """
    strings = bytearray(b"\0")

    def add(s: str) -> int:
        off = len(strings)
        strings.extend(s.encode() + b"\0")
        return off

    types = bytearray()
    types += _TYPE.pack(add("long"), KIND_INT << 24, 8) + struct.pack("<I", (1 << 24) | 64)
    types += _TYPE.pack(0, KIND_PTR << 24, 0)
    types += _TYPE.pack(0, (KIND_FUNC_PROTO << 24) | 1, 1) + struct.pack("<II", add("arg"), 2)
    for name in names:
        types += _TYPE.pack(add(name), KIND_FUNC << 24, 3)
    header = _HEADER.pack(MAGIC, 1, 0, _HEADER.size, 0, len(types), len(types), len(strings))
    return header + bytes(types) + bytes(strings)
