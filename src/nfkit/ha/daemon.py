"""`nfkit ha -C FILE`: conntrackd.conf's front end over the sync engine.

Owns: turning a `Conf` into an engine, a session and a sync socket; the lock
file; the log file in conntrackd's manner; the control socket at the
configuration's UNIX Path, which answers conntrackd's client requests (a
native int) and, for `nfkit ha status`, a JSON status (the request
``status``); Prometheus metrics.  It is a `nfkit.service.daemon.Service`:
`run` gives it signals and teardown.
Must not know: the protocol's bytes (engine, sessions), how entries are injected.
"""

from __future__ import annotations

import gc
import logging
import os
import selectors
import signal
import socket
import time
from pathlib import Path
from typing import Any

from nfkit.conntrack.expect import ExpectTable, expect_text
from nfkit.conntrack.formats import entry_text
from nfkit.conntrack.table import ConntrackTable
from nfkit.errors import CapabilityError
from nfkit.ha import control, scheduler
from nfkit.ha.conf import Conf, describe
from nfkit.ha.engine import Options, Peer, Selection, SyncEngine
from nfkit.ha.ftfw import FtfwSession
from nfkit.ha.notrack import PlainSession
from nfkit.ha.transport import SyncSocket
from nfkit.service.daemon import Service, StatusServer

log = logging.getLogger("nfkit.ha")

TICK = 0.1  # seconds between heartbeat checks (ALIVE is due after a quiet second)


class _ConntrackdFormatter(logging.Formatter):
    LEVELS = {"INFO": "notice", "WARNING": "WARNING", "ERROR": "ERROR", "DEBUG": "debug"}

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(record.created))
        level = self.LEVELS.get(record.levelname, record.levelname)
        return f"[{stamp}] (pid={record.process}) [{level}] {record.getMessage()}"


def setup_logging(conf: Conf, console: bool) -> None:
    """Log as conntrackd does: to LogFile (if any) and, in the foreground, to stderr."""
    logger = logging.getLogger("nfkit.ha")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fmt = _ConntrackdFormatter()
    handlers: list[logging.Handler] = []
    if conf.logfile:
        try:
            handlers.append(logging.FileHandler(conf.logfile))
        except OSError as exc:
            raise CapabilityError(f"{conf.path}: LogFile {conf.logfile}: {exc.strerror}") from None
    if console:
        handlers.append(logging.StreamHandler())
    for h in handlers:
        h.setFormatter(fmt)
        logger.addHandler(h)


def make_session(conf: Conf) -> FtfwSession | PlainSession:
    seq = int(time.time())  # conntrackd starts its counter at the Unix time
    if conf.mode == "FTFW":
        return FtfwSession(seq=seq, window=conf.ack_window, resend_limit=conf.resend_queue_size)
    return PlainSession(seq=seq, answers_resync=conf.mode == "NOTRACK")


def make_options(conf: Conf) -> Options:
    alarm = conf.mode == "ALARM"
    # NetlinkBufferSize as given; without it 16 MB (conntrackd then takes the system's
    # default, a fifth of a megabyte, which a burst of a few thousand events overruns)
    rcvbuf = int(conf.tuning.get("NetlinkBufferSize", 0)) or 16 << 20
    return Options(events_rcvbuf=rcvbuf,
                   events_rcvbuf_max=max(rcvbuf, int(conf.tuning.get("NetlinkBufferSizeMaxGrowth", 0))),
                   external_cache=not conf.disable_external_cache, window_tracking=conf.tcp_window_tracking,
                   commit_timeout=conf.commit_timeout, purge_timeout=conf.purge_timeout,
                   refresh_time=conf.refresh_time if alarm else None,
                   cache_timeout=conf.cache_timeout if alarm else None,
                   hello_bulk=conf.mode == "FTFW", expectations=conf.expectation_sync,
                   internal_cache=not conf.disable_internal_cache)


def make_selection(conf: Conf) -> Selection:
    f = conf.filter
    return Selection(f.protocols, f.protocols_accept, list(f.networks), f.networks_accept,
                     f.tcp_states, f.states_accept)


class ControlServer(StatusServer):
    """The UNIX Path: conntrackd's requests (an int) and nfkit's ``status`` (JSON)."""

    def __init__(self, path: Path, daemon: HaDaemon) -> None:
        super().__init__(path, daemon.status)
        self.daemon = daemon

    def reply(self, request: bytes) -> bytes | None:
        if len(request) == control.REQUEST.size and control.REQUEST.unpack(request)[0] in control.KNOWN:
            return self.daemon.request(control.REQUEST.unpack(request)[0]).encode()
        if request.strip() in (b"", b"status"):
            return super().reply(request)
        self.daemon.unknown_requests += 1
        return None


