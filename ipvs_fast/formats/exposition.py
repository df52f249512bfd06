"""Format machinery: the planned text exposition every format writes through.

The fast renderers (``ingress.IngressRenderer``, ``ipvs.IPVSRenderer``) describe
their output as *families*: ``(spec, runs)`` where ``spec`` is
``(name, type, help, ...)`` and each run is ``(blocks, values, conv)`` --
pre-encoded label blocks (``b'{a="x"} '``), the parallel values, and their
conversion. :func:`plan_exposition` turns that into text format 0.0.4 as a
:class:`Body`: its length known up front, its pieces made as it is read, so
a body can be sent piece by piece and never has to exist whole.
:class:`FamilyRenderer` is what the renderers share on top of that.

Also here: label/HELP escaping, value formatting (prometheus_client's and
Go's), and the helpers that accept a CollectResult, a list of them, a target
or a callable as a collector source.
"""
from __future__ import annotations

import itertools
import math
import struct
from array import array
from typing import Optional

from prometheus_client.metrics_core import (CounterMetricFamily, GaugeMetricFamily, Metric)
from prometheus_client.utils import floatToGoString

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

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


#: OpenMetrics base units a family name may end in (``_seconds``, ``_bytes``)
UNITS = ("seconds", "bytes", "ratio", "volts", "amperes", "joules", "grams", "meters",
         "celsius")


def openmetrics_header(spec) -> str:
    """HELP, TYPE and (when the name ends in a base unit) UNIT lines of
    *spec* in OpenMetrics 1.0.0, without a trailing newline. A counter's
    family is named without ``_total`` (its samples keep it); a counter
    whose name lacks ``_total`` is written as ``unknown``, since calling it
    a counter would rename its samples."""
    name, typ, doc = spec[:3]
    if typ == "counter":
        if name.endswith("_total"):
            name = name[:-6]
        else:
            typ = "unknown"
    doc = escape_help(doc).replace('"', '\\"')
    out = "# HELP %s %s\n# TYPE %s %s" % (name, doc, name, typ)
    for unit in UNITS:
        if name.endswith("_" + unit):
            out += "\n# UNIT %s %s" % (name, unit)
            break
    return out


class Flavour:
    """What the two exposition formats do differently around the same
    samples: content type, family headers, and the trailer after the last
    line. Sample lines (names, labels, values) are byte-for-byte the same."""

    __slots__ = ("name", "content_type", "header", "trailer")

    def __init__(self, name: str, content_type: str, header, trailer: bytes):
        self.name, self.content_type, self.header, self.trailer = (
            name, content_type, header, trailer)

    def __repr__(self) -> str:
        return f"<Flavour {self.name}>"


TEXT = Flavour("text", CONTENT_TYPE, header, b"")
OPENMETRICS = Flavour("openmetrics", OPENMETRICS_CONTENT_TYPE, openmetrics_header, b"# EOF\n")
#: content type -> flavour
FLAVOURS = {f.content_type: f for f in (TEXT, OPENMETRICS)}


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


# Samples per formatted segment: large enough that per-segment Python
# overhead vanishes, small enough that a segment (~0.5 MB of text) is a cheap
# unit of memory and of transfer.
SEGMENT_SAMPLES = 4096

_SAMPLE = {"d": b"%s%d", "u": b"%s%d", "s": b"%s%s"}

# Column codes the C formatter reads (text_format.h IPVS_TF_*), and the
# style of each conversion: "d"/"u" integers, "g" Go's float64 text.
_C_KINDS = {"I": 0, "Q": 1, "i": 2, "q": 3}
_C_STYLES = {"d": 0, "u": 0, "g": 1}


class SampleFormats:
    """``b"\\nNAME%s%d" * n`` per family name, conversion and n, cached
    for full segments (the only sizes that recur); partial segments are
    built when needed. Safe to share between threads (a race only builds a
    format twice)."""

    def __init__(self):
        self._full: dict = {}

    def get(self, name: bytes, conv: str, n: int) -> bytes:
        if n != SEGMENT_SAMPLES:
            return (b"\n" + name + _SAMPLE[conv]) * n
        key = (name, conv)
        fmt = self._full.get(key)
        if fmt is None:
            fmt = self._full[key] = (b"\n" + name + _SAMPLE[conv]) * n
        return fmt


