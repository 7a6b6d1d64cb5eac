"""RFC 6296's checksum-neutral address mapping, as arithmetic (no kernel, no I/O).

An NPTv6 translator rewrites the prefix of an address and compensates in one
other 16-bit word so that the one's-complement sum of the address, and so every
transport checksum over the pseudo-header, is unchanged:

- prefixes of /48 or shorter: the compensating word is the subnet ID (bits
  48-63); a subnet ID of 0xFFFF cannot be mapped unambiguously (0xFFFF and 0
  are the same number in one's complement) and the datagram is dropped;
- longer prefixes (up to /64): the first word of the interface identifier that
  is not 0xFFFF; an IID of all zeros (the Subnet-Router anycast address) or
  all ones is dropped.

Inside and outside prefixes of different lengths are both zero-extended to the
longer one, as the kernel's ip6t_NPT does; an address with bits set in the part
that extension overwrites has no 1:1 image and is refused here (the kernel
would map it many-to-one).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from nfkit.errors import InputError

MAX_PREFIX_LEN = 64  # the IID must stay whole: the kernel and the RFC's algorithm stop there


class Drop(Enum):
    """Why a translator must drop a datagram instead of mapping its address."""

    SUBNET_FFFF = "subnet ID 0xffff cannot be mapped with a prefix of /48 or shorter"
    IID_ZERO = "all-zero interface identifier (Subnet-Router anycast)"
    IID_ONES = "all-ones interface identifier (reserved anycast)"
    NOT_ONE_TO_ONE = "bits between the two prefix lengths are set: no 1:1 image"


class Dropped(InputError):
    """The address falls in a case RFC 6296 says to drop (see `Drop`)."""

    def __init__(self, address: ipaddress.IPv6Address, reason: Drop) -> None:
        super().__init__(f"{address}: dropped: {reason.value}")
        self.address = address
        self.reason = reason


def ones_add(a: int, b: int) -> int:
    """16-bit one's-complement addition (end-around carry)."""
    s = a + b
    return (s & 0xFFFF) + (s >> 16)


def ones_sum(words: tuple[int, ...] | list[int]) -> int:
    total = 0
    for w in words:
        total = ones_add(total, w)
    return total


def words_of(address: ipaddress.IPv6Address) -> list[int]:
    n = int(address)
    return [(n >> (112 - 16 * i)) & 0xFFFF for i in range(8)]


def address_of(words: list[int]) -> ipaddress.IPv6Address:
    n = 0
    for w in words:
        n = (n << 16) | w
    return ipaddress.IPv6Address(n)


def parse_prefix(text: str, what: str) -> ipaddress.IPv6Network:
    """An NPT prefix: IPv6, no host bits, at most /64.  Raises InputError naming ``what``."""
    try:
        net = ipaddress.IPv6Network(text, strict=True)
    except ValueError as exc:
        raise InputError(f"{what}: {text!r} is not an IPv6 prefix without host bits ({exc})") from None
    if net.prefixlen > MAX_PREFIX_LEN:
        raise InputError(f"{what}: {text}: NPTv6 prefixes are at most /{MAX_PREFIX_LEN} "
                         "(the interface identifier is never rewritten)")
    return net


@dataclass(frozen=True)
class Mapping:
    """One NPTv6 mapping between an inside and an outside prefix."""

    inside: ipaddress.IPv6Network
    outside: ipaddress.IPv6Network

    @classmethod
    def parse(cls, inside: str, outside: str) -> Mapping:
        return cls(parse_prefix(inside, "inside"), parse_prefix(outside, "outside"))

    @property
    def length(self) -> int:
        """The number of leading bits rewritten: the longer of the two prefixes."""
        return max(self.inside.prefixlen, self.outside.prefixlen)

    def adjustment(self, outbound: bool = True) -> int:
        """The word added (one's complement) to the compensating word, inside -> outside."""
        src, dst = (self.inside, self.outside) if outbound else (self.outside, self.inside)
        s, d = ones_sum(words_of(src.network_address)), ones_sum(words_of(dst.network_address))
        return ones_add(s, ~d & 0xFFFF)

    def to_outside(self, address: ipaddress.IPv6Address | str) -> ipaddress.IPv6Address:
        """The outside image of an inside address (raises Dropped, or InputError if not inside)."""
        return self._map(ipaddress.IPv6Address(address), outbound=True)

    def to_inside(self, address: ipaddress.IPv6Address | str) -> ipaddress.IPv6Address:
        """The inside address an outside address maps back to."""
        return self._map(ipaddress.IPv6Address(address), outbound=False)

    def _map(self, address: ipaddress.IPv6Address, outbound: bool) -> ipaddress.IPv6Address:
        src, dst = (self.inside, self.outside) if outbound else (self.outside, self.inside)
        if address not in src:
            raise InputError(f"{address} is not in the {'inside' if outbound else 'outside'} "
                             f"prefix {src}")
        length = self.length
        keep = (1 << (128 - length)) - 1
        if int(address) & ~keep & ((1 << (128 - src.prefixlen)) - 1):
            raise Dropped(address, Drop.NOT_ONE_TO_ONE)
        words = words_of(ipaddress.IPv6Address((int(address) & keep) | int(dst.network_address)))
        if length <= 48:
            index = 3
            if words[3] == 0xFFFF:
                raise Dropped(address, Drop.SUBNET_FFFF)
        else:
            iid = words[4:]
            if not any(iid):
                raise Dropped(address, Drop.IID_ZERO)
            if all(w == 0xFFFF for w in iid):
                raise Dropped(address, Drop.IID_ONES)
            index = next(i for i in range(4, 8) if words[i] != 0xFFFF)
        adjusted = ones_add(words[index], self.adjustment(outbound))
        words[index] = 0 if adjusted == 0xFFFF else adjusted
        return address_of(words)