class HaDaemon(Service):
    name = "ha"

    def __init__(self, conf: Conf) -> None:
        self.conf = conf
        self.engine: SyncEngine | None = None
        self.sync: SyncSocket | None = None
        self.peer: Peer | None = None
        self.control: ControlServer | None = None
        self.table: ConntrackTable | None = None
        self.locked = False
        self.unknown_requests = 0
        self.started = time.time()
        self.registry = self._metrics()

    # ---- lifecycle -------------------------------------------------------

    def _lock(self) -> None:
        try:
            fd = os.open(self.conf.lockfile, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except FileExistsError:
            raise CapabilityError(f"lockfile `{self.conf.lockfile}' exists, perhaps conntrackd "
                                  "(or nfkit ha) is already running?") from None
        except OSError as exc:
            raise CapabilityError(f"lockfile {self.conf.lockfile}: {exc.strerror}") from None
        os.close(fd)
        self.locked = True

    def start(self, selector: selectors.BaseSelector) -> None:
        c = self.conf
        self._lock()
        scheduler.apply(c)
        self.control = ControlServer(Path(c.unix_path), self)
        self.control.selector = selector  # a silent client is answered later, never waited for
        selector.register(self.control.sock, selectors.EVENT_READ, self.control.accept)
        self.table = ConntrackTable()
        self.engine = SyncEngine(self.table, make_options(c), make_selection(c))
        self.sync = SyncSocket(c.transport)
        t = c.transport
        self.add_peers(self.engine, self.sync)
        events = self.engine.subscribe()
        selector.register(events.fileno(), selectors.EVENT_READ, self.engine.on_kernel_events)
        if self.engine.exp_events is not None:
            selector.register(self.engine.exp_events.fileno(), selectors.EVENT_READ, self.engine.on_expect_events)
        selector.register(self.sync.fileno(), selectors.EVENT_READ, self._on_sync)
        if c.mode == "FTFW" or c.startup_resync:
            self.engine.request_resync()
        log.info("%s mode over %s %s port %d%s; %d entries in the internal cache", c.mode, t.kind, t.address,
                 t.port, f" on {t.interface}" if t.interface else "", len(self.engine.internal))
        # what was loaded lives as long as the daemon, and a burst of entries allocates without
        # making cycles: Python's collection every 700 allocations cost ~10 % of a 100,000-entry sync
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 20, 100)
        log.info("initialization completed")

    def add_peers(self, engine: SyncEngine, sock: SyncSocket) -> None:
        """The peer the Sync block names (nfkit.ha.cluster adds one session per cluster peer)."""
        self.peer = Peer(f"{sock.dest[0]}:{sock.dest[1]}", make_session(self.conf), sock.send)
        engine.add_peer(self.peer)

    def _on_sync(self) -> None:
        assert self.sync is not None and self.engine is not None and self.peer is not None
        waiting = [data for data, _addr in self.sync.receive()]
        if waiting:
            self.engine.on_datagrams(self.peer, waiting)

    def tick(self) -> float | None:
        if self.engine is not None:
            self.engine.tick()
        return TICK

    def stop(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.sync is not None:
            self.sync.close()
        if self.engine is not None:
            self.engine.close()
        if self.table is not None:
            self.table.close()
        if self.locked:
            try:
                os.unlink(self.conf.lockfile)
            except FileNotFoundError:
                pass
        log.info("---- shutdown received ----")

    # ---- conntrackd's client requests -----------------------------------------

    def request(self, code: int) -> str:
        e = self.engine
        assert e is not None
        c = control
        if code in (c.STATS, c.EXP_STATS, c.STATS_PROCESS, c.STATS_QUEUE, c.STATS_CACHE):
            return c.stats_text(self.status(), self.conf.transport.interface or "-") if code == c.STATS else ""
        if code == c.STATS_NETWORK:
            return c.network_text(self.status(), self.conf.transport.interface or "-")
        if code == c.STATS_RUNTIME:
            return c.runtime_text(self.status())
        if code == c.STATS_LINK:
            return c.network_text(self.status(), self.conf.transport.interface or "-").split("\n\n", 2)[-1]
        if code == c.STATS_RSQUEUE:
            return c.rsqueue_text(self.status())
        if code == c.DUMP_INTERNAL:
            if not e.options.internal_cache:  # no cache: the kernel table, as conntrack -L shows it
                return "".join(entry_text(x) + "\n" for x in e.table.entries() if e.selection.accepts(x))
            return c.cache_lines(e.internal_entries(), e.internal_since, reply=True)
        if code == c.DUMP_EXTERNAL:
            return c.cache_lines(e.external, e.external_since, reply=False)
        if code in (c.COMMIT, c.ALL_COMMIT):
            log.info("committing all external caches")
            started = time.monotonic()
            n = e.commit()
            log.info("Committed %d new entries", n)
            log.info("commit has taken %.6f seconds", time.monotonic() - started)
        elif code in (c.ALL_FLUSH_CACHE, c.FLUSH_INT_CACHE, c.FLUSH_EXT_CACHE):
            log.info("flushing caches")
            e.flush_caches(internal=code != c.FLUSH_EXT_CACHE, external=code != c.FLUSH_INT_CACHE)
        elif code in (c.ALL_RESYNC_MASTER, c.RESYNC_MASTER):
            log.info("resync with master conntrack table")
            e.resync_with_kernel()
        elif code == c.SEND_BULK:
            log.info("sending bulk update")
            e.bulk()
            e.flush()
        elif code == c.REQUEST_DUMP:
            log.info("resync requested")
            if self.conf.mode != "ALARM":
                e.request_resync()
        elif code == c.RESET_TIMERS:
            n = e.reset_timers()
            log.info("kernel timeouts of %d entries shortened to %d secs", n, self.conf.purge_timeout)
        elif code == c.ALL_FLUSH_MASTER:
            log.info("flushing kernel conntrack table")
            assert self.table is not None
            self.table.flush()
        elif code == c.KILL:
            log.info("stopping on request (-k)")
            os.kill(os.getpid(), signal.SIGTERM)
        elif code == c.EXP_DUMP_INTERNAL:
            shown = e.internal_exp.values() if e.options.internal_cache else ExpectTable(e.table).entries()
            return "".join(expect_text(x) + "\n" for x in shown)
        elif code == c.EXP_DUMP_EXTERNAL:
            return "".join(expect_text(x) + "\n" for x in e.external_exp.values())
        elif code == c.EXP_COMMIT:
            e.injector.apply_expectations(("update", x) for x in list(e.external_exp.values()))
        elif code == c.EXP_RESYNC_MASTER:
            e.resync_with_kernel()
        return ""

    # ---- status and metrics ------------------------------------------------------

    def status(self) -> dict[str, Any]:
        e = self.engine
        st: dict[str, Any] = {"config": self.conf.path, **describe(self.conf), "uptime": time.time() - self.started}
        if e is None:
            return {**st, "state": "starting"}
        st.update(e.status())
        st.update({
            "state": "running", "internal_counts": vars(e.internal_stats),
            "external_counts": vars(e.external_stats), "external_cache_enabled": e.options.external_cache,
            "internal_cache_enabled": e.options.internal_cache,
            "kernel_resyncs": e.kernel_resyncs, "unknown_requests": self.unknown_requests,
        })
        return st

    def _metrics(self) -> Any:
        from prometheus_client import CollectorRegistry
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        registry = CollectorRegistry()
        daemon = self

        class _Collector:
            def collect(self) -> Any:
                st = daemon.status()
                if st.get("state") != "running":
                    return
                g = GaugeMetricFamily("nfkit_ha_cache_entries", "entries in a cache", labels=["cache"])
                g.add_metric(["internal"], st["internal_cache"])
                g.add_metric(["external"], st["external_cache"])
                yield g
                q = GaugeMetricFamily("nfkit_ha_resend_queue_messages", "messages awaiting an ACK",
                                      labels=["peer"])
                for p in st["peers"]:
                    q.add_metric([p["name"]], p["resend_queue"])
                yield q
                for what, key in (("sent", "messages_sent"), ("received", "messages_received"),
                                  ("resent", "resent"), ("lost", "lost")):
                    c = CounterMetricFamily(f"nfkit_ha_messages_{what}", f"sync messages {what}", labels=["peer"])
                    for p in st["peers"]:
                        c.add_metric([p["name"]], p[key])
                    yield c
                inj = CounterMetricFamily("nfkit_ha_injected_entries", "peer entries put in the kernel",
                                          labels=["result"])
                for k, v in st["inject"].items():
                    inj.add_metric([k], v)
                yield inj

        registry.register(_Collector())  # type: ignore[arg-type]
        return registry


def ready(path: str, timeout: float = 10.0) -> bool:
    """True once a daemon answers on ``path`` (for -d: the parent waits for its child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            s.sendall(b"status\n")
            if s.recv(1):
                return True
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    return False
