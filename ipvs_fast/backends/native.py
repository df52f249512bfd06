"""Backend, native: a thin wrapper over the compiled netlink core (ipvs_fast._ipvs_core).

The package imports without the extension; ``available()`` tells whether this
backend can be used (the pure-Python backend is the fallback).
"""
from __future__ import annotations

import errno
import os
import threading
import time
from typing import Optional, Tuple

from .errors import IPVSError
from .records import DEST_SIZE, SETTINGS_SIZE, SVC_SIZE
from .snapshot import Snapshot, parse_ip_vs_stats, sysctl_values

try:  # pragma: no cover - depends on whether the extension was built
    from .._ipvs_core import ffi, lib
    _IMPORT_ERROR: Optional[BaseException] = None
except ImportError as _e:  # pragma: no cover
    ffi = lib = None
    _IMPORT_ERROR = _e

ERRBUF_SIZE = 512
TOTALS_BUF_SIZE = 4096
SYSCTL_BUF_SIZE = 256       # one /proc/sys value; longer ones are not numbers

__all__ = ["NativeBackend", "available", "import_error", "parse_services", "parse_dests",
           "parse_settings"]


def available() -> bool:
    """True when the compiled extension is importable."""
    return lib is not None


def import_error() -> Optional[BaseException]:
    """Why the extension could not be imported (None when it could)."""
    return _IMPORT_ERROR


def _require() -> None:
    if lib is None:
        raise ImportError(f"ipvs_fast._ipvs_core is not built: {_IMPORT_ERROR}")


def _errmsg(errbuf, rc: int) -> str:
    msg = ffi.string(errbuf).decode("utf-8", "replace")
    return msg or os.strerror(abs(rc))


def _free(h, res, sc) -> None:
    """Release what a handle holds in C (each may be None)."""
    if h is not None:
        lib.ipvs_close(h)
    if res is not None:
        lib.ipvs_result_free(res)
    if sc is not None:
        lib.ipvs_sysctls_close(sc)


