"""Least privilege: keep only the capabilities the configuration needs.

* ``CAP_NET_ADMIN`` -- always: IPVS answers generic-netlink dumps only to it
  (and ``iptables-save``, run for the fwmark port map, needs it too);
* ``CAP_SYS_ADMIN`` -- when a ``--namespace-path`` is not ``''``: ``setns()``
  into another network namespace (and ``nsenter`` for its port map);
* ``CAP_SYS_PTRACE`` -- when a ``--namespace-path`` is under ``/proc/``:
  opening ``/proc/PID/ns/net`` of a process holding capabilities we do not.

:func:`drop_to` drops every other capability from the effective,
permitted and inheritable sets, the bounding set (when we may: that takes
``CAP_SETPCAP``) and so the ambient set, and sets ``PR_SET_NO_NEW_PRIVS``
(programs we run, ``iptables-save``/``nsenter``, cannot gain more either).
Capabilities are per thread: it must run while the process has one thread
(threads started later inherit the reduced sets). Needed capabilities we do
not have are not an error: namespaces report ``ipvs_up 0`` with the reason.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
from typing import Iterable

log = logging.getLogger(__name__)

CAP_SETPCAP = 8
CAP_NET_ADMIN = 12
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
_NAMES = {CAP_SETPCAP: "cap_setpcap", CAP_NET_ADMIN: "cap_net_admin",
          CAP_SYS_PTRACE: "cap_sys_ptrace", CAP_SYS_ADMIN: "cap_sys_admin"}

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)     # our own symbols include libc


def needed(namespace_paths: Iterable[str]) -> set:
    """The capabilities a configuration with these ``--namespace-path``
    values needs (see the module docstring)."""
    paths = list(namespace_paths)
    caps = {CAP_NET_ADMIN}
    if any(p != "" for p in paths):
        caps.add(CAP_SYS_ADMIN)
    if any(p.startswith("/proc/") for p in paths):
        caps.add(CAP_SYS_PTRACE)
    return caps


def cap_name(cap: int) -> str:
    return _NAMES.get(cap, "cap_%d" % cap)


def _mask(caps: Iterable[int]) -> int:
    m = 0
    for c in caps:
        m |= 1 << c
    return m


def _caps(mask: int) -> list:
    return [c for c in range(64) if mask >> c & 1]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def get() -> tuple:
    """(effective, permitted, inheritable) of this thread, as bit masks."""
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    return tuple(data[0].__getattribute__(f) | data[1].__getattribute__(f) << 32
                 for f in ("effective", "permitted", "inheritable"))


def _set(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in (0, 1):
        data[i].effective = effective >> 32 * i & 0xFFFFFFFF
        data[i].permitted = permitted >> 32 * i & 0xFFFFFFFF
        data[i].inheritable = inheritable >> 32 * i & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 40


def _bounding() -> int:
    m = 0
    for c in range(_last_cap() + 1):
        if _libc.prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1:
            m |= 1 << c
    return m


def drop_to(keep: set) -> None:
    """Keep only *keep* (as far as we have them); see the module docstring.
    Logs what was kept; failures are logged, never raised."""
    try:
        threads = len(os.listdir("/proc/self/task"))
        if threads != 1:
            raise OSError(errno.EBUSY, "%d threads running (capabilities are per thread)"
                          % threads)
        eff, perm, inh = get()
        keep_mask = _mask(keep)
        kept = perm & keep_mask
        bounding = _bounding()
        if perm & 1 << CAP_SETPCAP:
            _set(eff | 1 << CAP_SETPCAP, perm, inh)   # PR_CAPBSET_DROP takes it
            for c in _caps(bounding & ~keep_mask):
                _check(_libc.prctl(PR_CAPBSET_DROP, c, 0, 0, 0), "PR_CAPBSET_DROP")
        elif bounding & ~keep_mask:
            log.debug("capabilities: bounding set left as it is (no cap_setpcap)")
        # the kernel drops ambient capabilities that leave permitted/inheritable
        _set(kept, kept, inh & keep_mask)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    except OSError as e:
        log.warning("capabilities: could not drop the unneeded ones: %s", e)
        return
    dropped = len(_caps(perm & ~keep_mask))
    missing = [cap_name(c) for c in sorted(keep) if not perm >> c & 1]
    log.info("capabilities: kept %s%s; no_new_privs set",
             ",".join(cap_name(c) for c in _caps(kept)) or "none",
             " (dropped %d others)" % dropped if dropped else "")
    if missing:
        log.warning("capabilities: missing %s: namespaces needing %s report ipvs_up 0",
                    ",".join(missing), "it" if len(missing) == 1 else "them")
