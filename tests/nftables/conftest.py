"""Helpers for the nftables tests: nfkit's CLI inside a namespace, JSON comparison."""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

NFKIT = [sys.executable, "-m", "nfkit"]


def unsequenced(batch: bytes | bytearray) -> bytes:
    """A batch's bytes with every message's sequence number zeroed (two encodings of the
    same commands compared whatever numbers they were given)."""
    buf = bytearray(batch)
    pos = 0
    while pos < len(buf):
        ln = struct.unpack_from("=I", buf, pos)[0]
        buf[pos + 8:pos + 12] = bytes(4)
        pos += (ln + 3) & ~3
    return bytes(buf)


def encoded_commands(cmds: Any, anon_templates: bool = True) -> Any:
    """The batch ``cmds`` encode to, sequence numbers zeroed, or ("InputError", its
    message); ``anon_templates=False``: rules with anonymous sets each compiled (the
    general path)."""
    from nfkit.errors import InputError
    from nfkit.netlink.codec import Batch
    from nfkit.nftables.commits import encode_commands
    from nfkit.nftables.messages import Encoder

    try:
        b = Batch()
        e = Encoder(b, anon_templates=anon_templates)
        encode_commands(cmds, e)
        b.close()
    except InputError as exc:
        return "InputError", str(exc).split(": ", 1)[-1]
    return unsequenced(b.buffer)


def strip(doc: Any) -> list[dict[str, Any]]:
    """A libnftables listing without metainfo and handles (for comparing two listings)."""
    items = doc["nftables"] if isinstance(doc, dict) else doc
    out = []
    for o in items:
        if "metainfo" in o:
            continue
        (k, b), = o.items()
        b = {kk: vv for kk, vv in b.items() if kk != "handle"}
        if "elem" in b:  # an element's remaining lifetime moves on between two listings
            b["elem"] = [_no_expires(e) for e in b["elem"]]
        out.append({k: b})
    return out


def _no_expires(e: Any) -> Any:
    if isinstance(e, list):
        return [_no_expires(x) for x in e]
    if isinstance(e, dict) and "elem" in e:
        return {"elem": {k: v for k, v in e["elem"].items() if k != "expires"}}
    return e


def nft_json(ns: Any) -> list[dict[str, Any]]:
    return strip(json.loads(ns.run("nft -j list ruleset").stdout))


def fill_nft_gaps(ours: list[dict], theirs: list[dict]) -> list[dict]:
    """Drop what nfkit adds beyond nft 1.0.6's listing: a netdev chain's device,
    the "dynamic" flag of sets updated from the packet path and `socket cgroupv2`'s
    level."""
    out = []
    for o, t in zip(ours, theirs, strict=False):
        if "chain" in o and "chain" in t and "dev" in o["chain"] and "dev" not in t["chain"]:
            o = {"chain": {k: v for k, v in o["chain"].items() if k != "dev"}}
        for kind in ("set", "map"):
            if kind in o and kind in t and "dynamic" in o[kind].get("flags", []) \
                    and "dynamic" not in t[kind].get("flags", []):
                body = dict(o[kind])
                body["flags"] = [f for f in body["flags"] if f != "dynamic"]
                if not body["flags"]:
                    del body["flags"]
                o = {kind: body}
        if "rule" in o and "rule" in t:
            o = _no_level(o)
        out.append(o)
    return out + ours[len(theirs):]


def _no_level(o: Any) -> Any:
    """nft 1.0.6's JSON leaves `socket cgroupv2`'s level out."""
    if isinstance(o, list):
        return [_no_level(x) for x in o]
    if isinstance(o, dict):
        if o.keys() == {"socket"} and isinstance(o["socket"], dict) and \
                o["socket"].get("key") == "cgroupv2":
            return {"socket": {k: v for k, v in o["socket"].items() if k != "level"}}
        return {k: _no_level(v) for k, v in o.items()}
    return o


def sorted_elements(debug: str) -> str:
    """nft's netlink debug listing (`nft --debug=netlink list ruleset`) with each set's
    elements sorted (a hash set lists them in its random seed's order)."""
    out: list[str] = []
    elems: list[str] = []
    for line in debug.splitlines():
        if line.startswith("\telement "):
            elems.append(line)
            continue
        out += sorted(elems) + [line]
        elems = []
    return "\n".join(out + sorted(elems))


# Prints each set the kernel holds: table, name, and its user data (hex), one a line.
_SET_USERDATA = r'''
from nfkit.netlink.codec import MessageWriter, iter_attrs
from nfkit.netlink.consts import NLM_F_REQUEST
from nfkit.nftables.expressions import A
from nfkit.nftables.listing import open_socket
from nfkit.nftables.messages import msg_type
a = A["set"]
w = MessageWriter(); w.begin(msg_type("getset"), NLM_F_REQUEST, family=0); w.end()
for m in open_socket().dump(w):
    d = {t: bytes(v) for t, v in iter_attrs(memoryview(m.attrs))}
    print(d[a["table"]].rstrip(b"\0").decode(), d[a["name"]].rstrip(b"\0").decode(),
          d.get(a["userdata"], b"").hex())
'''


def set_userdata(ns: Any) -> list[str]:
    """Every set the kernel holds in ``ns``: its table, name and user data as bytes (hex),
    what nft keeps there beside the kernel's state."""
    return sorted(ns.run([sys.executable, "-c", _SET_USERDATA]).stdout.splitlines())


def anonymous_set_userdata(ns: Any) -> list[str]:
    """`set_userdata` of the anonymous sets (a name nft gives, "__...")."""
    return [line for line in set_userdata(ns) if line.split()[1].startswith("__")]
