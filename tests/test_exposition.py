"""The piecewise text exposition (ipvs_fast.formats.exposition.plan_exposition) and
the C formatter behind it, against a line-by-line reference."""
import random
import struct

import pytest

from ipvs_fast.formats import exposition
from ipvs_fast.formats.exposition import (EXACT_LIMIT, SEGMENT_SAMPLES, Blocks, Column, fmt_value,
                                          plan_exposition, render_exposition)

SPEC = ("test_family_total", "counter", "A test family")
REC = struct.Struct("<I4xQ")          # a 16-byte record: u32 at 0, u64 at 8


def records(u32s, u64s) -> bytes:
    return b"".join(REC.pack(a, b) for a, b in zip(u32s, u64s))


def reference(spec, blocks, values, extra=b"") -> bytes:
    """The exposition written out one line at a time."""
    lines = ["# HELP %s %s" % (spec[0], spec[2]), "# TYPE %s %s" % (spec[0], spec[1])]
    lines += ["%s%s%s" % (spec[0], b.decode(), fmt_value(v)) for b, v in zip(blocks, values)]
    return ("\n".join(lines) + "\n").encode() + extra


def sample_blocks(n):
    return [('{address="10.0.%d.%d",port="%d"} ' % (i >> 8 & 255, i & 255, i % 7)).encode()
            for i in range(n)]


