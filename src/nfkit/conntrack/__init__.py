"""nfkit.conntrack: the conntrack table from Python, with selective flush in milliseconds.

Entries (`Entry`, `Tuple`, `Status`, `TcpState`), filters applied by the kernel
where it can and in Python otherwise (`Filter`, `filter_from_options`), and the
table itself over ctnetlink (`ConntrackTable`: entries, count, get, create,
create_many, update, delete, flush, delete_matching, stats, stats_cpu, events).
Text (conntrack -L's format) and JSON lines live in `nfkit.conntrack.formats`.
"""

from nfkit.conntrack.filter import Filter, Prefix, filter_from_options
from nfkit.conntrack.model import Counters, Entry, Status, TcpState, Tuple
from nfkit.conntrack.table import ConntrackTable, CreateResult, DeleteResult, Event, EventStream

__all__ = ["ConntrackTable", "Counters", "CreateResult", "DeleteResult", "Entry", "Event", "EventStream", "Filter",
           "Prefix", "Status", "TcpState", "Tuple", "filter_from_options"]