_FORMATS = SampleFormats()


def _exact(vals: list, conv: str):
    """(vals, conv) with ints too large for float64 to hold exactly
    preformatted as bytes (conv "s"). "u": known non-negative; "g":
    every value preformatted the way client_golang prints a float64."""
    if conv == "s" or not vals:
        return vals, conv
    if conv == "g":
        return [go_float(v).encode() for v in vals], "s"
    if max(vals) >= EXACT_LIMIT or (conv == "d" and min(vals) <= -EXACT_LIMIT):
        return [fmt_value(v).encode() for v in vals], "s"
    return vals, conv


class Blocks:
    """A run's label blocks: a list of bytes, plus (built on first use and
    kept as long as the list is, i.e. while the label cache holds it) the
    same blocks packed into one buffer with uint32 offsets, which is what
    the C formatter reads."""

    __slots__ = ("blocks", "_packed")

    def __init__(self, blocks: list):
        self.blocks = blocks
        self._packed = None

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i):
        return self.blocks[i]

    def packed(self, ffi):
        """(data, offsets, data pointer, offsets pointer)."""
        p = self._packed
        if p is None:
            data = b"".join(self.blocks)
            offs = array("I", [0])
            offs.extend(itertools.accumulate(map(len, self.blocks)))
            p = self._packed = (data, offs, ffi.from_buffer("char[]", data),
                                ffi.from_buffer("uint32_t[]", offs))
        return p


