"""`nfkit ha`: conntrackd's state sync, with conntrackd's command line.

    nfkit ha -C /etc/conntrackd/conntrackd.conf          # the daemon, in the foreground (-d: background)
    nfkit ha -C FILE -s | -i | -e | -c | -f | -R | -n | -B | -t | -k | -F   # conntrackd's client requests
    nfkit ha status [-C FILE] [--json]
    nfkit ha unit [-C FILE]
    nfkit ha rules [-C FILE] [--serve share|all|none] [--apply] [--script CONNTRACKD_CONF] [--follow]
                                                           # a stock conntrackd cluster node's tables
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from nfkit.ha.conf import DEFAULT_PATH

_CLIENT = ("-s", "-i", "-e", "-c", "-f", "-R", "-F", "-n", "-B", "-t", "-k")


def _optional(flag: str, dest: str, help: str) -> Callable[[Any], Any]:
    return click.option(flag, dest, is_flag=False, flag_value="", default=None, metavar="[WHAT]", help=help)


@click.group(invoke_without_command=True)
@click.option("-C", "config_path", default=DEFAULT_PATH, show_default=True, type=click.Path(dir_okay=False),
              help="conntrackd.conf (General and Sync blocks).")
@click.option("-d", "background", is_flag=True, help="Run in the background (daemon mode).")
@_optional("-s", "stats", "Statistics [network|cache|runtime|link|rsqueue|queue|ct|expect].")
@_optional("-i", "internal", "Internal cache (this node's entries) [ct|expect].")
@_optional("-e", "external", "External cache (the peers' entries) [ct|expect].")
@_optional("-c", "commit", "Commit the external cache into the kernel table [ct|expect].")
@_optional("-f", "flush", "Flush the caches [internal|external].")
@_optional("-R", "resync", "Resync the internal cache with the kernel table [ct|expect].")
@click.option("-F", "flush_kernel", is_flag=True, help="Flush the kernel conntrack table.")
@click.option("-n", "request_resync", is_flag=True, help="Ask the peer to resend its table.")
@click.option("-B", "bulk", is_flag=True, help="Send the internal cache to the peer.")
@click.option("-t", "reset_timers", is_flag=True, help="Shorten kernel timeouts to PurgeTimeout.")
@click.option("-k", "kill", is_flag=True, help="Stop the daemon.")
@click.option("--metrics", default=None, metavar="HOST:PORT", help="Serve Prometheus metrics there.")
@click.pass_context
def ha(ctx: click.Context, config_path: str, background: bool, stats: str | None, internal: str | None,
       external: str | None, commit: str | None, flush: str | None, resync: str | None, flush_kernel: bool,
       request_resync: bool, bulk: bool, reset_timers: bool, kill: bool, metrics: str | None) -> None:
    """conntrackd's state sync (FTFW, NOTRACK, ALARM over UDP or multicast), read from conntrackd.conf.

    With only -C it runs the daemon in the foreground, as conntrackd does; with a
    client option it asks the running daemon (nfkit's or a stock conntrackd) over
    the configuration's UNIX socket and prints the answer.
    """
    if ctx.invoked_subcommand is not None:
        return
    from nfkit.ha.conf import read

    conf = read(config_path)
    chosen = [(flag, value) for flag, value in (
        ("-s", stats), ("-i", internal), ("-e", external), ("-c", commit), ("-f", flush), ("-R", resync),
        ("-F", "" if flush_kernel else None), ("-n", "" if request_resync else None),
        ("-B", "" if bulk else None), ("-t", "" if reset_timers else None), ("-k", "" if kill else None),
    ) if value is not None]
    if len(chosen) > 1:
        raise click.UsageError(f"one client request at a time ({' '.join(f for f, _ in chosen)} given)")
    if chosen:
        _client(conf.unix_path, *chosen[0])
        return
    _daemon(conf, background, metrics)


def _client(path: str, flag: str, word: str) -> None:
    from nfkit.errors import CapabilityError
    from nfkit.ha import control

    code = control.OPTIONS.get((flag, word or None))
    if code is None:
        words = sorted(w for f, w in control.OPTIONS if f == flag and w)
        raise click.UsageError(f"{flag} {word}: unknown (known: {', '.join(words) or 'no word'})")
    try:
        click.echo(control.ask(path, code), nl=False)
    except CapabilityError as exc:
        # conntrackd's client exits 1 when no daemon answers (keepalived's scripts test for it)
        click.echo(f"nfkit ha: {exc}", err=True)
        sys.exit(1)


def _daemon(conf: object, background: bool, metrics: str | None) -> None:
    from nfkit.ha.conf import Conf
    from nfkit.ha.daemon import HaDaemon, ready, setup_logging
    from nfkit.service.daemon import run

    assert isinstance(conf, Conf)
    if background:
        pid = os.fork()
        if pid:
            sys.exit(0 if ready(conf.unix_path) else 1)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    setup_logging(conf, console=not background)
    if conf.cluster is not None:  # nfkit's Cluster block: active-active (nfkit.ha.cluster)
        from nfkit.ha.cluster import ClusterDaemon

        daemon: HaDaemon = ClusterDaemon(conf)
    else:
        daemon = HaDaemon(conf)
    sys.exit(run(daemon, metrics=metrics, registry=daemon.registry))


@ha.command()
@click.option("-C", "config_path", default=DEFAULT_PATH, show_default=True, type=click.Path(dir_okay=False))
@click.option("--socket", "sock", default=None, type=click.Path(), help="The control socket (default: the "
              "configuration's UNIX Path).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(config_path: str, sock: str | None, as_json: bool) -> None:
    """The running daemon: mode, peers, handshake, messages and entries sent, received, resent, lost."""
    from nfkit.ha.conf import read
    from nfkit.service.daemon import query_status

    path = Path(sock) if sock else Path(read(config_path).unix_path)
    st = query_status(path)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(f"{st['mode']} over {st['transport']} {st['address']} port {st['port']}"
               f"{' on ' + st['interface'] if st.get('interface') else ''}; {st.get('state')}")
    click.echo(f"internal cache {st.get('internal_cache', 0)} entries, external cache "
               f"{st.get('external_cache', 0)} ({'on' if st.get('external_cache_enabled') else 'off: injected'})")
    for p in st.get("peers", []):
        heard = "never" if p["last_heard_ago"] is None else f"{p['last_heard_ago']:.1f} s ago"
        click.echo(f"peer {p['name']}: handshake {p['handshake'] or '-'}, heard {heard}; messages sent "
                   f"{p['messages_sent']} (resent {p['resent']}), received {p['messages_received']} (entries "
                   f"{p['entries_received']}), lost {p['lost']}, resend queue {p['resend_queue']}")
    i = st.get("inject", {})
    if i:
        click.echo("injected: " + " ".join(f"{k}={v}" for k, v in i.items()))
    if "cluster" in st:
        _cluster_status(st["cluster"])


def _cluster_status(c: dict[str, Any]) -> None:
    click.echo(f"cluster node {c['node']} of {c['nodes']}: {'ready' if c['ready'] else 'not ready'}, "
               f"members {c['members']}, serving {len(c['serves'])} of {c['buckets']} buckets"
               f"{', answering ARP' if c['answers_arp'] else ''}; SNAT ports {c['snat_ports'][0]}-"
               f"{c['snat_ports'][1]}; split brain rule: {c['split_brain']}")
    for p in c["peers"]:
        heard = ", ".join(f"{k} {v:.2f} s ago" for k, v in sorted(p["heard_ago"].items())) or "never"
        stock = " (stock conntrackd)" if p.get("daemon") == "conntrackd" else ""
        click.echo(f"  node {p['node']}{stock}: {'alive' if p['alive'] else 'dead'}"
                   f"{', ready' if p['ready'] else ''}, serving {p['serves']} buckets, heard {heard}, "
                   f"deaths {p['deaths']}")
    for t in c["takeovers"][-3:]:
        click.echo(f"  took {t['buckets']} buckets" + (f" {t['after_death_s']:.3f} s after a peer's death"
                                                      if t["after_death_s"] is not None else ""))


@ha.command()
@click.option("-C", "config_path", default=DEFAULT_PATH, show_default=True, type=click.Path(dir_okay=False))
@click.option("--serve", type=click.Choice(["share", "all", "none"]), default="share", show_default=True,
              help="share: its static share (conntrackd alive beside nfkit nodes); all: every bucket and "
                   "ARP/ND answered (it is alone); none: nothing.")
@click.option("--apply", "apply_", is_flag=True, help="Install the tables (each in one commit) instead of "
              "printing them.")
@click.option("--script", "script_for", default=None, metavar="CONNTRACKD_CONF",
              help="Print instead the watch script that takes every bucket while the nfkit peer is silent "
                   "(CONNTRACKD_CONF: the file the node's conntrackd runs with).")
@click.option("--follow", is_flag=True, help="The watch script's helper: read share, all or none from stdin, "
              "a line each, install those tables at once (made at the start) and answer \"serving WORD\".")
def rules(config_path: str, serve: str, apply_: bool, script_for: str | None, follow: bool) -> None:
    """The nf_tables tables of a stock conntrackd node of a Cluster (its Node has Daemon conntrackd;
    FILE names it as ThisNode; run on that node: its interfaces' MACs are read)."""
    from nfkit.errors import InputError
    from nfkit.ha.cluster import stock_node_tables
    from nfkit.ha.conf import read

    conf = read(config_path)
    cc = conf.cluster
    if cc is None:
        raise InputError(f"{config_path}: no Cluster block")
    if not cc.me.stock:
        raise InputError(f"{config_path}: ThisNode {cc.this_node} is an nfkit node (its daemon installs its "
                         "rules); `nfkit ha rules` is for a Node with Daemon conntrackd")
    if script_for is not None:
        from nfkit.ha.stocknode import watch_script

        nfkit = str(Path(sys.argv[0]).resolve()) if Path(sys.argv[0]).name == "nfkit" else "nfkit"
        click.echo(watch_script(nfkit, str(Path(config_path).resolve()), str(Path(script_for).resolve()),
                                round(cc.stock_dead_time * 1000)), nl=False)
        return
    if follow:
        from nfkit.ha import scheduler
        from nfkit.ha.stocknode import follow as follow_words

        def say(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        # conntrackd's policy (its General Scheduler; RR 99 without one): a takeover's commits wait
        # for no time slice on a loaded machine
        scheduler.apply(conf)
        follow_words(cc, sys.stdin, say)
        return
    tables = stock_node_tables(cc, serve)
    if not apply_:
        click.echo("\n".join(text for _owned, text in tables), nl=False)
        return
    from nfkit.ha.cluster import load_text

    for owned, text in tables:
        owned.replace(load_text(text))


@ha.command()
@click.option("-C", "config_path", default=DEFAULT_PATH, show_default=True)
def unit(config_path: str) -> None:
    """Print the systemd unit (install it as /etc/systemd/system/nfkit-ha.service)."""
    from nfkit.service.systemd import unit as make_unit

    text = make_unit("ha", "conntrackd-compatible state sync", config_path)
    click.echo(text.replace(" ha run -c ", " ha -C "), nl=False)
