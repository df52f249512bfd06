"""Series every format carries, whatever its own families: the exporter's
own per-namespace counters and the opt-in Docker Swarm names. The
:class:`~ipvs_fast.exporter.Exporter` appends them (as text) after the
format's body, so drop-in formats keep their series exactly as they are.
"""
from __future__ import annotations

from .exposition import escape_label_value, header, label_block

SCRAPE_ERRORS = ("ipvs_scrape_errors_total", "counter",
                 "Collections of IPVS in this namespace that failed or missed the scrape "
                 "deadline, since the exporter started (or the namespace appeared)")
SWARM_SERVICE_INFO = ("ipvs_swarm_service_info", "gauge",
                      "Docker Swarm service owning an fwmark service of the namespace, "
                      "value 1 (join on namespace, fwmark)")

FAMILIES = (SCRAPE_ERRORS, SWARM_SERVICE_INFO)


def scrape_errors_text(results) -> str:
    """``ipvs_scrape_errors_total{namespace}`` for every result."""
    if not results:
        return ""
    lines = [header(SCRAPE_ERRORS)]
    lines += ['%s{namespace="%s"} %d' % (SCRAPE_ERRORS[0], escape_label_value(r.namespace),
                                          r.scrape_errors) for r in results]
    return "\n".join(lines) + "\n"


def swarm_info_text(rows) -> str:
    """``ipvs_swarm_service_info`` from label dicts (one series each)."""
    if not rows:
        return ""
    lines = [header(SWARM_SERVICE_INFO)]
    lines += ["%s%s1" % (SWARM_SERVICE_INFO[0], label_block(r)) for r in rows]
    return "\n".join(lines) + "\n"
