"""nfgrep's kernel back end: nfgrep programs compiled to eBPF and run by the kernel.

insn.py (instruction encoder, assembler, disassembler) -> steps.py (one nfgrep step
as an eBPF subprogram) -> program.py (the tc classifier: flows, decision, maps) ->
bpf.py (bpf(2): load with the verifier's log, maps, test runs, links); spec.py and
btf.py hold the kernel constants and check them against the running kernel.
"""
