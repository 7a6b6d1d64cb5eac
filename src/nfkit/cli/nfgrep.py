"""`nfkit nfgrep`: compile, list and test nfgrep signatures (classify comes from part B).

Thin: every command calls nfkit.nfgrep and formats.  Errors are NfkitError
subclasses, turned into one line by cli.main.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import click

# (first: its import sets OPENBLAS_NUM_THREADS before any nfgrep command imports numpy)
from nfkit.cli import nfgrep_quick  # noqa: F401
from nfkit.errors import InputError


@click.group()
def nfgrep() -> None:
    """Layer-7 classification: a small compiled language for protocols."""


@nfgrep.command("compile")
@click.argument("source", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="where to write the program (default: SOURCE with .nfgb, or .ebpf)")
@click.option("--target", "target_kind", type=click.Choice(["nfgb", "ebpf"]), default="nfgb",
              show_default=True,
              help="nfgb: nfgrep bytecode; ebpf: the kernel classifier's eBPF instructions")
@click.option("--check", is_flag=True,
              help="with --target ebpf: also load the program into the kernel's verifier")
def compile_cmd(source: str, output: str | None, target_kind: str, check: bool) -> None:
    """Compile FILE.nfg into a verified bytecode program FILE.nfgb (or eBPF, FILE.ebpf)."""
    if target_kind == "ebpf":
        _compile_ebpf(source, output, check)
        return
    from nfkit.nfgrep.bytecode import encode
    from nfkit.nfgrep.compiler import compile_file
    from nfkit.nfgrep.verifier import verify

    program = compile_file(source)
    verified = verify(program)
    blob = encode(program)
    target = Path(output) if output else Path(source).with_suffix(".nfgb")
    try:
        target.write_bytes(blob)
    except OSError as exc:
        raise InputError(f"{target}: cannot write program: {exc.strerror}") from None
    worst = max(verified.costs.values(), default=0)
    click.echo(f"{target}: {len(program.protocols)} protocol(s), {len(blob)} bytes, "
               f"highest step cost bound {worst}")


def _verified_for_ebpf(path: str) -> list[Any]:
    """The file's verified program, after the shipped ones when it runs `after` them."""
    from nfkit.nfgrep.ebpf.program import load_verified

    own = _load_verified(path)
    prog = own.program
    names = {prog.text(p.name) for p in prog.protocols}
    if any(p.after is not None and prog.text(p.after) not in names for p in prog.protocols):
        return [*load_verified(None), own]
    return [own]


def _compile_ebpf(source: str, output: str | None, check: bool) -> None:
    from nfkit.nfgrep.ebpf.insn import encode as encode_ebpf
    from nfkit.nfgrep.ebpf.program import Classifier, compile_rules

    verified = _verified_for_ebpf(source)
    compiled = compile_rules(verified)
    dest = Path(output) if output else Path(source).with_suffix(".ebpf")
    try:
        dest.write_bytes(encode_ebpf(compiled.insns))
    except OSError as exc:
        raise InputError(f"{dest}: cannot write program: {exc.strerror}") from None
    slots = sum(i.slots for i in compiled.insns)
    kept = sum(1 for v in compiled.translated.values() if v == "yes")
    click.echo(f"{dest}: {slots} eBPF instructions (map references unresolved), "
               f"{kept}/{len(compiled.translated)} steps translated, "
               f"flow entry {compiled.value_size} bytes")
    for step, why in compiled.translated.items():
        if why != "yes":
            click.echo(f"  {step}: {why}")
    if check:
        with Classifier(verified, log_level=4) as loaded:  # 4: the verifier's statistics
            stats = [line for line in loaded.prog.log.splitlines() if line.startswith("processed")]
            click.echo(f"kernel verifier: accepted ({loaded.prog.insn_count} instructions"
                       + (f"; {stats[-1]}" if stats else "") + ")")


def _load_verified(path: str) -> Any:
    from nfkit.nfgrep.loader import load_program
    from nfkit.nfgrep.verifier import verify

    return verify(load_program(path))


