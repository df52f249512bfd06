"""Backends: enter a network namespace, dump IPVS, return packed records.

Two implementations of one contract (``records.py``: the packed record
layouts; ``snapshot.py``: what a dump returns): ``native`` (the C core in
``csrc/``, bound with cffi) and ``python`` (``socket`` + ``struct``, the
baseline), byte-identical. ``genl.py`` is the generic-netlink protocol the
Python backend speaks; ``errors.py`` the one exception type.
"""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

BACKENDS = ("native", "python")


def _native_available() -> bool:
    try:
        from . import native
    except Exception as e:  # ImportError, a broken build, ...
        log.debug("native backend import failed: %r", e)
        return False
    try:
        return bool(native.available())
    except Exception as e:
        log.debug("native.available() failed: %r", e)
        return False


def resolve(name: str) -> str:
    """The backend actually used for *name* ("native" falls back to
    "python", with a warning, when the compiled extension is missing)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (expected one of {', '.join(BACKENDS)})")
    if name == "native" and not _native_available():
        log.warning("native backend unavailable (compiled extension missing or "
                    "not loadable); falling back to the python backend")
        return "python"
    return name


def opener(name: str) -> Callable[[str, float], object]:
    """``open(ns_path, timeout) -> handle`` for a resolved backend name."""
    if name == "native":
        from .native import NativeBackend
        return lambda path, timeout: NativeBackend(path, timeout=timeout)
    if name == "python":
        from .python import PythonBackend
        return lambda path, timeout: PythonBackend(path, timeout=timeout)
    raise ValueError(f"unknown backend {name!r}")
