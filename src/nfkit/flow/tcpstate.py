"""TCP connection states of the flow table, as one transition table.

Owns: the state byte of a TCP flow (state, which side is the client, which
sides sent FIN, whether the reply direction was seen) and every change to it.
Must not know: slots, hashing, timeouts (timeouts.py maps states to seconds).

The state byte: bits 0-3 the `TcpState` (the kernel's numbering, declared once
in `nfkit.netlink.specs.conntrack_tcp` and shared with conntrack/), bit 4 REPLIED (a packet went in the
reverse of the stored direction), bit 5 CLIENT_IS_REPLY (the client sends in
the reverse direction: the first packet seen came from the server), bits 6
and 7 FIN seen from the client, from the server.

The transitions follow the kernel's conntrack in spirit, simplified for
observing a capture (no window tracking), including the simultaneous open
(a SYN answered by a SYN: SYN_SENT2, then a SYN+ACK from either side:
SYN_RECV): `transition()` is the one place
they are written; `TCP_NEXT` is the same function tabulated over every
(state byte, event, direction) so the per-packet cost is one list index.
"""

from __future__ import annotations

import enum

from nfkit.netlink.specs.conntrack_tcp import TcpState

STATE_MASK = 0x0F
REPLIED = 0x10
CLIENT_IS_REPLY = 0x20
FIN_CLIENT = 0x40
FIN_SERVER = 0x80

REOPEN = -1  # a fresh SYN on a closed tuple: end the flow, start another

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10


class TcpEvent(enum.IntEnum):
    NONE = 0
    SYN = 1
    SYNACK = 2
    FIN = 3
    ACK = 4
    RST = 5


def event_of(flags: int) -> TcpEvent:
    """The event a segment with these TCP flags is."""
    if flags & TH_RST:
        return TcpEvent.RST
    if flags & TH_SYN:
        return TcpEvent.SYNACK if flags & TH_ACK else TcpEvent.SYN
    if flags & TH_FIN:
        return TcpEvent.FIN
    if flags & TH_ACK:
        return TcpEvent.ACK
    return TcpEvent.NONE


def open_state(flags: int, packed_tuple: bytes) -> int:
    """State byte of a flow whose first packet has ``flags``.

    A SYN makes its sender the client; a SYN+ACK makes its receiver the
    client.  A flow picked up in the middle (no handshake seen) is guessed:
    the side with the lower port is the server (equal ports: the first sender
    is the client).
    """
    ev = event_of(flags)
    if ev is TcpEvent.SYN:
        return TcpState.SYN_SENT
    if ev is TcpEvent.SYNACK:
        return TcpState.SYN_RECV | CLIENT_IS_REPLY
    sport = int.from_bytes(packed_tuple[-4:-2], "big")
    dport = int.from_bytes(packed_tuple[-2:], "big")
    client = CLIENT_IS_REPLY if sport < dport else 0
    if ev is TcpEvent.RST:
        return TcpState.CLOSE | client
    if ev is TcpEvent.FIN:
        fin = FIN_SERVER if client else FIN_CLIENT
        return TcpState.FIN_WAIT | client | fin
    return TcpState.ESTABLISHED | client


def transition(byte: int, ev: TcpEvent, direction: int) -> int:
    """New state byte after event ``ev`` sent in ``direction`` (0 stored, 1 reverse)."""
    state = TcpState(byte & STATE_MASK)
    flags = byte & ~STATE_MASK
    if direction:
        flags |= REPLIED
    from_client = direction == (1 if byte & CLIENT_IS_REPLY else 0)
    S = TcpState
    if ev is TcpEvent.RST:
        state = S.CLOSE
    elif ev is TcpEvent.SYN:
        if from_client and state in (S.TIME_WAIT, S.CLOSE):
            return REOPEN
        if from_client and state is S.NONE:
            state = S.SYN_SENT
        elif not from_client and state is S.SYN_SENT:  # simultaneous open
            state = S.SYN_SENT2
    elif ev is TcpEvent.SYNACK:
        if state is S.SYN_SENT2 or (not from_client and state in (S.SYN_SENT, S.NONE)):
            state = S.SYN_RECV
    elif ev is TcpEvent.FIN:
        if state not in (S.CLOSE, S.TIME_WAIT):
            flags |= FIN_CLIENT if from_client else FIN_SERVER
            both = (flags & FIN_CLIENT) and (flags & FIN_SERVER)
            state = S.LAST_ACK if both else S.FIN_WAIT
    elif ev is TcpEvent.ACK:
        if state is S.SYN_RECV and from_client:
            state = S.ESTABLISHED
        elif state is S.FIN_WAIT:
            fin_from_client = bool(flags & FIN_CLIENT)
            if from_client != fin_from_client:  # the other side acknowledged the FIN
                state = S.CLOSE_WAIT
        elif state is S.LAST_ACK:
            state = S.TIME_WAIT
    return int(state) | flags


# TCP_NEXT[state_byte * TCP_STRIDE + event * 2 + direction]
TCP_STRIDE = len(TcpEvent) * 2


def _tabulate() -> tuple[list[int], list[int]]:
    events = [int(event_of(f)) for f in range(256)]
    table = [0] * (256 * TCP_STRIDE)
    for byte in range(256):
        if (byte & STATE_MASK) >= len(TcpState):  # not a state: never stored
            continue
        for ev in TcpEvent:
            for d in (0, 1):
                table[byte * TCP_STRIDE + ev * 2 + d] = transition(byte, ev, d)
    return events, table


TCP_EVENT, TCP_NEXT = _tabulate()
