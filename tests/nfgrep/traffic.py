"""Record the bytes real programs exchange on loopback, for engine tests.

A recording relay listens on 127.0.0.1, forwards to the real server and keeps
every chunk of both directions in order; UDP likewise per datagram.  Servers
and clients are real programs (curl, dig, dnsmasq, redis, mosquitto, sshd,
vsftpd, openssl) or Python's own libraries; processes are stopped by PID.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field

from nfkit.lab import private_run

Chunk = tuple[int, bytes]  # (direction 0 client->server / 1 server->client, bytes)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Session:
    chunks: list[Chunk] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)

    def stream(self, direction: int) -> bytes:
        return b"".join(data for d, data in self.chunks if d == direction)


class TcpRecorder:
    """A relay on 127.0.0.1:port -> 127.0.0.1:target recording each session's chunks."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.sessions: list[Session] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            session = Session()
            with self.lock:
                self.sessions.append(session)
            done = [0]
            for src, dst, d in ((client, server, 0), (server, client, 1)):
                threading.Thread(target=self._pump, args=(src, dst, d, session, done,
                                                          (client, server)),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, d: int, session: Session,
              done: list[int], both: tuple[socket.socket, socket.socket]) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    session.chunks.append((d, data))
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with self.lock:
            done[0] += 1
            if done[0] == 2:
                both[0].close()
                both[1].close()
                session.closed.set()

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Session]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.sessions) >= count and all(s.closed.is_set()
                                                       for s in self.sessions[:count]):
                    return list(self.sessions)
            time.sleep(0.02)
        raise TimeoutError(f"{len(self.sessions)} session(s) recorded, {count} expected")

    def close(self) -> None:
        self.listener.close()


class UdpRecorder:
    """A UDP relay 127.0.0.1:port -> 127.0.0.1:target recording datagrams both ways."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.port = self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(("127.0.0.1", target))
        self.chunks: list[Chunk] = []
        self.client: tuple[str, int] | None = None
        threading.Thread(target=self._front, daemon=True).start()
        threading.Thread(target=self._back, daemon=True).start()

    def _front(self) -> None:
        while True:
            try:
                data, self.client = self.front.recvfrom(65536)
            except OSError:
                return
            self.chunks.append((0, data))
            self.back.send(data)

    def _back(self) -> None:
        while True:
            try:
                data = self.back.recv(65536)
            except OSError:
                return
            self.chunks.append((1, data))
            if self.client:
                self.front.sendto(data, self.client)

    def close(self) -> None:
        self.front.close()
        self.back.close()


class Server:
    """A real server program started for one test, stopped by its PID."""

    def __init__(self, argv: list[str], port: int | None, cwd: str | None = None,
                 run_dirs: tuple[str, ...] = ()) -> None:
        exe = shutil.which(argv[0]) or argv[0]
        if not os.path.exists(exe):
            raise FileNotFoundError(f"{argv[0]} is not installed (see APT_TEST in the Makefile)")
        # an empty /run of its own: what the machine's boot left there is not promised
        self.proc = subprocess.Popen(private_run([exe] + argv[1:], run_dirs), cwd=cwd,
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if port is not None:
            try:
                wait_port(port)
            except TimeoutError:
                self.stop()
                raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run(argv: list[str], timeout: float = 20.0, input: bytes | None = None) -> None:
    """Run a real client to completion (its exit status does not matter here)."""
    subprocess.run(argv, input=input, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=timeout, check=False)