class NativeBackend:
    """One netlink socket bound to one network namespace.

    ``ns_path`` is a namespace file such as ``/run/netns/x`` or
    ``/proc/<pid>/ns/net``; "" means the calling thread's own namespace.
    ``timeout`` bounds each wait for a kernel reply, in seconds.
    """

    NAME = "native"

    backend_name = "native"

    def __init__(self, ns_path: str = "", timeout: float = 5.0):
        _require()
        self._h = None
        self._res = None
        self._sysctls = None
        self._lock = threading.Lock()
        self.ns_path = os.fsdecode(ns_path) if ns_path else ""
        self.timeout = timeout
        self._errbuf = ffi.new("char[]", ERRBUF_SIZE)
        self._tbuf = ffi.new("char[]", TOTALS_BUF_SIZE)
        timeout_ms = 0 if timeout is None or timeout <= 0 else max(1, int(round(timeout * 1000)))
        err = ffi.new("int *")
        h = lib.ipvs_open(os.fsencode(self.ns_path), timeout_ms, err, self._errbuf, ERRBUF_SIZE)
        if h == ffi.NULL:
            rc = err[0] or -errno.EIO
            raise IPVSError(rc, _errmsg(self._errbuf, rc))
        res = lib.ipvs_result_new()
        if res == ffi.NULL:
            lib.ipvs_close(h)
            raise MemoryError("ipvs_result_new")
        self._h = h
        self._res = res
        self._settings = ffi.new("struct ipvs_settings_rec *")
        self._sbuf = ffi.new("char[]", SYSCTL_BUF_SIZE)
        # The namespace's sysctl files, opened in it now; reopened with the handle.
        sc = lib.ipvs_sysctls_open(h, err, self._errbuf, ERRBUF_SIZE)
        if sc == ffi.NULL:
            rc = err[0] or -errno.EIO
            self.close()
            raise IPVSError(-rc, _errmsg(self._errbuf, rc))
        self._sysctls = sc
        self._sysctl_names = [ffi.string(lib.ipvs_sysctls_name(sc, i)).decode("ascii", "replace")
                              for i in range(lib.ipvs_sysctls_count(sc))]

    # -- life cycle -------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            h, res, sc = self._h, self._res, self._sysctls
            self._h = self._res = self._sysctls = None
            _free(h, res, sc)

    @property
    def closed(self) -> bool:
        return self._h is None

    def __enter__(self) -> "NativeBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # safety net; close() is the real API
        try:
            h, res = getattr(self, "_h", None), getattr(self, "_res", None)
            sc = getattr(self, "_sysctls", None)
            self._h = self._res = self._sysctls = None
            if lib is not None:
                _free(h, res, sc)
        except Exception:
            pass

    # -- queries ----------------------------------------------------------
    def dump(self) -> Snapshot:
        """Services, their destinations (with counters) and the namespace
        totals, settings and sysctls, now: the netlink dump."""
        return self._snapshot(table=False)

    def dump_table(self) -> Snapshot:
        """Services (GET_SERVICE dump) with their destinations from the
        namespace's /proc/net/ip_vs, without counters, and the totals: what
        node_exporter reads, checked against the kernel's service list (see
        ipvs_dump_table in csrc/ipvs_core.h)."""
        return self._snapshot(table=True)

    def _snapshot(self, table: bool) -> Snapshot:
        with self._lock:
            if self._h is None:
                raise IPVSError(errno.EBADF, f"IPVS handle for {self.ns_path or '(current)'} is closed")
            t0 = time.monotonic()
            if table:
                n = lib.ipvs_dump_table(self._h, self._res, self._errbuf, ERRBUF_SIZE)
            else:
                n = lib.ipvs_dump(self._h, self._res, self._errbuf, ERRBUF_SIZE)
            if n < 0:
                raise IPVSError(-n, _errmsg(self._errbuf, n))
            res = self._res
            services = bytes(ffi.buffer(res.svcs, res.nsvcs * SVC_SIZE)) if res.nsvcs else b""
            dests = bytes(ffi.buffer(res.dests, res.ndests * DEST_SIZE)) if res.ndests else b""
            totals = None
            got = lib.ipvs_read_totals(self._h, self._tbuf, TOTALS_BUF_SIZE)
            if got > 0:
                totals = parse_ip_vs_stats(
                    bytes(ffi.buffer(self._tbuf, got)).decode("ascii", "replace"))
            settings, sysctls = b"", ()
            if not table:
                rc = lib.ipvs_get_settings(self._h, self._settings, self._errbuf, ERRBUF_SIZE)
                if rc < 0:
                    raise IPVSError(-rc, _errmsg(self._errbuf, rc))
                settings = bytes(ffi.buffer(self._settings, SETTINGS_SIZE))
                sysctls = sysctl_values(self._read_sysctls())
            t1 = time.monotonic()
        meta = {"backend": self.backend_name, "ns_path": self.ns_path, "duration": t1 - t0}
        return Snapshot(services, dests, totals, meta, settings, sysctls)

    def _read_sysctls(self):
        """(name, raw bytes or None when unreadable) per sysctl file."""
        sc, buf = self._sysctls, self._sbuf
        for i, name in enumerate(self._sysctl_names):
            got = lib.ipvs_sysctls_read(sc, i, buf, SYSCTL_BUF_SIZE)
            yield name, (bytes(ffi.buffer(buf, got)) if got >= 0 else None)

    def ns_ident(self) -> Tuple[int, int]:
        """(st_dev, st_ino) of the namespace this handle is bound to."""
        with self._lock:
            if self._h is None:
                raise IPVSError(errno.EBADF, f"IPVS handle for {self.ns_path or '(current)'} is closed")
            dev = ffi.new("uint64_t *")
            ino = ffi.new("uint64_t *")
            rc = lib.ipvs_ns_ident(self._h, dev, ino)
            if rc < 0:
                raise IPVSError(-rc, f"fstat of namespace {self.ns_path or '(current)'}: "
                                     f"{os.strerror(-rc)}")
            return int(dev[0]), int(ino[0])

    def __repr__(self) -> str:
        state = "closed" if self._h is None else "open"
        return f"<NativeBackend {self.ns_path or '(current)'} {state}>"