@nfgrep.command("disasm")
@click.argument("program", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="one JSON object instead of the listing")
@click.option("--no-verify", is_flag=True,
              help="list a program the verifier refuses (the reason comes first); never runs it")
@click.option("--target", type=click.Choice(["nfgb", "ebpf"]), default="nfgb", show_default=True,
              help="ebpf: the kernel classifier's instructions, step by step")
@click.option("--step", "step", metavar="PROTOCOL.STEP",
              help="with --target ebpf: only this step's instructions (and its loop bodies)")
def disasm_cmd(program: str, as_json: bool, no_verify: bool, target: str,
               step: str | None) -> None:
    """List a program (.nfgb, or .nfg compiled on the fly) instruction by instruction.

    The program is verified first; the listing shows each step's cost bound.
    """
    if target == "ebpf":
        _disasm_ebpf(program, step, as_json)
        return
    from nfkit.nfgrep.bytecode import DIRECTIONS, OPS, describe_instr, disassemble
    from nfkit.nfgrep.errors import VerifierError
    from nfkit.nfgrep.loader import load_program
    from nfkit.nfgrep.verifier import verify

    if no_verify and not as_json:
        unverified = load_program(program)
        try:
            costs = verify(unverified).costs
        except VerifierError as exc:
            click.echo(f"# refused: {exc}")
            click.echo(disassemble(unverified), nl=False)
            return
        click.echo(disassemble(unverified, costs), nl=False)
        return
    verified = _load_verified(program)
    prog = verified.program
    if not as_json:
        click.echo(disassemble(prog, verified.costs), nl=False)
        return
    out = []
    for pi, proto in enumerate(prog.protocols):
        out.append({
            "protocol": prog.text(proto.name),
            "transports": [n for bit, n in ((1, "tcp"), (2, "udp")) if proto.transports & bit],
            "ports": proto.ports,
            "after": None if proto.after is None else prog.text(proto.after),
            "variables": [prog.text(v) for v in proto.variables],
            "steps": [{
                "name": prog.text(s.name), "watch": s.watch,
                "direction": DIRECTIONS[s.direction], "cost": verified.costs[(pi, si)],
                "code": [{"op": OPS[i.op].name, "a": i.a, "b": i.b, "c": i.c,
                          "text": describe_instr(prog, i)} for i in s.code],
            } for si, s in enumerate(proto.steps)],
        })
    click.echo(json.dumps(out, indent=2))


def _disasm_ebpf(program: str, step: str | None, as_json: bool) -> None:
    from nfkit.nfgrep.ebpf.insn import describe
    from nfkit.nfgrep.ebpf.program import compile_rules
    from nfkit.nfgrep.ebpf.spec import HELPER_NAMES

    compiled = compile_rules(_verified_for_ebpf(program))
    if step is not None and step not in compiled.translated:
        raise InputError(f"--step {step}: no such step (one of: "
                         f"{', '.join(compiled.translated)})")
    wanted = None
    if step is not None:
        proto, _, name = step.partition(".")
        wanted = f"protocol {proto} step {name}"
    rows: list[dict[str, Any]] = []
    slot = 0
    for insn in compiled.insns:
        owner = compiled.owner(slot)
        if wanted is None or owner.startswith(wanted):
            rows.append({"slot": slot, "owner": owner, "text": describe(insn, slot, HELPER_NAMES),
                         "note": compiled.comments.get(slot)})
        slot += insn.slots
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    shown = None
    for row in rows:
        if row["owner"] != shown:
            shown = row["owner"]
            click.echo(f"; {shown}")
        if row["note"]:
            click.echo(f"      ; {row['note']}")
        click.echo(f"{row['slot']:5d}: {row['text']}")


