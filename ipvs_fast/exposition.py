"""Shared text-exposition machinery for every output format.

The fast renderers (``ingress.Renderer``, ``ipvsfmt.IPVSRenderer``) describe
their output as *families*: ``(spec, runs)`` where ``spec`` is
``(name, type, help, ...)`` and each run is ``(blocks, values, conv)`` --
a list of pre-encoded label blocks (``b'{a="x"} '``), a parallel list of
values, and ``"d"`` (values are ints) or ``"s"`` (values are preformatted
bytes). :class:`FormatCache` turns that into text format 0.0.4 with ONE
``bytes % tuple`` over a format string that is kept between renders while
the family shapes do not change.

Also here: label/HELP escaping, value formatting (prometheus_client's and
Go's), and the helpers that accept a CollectResult, a list of them, a target
or a callable as a collector source.
"""
from __future__ import annotations

import math
from typing import Optional

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Integers are printed as integers. From 2**53 on, float64 (what Prometheus
# and prometheus_client store) cannot hold every integer; such values are
# printed like prometheus_client does (floatToGoString), so that both
# outputs parse to the very same sample values.
EXACT_LIMIT = 2 ** 53


def escape_label_value(v: str) -> str:
    if "\\" in v or "\n" in v or '"' in v:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return v


def escape_help(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")


def label_block(labels: dict) -> str:
    """``{a="x",b="y"} `` (sorted names, escaped values, trailing space)."""
    return "{" + ",".join('%s="%s"' % (k, escape_label_value(v))
                          for k, v in sorted(labels.items())) + "} "


def header(spec) -> str:
    """HELP and TYPE lines of *spec*, without a trailing newline."""
    name, typ, doc = spec[:3]
    return "# HELP %s %s\n# TYPE %s %s" % (name, escape_help(doc), name, typ)


def fmt_value(v) -> str:
    if isinstance(v, int) and -EXACT_LIMIT < v < EXACT_LIMIT:
        return str(v)
    if isinstance(v, float) and v.is_integer() and -EXACT_LIMIT < v < EXACT_LIMIT:
        return str(int(v))
    return floatToGoString(v)


def go_float(v) -> str:
    """A float64 as Go's ``strconv.FormatFloat(f, 'g', -1, 64)`` prints it
    (what client_golang's text format writes, e.g. ``1.234567e+06``)."""
    f = float(v)
    if f != f:
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    r = repr(f)                       # shortest round-trip digits, like Go
    neg = r.startswith("-")
    if neg:
        r = r[1:]
    mant, _, e = r.partition("e")
    exp10 = int(e) if e else 0
    ip, _, fp = mant.partition(".")
    digits = (ip + fp).lstrip("0")
    # decimal point position relative to the first significant digit
    dp = len(ip) + exp10 if ip != "0" else exp10 - (len(fp) - len(fp.lstrip("0")))
    digits = digits.rstrip("0") or "0"
    x = dp - 1                        # scientific exponent
    # strconv/ftoa.go: with shortest formatting, %e is used when the
    # exponent is < -4 or >= 6 (eprec = 6).
    if x < -4 or x >= 6:
        m = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return "%s%se%s%02d" % ("-" if neg else "", m, "-" if x < 0 else "+", abs(x))
    if dp <= 0:
        s = "0." + "0" * (-dp) + digits
    elif dp >= len(digits):
        s = digits + "0" * (dp - len(digits))
    else:
        s = digits[:dp] + "." + digits[dp:]
    return ("-" if neg else "") + s


def values_of(col: list):
    """(values, conversion) for one column: ints as-is ('d') unless some
    value needs float formatting, then preformatted bytes ('s')."""
    if col and (max(col) >= EXACT_LIMIT or min(col) <= -EXACT_LIMIT):
        return [fmt_value(v).encode() for v in col], "s"
    return col, "d"


class FormatCache:
    """Renders ``[(spec, runs), ...]`` (see the module doc) as bytes.

    The format (headers plus ``"\\nNAME%s%d"`` per sample) depends only on
    the families and their run lengths/conversions and is rebuilt only when
    those change. Not thread-safe: callers serialize renders.
    """

    def __init__(self):
        self._key: Optional[tuple] = None
        self._fmt: bytes = b""

    def render(self, families: list, extra=b"") -> bytes:
        if isinstance(extra, str):
            extra = extra.encode("utf-8")
        if extra and not extra.endswith(b"\n"):
            extra += b"\n"
        key = []
        total = 0
        for spec, runs in families:
            if runs:
                key.append(spec[0])
                for blocks, _, conv in runs:
                    key.append((len(blocks), conv))
                    total += 2 * len(blocks)
        key.append(bool(extra))
        key = tuple(key)
        if key != self._key:
            self._fmt = self.build_format(families, bool(extra))
            self._key = key
        args = [None] * (total + (1 if extra else 0))
        pos = 0
        for _, runs in families:
            for blocks, values, _ in runs:
                end = pos + 2 * len(blocks)
                args[pos:end:2] = blocks
                args[pos + 1:end:2] = values
                pos = end
        if extra:
            args[pos] = extra
        if not args:
            return self._fmt
        return self._fmt % tuple(args)

    @staticmethod
    def build_format(families, extra: bool) -> bytes:
        parts = []
        for spec, runs in families:
            if not runs:
                continue
            hdr = header(spec).encode("utf-8").replace(b"%", b"%%")
            parts.append(b"\n" + hdr if parts else hdr)
            line = b"\n" + spec[0].encode()
            for blocks, _, conv in runs:
                parts.append((line + (b"%s%d" if conv == "d" else b"%s%s")) * len(blocks))
        if parts:
            parts.append(b"\n")
        if extra:
            parts.append(b"%s")
        return b"".join(parts)


# ---------------------------------------------------------------------------
# prometheus_client side

def family(spec) -> Metric:
    """An empty prometheus_client family for ``(name, type, help, ...)``."""
    name, typ, doc = spec[:3]
    if typ == "counter":
        return CounterMetricFamily(name, doc, labels=[])
    return GaugeMetricFamily(name, doc, labels=[])


def as_results(results) -> list:
    if results is None:
        return []
    if hasattr(results, "namespace") and hasattr(results, "up"):   # one CollectResult
        return [results]
    return list(results)


def results_from(source) -> list:
    """CollectResults from a collector *source*: a callable returning
    results, one target, or an iterable of targets."""
    if hasattr(source, "collect") and not callable(source):       # one target
        return as_results(source.collect())
    if callable(source):
        return as_results(source())
    return [t.collect() for t in source]
