"""IPv6 NAT: checksum-neutral prefix translation (NPTv6, RFC 6296) and stateful NAT66.

`npt` is the RFC's mapping as arithmetic, with no kernel and no I/O: what
`nfkit nat66 map` prints, what the tests hold the kernel's SNPT/DNPT targets to.
"""