_ESCAPE = re.compile(rb"\\(x[0-9A-Fa-f]{2}|[rnt0\\]|x.{0,2}|.?)", re.DOTALL)
_ESCAPED = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def _unescape(text: str, option: str) -> bytes:
    """--payload text: \\r \\n \\t \\0 \\\\ and \\xHH escapes, the rest as given.

    The rest is the argument's own bytes (os.fsencode: bytes that are not
    UTF-8 come through as they were typed).  Raises click.BadParameter on
    any other escape.
    """

    def one(m: re.Match[bytes]) -> bytes:
        e = m.group(1)
        if len(e) == 3 and e[:1] == b"x" and all(c in b"0123456789abcdefABCDEF" for c in e[1:]):
            return bytes([int(e[1:], 16)])
        if e in _ESCAPED:
            return _ESCAPED[e]
        shown = e.decode("ascii", "backslashreplace")
        raise click.BadParameter(f"unknown escape '\\{shown}': use \\r \\n \\t \\0 "
                                 "\\\\ or \\xHH (two hex digits)", param_hint=option)
    return _ESCAPE.sub(one, os.fsencode(text))


def _rules_for_test(path: str) -> Any:
    """The file's signatures, plus the shipped ones it runs after when it names them."""
    from nfkit.nfgrep.engine import signatures_of
    from nfkit.nfgrep.loader import load_rules

    own = signatures_of(_load_verified(path))
    names = {s.name for s in own}
    missing = {s.after for s in own if s.after is not None and s.after not in names}
    if missing:
        library = [s for s in load_rules(None) if s.name not in names]
        own = library + own
    return own


def _describe_event(ev: Any) -> str:
    arrow = {0: "client", 1: "server", 2: "either", -1: "-"}.get(ev.direction, "?")
    text = f"{ev.protocol}/{ev.step} ({arrow}): {ev.result}"
    if ev.result in ("held", "classified"):
        text += f" at {ev.offset}"
    if ev.fields:
        text += "  " + " ".join(f"{k}={v!r}" for k, v in ev.fields)
    return text


@nfgrep.command("test")
@click.argument("rules", type=click.Path(dir_okay=False))
@click.argument("captures", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--payload", "payloads", multiple=True,
              help="client-to-server bytes (\\r \\n \\xHH escapes); repeat for more packets")
@click.option("--reply", "replies", multiple=True,
              help="server-to-client bytes, fed after the payload of the same rank")
@click.option("--udp", is_flag=True, help="feed payloads as UDP datagrams (default: TCP stream)")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="server port of the test flow (a hint only)")
@click.option("--json", "as_json", is_flag=True, help="events and verdicts as JSON")
def test_cmd(rules: str, captures: tuple[str, ...], payloads: tuple[str, ...],
             replies: tuple[str, ...], udp: bool, port: int, as_json: bool) -> None:
    """Check RULES (.nfg or .nfgb), then show which steps held on which packets.

    Packets come from --payload/--reply, or from CAPTURE files (pcap, pcapng).
    A damaged capture is used up to the damage, reported on stderr, and the
    exit status is 1 (as classify).
    """
    from nfkit.nfgrep.engine import Engine

    signatures = _rules_for_test(rules)
    engine = Engine(signatures)
    report: list[dict[str, Any]] = []
    lines: list[str] = []
    own = {s.name for s in signatures if s.origin == str(rules) or s.origin.endswith(rules)}
    lines.append(f"{rules}: ok, {len(own)} protocol(s): {', '.join(sorted(own))}")
    if not payloads and not replies and not captures:
        if as_json:
            click.echo(json.dumps({"rules": rules, "protocols": sorted(own), "flows": []}))
        else:
            click.echo("\n".join(lines))
        return

    packets_seen: list[dict[str, Any]] = []

    def trace(ev: Any) -> None:
        packets_seen[-1]["events"].append({
            "protocol": ev.protocol, "step": ev.step, "result": ev.result,
            "offset": ev.offset, "fields": dict(ev.fields)})
        lines.append("    " + _describe_event(ev))

    engine.trace = trace
    flows: list[tuple[str, Any]] = []
    if payloads or replies:
        st = engine.new_flow("udp" if udp else "tcp", 40000, port)
        order: list[tuple[int, bytes]] = []
        for i in range(max(len(payloads), len(replies))):
            if i < len(payloads):
                order.append((0, _unescape(payloads[i], "--payload")))
            if i < len(replies):
                order.append((1, _unescape(replies[i], "--reply")))
        lines.append(f"flow {'udp' if udp else 'tcp'} client:40000 -> server:{port}")
        for n, (d, data) in enumerate(order, 1):
            packets_seen.append({"packet": n, "direction": "client" if d == 0 else "server",
                                 "bytes": len(data), "events": []})
            lines.append(f"  packet {n} {'client->server' if d == 0 else 'server->client'} "
                         f"{len(data)} bytes")
            engine.feed(st, d, data)
        flows.append(("payload", st))
    damage: list[str] = []
    for capture in captures:
        flows += _test_capture(engine, capture, lines, packets_seen, damage)
    for name, st in flows:
        verdict = st.app or "unknown"
        line = f"verdict {name}: {verdict}"
        if len(st.chain) > 1:
            line += f" (chain {' > '.join(st.chain)})"
        if st.fields:
            line += "  " + " ".join(f"{k}={v!r}" for k, v in st.fields.items())
        for e in st.expectations:
            line += f"\n  expects {e.label} over {e.transport} to {e.addr or '?'}:{e.port}"
        lines.append(line)
        report.append({"flow": name, "app": st.app, "chain": st.chain, "fields": st.fields,
                       "done": st.done,
                       "expectations": [e._asdict() for e in st.expectations]})
    if as_json:
        click.echo(json.dumps({"rules": rules, "protocols": sorted(own),
                               "packets": packets_seen, "flows": report}, indent=2))
    else:
        click.echo("\n".join(lines))
    for stop in damage:
        click.echo(f"nfkit: capture {stop}", err=True)
    if damage:
        sys.exit(1)


