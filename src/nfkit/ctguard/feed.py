"""ctnetlink event datagrams into the picture, without building an entry per event.

Sans-I/O: `PictureFeed.feed` takes the bytes of received datagrams.  Each
message is matched against the conntrack decoder's compiled layouts
(`nfkit.conntrack.wire`: one header check and one unpack per message of a
known shape); from the unpacked values a small function generated once per
layout picks what the picture keeps (id, source address, zone, status, state,
protocol).  The `Entry` is built later from the same values, only for the few
records a decision takes.  This module must not know about sockets or policy.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from nfkit.conntrack.wire import ADDR, MSG_DELETE, EntryDecoder
from nfkit.ctguard.picture import Picture, cost_tier, entry_key, wire_state
from nfkit.errors import DecodeError
from nfkit.netlink.specs import ctnetlink as S

_NLMSG = struct.Struct("=IHHII")
_DELETE_HEADER = struct.Struct("=IHHIIBBH")  # nlmsghdr + nfgenmsg (family, version 0, res_id 0)
_HEADERS = 20  # nlmsghdr + nfgenmsg
_CTNETLINK = 1  # NFNL_SUBSYS_CTNETLINK, the high byte of the message type
_DELETE = S.IPCTNL_MSG_CT_DELETE
_NLM_F_REQUEST = 1

# (id, source address bytes, zone, status, state, protocol) from a layout's values
Pick = Callable[[tuple[Any, ...]], tuple[Any, ...]]


def _picker(index: dict[Any, int]) -> Pick:
    def get(name: str, default: str = "None") -> str:
        return f"v[{index[name]}]" if name in index else default

    state = next((k for k in ("state", "sctp_state", "dccp_state") if k in index), "state")
    src = (f"def pick(v):\n    return ({get('id')}, {get('o.src')}, {get('zone', '0')}, "
           f"{get('status', '0')}, {get(state)}, {get('o.proto', '0')})\n")
    namespace: dict[str, Any] = {}
    exec(src, {}, namespace)  # noqa: S102 - generated above from the layout's field index
    return namespace["pick"]  # type: ignore[no-any-return]


class PictureFeed:
    """Applies event datagrams to a `Picture`; see the module's docstring."""

    def __init__(self, picture: Picture, decoder: EntryDecoder | None = None) -> None:
        self.picture = picture
        self.decoder = decoder or EntryDecoder()
        self._picks: dict[int, Pick] = {}  # id(layout) -> its picker (layouts live as long as the decoder)
        self._states: dict[tuple[int, Any, int], tuple[str, int]] = {}  # -> (state name, cost tier)

    def feed(self, buf: bytes | bytearray | memoryview, n: int, now: float) -> int:
        """Apply the messages of ``buf[:n]`` (one or more datagrams' worth); returns how many.
        Raises DecodeError for a malformed message (those before it are applied)."""
        picture = self.picture
        find = self.decoder.find
        picks = self._picks
        states = self._states
        unpack = _NLMSG.unpack_from
        off = done = 0
        while off + _HEADERS <= n:
            length, mtype, _, _, _ = unpack(buf, off)
            if length < 16 or off + length > n:
                raise DecodeError(f"netlink message of {length} bytes at offset {off} of {n}")
            if mtype >> 8 == _CTNETLINK and length >= _HEADERS:
                family = buf[off + 16]
                aoff, alen = off + _HEADERS, length - _HEADERS
                lay, values = find(buf, aoff, alen, family)
                pick = picks.get(id(lay))
                if pick is None:
                    pick = picks[id(lay)] = _picker(lay.index)
                ct_id, raw_src, zone, status, state, proto = pick(values)
                key: Any = ct_id if ct_id is not None else entry_key(lay.build(values))
                if mtype & 0xFF == _DELETE:
                    picture.remove(key)
                else:
                    seen = states.get((proto, state, status))
                    if seen is None:
                        name = wire_state(proto, state, status)
                        seen = states[(proto, state, status)] = (name, cost_tier(name, status))
                    picture.add(key, ADDR[raw_src], zone or 0, seen[0], status, lay, values, now, seen[1])
                done += 1
            off += (length + 3) & ~3
        return done

    def deletes(self, buf: bytes | bytearray | memoryview, n: int, out: bytearray, seq: int,
                most: int) -> list[Any]:
        """A delete request appended to ``out`` for each entry of the dump messages in ``buf[:n]``,
        at most ``most`` (its original tuple, zone and id copied as the dump gave them: no
        Entry), numbered from ``seq`` + 1; returns the picture's keys of those entries, in order."""
        find = self.decoder.find
        picks = self._picks
        unpack = _NLMSG.unpack_from
        header = _DELETE_HEADER.pack
        keys: list[Any] = []
        off = 0
        while off + _HEADERS <= n and len(keys) < most:
            length, mtype, _, _, _ = unpack(buf, off)
            if length < 16 or off + length > n:
                raise DecodeError(f"netlink message of {length} bytes at offset {off} of {n}")
            if mtype >> 8 == _CTNETLINK and length >= _HEADERS:
                family = buf[off + 16]
                aoff = off + _HEADERS
                lay, values = find(buf, aoff, length - _HEADERS, family)
                pick = picks.get(id(lay))
                if pick is None:
                    pick = picks[id(lay)] = _picker(lay.index)
                ct_id = pick(values)[0]
                keys.append(ct_id if ct_id is not None else entry_key(lay.build(values)))
                spans = lay.key_spans
                out += header(_HEADERS + sum(ln for _, ln in spans), MSG_DELETE, _NLM_F_REQUEST,
                              seq + len(keys), 0, family, 0, 0)
                for o, ln in spans:
                    out += buf[aoff + o:aoff + o + ln]
            off += (length + 3) & ~3
        return keys