@pytest.fixture(params=["native", "python"])
def formatter(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(exposition, "_NATIVE", None)
    elif exposition._native_formatter() is None:
        pytest.fail("the C extension is not built (pip install -e .)")
    return request.param


@pytest.mark.parametrize("n", [1, SEGMENT_SAMPLES - 1, SEGMENT_SAMPLES, 2 * SEGMENT_SAMPLES + 17])
def test_segments_match_reference(formatter, n):
    rnd = random.Random(n)
    u32s = [rnd.randrange(2 ** 32) for _ in range(n)]
    u64s = [rnd.randrange(2 ** 52) for _ in range(n)]
    buf = records(u32s, u64s)
    blocks = sample_blocks(n)
    for col, vals in ((Column(buf, 0, REC.size, "I", n), u32s),
                      (Column(buf, 8, REC.size, "Q", n), u64s)):
        body = plan_exposition([(SPEC, [(Blocks(blocks), col, "u")])], b"x 1\n")
        pieces = list(body)
        assert b"".join(pieces) == reference(SPEC, blocks, vals, b"x 1\n")
        assert len(body) == len(b"".join(pieces))              # known before rendering
        assert list(body) == pieces                             # and it can be read again
        # header, ceil(n / SEGMENT_SAMPLES) segments, final newline, extra
        assert len(pieces) == 1 + -(-n // SEGMENT_SAMPLES) + 2


def test_values_beyond_float_precision_mid_run(formatter):
    """A segment holding a value >= 2**53 is printed the way prometheus_client
    prints it (the C formatter declines it; later segments go on in Python)."""
    n = 3 * SEGMENT_SAMPLES
    u64s = list(range(n))
    u64s[SEGMENT_SAMPLES + 5] = EXACT_LIMIT + 1
    u64s[-1] = 2 ** 64 - 1
    buf = records([0] * n, u64s)
    blocks = sample_blocks(n)
    out = render_exposition([(SPEC, [(Blocks(blocks), Column(buf, 8, REC.size, "Q", n), "u")])])
    assert out == reference(SPEC, blocks, u64s)
    assert b'} 9.007199254740992e+15\n' in out and out.endswith(b'} 1.8446744073709552e+19\n')


def test_plain_lists_and_several_runs(formatter):
    blocks = sample_blocks(5)
    fams = [(SPEC, [(blocks[:2], [1, -2 ** 60], "d"), (Blocks(blocks[2:]), [3, 4, 5], "u")]),
            (("empty_family", "gauge", "no runs"), []),
            (("g", "gauge", "h"), [([b"{} "], [b"1.5"], "s")])]
    out = render_exposition(fams)
    assert out == (reference(SPEC, blocks, [1, -2 ** 60, 3, 4, 5])
                   + b"# HELP g h\n# TYPE g gauge\ng{} 1.5\n")
    assert render_exposition([]) == b""
    assert render_exposition([], "p 1") == b"p 1\n"


def test_c_formatter_refuses_bad_input():
    native = exposition._native_formatter()
    if native is None:
        pytest.fail("the C extension is not built (pip install -e .)")
    ffi, lib = native
    data, offs = b'{a="1"} {a="2"} ', ffi.new("uint32_t[]", [0, 8, 16])
    vals = ffi.from_buffer("uint8_t[]", struct.pack("<QQ", 7, 12345))
    out = bytearray(64)

    def fmt(kind=lib.IPVS_TF_U64, cap=64, v=vals, o=offs, style=lib.IPVS_TF_DECIMAL):
        return lib.ipvs_format_samples(b"m", 1, data, o, v, 8, kind, style, 2,
                                       ffi.from_buffer(out), cap)
    n = fmt()
    assert bytes(out[:n]) == b'\nm{a="1"} 7\nm{a="2"} 12345'
    assert fmt(cap=n) == n and fmt(cap=n - 1) == -1          # exact fit / one byte short
    assert fmt(kind=7) == -1 and fmt(style=9) == -1
    assert fmt(o=ffi.new("uint32_t[]", [8, 0, 16])) == -1   # offsets go backwards
    big = ffi.from_buffer("uint8_t[]", struct.pack("<QQ", 7, 2 ** 53))
    assert fmt(v=big) == -2
    assert fmt(v=big, style=lib.IPVS_TF_GO_FLOAT) == -2
    huge = ffi.from_buffer("uint8_t[]", struct.pack("<QQ", 7, 2 ** 64 - 1))
    assert fmt(v=huge) == -2
    n = fmt(v=huge, kind=lib.IPVS_TF_I64)                    # the same bits as an i64
    assert bytes(out[:n]) == b'\nm{a="1"} 7\nm{a="2"} -1'
    n = fmt(kind=lib.IPVS_TF_U32)                            # low halves of the u64s
    assert bytes(out[:n]) == b'\nm{a="1"} 7\nm{a="2"} 12345'


def test_c_sum_groups_refuses_bad_input():
    native = exposition._native_formatter()
    if native is None:
        pytest.fail("the C extension is not built (pip install -e .)")
    ffi, lib = native
    vals = ffi.from_buffer("uint8_t[]", struct.pack("<qqq", 5, -7, 2 ** 62))
    sums = ffi.new("int64_t[]", 2)

    def run(groups, kind=lib.IPVS_TF_I64, n=3):
        return lib.ipvs_sum_groups(vals, 8, kind, n, ffi.new("uint32_t[]", groups), sums, 2)
    assert run([1, lib.IPVS_TF_NO_GROUP, 1]) == 0 and list(sums) == [0, 5 + 2 ** 62]
    assert run([0, 0, 0]) == 0 and list(sums) == [5 - 7 + 2 ** 62, 5 + 2 ** 62]   # added to
    assert run([0, 2, 0]) == -1                              # a group id out of range
    assert run([0, 0, 0], kind=9) == -1
    assert run([1, 1, 1]) == -2                              # beyond int64: the caller redoes it


# Go's strconv.FormatFloat(float64(v), 'g', -1, 64), as client_golang prints values
GO_FLOAT_CASES = [
    (0, "0"), (1, "1"), (-3, "-3"), (999999, "999999"), (-999999, "-999999"),
    (1000000, "1e+06"), (-1000000, "-1e+06"), (1234567, "1.234567e+06"),
    (1200000, "1.2e+06"), (10 ** 15, "1e+15"), (123456789012345, "1.23456789012345e+14"),
    (2 ** 53 - 1, "9.007199254740991e+15"), (-(2 ** 53 - 1), "-9.007199254740991e+15"),
    (2 ** 53, "9.007199254740992e+15"), (2 ** 53 + 1, "9.007199254740992e+15"),
    (2 ** 63 - 1, "9.223372036854776e+18"), (-(2 ** 63), "-9.223372036854776e+18"),
    (2 ** 31 - 1, "2.147483647e+09"), (-(2 ** 31), "-2.147483648e+09"),
    (4294967295, "4.294967295e+09"), (10 ** 6 + 1, "1.000001e+06"), (3 * 10 ** 9, "3e+09"),
]


@pytest.mark.parametrize("code", ["q", "i"])
def test_go_float_values_both_paths(formatter, code):
    """conv "g": every path prints integers as client_golang prints a float64."""
    fmt = struct.Struct("<" + code)
    cases = [(v, t) for v, t in GO_FLOAT_CASES
             if -(2 ** (fmt.size * 8 - 1)) <= v < 2 ** (fmt.size * 8 - 1)]
    buf = b"".join(fmt.pack(v) for v, _ in cases)
    blocks = sample_blocks(len(cases))
    out = render_exposition([(SPEC, [(Blocks(blocks), Column(buf, 0, fmt.size, code,
                                                              len(cases)), "g")])])
    lines = out.decode().splitlines()[2:]
    assert [ln.rsplit(" ", 1)[1] for ln in lines] == [t for _, t in cases]
    assert [exposition.go_float(v) for v, _ in cases] == [t for _, t in cases]


def test_constant_column(formatter):
    n = SEGMENT_SAMPLES + 3
    blocks = sample_blocks(n)
    body = plan_exposition([(SPEC, [(Blocks(blocks), Column.constant(1, n), "d")])])
    out = b"".join(body)
    assert out == reference(SPEC, blocks, [1] * n) and len(body) == len(out)
    assert Column.constant(-5, 3)[0:3] == [-5, -5, -5] and len(Column.constant(1, 0)) == 0


def test_group_sums_both_paths(formatter):
    from array import array
    rnd = random.Random(3)
    n = 5000
    u32s = [rnd.randrange(2 ** 32) for _ in range(n)]
    u64s = [rnd.randrange(2 ** 40) for _ in range(n)]
    buf = records(u32s, u64s)
    ngroups = 17
    group = array("I", [rnd.choice([exposition.NO_GROUP] + list(range(ngroups)))
                        for _ in range(n)])
    half = array("I", group[:100])

    def expect(parts):
        out = [0] * ngroups
        for vals, g in parts:
            for gi, v in zip(g, vals):
                if gi != exposition.NO_GROUP:
                    out[gi] += v
        return out
    for col, vals in ((Column(buf, 0, REC.size, "I", n), u32s),
                      (Column(buf, 8, REC.size, "Q", n), u64s)):
        got = exposition.group_sums([(col, group), (vals[:100], half)], ngroups)
        assert list(got[0:ngroups]) == expect([(vals, group), (vals[:100], half)])
        got = exposition.group_sums([(col, group)], ngroups)
        assert list(got[0:ngroups]) == expect([(vals, group)])
        if formatter == "native":
            assert type(got) is Column            # summed in C
    # sums beyond int64 (C declines): exact Python ints
    big = records([0] * 3, [2 ** 63 - 1, 2 ** 63 - 1, 5])
    got = exposition.group_sums([(Column(big, 8, REC.size, "Q", 3), array("I", [0, 0, 0]))], 1)
    assert list(got) == [2 ** 64 + 3]


@pytest.mark.parametrize("conv", ["d", "u"])
def test_planned_length_is_exact_on_every_path(formatter, conv):
    """The planned length becomes a Content-Length: it must be exact whether
    a segment goes through C or Python, ints or preformatted values."""
    rnd = random.Random(7)
    n = SEGMENT_SAMPLES + 100
    u64s = [rnd.choice([0, 9, 10, 99, 2 ** 52, 2 ** 53, 2 ** 64 - 1, rnd.randrange(2 ** 40)])
            for _ in range(n)]
    buf = records([rnd.randrange(2 ** 32) for _ in range(n)], u64s)
    blocks = sample_blocks(n)
    ints = [rnd.choice([-2 ** 60, -1, 0, True, 7, 2 ** 54]) for _ in range(n)]
    fams = [(SPEC, [(Blocks(blocks), Column(buf, 8, REC.size, "Q", n), conv),
                    (Blocks(blocks), Column(buf, 0, REC.size, "I", n), conv)]),
            (("g", "gauge", "h"), [(blocks, ints, "d"), (blocks[:3], [b"1.5", b"NaN", b"+Inf"], "s")])]
    body = plan_exposition(fams, "extra_metric 1")
    out = b"".join(body)
    assert len(body) == len(out)
    assert out == render_exposition(fams, "extra_metric 1")


def test_body_keeps_the_records_it_reads_alive():
    """A planned Body is iterated after the collection's results are gone
    (and, with concurrent scrapes, after newer snapshots replaced them): the
    C formatter's value pointer must keep its records alive. (It used not
    to: the memory was reused and the written length disagreed with the plan.)"""
    import gc

    from ipvs_fast.collection.target import CollectResult
    from ipvs_fast.formats.ingress import IngressRenderer
    from tests.test_server import make_snapshot
    r = IngressRenderer()
    for i in range(50):
        res = [CollectResult("ns", True, 0.1, make_snapshot(50, 100, conns=10**12 + i))]
        body = r.render_pieces(res)
        expected = r.render(res)
        del res
        gc.collect()
        junk = [bytes([255]) * 4096 for _ in range(500)]      # reuse the freed memory
        assert b"".join(body) == expected
        del junk
