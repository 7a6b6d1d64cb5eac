"""Userspace flow table: one stored tuple per flow, a symmetric hash, timeouts, eviction.

See `nfkit.flow.table.FlowTable` and docs/flow.md.
"""

from nfkit.flow.table import (
    FlowTable,
    FlowTuple,
    pack_tuple,
    symmetric_hash,
)
from nfkit.flow.tcpstate import TcpState
from nfkit.flow.timeouts import Timeouts

__all__ = ["FlowTable", "FlowTuple", "TcpState", "Timeouts", "pack_tuple", "symmetric_hash"]
