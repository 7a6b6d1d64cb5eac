"""The rulesets users have, at any size: nft's listing form and a mixed ruleset.

``listing_nft(n)``: one inet chain of ``ip saddr A tcp dport P counter accept``
(what `nft -j list ruleset` of it gives is form (a), this text form (b)).
``mixed_nft(n)``: n rules over `SHAPES` (addresses, prefixes, ports, ranges, sets,
interfaces, ct state, marks; counters, logs, jumps, NAT) in filter and nat
chains of one inet table.  Documentation and private ranges only.
"""

from __future__ import annotations

from collections.abc import Callable


def a4(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def a6(i: int) -> str:
    return f"2001:db8:{(i >> 16) & 0xffff:x}::{i & 0xffff:x}"


def port(i: int) -> int:
    return 1 + i % 60000


def listing_nft(n: int) -> str:
    out = ["table inet t {\n\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n"]
    out += [f"\t\tip saddr {a4(i)} tcp dport {port(i)} counter accept\n" for i in range(n)]
    out.append("\t}\n}\n")
    return "".join(out)


# (chain, rule text of index i): 24 shapes, filter chain "c" (table inet t) and nat
# chains "p", "n" (table ip nat: this kernel has no inet nat).
SHAPES: list[tuple[str, Callable[[int], str]]] = [
    ("c", lambda i: f"ip saddr {a4(i)} tcp dport {port(i)} counter accept"),
    ("c", lambda i: f"ip saddr {a4(i)}/{24 + i % 8} drop"),
    ("c", lambda i: f"ip daddr {a4(i)} udp dport {port(i)}-{port(i) + 10} accept"),
    ("c", lambda i: f"ip6 saddr {a6(i)} tcp dport {port(i)} accept"),
    ("c", lambda i: f"ip6 daddr {a6(i << 16)}/64 counter drop"),
    ("c", lambda i: f'iifname "eth{i % 4000}" accept'),
    ("c", lambda i: f'oifname "veth{i % 4000}" ip daddr {a4(i)} accept'),
    ("c", lambda i: f"ct state established,related tcp dport {port(i)} accept"),
    ("c", lambda i: f"meta mark {hex(i + 1)} accept"),
    ("c", lambda i: f"tcp dport {port(i)} meta mark set {hex(i + 1)}"),
    ("c", lambda i: f"tcp dport {{ {port(i)}, {port(i + 1)} }} accept"),
    ("c", lambda i: f"ip saddr @blocked tcp dport {port(i)} drop"),
    ("c", lambda i: f'tcp dport {port(i)} log prefix "p{i % 100} " drop'),
    ("c", lambda i: f"ip saddr {a4(i)} jump j"),
    ("c", lambda i: f"udp sport {port(i)} counter drop"),
    ("c", lambda i: f"ip daddr {a4(i)} icmp type echo-request limit rate {1 + i % 50}/second accept"),
    ("c", lambda i: f"ip saddr {a4(i)} ip daddr {a4(i + 7)} tcp sport {port(i)} tcp dport {port(i + 3)} accept"),
    ("c", lambda i: f"ct mark {hex(i + 1)} counter accept"),
    ("c", lambda i: f"ip daddr {a4(i)} reject"),
    ("c", lambda i: f'iifname "eth{i % 4000}" ip saddr {a4(i)} counter accept'),
    ("c", lambda i: f"meta l4proto udp ip daddr {a4(i)} udp dport {port(i)} drop"),
    ("p", lambda i: f"tcp dport {port(i)} dnat to {a4(i)}:{port(i + 1)}"),
    ("n", lambda i: f'ip saddr {a4(i << 8)}/24 oifname "eth{i % 4000}" snat to {a4(i + 1)}'),
    ("n", lambda i: f'ip daddr {a4(i)} oifname "eth{i % 4000}" masquerade'),
]


def mixed_nft(n: int) -> str:
    """n rules, shapes interleaved in blocks of 8 (as real files group them)."""
    chains: dict[str, list[str]] = {"c": [], "p": [], "n": []}
    for i in range(n):
        chain, make = SHAPES[(i // 8) % len(SHAPES)]
        chains[chain].append(make(i))
    out = ["table inet t {\n",
           "\tset blocked {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1, 198.51.100.7 }\n\t}\n",
           "\tchain j {\n\t\tcounter\n\t}\n",
           "\tchain c {\n\t\ttype filter hook input priority filter; policy accept;\n"]
    out += [f"\t\t{r}\n" for r in chains["c"]]
    out.append("\t}\n}\ntable ip nat {\n\tchain p {\n"
               "\t\ttype nat hook prerouting priority dstnat; policy accept;\n")
    out += [f"\t\t{r}\n" for r in chains["p"]]
    out.append("\t}\n\tchain n {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n")
    out += [f"\t\t{r}\n" for r in chains["n"]]
    out.append("\t}\n}\n")
    return "".join(out)
