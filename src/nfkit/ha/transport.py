"""The sync link's sockets, as conntrackd 1.4.7 opens them (UDP unicast and multicast).

Owns: binding, the interface, buffer sizes, the UDP checksum switch, joining
the multicast group; sending a datagram to the peer (or the group).
Must not know: the protocol (bytes in, bytes out), the engine.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from nfkit.errors import CapabilityError, InputError
from nfkit.ha.conf import Transport

SO_NO_CHECK = 11  # asm-generic/socket.h: send without a UDP checksum (Checksum off)
SO_SNDBUFFORCE = 32  # conntrackd forces the sizes it is given (CAP_NET_ADMIN), over wmem_max
SO_RCVBUFFORCE = 33


class SyncSocket:
    """One UDP socket on the sync link: receives the peers' datagrams, sends ours."""

    def __init__(self, t: Transport) -> None:
        self.t = t
        fam = socket.AF_INET if t.family == 4 else socket.AF_INET6
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        s = self.sock
        try:
            if t.interface:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, t.interface.encode())
            if t.sndbuf:
                s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, t.sndbuf)
            if t.rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, t.rcvbuf)
            if not t.checksum and fam == socket.AF_INET:
                s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
            assert t.address is not None
            if t.kind == "Multicast":
                self._join(fam)
                self.dest: tuple[str, int] = (t.address, t.port)
            else:
                assert t.destination is not None
                s.bind((t.address, t.port))
                self.dest = (t.destination, t.port)
        except OSError as exc:
            s.close()
            where = f"{t.kind} {t.address} port {t.port}" + (f" on {t.interface}" if t.interface else "")
            raise CapabilityError(f"sync link {where}: {exc.strerror or exc}") from None
        s.setblocking(False)

    def _join(self, fam: int) -> None:
        t, s = self.t, self.sock
        assert t.address is not None
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ifindex = socket.if_nametoindex(t.interface) if t.interface else 0
        if fam == socket.AF_INET:
            local = t.interface_address or "0.0.0.0"
            mreqn = struct.pack("=4s4si", ipaddress.IPv4Address(t.address).packed,
                                ipaddress.IPv4Address(local).packed, ifindex)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.bind((t.address, t.port))
        else:
            if not ifindex:
                raise InputError(f"Multicast {t.address}: an IPv6 group needs an Interface")
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                         ipaddress.IPv6Address(t.address).packed + struct.pack("=I", ifindex))
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.bind((t.address, t.port, 0, ifindex))

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, datagram: bytes) -> bool:
        try:
            self.sock.sendto(datagram, self.dest)
            return True
        except OSError:
            return False  # counted by the caller as conntrackd counts "Error send"

    def receive(self, limit: int = 256) -> list[tuple[bytes, object]]:
        """The datagrams waiting now (at most ``limit``), with their senders."""
        out: list[tuple[bytes, object]] = []
        while len(out) < limit:
            try:
                out.append(self.sock.recvfrom(65536))
            except BlockingIOError:
                return out
            except OSError:
                return out
        return out

    def close(self) -> None:
        self.sock.close()