# -- pure parsers (tests, captured replies) ----------------------------------

def _parse(kind: str, data: bytes, family_id: int, svc_index: int = 0, svc_af: int = 0) -> bytes:
    _require()
    res = ffi.gc(lib.ipvs_result_new(), lib.ipvs_result_free)
    if res == ffi.NULL:
        raise MemoryError("ipvs_result_new")
    errbuf = ffi.new("char[]", ERRBUF_SIZE)
    data = bytes(data)
    buf = ffi.from_buffer("uint8_t[]", data)
    if kind == "svc":
        rc = lib.ipvs_parse_service_msgs(buf, len(data), family_id, res, errbuf, ERRBUF_SIZE)
    else:
        rc = lib.ipvs_parse_dest_msgs(buf, len(data), family_id, svc_index, svc_af,
                                      res, errbuf, ERRBUF_SIZE)
    if rc < 0:
        raise IPVSError(-rc, _errmsg(errbuf, rc))
    if rc == 0:
        raise IPVSError(errno.EBADMSG, "reply ended without NLMSG_DONE")
    if kind == "svc":
        out = bytes(ffi.buffer(res.svcs, res.nsvcs * SVC_SIZE)) if res.nsvcs else b""
    else:
        out = bytes(ffi.buffer(res.dests, res.ndests * DEST_SIZE)) if res.ndests else b""
    ffi.release(res)
    return out


def parse_settings(info: bytes, config: bytes, family_id: int = 0) -> bytes:
    """A packed ipvs_settings_rec from captured GET_INFO and GET_CONFIG replies."""
    _require()
    rec = ffi.new("struct ipvs_settings_rec *")
    errbuf = ffi.new("char[]", ERRBUF_SIZE)
    for fn, data in ((lib.ipvs_parse_info_msgs, info), (lib.ipvs_parse_config_msgs, config)):
        data = bytes(data)
        rc = fn(ffi.from_buffer("uint8_t[]", data), len(data), family_id, rec, errbuf,
                ERRBUF_SIZE)
        if rc < 0:
            raise IPVSError(-rc, _errmsg(errbuf, rc))
        if rc == 0:
            raise IPVSError(errno.EBADMSG, "reply ended without a message")
    return bytes(ffi.buffer(rec, SETTINGS_SIZE))


def parse_services(data: bytes, family_id: int = 0) -> bytes:
    """Packed ipvs_svc_rec records from a captured GET_SERVICE dump reply."""
    return _parse("svc", data, family_id)


def parse_dests(data: bytes, svc_index: int, svc_af: int, family_id: int = 0) -> bytes:
    """Packed ipvs_dest_rec records from a captured GET_DEST dump reply."""
    return _parse("dest", data, family_id, svc_index, svc_af)


def parse_table(text: bytes) -> tuple:
    """(services, dests) packed records from /proc/net/ip_vs text (the C
    twin of :func:`ipvs_fast.backends.table.parse_table`)."""
    _require()
    res = ffi.gc(lib.ipvs_result_new(), lib.ipvs_result_free)
    if res == ffi.NULL:
        raise MemoryError("ipvs_result_new")
    errbuf = ffi.new("char[]", ERRBUF_SIZE)
    text = bytes(text)
    rc = lib.ipvs_parse_table(ffi.from_buffer("char[]", text), len(text), res, errbuf,
                              ERRBUF_SIZE)
    if rc < 0:
        raise IPVSError(-rc, _errmsg(errbuf, rc))
    out = (bytes(ffi.buffer(res.svcs, res.nsvcs * SVC_SIZE)) if res.nsvcs else b"",
           bytes(ffi.buffer(res.dests, res.ndests * DEST_SIZE)) if res.ndests else b"")
    ffi.release(res)
    return out