class _Announcing:
    """The engine seen by the capture classifier: says which flow and packet comes next."""

    def __init__(self, engine: Any, lines: list[str], packets_seen: list[dict[str, Any]]) -> None:
        self.engine = engine
        self.lines = lines
        self.packets_seen = packets_seen
        self.flows: list[tuple[str, Any]] = []
        self.names: dict[int, str] = {}
        self.count = 0

    def new_flow(self, **kw: Any) -> Any:
        st = self.engine.new_flow(**kw)
        name = (f"{kw['transport']} {kw.get('client_addr')}:{kw['client_port']} -> "
                f"{kw.get('server_addr')}:{kw['server_port']}")
        self.lines.append(f"flow {name}")
        self.flows.append((name, st))
        self.names[id(st)] = name
        if st.done and st.app:
            self.lines.append(f"    expected flow: {st.app}")
        return st

    def feed(self, st: Any, direction: int, data: bytes) -> None:
        if st.done:
            return
        self.count += 1
        name = self.names.get(id(st), "?")
        self.packets_seen.append({"packet": self.count, "flow": name,
                                  "direction": "client" if direction == 0 else "server",
                                  "bytes": len(data), "events": []})
        self.lines.append(f"  data {self.count} [{name}] "
                          f"{'client->server' if direction == 0 else 'server->client'} "
                          f"{len(data)} bytes")
        self.engine.feed(st, direction, data)


def _test_capture(engine: Any, capture: str, lines: list[str],
                  packets_seen: list[dict[str, Any]], damage: list[str]) -> list[tuple[str, Any]]:
    """Run a capture's flows through the engine with tracing (flow table and reassembly)."""
    try:
        from nfkit.nfgrep.classify import Classifier
    except ImportError:  # pragma: no cover - part B ships it
        raise InputError(f"{capture}: reading captures needs nfkit.nfgrep.classify") from None
    announcing = _Announcing(engine, lines, packets_seen)
    classifier = Classifier(announcing, lazy=False)  # every flow shown, payload or not
    classifier.read(capture)
    report = classifier.finish()
    damage += [str(stop) for stop in report.stops]
    return announcing.flows


from nfkit.cli.nfgrep_classify import classify  # noqa: E402 - the group exists first

nfgrep.add_command(classify)
from nfkit.cli.nfgrep_live import live, status, unit  # noqa: E402 - the group exists first

nfgrep.add_command(live)
nfgrep.add_command(status)
nfgrep.add_command(unit)
