# Quick start (as root on Debian 12):  make demo   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.nfkit-installed
BENCH_STAMP := $(VENV)/.nfkit-bench-installed

# Debian packages the tests and the demo drive (oracles and traffic makers).
# iptables: its extension modules are how nft prints xt targets (NFQUEUE on this kernel)
APT_TEST := iproute2 iputils-ping iputils-arping nftables conntrack iptables linux-libc-dev \
	tcpdump curl openssl openssh-server openssh-client dnsmasq-base bind9-dnsutils \
	redis-server redis-tools mosquitto mosquitto-clients vsftpd util-linux conntrackd
# nfgrep signature tests (psql and a PostgreSQL server of its own)
APT_TEST += postgresql-client postgresql mariadb-server dovecot-imapd dovecot-pop3d
# ctguard's spoofed SYN flood test
APT_TEST += hping3
# Debian packages only the benchmarks need.
APT_BENCH := $(APT_TEST) coccinelle linux-source-6.12 libndpi-bin ethtool
# bench/nfgrep-ebpf, bench/nat66: bulk TCP through a router or firewall namespace
APT_BENCH += iperf3
# bench/nfgrep-ebpf: new connections from a C load generator to a C server
APT_BENCH += wrk nginx-light

.PHONY: setup demo test bench clean

setup: $(STAMP)
	@scripts/apt-need $(APT_TEST)

$(STAMP): pyproject.toml
	@scripts/apt-need $(APT_TEST)
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || scripts/apt-need python3-venv
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

demo: setup
	$(VENV)/bin/python scripts/demo.py

test: setup
	$(VENV)/bin/python -m pytest

$(BENCH_STAMP): $(STAMP)
	@scripts/apt-need $(APT_BENCH)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	@touch $@

bench: setup $(BENCH_STAMP)
	@scripts/apt-need $(APT_BENCH)
	@set -e; for b in bench/*/run; do echo "== $$b"; $$b; done

clean:
	rm -rf $(VENV) build src/*.egg-info
