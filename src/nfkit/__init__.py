"""nfkit: the systems of the Netfilter Workshop 2010 on today's Linux kernel."""

__version__ = "0.1.0"
