"""`nfkit nfgrep live`, `status`, `unit`: classification in the packet path (NFQUEUE)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from nfkit.errors import InputError

STATUS = "/run/nfkit/nfgrep.sock"


def _queues(queue: int | None, queues: str | None) -> tuple[int, int]:
    if queue is not None and queues is not None:
        raise InputError("--queue and --queues: give one of them")
    if queues is None:
        q = 0 if queue is None else queue
        return q, q
    first, sep, last = queues.partition(":")
    try:
        a, b = int(first), int(last if sep else first)
    except ValueError:
        raise InputError(f"--queues {queues!r}: expected A:B, e.g. 0:3") from None
    if not 0 <= a <= b <= 0xFFFF:
        raise InputError(f"--queues {queues}: queue numbers 0-65535, A <= B")
    return a, b


@click.command("live")
@click.option("--queue", type=int, help="the NFQUEUE number (default 0)")
@click.option("--queues", help="A:B: a range of queues, one worker process each; a connection "
              "stays on one queue (the target's flow hash)")
@click.option("--rules", multiple=True, type=click.Path(),
              help="signature files or directories (default: the shipped library); repeatable")
@click.option("--mark-mask", default="0xff", show_default=True,
              help="the mark bits that carry the app id (contiguous, at least 8 bits)")
@click.option("--max-packets", default=24, show_default=True, type=int,
              help="a flow still undecided after this many packets is marked unknown")
@click.option("--max-bytes", default=4096, show_default=True, type=int,
              help="... or after this many payload bytes (also bounds the queue's copy range)")
@click.option("--json", "as_json", is_flag=True, help="print each decision as one JSON line")
@click.option("--connlabel", default="/etc/connlabel.conf", show_default=True, type=click.Path(),
              help="the connlabel.conf nfkit merges its label names into")
@click.option("--status-socket", default=STATUS, show_default=True, type=click.Path())
@click.option("--metrics", default="", help="HOST:PORT for Prometheus metrics (default: none)")
@click.option("--backend", type=click.Choice(["auto", "ebpf", "queue"]), default="auto",
              show_default=True, help="ebpf: classify in tc (tcx), hand the rest to the queue; "
              "queue: every flow in userspace; auto: ebpf where the kernel allows it")
@click.option("--interface", "interfaces", multiple=True,
              help="ebpf: attach on this interface (repeatable; default: every interface of the "
              "namespace but loopback)")
@click.option("--nice", type=click.IntRange(-20, 19), default=-10, show_default=True,
              help="the queue workers' nice value, and their own scheduling groups' where the "
              "kernel groups tasks by session (autogroup): packets wait in the kernel until a "
              "worker runs, so on a busy machine it should get the CPU first")
def live(queue: int | None, queues: str | None, rules: tuple[str, ...], mark_mask: str,
         max_packets: int, max_bytes: int, as_json: bool, connlabel: str, status_socket: str,
         metrics: str, backend: str, interfaces: tuple[str, ...], nice: int) -> None:
    """Classify flows as they pass and mark them (ct mark under --mark-mask, ct label named
    after the app); runs until SIGTERM or Ctrl-C, then removes its table."""
    from nfkit.nfgrep.live import LiveOptions, LiveService
    from nfkit.nfgrep.registry import parse_mask
    from nfkit.service.daemon import run as run_service

    opts = LiveOptions(queues=_queues(queue, queues), rules=list(rules) or None,
                       mark_mask=parse_mask(mark_mask), max_packets=max_packets, max_bytes=max_bytes,
                       json=as_json, connlabel=connlabel, backend=backend,
                       interfaces=list(interfaces) or None, nice=nice)
    logging.basicConfig(level=logging.INFO, format="nfkit nfgrep: %(message)s", stream=sys.stderr)
    service = LiveService(opts)
    sys.exit(run_service(service, status=Path(status_socket), metrics=metrics,
                         registry=service.metrics_registry))


@click.command("status")
@click.option("--socket", "sock", default=STATUS, show_default=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
def status(sock: str, as_json: bool) -> None:
    """What the running `nfgrep live` decided: flows, apps, queues, overruns."""
    from nfkit.service.daemon import query_status

    found = query_status(Path(sock))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    t = found["total"]
    click.echo(f"back end {found.get('backend', 'queue')}"
               + (f" on {', '.join(found['interfaces'])}" if found.get("interfaces") else "")
               + (f" ({found['backend_reason']})" if found.get("backend_reason") else ""))
    kf = found.get("kernel_flows")
    if kf:
        click.echo("kernel flows: " + " ".join(f"{k}={v}" for k, v in sorted(kf["states"].items()))
                   + "; apps " + (" ".join(f"{k}={v}" for k, v in sorted(kf["apps"].items())) or "-"))
    click.echo(f"packets {t['packets']}, flows {t['flows']}, decided {t['decided']} "
               f"(unknown {t['unknown']}), mean decision {found['mean_decision_ms']} ms, "
               f"ENOBUFS {t['enobufs']}, worker restarts {found['restarts']}")
    click.echo("apps: " + (" ".join(f"{k}={v}" for k, v in sorted(found["apps"].items())) or "-"))
    for q in found["queues"]:
        k = q["kernel"]
        click.echo(f"  queue {q['queue']} pid {q['pid']}: packets {q['packets']}, decided {q['decided']}, "
                   f"kernel waiting {k['waiting']} dropped {k['dropped']} user_dropped {k['user_dropped']}")


@click.command("unit")
@click.option("--queues", default="0:0", show_default=True)
def unit(queues: str) -> None:
    """Print the systemd unit (install as /etc/systemd/system/nfkit-nfgrep.service)."""
    from nfkit.service.systemd import unit as make_unit

    a, b = _queues(None, queues)
    click.echo(make_unit("nfgrep", "classify flows in the packet path and mark them", "",
                         args=f"live --queues {a}:{b}", writable=("/etc/connlabel.conf",)), nl=False)
