"""The run loop every nfkit daemon shares: signals, status socket, metrics, teardown.

A daemon is a `Service`: ``start`` sets up (its own table, its sockets),
``poll`` is called with the loop's selector whenever one of its file
descriptors is ready or its timer fires, ``stop`` tears down what ``start``
made, and ``status`` answers `nfkit NAME status`.  `run` owns the rest:
SIGTERM and SIGINT end the loop and ``stop`` runs exactly once, also when
``start`` or ``poll`` raised; the status socket and its file are removed; the
metrics endpoint (prometheus_client's HTTP server, own registry) goes with the
process.  A failure of the daemon never leaves traffic blocked: what a
service installs in the kernel must pass traffic when nobody is there to
serve it, and ``stop`` removes what is not meant to outlive it.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nfkit.errors import CapabilityError, InputError

log = logging.getLogger("nfkit.service")

STATUS_DIR = Path("/run/nfkit")
STATUS_REQUEST_MAX = 256
WAITING_MAX = 5.0  # seconds a connected client may take to write its request


def status_path(name: str) -> Path:
    """The default status socket of daemon ``name``."""
    return STATUS_DIR / f"{name}.sock"


class Service:
    """What a daemon implements; see the module's docstring."""

    name = "service"

    def start(self, selector: selectors.BaseSelector) -> None:
        """Set up; register file descriptors with ``selector`` (data: a callable)."""

    def tick(self) -> float | None:
        """Periodic work; returns the seconds until it wants to run again (None: never)."""
        return None

    def stop(self) -> None:
        """Undo what start did that must not outlive the process."""

    def status(self) -> dict[str, Any]:
        return {}


class StatusServer:
    """A Unix stream socket answering one JSON status object per connection."""

    def __init__(self, path: Path, answer: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self.answer = answer
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise InputError(f"{path}: exists and is not a socket; not replacing it")
            if _alive(path):
                raise CapabilityError(f"{path}: another daemon answers there")
            path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # status may name addresses: root's alone
        try:
            self.sock.bind(str(path))
        finally:
            os.umask(old)
        self.sock.listen(8)
        self.sock.setblocking(False)
        # set by `run`: a client that has not written its request yet is answered when it has,
        # from the daemon's loop, never waited for (a daemon whose peers expect its heartbeats
        # must not stall on a client descheduled between connect and send)
        self.selector: selectors.BaseSelector | None = None
        self.waiting: dict[socket.socket, float] = {}  # such clients, since when

    def accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        now = time.monotonic()
        for old in [c for c, since in self.waiting.items() if now - since > WAITING_MAX]:
            self._forget(old)  # connected, never wrote
        if self.selector is not None:
            conn.setblocking(False)
            try:
                request = conn.recv(STATUS_REQUEST_MAX)
            except BlockingIOError:
                self.waiting[conn] = now
                self.selector.register(conn, selectors.EVENT_READ, lambda: self._request_came(conn))
                return
            except OSError:
                conn.close()
                return
            self._answer(conn, request)
        else:
            self._answer(conn, None)

    def _request_came(self, conn: socket.socket) -> None:
        self._forget(conn, close=False)
        try:
            request = conn.recv(STATUS_REQUEST_MAX)
        except OSError:
            conn.close()
            return
        self._answer(conn, request)

    def _forget(self, conn: socket.socket, close: bool = True) -> None:
        self.waiting.pop(conn, None)
        if self.selector is not None:
            try:
                self.selector.unregister(conn)
            except (KeyError, ValueError):
                pass
        if close:
            conn.close()

    def _answer(self, conn: socket.socket, request: bytes | None) -> None:
        """Reply to ``request`` (None: read it, waiting up to a second) and close."""
        with conn:
            conn.settimeout(1.0)
            try:
                reply = self.reply(conn.recv(STATUS_REQUEST_MAX) if request is None else request)
                if reply is not None:
                    conn.sendall(reply)
            except OSError:
                pass  # a client that went away is its own problem

    def reply(self, request: bytes) -> bytes | None:
        """The answer to one connection's request (None: no answer); a subclass
        that speaks more than ``status`` extends this."""
        if request.strip() not in (b"", b"status"):
            return json.dumps({"error": "unknown request"}).encode() + b"\n"
        return json.dumps(self.answer(), default=str).encode() + b"\n"

    def close(self) -> None:
        for conn in list(self.waiting):
            self._forget(conn)
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def query_status(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running daemon for its status (raises CapabilityError if none answers)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(b"status\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except FileNotFoundError:
        raise CapabilityError(f"{path}: no daemon is running (no status socket)") from None
    except OSError as exc:
        raise CapabilityError(f"{path}: no answer: {exc.strerror or exc}") from None
    finally:
        s.close()
    try:
        return json.loads(b"".join(chunks))  # type: ignore[no-any-return]
    except ValueError:
        raise CapabilityError(f"{path}: the daemon's answer is not JSON") from None


def wait_for_status(path: Path, alive: Callable[[], bool], timeout: float = 10.0) -> dict[str, Any]:
    """The first status a starting daemon gives (it answers once it has set up);
    CapabilityError when it has not within ``timeout`` or ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return query_status(path, timeout=0.2)
        except CapabilityError:
            if not alive():
                raise CapabilityError(f"{path}: the daemon ended before it answered") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_metrics(address: str | None, registry: Any) -> None:
    """Serve ``registry`` for Prometheus on HOST:PORT (None or "" = no endpoint)."""
    if not address:
        return
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    try:
        start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
    except (ValueError, OSError) as exc:
        raise InputError(f"metrics address {address}: {exc}") from None


def _drain(fd: int) -> None:
    """Empty the signal pipe (a worker forked from the daemon writes to it too, on its own
    signals, until it sets its own handlers)."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def run(service: Service, status: Path | None = None, metrics: str | None = None,
        registry: Any = None) -> int:
    """Run ``service`` until SIGTERM or SIGINT; returns the exit status (0 on a signal)."""
    stopping: list[int] = []
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)
        try:
            os.write(wfd, b"x")
        except OSError:
            pass

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    # Python runs a handler between two bytecodes of the main thread: a signal that comes
    # after the loop's last look and before it blocks in select (or that the kernel gives
    # another thread: numpy's OpenBLAS has some) would wait for the next wakeup, forever
    # when nothing else comes.  The interpreter's own handler writes to this pipe at once.
    previous_wakeup = signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    selector = selectors.DefaultSelector()
    selector.register(rfd, selectors.EVENT_READ, lambda: _drain(rfd))
    server: StatusServer | None = None
    started = False
    try:
        if status is not None:
            server = StatusServer(status, service.status)
            server.selector = selector
            selector.register(server.sock, selectors.EVENT_READ, server.accept)
        start_metrics(metrics, registry)
        started = True
        service.start(selector)
        log.info("%s: started", service.name)
        due = time.monotonic()
        while not stopping:
            now = time.monotonic()
            if now >= due:
                wait = service.tick()
                due = now + wait if wait is not None else float("inf")
            timeout = None if due == float("inf") else max(0.0, due - time.monotonic())
            for key, _ in selector.select(timeout):
                key.data()
        log.info("%s: stopping on %s", service.name, signal.Signals(stopping[0]).name)
        return 0
    finally:
        try:
            if started:
                service.stop()
        finally:
            if server is not None:
                server.close()
            selector.close()
            signal.set_wakeup_fd(previous_wakeup)
            os.close(rfd)
            os.close(wfd)
            for s, handler in previous.items():
                signal.signal(s, handler)
