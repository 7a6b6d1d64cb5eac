"""What every long-running nfkit program shares, written once.

- `config`: TOML files read against a typed schema; every error names the
  file, the line and the key; unknown keys are errors, not ignored.
- `daemon`: the run loop with signal handling and a clean teardown, a status
  endpoint on a Unix socket, Prometheus metrics on an address of the config's.
- `owntable`: the program's own nf_tables table, installed, replaced and
  removed in one transaction each, so the kernel never holds half of it.
- `systemd`: the unit file of each daemon, from one template.

ctguard, ha, nat66 and nfgrep live stand on it.
"""
