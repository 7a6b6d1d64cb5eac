"""Idle timeouts of the flow table, per transport and TCP state.

Owns: the seconds a flow may stay idle before it ends, and the grouping of
states into timeout classes (one idle-ordered list per distinct value in the
table).  Defaults are those of Linux conntrack (nf_conntrack_tcp_timeout_*,
nf_conntrack_udp_timeout[_stream], nf_conntrack_icmp_timeout,
nf_conntrack_generic_timeout).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from nfkit.flow.tcpstate import REPLIED, STATE_MASK, TcpState

_TCP, _UDP, _ICMP, _ICMPV6 = 6, 17, 1, 58


@dataclass
class Timeouts:
    """Idle timeouts in seconds; every value must be positive."""

    tcp_syn_sent: float = 120
    tcp_syn_recv: float = 60
    tcp_established: float = 432000
    tcp_fin_wait: float = 120
    tcp_close_wait: float = 60
    tcp_last_ack: float = 30
    tcp_time_wait: float = 120
    tcp_close: float = 10
    tcp_unknown: float = 30
    udp: float = 30
    udp_stream: float = 120
    icmp: float = 30
    generic: float = 600

    def __post_init__(self) -> None:
        for f in fields(self):
            if not getattr(self, f.name) > 0:
                raise ValueError(f"timeout {f.name}: must be positive, got {getattr(self, f.name)!r}")

    def tcp(self, state: TcpState) -> float:
        return {
            TcpState.NONE: self.tcp_unknown,
            TcpState.SYN_SENT: self.tcp_syn_sent,
            TcpState.SYN_RECV: self.tcp_syn_recv,
            TcpState.ESTABLISHED: self.tcp_established,
            TcpState.FIN_WAIT: self.tcp_fin_wait,
            TcpState.CLOSE_WAIT: self.tcp_close_wait,
            TcpState.LAST_ACK: self.tcp_last_ack,
            TcpState.TIME_WAIT: self.tcp_time_wait,
            TcpState.CLOSE: self.tcp_close,
            TcpState.SYN_SENT2: self.tcp_syn_sent,  # the kernel gives both 2 minutes
        }[state]

    def of(self, proto: int, state_byte: int) -> float:
        """Timeout of a flow of transport ``proto`` whose state byte is ``state_byte``."""
        if proto == _TCP:
            st = state_byte & STATE_MASK
            return self.tcp(TcpState(st)) if st < len(TcpState) else self.tcp_unknown
        if proto == _UDP:
            return self.udp_stream if state_byte & REPLIED else self.udp
        if proto in (_ICMP, _ICMPV6):
            return self.icmp
        return self.generic

    def classes(self) -> list[float]:
        """The distinct timeout values, sorted; a class id is an index here."""
        return sorted({getattr(self, f.name) for f in fields(self)})

    def class_table(self) -> list[list[int]]:
        """proto (0-255) -> state byte (0-255) -> class id."""
        ids = {v: i for i, v in enumerate(self.classes())}
        generic = [ids[self.generic]] * 256
        table = [generic] * 256
        for proto in (_TCP, _UDP, _ICMP, _ICMPV6):
            table[proto] = [ids[self.of(proto, b)] for b in range(256)]
        return table
