"""ipvs_fast: a fast Prometheus exporter for Linux IPVS.

Drop-in replacement for ingress_ipvs_exporter (same flags, metric names,
HELP strings and labels), with a compiled netlink core and a hand-rolled
text-format renderer.
"""
__version__ = "0.1.0"