class Column:
    """One integer field of every packed record (native struct *code* at
    byte *offset* of each *stride*-byte record in *buf*, host order,
    aligned): a sequence of ints for the Python path, raw memory for the C
    formatter (codes "I", "Q", "i", "q"). *stride* 0: the one value at
    *offset*, *n* times (:meth:`constant`)."""

    __slots__ = ("buf", "offset", "stride", "code", "n", "_view")

    def __init__(self, buf, offset: int, stride: int, code: str, n: int):
        self.buf, self.offset, self.stride, self.code, self.n = buf, offset, stride, code, n
        w = struct.calcsize(code)
        if not stride:
            self._view = [struct.unpack_from(code, buf, offset)[0]] * n
        else:
            self._view = (memoryview(buf).cast("B")[:n * stride].cast(code)
                          [offset // w::stride // w] if n else [])

    @classmethod
    def constant(cls, value: int, n: int) -> "Column":
        """*value* for each of *n* samples (e.g. the 1 of an info metric)."""
        return cls(struct.pack("q", value), 0, 0, "q", n)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        v = self._view[i]
        return v.tolist() if type(v) is memoryview else v


def _native_formatter():
    """(ffi, lib) of the compiled core, or None (the pure-Python path)."""
    global _NATIVE
    if _NATIVE is False:
        try:
            from .._ipvs_core import ffi, lib
            _NATIVE = (ffi, lib) if hasattr(lib, "ipvs_format_samples") else None
        except Exception:   # not built: every segment goes through bytes % tuple
            _NATIVE = None
    return _NATIVE


_NATIVE = False


#: A group id for a value that belongs to no group (:func:`group_sums`).
NO_GROUP = 0xFFFFFFFF


def group_sums(parts: list, ngroups: int):
    """Per group, the sum of the values in it: *parts* is ``[(values,
    group), ...]`` where value i of *values* (a :class:`Column` or a list of
    ints) is added to group ``group[i]`` (an ``array("I")``; NO_GROUP: to
    none). The sums as a :class:`Column` over an ``array("q")`` (summed in C,
    no Python object per value) or as a list of ints (without the compiled
    core, for values that are not Columns, or when a sum leaves int64)."""
    native = _native_formatter()
    if native is not None and ngroups and all(
            type(v) is Column and v.code in _C_KINDS and len(v) == len(g) for v, g in parts):
        ffi, lib = native
        sums = array("q", bytes(8 * ngroups))
        sp = ffi.from_buffer("int64_t[]", sums)
        r = 0
        for v, g in parts:
            if len(g) and r == 0:
                r = lib.ipvs_sum_groups(ffi.from_buffer("uint8_t[]", v.buf) + v.offset,
                                        v.stride, _C_KINDS[v.code], len(g),
                                        ffi.from_buffer("uint32_t[]", g), sp, ngroups)
        if r == 0:
            return Column(sums, 0, 8, "q", ngroups)
        if r != -2:       # the group arrays are ours: only a bug gets here
            raise RuntimeError("group sums: error %d" % r)
    out = [0] * ngroups
    for values, group in parts:
        for g, v in zip(group, values[0:len(values)]):
            if g != NO_GROUP:
                out[g] += v
    return out


def _c_segment(native, name: bytes, bptr, optr, vbuf, offset: int, stride: int, kind: int,
               style: int, a: int, b: int, length: int) -> bytearray:
    # vbuf: the values' buffer as cffi holds it (which keeps it alive while
    # the Body is; a pointer into it would not)
    ffi, lib = native
    out = bytearray(length)
    k = lib.ipvs_format_samples(name, len(name), bptr, optr + a, vbuf + offset + a * stride,
                                stride, kind, style, b - a, ffi.from_buffer(out), length)
    if k != length:    # the inputs are immutable: only a bug gets here
        raise RuntimeError("segment of %r: %d bytes planned, %d written" % (name, length, k))
    return out


def _segment_values(values, conv: str, a: int, b: int):
    vals = values[a:b]
    if type(vals) is not list:
        vals = vals.tolist() if type(vals) is memoryview else list(vals)
    return _exact(vals, conv)


def _py_segment(name: bytes, blocks, values, conv: str, a: int, b: int) -> bytes:
    vals, c = _segment_values(values, conv, a, b)
    args = [None] * (2 * (b - a))
    args[0::2] = blocks[a:b]
    args[1::2] = vals
    return _FORMATS.get(name, c, b - a) % tuple(args)


class Body:
    """An exposition planned before it is written: its exact length is
    known up front (so it can be sent with a Content-Length), its sample
    segments are rendered as it is iterated. Iterating touches nothing
    shared, so it may run in any thread, and more than once."""

    __slots__ = ("parts", "length")

    def __init__(self, parts: list, length: int):
        self.parts = parts
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        for p in self.parts:
            yield p if type(p) is bytes else p[0](*p[1:])


def plan_exposition(families: list, extra=b"", flavour: Flavour = TEXT) -> Body:
    """Text format 0.0.4 (or, with *flavour* OPENMETRICS, OpenMetrics) of
    ``[(spec, runs), ...]`` as a :class:`Body`: *flavour*'s headers, then
    segments of up to SEGMENT_SAMPLES samples, then *extra* (already in
    *flavour*), then *flavour*'s trailer.

    A run is ``(blocks, values, conv)``: label blocks (``b'{a="x"} '``; a
    list or :class:`Blocks`), the parallel values (a list, a 1-D
    memoryview or a :class:`Column`) and ``"d"`` (ints, printed as
    prometheus_client prints them), ``"u"`` (the same, known non-negative),
    ``"g"`` (ints printed as client_golang prints a float64: ``1e+06``) or
    ``"s"`` (preformatted bytes). A family is written when it has runs (even
    empty ones). A segment of a Blocks + Column run ("d", "u", "g") is
    measured and written by the C formatter (unless it holds a value that
    needs float formatting); any other segment by ONE ``bytes % tuple``
    over a cached format, measured beforehand. *families* and everything in
    it must not change while the Body is in use.
    """
    if isinstance(extra, str):
        extra = extra.encode("utf-8")
    if extra and not extra.endswith(b"\n"):
        extra += b"\n"
    parts: list = []
    total = 0
    step = SEGMENT_SAMPLES
    native = _native_formatter()
    for spec, runs in families:
        if not runs:
            continue
        hdr = flavour.header(spec).encode("utf-8")
        if parts:
            hdr = b"\n" + hdr
        parts.append(hdr)
        total += len(hdr)
        name = spec[0].encode()
        per = 1 + len(name)
        for blocks, values, conv in runs:
            n = len(blocks)
            c_run = (native is not None and n and type(blocks) is Blocks
                     and type(values) is Column and conv in _C_STYLES
                     and values.code in _C_KINDS and n == len(values))
            if c_run:
                ffi, lib = native
                _, offs, bptr, optr = blocks.packed(ffi)
                vbuf = ffi.from_buffer("uint8_t[]", values.buf)
                vptr = vbuf + values.offset
                stride, kind, style = values.stride, _C_KINDS[values.code], _C_STYLES[conv]
            for a in range(0, n, step):
                b = min(a + step, n)
                if c_run:
                    k = lib.ipvs_format_length(len(name), optr + a, vptr + a * stride, stride,
                                               kind, style, b - a)
                    if k >= 0:
                        parts.append((_c_segment, native, name, bptr, optr, vbuf,
                                      values.offset, stride, kind, style, a, b, k))
                        total += k
                        continue
                vals, c = _segment_values(values, conv, a, b)
                total += (per * (b - a) + sum(map(len, blocks[a:b]))
                          + (sum(map(len, vals)) if c == "s"
                             else sum(map(len, map(str, map(int, vals))))))
                parts.append((_py_segment, name, blocks, values, conv, a, b))
    if parts:
        parts.append(b"\n")
        total += 1
    if extra:
        parts.append(extra)
        total += len(extra)
    if flavour.trailer:
        parts.append(flavour.trailer)
        total += len(flavour.trailer)
    return Body(parts, total)


def render_exposition(families: list, extra=b"", flavour: Flavour = TEXT) -> bytes:
    """:func:`plan_exposition` as one bytes."""
    body = plan_exposition(families, extra, flavour)
    out = b"".join(body)
    if len(out) != body.length:    # the plan is the Content-Length: keep it honest
        raise RuntimeError("exposition of %d bytes, %d planned" % (len(out), body.length))
    return out


def finish_families(families: list, build_info_spec, build_info: Optional[dict],
                    keep) -> list:
    """*families* with the build-info family appended (when *build_info*
    is given; value 1, labelled by it) and only the families whose name
    passes *keep* (all when None)."""
    if build_info is not None:
        families.append((build_info_spec, [([label_block(build_info).encode()], [1], "d")]))
    if keep is not None:
        families = [f for f in families if keep(f[0][0])]
    return families


class FamilyRenderer:
    """What the fast renderers share: :meth:`render` (bytes),
    :meth:`render_pieces` (a :class:`Body`) and :meth:`families`, over a
    subclass's ``_families(results, build_info)``, which runs under
    ``self._lock`` (it updates the label cache)."""

    #: Whether the format labels fwmark services with their published port,
    #: which collection reads from iptables (a process per read): only
    #: the ingress format does.
    uses_port_map = False
    #: Whether the format shows per-service/destination counters, which only
    #: the netlink dump has (one request per service). Without them the
    #: namespace's /proc/net/ip_vs is read instead: a few hundred page reads.
    uses_counters = True

    def render(self, results, build_info: Optional[dict] = None, extra="") -> bytes:
        """Text format 0.0.4 for *results*; *extra* (already formatted
        exposition text, str or bytes, e.g. process metrics) is appended."""
        return render_exposition(self.families(results, build_info), extra)

    def render_pieces(self, results, build_info: Optional[dict] = None, extra="",
                      flavour: Flavour = TEXT) -> Body:
        """:meth:`render` as a :class:`Body` (in *flavour*): its length is
        known now (the label cache is updated now too); its text is made as
        it is iterated (in any thread, without the renderer's lock), so a
        body is never held whole unless its reader is slow."""
        return plan_exposition(self.families(results, build_info), extra, flavour)

    def families(self, results, build_info: Optional[dict] = None) -> list:
        """``[(spec, runs), ...]`` for :func:`plan_exposition`."""
        results = as_results(results)
        with self._lock:
            return self._families(results, build_info)


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
