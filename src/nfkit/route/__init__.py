"""The part of iproute2 nfkit needs, over rtnetlink: links, addresses, routes,
policy rules, and their events (nat66 and ctguard react to them).

`spec` holds the numbers and attribute tables (checked against the uapi
headers by tests/route/), `rtnl` the model objects, requests and events.
"""
