"""ha: conntrackd's state-sync protocol (conntrack-tools 1.4.7), sans-I/O.

`spec` declares the wire layout as data, `wire` turns datagrams into messages
and back, `convert` maps conntrack messages to `nfkit.conntrack.Entry` as
conntrackd injects them, and back.  See docs/ha.md.
"""
