"""Datatypes of nf_tables values and the payload, meta and ct key tables.

This module owns how a value written in libnftables JSON ("192.0.2.1", 22,
"established", "eth0") becomes the bytes the kernel compares, and back; and
which datatype, length and byte order each payload field, meta key and ct key
has.  It knows nothing of netlink messages.
"""

from __future__ import annotations

import functools
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nfkit.errors import InputError

# nft datatype identifiers (stored in NFTA_SET_KEY_TYPE; concatenations are
# built 6 bits at a time).
TYPE_BITS = 6
VERDICT_TYPE = 0xFFFFFF00


@dataclass(frozen=True)
class Datatype:
    """One value type: its nft name and id, size in bytes, byte order, symbols."""

    name: str
    id: int
    size: int  # bytes; 0 = variable (strings)
    kind: str  # int, ipv4, ipv6, ether, ifname, string, bitmask, verdict
    big_endian: bool = True
    symbols: dict[str, int] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    print_symbols: bool = True

    def encode(self, value: object, size: int | None = None) -> bytes:
        """JSON value -> key bytes.  Raises InputError for a value of the wrong type."""
        return _ENCODERS[self.kind](self, value, size or self.size)

    def decode(self, raw: bytes) -> object:
        """Key bytes -> JSON value as nft prints it."""
        return _DECODERS[self.kind](self, raw)

    def to_int(self, raw: bytes) -> int:
        return int.from_bytes(raw, "big" if self.big_endian else "little")


def _bad(dt: Datatype, value: object) -> InputError:
    return InputError(f"{value!r} is not a valid {dt.name} value")


def _enc_int(dt: Datatype, value: object, size: int) -> bytes:
    if isinstance(value, str):
        if value in dt.symbols:
            v = dt.symbols[value]
        else:
            v = _lookup_symbol(dt, value)
    elif isinstance(value, bool) and dt.name == "boolean":
        v = int(value)  # `meta ipsec exists` in nft's JSON: true
    elif isinstance(value, bool) or not isinstance(value, int):
        raise _bad(dt, value)
    else:
        v = value
    try:
        return v.to_bytes(size, "big" if dt.big_endian else "little")
    except OverflowError:
        raise InputError(f"{value!r} does not fit in {size} byte(s) ({dt.name})") from None


def _lookup_symbol(dt: Datatype, value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        pass
    if dt.name == "inet_service":
        try:
            return socket.getservbyname(value)
        except OSError:
            pass
    if dt.name == "inet_proto":
        try:
            return socket.getprotobyname(value)
        except OSError:
            pass
    if dt.name == "iface_index":
        try:
            return socket.if_nametoindex(value)
        except OSError:
            raise InputError(f"interface {value!r} does not exist") from None
    raise _bad(dt, value)


def _dec_int(dt: Datatype, raw: bytes) -> object:
    v = int.from_bytes(raw, "big" if dt.big_endian else "little")
    if dt.name == "boolean" and dt.id == 39 and v in (0, 1):
        return bool(v)  # nft's JSON: true / false (text: exists / missing)
    if dt.print_symbols:
        name = dt.names.get(v)
        if name is not None:
            return name
        if dt.name == "iface_index":
            try:
                return socket.if_indextoname(v)
            except OSError:
                return str(v)
        if dt.name == "inet_proto":
            return _PROTO_NAMES.get(v, v)
    return v


def _enc_bitmask(dt: Datatype, value: object, size: int) -> bytes:
    if isinstance(value, list):
        v = 0
        for item in value:
            v |= int.from_bytes(_enc_bitmask(dt, item, size), "big" if dt.big_endian else "little")
        return v.to_bytes(size, "big" if dt.big_endian else "little")
    return _enc_int(dt, value, size)


def _dec_bitmask(dt: Datatype, raw: bytes) -> object:
    v = int.from_bytes(raw, "big" if dt.big_endian else "little")
    if v in dt.names:
        return dt.names[v]
    out: list[object] = []
    rest = v
    for bit, name in sorted(dt.names.items()):
        if bit and v & bit == bit and bin(bit).count("1") == 1:
            out.append(name)
            rest &= ~bit
    if rest or not out:
        return v
    return out


def _enc_ipv4(dt: Datatype, value: object, size: int) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, value)  # type: ignore[arg-type]
    except (OSError, TypeError):
        raise _bad(dt, value) from None


