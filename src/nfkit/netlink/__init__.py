"""nfkit's netlink layer (the role of libmnl).

`codec` is the sans-I/O half (messages, attributes, attribute tables);
`socket` is the I/O half; `specs/` holds each family's attribute tables.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nfkit.netlink.codec import (
        Attr,
        AttrSet,
        Batch,
        Kind,
        Message,
        MessageWriter,
        iter_attrs,
        parse_error,
        parse_messages,
    )
    from nfkit.netlink.socket import NetlinkSocket

# imported when first asked for: a module of the package that needs neither (the TCP
# states of specs/conntrack_tcp, which the flow table shares) costs no socket code
_LAZY = {name: "nfkit.netlink.codec" for name in (
    "Attr", "AttrSet", "Batch", "Kind", "Message", "MessageWriter", "iter_attrs", "parse_error",
    "parse_messages")} | {"NetlinkSocket": "nfkit.netlink.socket"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Attr", "AttrSet", "Batch", "Kind", "Message", "MessageWriter", "NetlinkSocket",
    "iter_attrs", "parse_error", "parse_messages",
]
