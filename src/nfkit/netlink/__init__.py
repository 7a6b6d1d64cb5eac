"""nfkit's netlink layer (the role of libmnl).

`codec` is the sans-I/O half (messages, attributes, attribute tables);
`socket` is the I/O half; `specs/` holds each family's attribute tables.
"""

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

__all__ = [
    "Attr", "AttrSet", "Batch", "Kind", "Message", "MessageWriter", "NetlinkSocket",
    "iter_attrs", "parse_error", "parse_messages",
]