def _dec_ipv4(dt: Datatype, raw: bytes) -> object:
    return socket.inet_ntop(socket.AF_INET, raw)


def _enc_ipv6(dt: Datatype, value: object, size: int) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET6, value)  # type: ignore[arg-type]
    except (OSError, TypeError):
        raise _bad(dt, value) from None


def _dec_ipv6(dt: Datatype, raw: bytes) -> object:
    return socket.inet_ntop(socket.AF_INET6, raw)


def _enc_ether(dt: Datatype, value: object, size: int) -> bytes:
    try:
        b = bytes.fromhex(str(value).replace(":", "")) if isinstance(value, str) else b""
    except (ValueError, AttributeError):
        raise _bad(dt, value) from None
    if len(b) != 6:
        raise _bad(dt, value)
    return b


def _dec_ether(dt: Datatype, raw: bytes) -> object:
    return ":".join(f"{b:02x}" for b in raw)


def _enc_ifname(dt: Datatype, value: object, size: int) -> bytes:
    if not isinstance(value, str):
        raise _bad(dt, value)
    b = value.encode()
    if b.endswith(b"*") and not b.endswith(b"\\*"):
        return b[:-1]  # wildcard: compare the prefix only
    if len(b) >= 16:
        raise InputError(f"interface name {value!r} is too long")
    return b.ljust(16, b"\0")


def _dec_ifname(dt: Datatype, raw: bytes) -> object:
    if b"\0" in raw:
        return raw.split(b"\0", 1)[0].decode(errors="replace")
    return raw.decode(errors="replace") + "*"


def _enc_string(dt: Datatype, value: object, size: int) -> bytes:
    if not isinstance(value, str):
        raise _bad(dt, value)
    return value.encode().ljust(size or len(value) + 1, b"\0")


def _enc_cgroupv2(dt: Datatype, value: object, size: int) -> bytes:
    # always a path, as nft reads it (a number too: the listing of an id without a
    # directory does not load again, in nft or nfkit)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _bad(dt, value)
    from nfkit.nftables.cgroupv2 import cgroup_id

    return cgroup_id(str(value)).to_bytes(8, "little")


def _dec_cgroupv2(dt: Datatype, raw: bytes) -> object:
    from nfkit.nftables.cgroupv2 import cgroup_path

    cid = int.from_bytes(raw[:8], "little")
    return cgroup_path(cid) or cid


REALMS_FILE = "/etc/iproute2/rt_realms"  # where nft 1.0.6 reads realm names
GROUPS_FILE = "/etc/iproute2/group"  # ... and device group names


def realm_names() -> dict[str, int]:
    """Realm names of /etc/iproute2/rt_realms (``number name`` lines), as nft reads them."""
    return rt_names(REALMS_FILE)


@functools.lru_cache(maxsize=4)
def rt_names(path: str) -> dict[str, int]:
    """The names of an iproute2 table file (``number name`` lines)."""
    names: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.split("#", 1)[0].split()
                if len(words) >= 2:
                    try:
                        names.setdefault(words[1], int(words[0], 0))
                    except ValueError:
                        continue
    except OSError:
        pass
    return names


def _enc_realm(dt: Datatype, value: object, size: int) -> bytes:
    """A realm (rt classid, meta rtclassid): a number, or a name of rt_realms."""
    if isinstance(value, str):
        v = realm_names().get(value)
        if v is None:
            try:
                v = int(value, 0)
            except ValueError:
                raise InputError(f"{value!r} is not a realm (a number or a name of "
                                 f"{REALMS_FILE})") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        v = value
    else:
        raise _bad(dt, value)
    if not 0 <= v < 1 << 32:
        raise InputError(f"realm {value!r} does not fit in 32 bits")
    return v.to_bytes(4, "little" if not dt.big_endian else "big")


def _dec_realm(dt: Datatype, raw: bytes) -> object:
    # nft's JSON gives a realm as a string always: its name, or its number.
    v = int.from_bytes(raw[:4], "little" if not dt.big_endian else "big")
    return next((k for k, n in realm_names().items() if n == v), str(v))


