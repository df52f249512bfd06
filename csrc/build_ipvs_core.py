"""cffi builder for ipvs_fast._ipvs_core (out-of-line API mode).

Used by setup.py via ``cffi_modules=["csrc/build_ipvs_core.py:ffibuilder"]``;
can also be run directly (``python3 csrc/build_ipvs_core.py``) to build the
extension into the current directory for ad-hoc testing.

API mode releases the GIL around every C call (cffi's default), so a dump in
one thread does not stall the event loop or other threads.
"""
import os
import re

import cffi

_HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(*parts):
    # setuptools wants source paths relative to the directory setup.py runs
    # in (the repo root); fall back to absolute if that is impossible.
    p = os.path.join(_HERE, *parts)
    try:
        return os.path.relpath(p)
    except ValueError:
        return p


HEADERS = ("ipvs_core.h", "text_format.h")


def cdef_from_headers(paths) -> str:
    """The cffi declarations, read from the C headers themselves (one source
    of truth): comments and preprocessor lines dropped, except integer
    ``#define``s, which cffi takes as constants and which are substituted
    where they size an array (cffi's cdef cannot use a macro there)."""
    text = "\n".join(open(p).read() for p in paths)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    consts, lines = {}, []
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            lines.append(line)
            continue
        m = re.match(r"\s*#\s*define\s+(\w+)\s+(0[xX][0-9a-fA-F]+|\d+)\s*$", line)
        if m:
            consts[m.group(1)] = int(m.group(2), 0)
            lines.append("#define %s %d" % (m.group(1), consts[m.group(1)]))
    cdef = "\n".join(lines)
    for name, value in consts.items():
        cdef = re.sub(r"\[\s*%s\s*\]" % name, "[%d]" % value, cdef)
    return cdef


CDEF = cdef_from_headers([os.path.join(_HERE, h) for h in HEADERS])

ffibuilder = cffi.FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "ipvs_fast._ipvs_core",
    "".join('#include "%s"\n' % h for h in HEADERS),
    sources=[_rel("ipvs_core.c"), _rel("text_format.c")],
    include_dirs=[_rel()],
    depends=[_rel(h) for h in HEADERS],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