def _tz_offset() -> int:
    """Seconds east of UTC now: nft reads `meta hour` and `meta time` as local time."""
    return time.localtime().tm_gmtoff


def _enc_hour(dt: Datatype, value: object, size: int) -> bytes:
    """`meta hour "10:00[:30]"`: seconds since midnight UTC, host order."""
    parts = value.split(":") if isinstance(value, str) else []
    if not 2 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise InputError(f"{value!r} is not an hour (HH:MM or HH:MM:SS)")
    h, m, sec = (int(p) for p in (*parts, "0")[:3])
    if h > 23 or m > 59 or sec > 59:
        raise InputError(f"{value!r} is not an hour of a day")
    return ((h * 3600 + m * 60 + sec - _tz_offset()) % 86400).to_bytes(4, "little")


def _dec_hour(dt: Datatype, raw: bytes) -> object:
    v = (int.from_bytes(raw[:4], "little") + _tz_offset()) % 86400
    text = f"{v // 3600:02d}:{v // 60 % 60:02d}"
    return text + (f":{v % 60:02d}" if v % 60 else "")


def _enc_date(dt: Datatype, value: object, size: int) -> bytes:
    """`meta time "2026-01-01[ 10:00[:05]]"`: nanoseconds since the epoch, local time as
    nft reads it, host order."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            t = time.mktime(time.strptime(str(value), fmt))
            break
        except ValueError:
            continue
    else:
        raise InputError(f"{value!r} is not a date (YYYY-MM-DD [HH:MM[:SS]])")
    return (int(t) * 1_000_000_000).to_bytes(8, "little")


def _dec_date(dt: Datatype, raw: bytes) -> object:
    return time.strftime("%Y-%m-%d %H:%M:%S",
                         time.localtime(int.from_bytes(raw[:8], "little") // 1_000_000_000))


def _dec_string(dt: Datatype, raw: bytes) -> object:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def _enc_classid(dt: Datatype, value: object, size: int) -> bytes:
    if isinstance(value, str):
        if value == "none":
            v = 0
        elif value == "root":
            v = 0xFFFFFFFF
        elif ":" in value:
            major, minor = value.split(":", 1)
            try:
                v = (int(major or "0", 16) << 16) | int(minor or "0", 16)
            except ValueError:
                raise _bad(dt, value) from None
        else:
            raise _bad(dt, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        v = value
    else:
        raise _bad(dt, value)
    return v.to_bytes(4, "little")


def _dec_classid(dt: Datatype, raw: bytes) -> object:
    v = int.from_bytes(raw, "little")
    if v == 0:
        return "none"
    if v == 0xFFFFFFFF:
        return "root"
    return f"{v >> 16:x}:{v & 0xFFFF:x}"


def _enc_time(dt: Datatype, value: object, size: int) -> bytes:
    """Seconds (int, or "60s"/"2m"/"1h"/"1d" strings) -> milliseconds, host order."""
    if isinstance(value, str):
        units = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000}
        ms = 0
        num = ""
        i = 0
        try:
            while i < len(value):
                c = value[i]
                if c.isdigit():
                    num += c
                    i += 1
                    continue
                u = "ms" if value[i:i + 2] == "ms" else c
                ms += int(num) * units[u]
                num = ""
                i += len(u)
            if num:
                ms += int(num) * 1000
        except (KeyError, ValueError):
            raise _bad(dt, value) from None
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value * 1000
    else:
        raise _bad(dt, value)
    return ms.to_bytes(size, "little")


def _dec_time(dt: Datatype, raw: bytes) -> object:
    return int.from_bytes(raw, "little") // 1000


def _enc_ctlabel(dt: Datatype, value: object, size: int) -> bytes:
    """A ct label is a bit number (0..127); several make a mask."""
    bits = value if isinstance(value, list) else [value]
    v = 0
    for b in bits:
        if not isinstance(b, int) or isinstance(b, bool) or not 0 <= b < size * 8:
            raise _bad(dt, value)
        v |= 1 << b
    return v.to_bytes(size, "little")


def _dec_ctlabel(dt: Datatype, raw: bytes) -> object:
    v = int.from_bytes(raw, "little")
    bits = [i for i in range(len(raw) * 8) if v >> i & 1]
    return bits[0] if len(bits) == 1 else bits


_ENCODERS: dict[str, Callable[[Datatype, object, int], bytes]] = {
    "int": _enc_int, "bitmask": _enc_bitmask, "ipv4": _enc_ipv4, "ipv6": _enc_ipv6,
    "ether": _enc_ether, "ifname": _enc_ifname, "string": _enc_string,
    "classid": _enc_classid, "time": _enc_time, "ctlabel": _enc_ctlabel,
    "realm": _enc_realm, "hour": _enc_hour, "date": _enc_date, "cgroupv2": _enc_cgroupv2,
}
_DECODERS: dict[str, Callable[[Datatype, bytes], object]] = {
    "int": _dec_int, "bitmask": _dec_bitmask, "ipv4": _dec_ipv4, "ipv6": _dec_ipv6,
    "ether": _dec_ether, "ifname": _dec_ifname, "string": _dec_string,
    "classid": _dec_classid, "time": _dec_time, "ctlabel": _dec_ctlabel,
    "realm": _dec_realm, "hour": _dec_hour, "date": _dec_date, "cgroupv2": _dec_cgroupv2,
}

_PROTO_NAMES = {
    0: "hopopt", 1: "icmp", 2: "igmp", 4: "ipencap", 6: "tcp", 17: "udp", 33: "dccp",
    41: "ipv6", 43: "ipv6-route", 44: "ipv6-frag", 47: "gre", 50: "esp", 51: "ah",
    58: "ipv6-icmp", 59: "ipv6-nonxt", 60: "ipv6-opts", 103: "pim", 112: "vrrp",
    132: "sctp", 136: "udplite",
}


def _sym(names: dict[str, int]) -> tuple[dict[str, int], dict[int, str]]:
    return names, {v: k for k, v in names.items()}


def _dt(name: str, id: int, size: int, kind: str = "int", big: bool = True,
        symbols: dict[str, int] | None = None, print_symbols: bool = True,
        aliases: dict[str, int] | None = None) -> Datatype:
    syms = dict(symbols or {})
    names = {v: k for k, v in syms.items()}
    syms.update(aliases or {})
    return Datatype(name, id, size, kind, big, syms, names, print_symbols)


ICMP_TYPES = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
    "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
    "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
    "address-mask-request": 17, "address-mask-reply": 18,
}
ICMPV6_TYPES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
    "mld-listener-query": 130, "mld-listener-report": 131, "mld-listener-done": 132,
    "nd-router-solicit": 133, "nd-router-advert": 134, "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136, "nd-redirect": 137, "router-renumbering": 138,
    "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142, "mld2-listener-report": 143,
}
DSCP = {
    "cs0": 0, "cs1": 8, "cs2": 16, "cs3": 24, "cs4": 32, "cs5": 40, "cs6": 48, "cs7": 56,
    "df": 0, "be": 0, "lephb": 1, "af11": 10, "af12": 12, "af13": 14, "af21": 18, "af22": 20,
    "af23": 22, "af31": 26, "af32": 28, "af33": 30, "af41": 34, "af42": 36, "af43": 38,
    "va": 44, "ef": 46,
}
_DSCP_PRINT = {v: k for k, v in DSCP.items() if k not in ("df", "be")}

T: dict[str, Datatype] = {}
for _d in [
    Datatype("verdict", 1, 4, "int"),
    _dt("nf_proto", 2, 1, symbols={"ipv4": 2, "ipv6": 10, "inet": 1, "arp": 3, "bridge": 7,
                                    "netdev": 5}),
    _dt("integer", 4, 4, print_symbols=False),
    _dt("string", 5, 0, "string"),
    _dt("ipv4_addr", 7, 4, "ipv4"),
    _dt("ipv6_addr", 8, 16, "ipv6"),
    _dt("ether_addr", 9, 6, "ether"),
    _dt("ether_type", 10, 2, symbols={"ip": 0x0800, "arp": 0x0806, "ip6": 0x86DD,
                                       "8021q": 0x8100, "8021ad": 0x88A8},
        aliases={"vlan": 0x8100}),  # nft reads `vlan`, lists `8021q`
    _dt("inet_proto", 12, 1, symbols={v: k for k, v in _PROTO_NAMES.items()}),
    _dt("inet_service", 13, 2, print_symbols=False),
    _dt("icmp_type", 14, 1, symbols=ICMP_TYPES),
    _dt("tcp_flag", 15, 1, "bitmask", symbols={
        "fin": 1, "syn": 2, "rst": 4, "psh": 8, "ack": 16, "urg": 32, "ecn": 64, "cwr": 128}),
    _dt("mark", 19, 4, big=False, print_symbols=False),
    _dt("iface_index", 20, 4, big=False),
    _dt("iface_type", 21, 2, big=False, symbols={"ether": 1, "ppp": 512, "loopback": 772}),
    _dt("uid", 24, 4, big=False, print_symbols=False),
    _dt("gid", 25, 4, big=False, print_symbols=False),
    _dt("ct_state", 26, 4, "bitmask", big=False, symbols={
        "invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}),
    _dt("ct_dir", 27, 1, symbols={"original": 0, "reply": 1}),
    _dt("ct_status", 28, 4, "bitmask", big=False, symbols={
        "expected": 1, "seen-reply": 2, "assured": 4, "confirmed": 8, "snat": 16,
        "dnat": 32, "dying": 512}),
    _dt("icmpv6_type", 29, 1, symbols=ICMPV6_TYPES),
    _dt("ct_label", 30, 16, "ctlabel", big=False),
    _dt("classid", 23, 4, "classid", big=False),
    _dt("ecn", 37, 1, symbols={"not-ect": 0, "ect1": 1, "ect0": 2, "ce": 3}),
    _dt("fib_addrtype", 38, 4, big=False, symbols={
        "unspec": 0, "unicast": 1, "local": 2, "broadcast": 3, "anycast": 4,
        "multicast": 5, "blackhole": 6, "unreachable": 7, "prohibit": 8}),
    _dt("pkttype", 31, 1, symbols={"host": 0, "broadcast": 1, "multicast": 2, "other": 3}),
    _dt("icmp_code", 32, 1, symbols={
        "net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2,
        "port-unreachable": 3, "frag-needed": 4, "net-prohibited": 9,
        "host-prohibited": 10, "admin-prohibited": 13}),
    _dt("icmpv6_code", 33, 1, symbols={
        "no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3, "port-unreachable": 4,
        "policy-fail": 5, "reject-route": 6}),
    _dt("icmpx_code", 34, 1, symbols={
        "port-unreachable": 1, "admin-prohibited": 3, "no-route": 0, "host-unreachable": 2}),
    _dt("dscp", 36, 1, symbols=DSCP),
    _dt("ifname", 41, 16, "ifname"),
    _dt("boolean", 39, 1, symbols={"exists": 1, "missing": 0}),
    _dt("time", 18, 4, "time", big=False),
    _dt("realm", 22, 4, "realm", big=False),
    _dt("devgroup", 35, 4, big=False, symbols=rt_names(GROUPS_FILE)),
    _dt("dccp_pkttype", 16, 1, symbols={
        "request": 0, "response": 1, "data": 2, "ack": 3, "dataack": 4, "closereq": 5,
        "close": 6, "reset": 7, "sync": 8, "syncack": 9}),
    _dt("igmp_type", 42, 1, symbols={
        "membership-query": 0x11, "membership-report-v1": 0x12, "membership-report-v2": 0x16,
        "membership-report-v3": 0x22, "leave-group": 0x17}),
    _dt("ct_event", 40, 4, "bitmask", big=False, symbols={
        "new": 1, "related": 2, "destroy": 4, "reply": 8, "assured": 16, "protoinfo": 32,
        "helper": 64, "mark": 128, "seqadj": 256, "secmark": 512, "label": 1024}),
    _dt("hour", 44, 4, "hour", big=False),
    _dt("cgroupv2", 46, 8, "cgroupv2", big=False),
    _dt("date", 43, 8, "date", big=False),
    _dt("day", 45, 1, symbols={"Sunday": 0, "Monday": 1, "Tuesday": 2, "Wednesday": 3,
                               "Thursday": 4, "Friday": 5, "Saturday": 6}),
    _dt("mh_type", 17, 1, symbols={
        "binding-refresh-request": 0, "home-test-init": 1, "careof-test-init": 2,
        "home-test": 3, "careof-test": 4, "binding-update": 5, "binding-acknowledgement": 6,
        "binding-error": 7, "fast-binding-update": 8, "fast-binding-acknowledgement": 9,
        "fast-binding-advertisement": 10, "experimental-mobility-header": 11,
        "home-agent-switch-message": 12}),
]:
    T[_d.name] = _d
T["hinteger"] = _dt("integer", 4, 4, big=False, print_symbols=False)
T["dscp"].names.clear()
T["dscp"].names.update(_DSCP_PRINT)

TYPES_BY_ID = {d.id: d for d in T.values() if d.name != "integer" or d.big_endian}
# Aliases nft accepts in set "type" declarations.
TYPE_ALIASES = {"ipv4_address": "ipv4_addr", "ipv6_address": "ipv6_addr"}


def datatype(name: str) -> Datatype:
    """The datatype named ``name`` as nft spells it; raises InputError if unknown."""
    try:
        return T[TYPE_ALIASES.get(name, name)]
    except KeyError:
        raise InputError(f"unknown datatype {name!r}") from None


# Payload bases (enum nft_payload_bases).
LL, NH, TH, IH = 0, 1, 2, 3
BASE_NAMES = {LL: "ll", NH: "nh", TH: "th", IH: "ih"}
BASE_NUMS = {v: k for k, v in BASE_NAMES.items()}

# (protocol, field) -> (base, bit offset, bit length, datatype name)
PAYLOAD: dict[tuple[str, str], tuple[int, int, int, str]] = {}


def _fields(proto: str, base: int, rows: list[tuple[str, int, int, str]]) -> None:
    for name, off, ln, dt in rows:
        PAYLOAD[(proto, name)] = (base, off, ln, dt)


_fields("ether", LL, [("daddr", 0, 48, "ether_addr"), ("saddr", 48, 48, "ether_addr"),
                      ("type", 96, 16, "ether_type")])
_fields("vlan", LL, [("pcp", 112, 3, "integer"), ("cfi", 115, 1, "integer"),
                     ("id", 116, 12, "integer"), ("type", 128, 16, "ether_type")])
_fields("ip", NH, [
    ("version", 0, 4, "integer"), ("hdrlength", 4, 4, "integer"), ("dscp", 8, 6, "dscp"),
    ("ecn", 14, 2, "ecn"), ("length", 16, 16, "integer"), ("id", 32, 16, "integer"),
    ("frag-off", 48, 16, "integer"), ("ttl", 64, 8, "integer"),
    ("protocol", 72, 8, "inet_proto"), ("checksum", 80, 16, "integer"),
    ("saddr", 96, 32, "ipv4_addr"), ("daddr", 128, 32, "ipv4_addr")])
_fields("ip6", NH, [
    ("version", 0, 4, "integer"), ("dscp", 4, 6, "dscp"), ("ecn", 10, 2, "ecn"),
    ("flowlabel", 12, 20, "integer"), ("length", 32, 16, "integer"),
    ("nexthdr", 48, 8, "inet_proto"), ("hoplimit", 56, 8, "integer"),
    ("saddr", 64, 128, "ipv6_addr"), ("daddr", 192, 128, "ipv6_addr")])
_fields("tcp", TH, [
    ("sport", 0, 16, "inet_service"), ("dport", 16, 16, "inet_service"),
    ("sequence", 32, 32, "integer"), ("ackseq", 64, 32, "integer"), ("doff", 96, 4, "integer"),
    ("reserved", 100, 4, "integer"), ("flags", 104, 8, "tcp_flag"),
    ("window", 112, 16, "integer"), ("checksum", 128, 16, "integer"),
    ("urgptr", 144, 16, "integer")])
_fields("udp", TH, [("sport", 0, 16, "inet_service"), ("dport", 16, 16, "inet_service"),
                    ("length", 32, 16, "integer"), ("checksum", 48, 16, "integer")])
_fields("udplite", TH, [("sport", 0, 16, "inet_service"), ("dport", 16, 16, "inet_service"),
                        ("csumcov", 32, 16, "integer"), ("checksum", 48, 16, "integer")])
_fields("igmp", TH, [("type", 0, 8, "igmp_type"), ("mrt", 8, 8, "integer"),
                     ("checksum", 16, 16, "integer"), ("group", 32, 32, "integer")])  # nft 1.0.6 types group as an integer
_fields("comp", TH, [("nexthdr", 0, 8, "inet_proto"), ("flags", 8, 8, "integer"),
                     ("cpi", 16, 16, "integer")])
_fields("sctp", TH, [("sport", 0, 16, "inet_service"), ("dport", 16, 16, "inet_service"),
                     ("vtag", 32, 32, "integer"), ("checksum", 64, 32, "integer")])
_fields("dccp", TH, [("sport", 0, 16, "inet_service"), ("dport", 16, 16, "inet_service"),
                     ("type", 67, 4, "dccp_pkttype")])
_fields("th", TH, [("sport", 0, 16, "inet_service"), ("dport", 16, 16, "inet_service")])
_fields("icmp", TH, [
    ("type", 0, 8, "icmp_type"), ("code", 8, 8, "icmp_code"), ("checksum", 16, 16, "integer"),
    ("id", 32, 16, "integer"), ("sequence", 48, 16, "integer"),
    ("gateway", 32, 32, "integer"), ("mtu", 48, 16, "integer")])
_fields("icmpv6", TH, [
    ("type", 0, 8, "icmpv6_type"), ("code", 8, 8, "icmpv6_code"),
    ("checksum", 16, 16, "integer"), ("mtu", 32, 32, "integer"),
    ("parameter", 32, 32, "integer"), ("id", 32, 16, "integer"), ("sequence", 48, 16, "integer"),
    ("max-delay", 32, 16, "integer")])
_fields("ah", TH, [("spi", 32, 32, "integer")])
_fields("esp", TH, [("spi", 0, 32, "integer"), ("sequence", 32, 32, "integer")])

# Decoding: (base, byte offset, byte length) of whole-byte fields -> (protocol, field);
# several protocols share transport offsets, the dependency picks one.
PAYLOAD_BY_POS: dict[tuple[int, int, int], list[tuple[str, str]]] = {}
for (_p, _f), (_b, _o, _l, _t) in PAYLOAD.items():
    PAYLOAD_BY_POS.setdefault((_b, _o, _l), []).append((_p, _f))

# icmp fields that exist only in some message types: nft matches the type first (a set of
# types, which nft lists, or one type, which it does not list).
ICMP_TYPE_DEPS: dict[tuple[str, str], str | list[str]] = {
    ("icmp", "id"): ["echo-reply", "echo-request"],
    ("icmp", "sequence"): ["echo-reply", "echo-request"],
    ("icmp", "gateway"): "redirect", ("icmp", "mtu"): "destination-unreachable",
    ("icmpv6", "id"): ["echo-request", "echo-reply"],
    ("icmpv6", "sequence"): ["echo-request", "echo-reply"],
    ("icmpv6", "mtu"): "packet-too-big", ("icmpv6", "max-delay"): "mld-listener-query",
}

# Which protocol a payload needs: (level, value) with level "l3" (nfproto) or "l4".
L4_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "udplite": 136, "sctp": 132,
            "dccp": 33, "ah": 51, "esp": 50, "igmp": 2, "comp": 108}
# Layer-4 protocols of one family only: nft matches the family first where a table holds
# several (inet, bridge, netdev).
L4_OF_L3 = {"icmp": "ip", "igmp": "ip", "icmpv6": "ip6"}
L3_PROTO = {"ip": 2, "ip6": 10}
ETHER_FOR_L3 = {"ip": 0x0800, "ip6": 0x86DD}

# meta key name -> (number, datatype name, length in bytes)
META: dict[str, tuple[int, str, int]] = {
    "length": (0, "hinteger", 4), "protocol": (1, "ether_type", 2), "priority": (2, "classid", 4),
    "mark": (3, "mark", 4), "iif": (4, "iface_index", 4), "oif": (5, "iface_index", 4),
    "iifname": (6, "ifname", 16), "oifname": (7, "ifname", 16),
    "iiftype": (8, "iface_type", 2), "oiftype": (9, "iface_type", 2),
    "skuid": (10, "uid", 4), "skgid": (11, "gid", 4), "nftrace": (12, "integer", 1),
    "rtclassid": (13, "realm", 4), "secmark": (14, "hinteger", 4),
    "nfproto": (15, "nf_proto", 1), "l4proto": (16, "inet_proto", 1),
    "ibrname": (17, "ifname", 16), "obrname": (18, "ifname", 16),
    "pkttype": (19, "pkttype", 1), "cpu": (20, "hinteger", 4),
    "iifgroup": (21, "devgroup", 4), "oifgroup": (22, "devgroup", 4),
    "cgroup": (23, "hinteger", 4), "random": (24, "integer", 4),
    "secpath": (25, "boolean", 1), "ipsec": (25, "boolean", 1),  # nft 1.0.6 lists `ipsec`
    "iifkind": (26, "ifname", 16),
    "oifkind": (27, "ifname", 16),
    "time": (30, "date", 8), "hour": (32, "hour", 4), "day": (31, "day", 1), "sdif": (33, "iface_index", 4), "sdifname": (34, "ifname", 16),
}
META_BY_NUM = {v[0]: k for k, v in META.items()}

# ct key name -> (number, datatype name, length, needs direction/family)
CT: dict[str, tuple[int, str, int]] = {
    "state": (0, "ct_state", 4), "direction": (1, "ct_dir", 1), "status": (2, "ct_status", 4),
    "mark": (3, "mark", 4), "secmark": (4, "hinteger", 4), "expiration": (5, "time", 4),
    "helper": (6, "string", 16), "l3proto": (7, "nf_proto", 1), "saddr": (8, "ipv4_addr", 4),
    "daddr": (9, "ipv4_addr", 4), "protocol": (10, "inet_proto", 1),
    "proto-src": (11, "inet_service", 2), "proto-dst": (12, "inet_service", 2),
    "label": (13, "ct_label", 16), "packets": (14, "hinteger", 8), "bytes": (15, "hinteger", 8),
    "avgpkt": (16, "hinteger", 8), "zone": (17, "hinteger", 2), "eventmask": (18, "integer", 4),
    "event": (18, "ct_event", 4),  # nft's name of it (`ct event set new,related`)
    "ip saddr": (19, "ipv4_addr", 4), "ip daddr": (20, "ipv4_addr", 4),
    "ip6 saddr": (21, "ipv6_addr", 16), "ip6 daddr": (22, "ipv6_addr", 16),
    "id": (23, "integer", 4),
}
CT_BY_NUM = {v[0]: k for k, v in CT.items()}


def concat_type_id(types: list[Datatype]) -> int:
    """The NFTA_SET_KEY_TYPE number nft stores for a (possibly concatenated) type."""
    tid = 0
    for dt in types:
        tid = (tid << TYPE_BITS) | dt.id
    return tid


def split_type_id(tid: int) -> list[Datatype]:
    """Inverse of concat_type_id; raises InputError for an unknown component."""
    out = []
    while tid:
        part = tid & ((1 << TYPE_BITS) - 1)
        dt = TYPES_BY_ID.get(part)
        if dt is None:
            raise InputError(f"unknown datatype id {part}")
        out.append(dt)
        tid >>= TYPE_BITS
    return out[::-1]


def reg_size(n: int) -> int:
    """Bytes a value of n bytes occupies in 32-bit register slots."""
    return (n + 3) & ~3


_BE32 = struct.Struct(">I")


# Byte units of limits and quotas, as nft names them.
BYTE_UNITS = {"bytes": 1, "kbytes": 1024, "mbytes": 1024 * 1024, "gbytes": 1024 ** 3}


def bytes_unit(n: int) -> tuple[int, str]:
    """(value, unit) of a byte count as nft lists it: the largest unit dividing it."""
    for unit in ("gbytes", "mbytes", "kbytes"):
        if n and n % BYTE_UNITS[unit] == 0:
            return n // BYTE_UNITS[unit], unit
    return n, "bytes"
