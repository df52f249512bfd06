"""Namespace paths that are not network namespaces, both backends (host).

A FIFO's open() blocks until a writer comes; a device node's open() may do
anything. Both backends must find out without blocking that such a path is
not a network namespace and say so, before any setns() or IPVS call -- so
all of this runs on a host without IPVS. A blocked open is released by
opening the FIFO for writing, so a regression fails instead of hanging.
"""
from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from ipvs_fast import backends
from ipvs_fast.backends import native
from ipvs_fast.backends.errors import IPVSError
from ipvs_fast.backends.python import PythonBackend
from ipvs_fast.collection.namespaces import TargetSet, namespace_targets

BACKENDS = ["python"] + (["native"] if native.available() else [])
LIMIT = 10.0        # seconds; a correct open takes microseconds


def _release_fifos(paths) -> None:
    """Unblock threads stuck in open(fifo, O_RDONLY): a writer shows up."""
    for p in paths:
        try:
            os.close(os.open(p, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


def _open_in_thread(backend: str, path: str):
    """(exception or handle, thread netns inode before, after); fails the test
    if the open does not return within LIMIT."""
    out = {}

    def run():
        out["before"] = os.stat("/proc/thread-self/ns/net").st_ino
        try:
            out["result"] = backends.opener(backend)(path, 1.0)
        except Exception as e:
            out["result"] = e
        out["after"] = os.stat("/proc/thread-self/ns/net").st_ino

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(LIMIT)
    if t.is_alive():
        _release_fifos([path])
        t.join(LIMIT)
        pytest.fail(f"{backend}: opening {path} blocked for {LIMIT:g}s")
    return out["result"], out["before"], out["after"]


@pytest.fixture
def odd_paths(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_text("not a namespace")
    directory = tmp_path / "dir"
    directory.mkdir()
    return {"a FIFO": str(fifo), "a character device": "/dev/null",
            "a regular file": str(regular), "a directory": str(directory),
            "a mount namespace": "/proc/self/ns/mnt"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["a FIFO", "a character device", "a regular file",
                                  "a directory", "a mount namespace"])
def test_not_a_network_namespace_is_a_prompt_clear_error(backend, kind, odd_paths):
    path = odd_paths[kind]
    nfds = len(os.listdir("/proc/self/fd"))
    t0 = time.monotonic()
    result, before, after = _open_in_thread(backend, path)
    assert time.monotonic() - t0 < 2.0
    assert isinstance(result, IPVSError), result
    assert result.errno == errno.EINVAL
    assert f"namespace path {path}: not a network namespace ({kind})" in str(result), result
    assert before == after                      # the thread never left its namespace
    assert len(os.listdir("/proc/self/fd")) == nfds


def test_both_backends_say_the_same(odd_paths):
    if len(BACKENDS) < 2:
        pytest.skip("native backend not built")
    for path in odd_paths.values():
        msgs = {b: str(_open_in_thread(b, path)[0]) for b in BACKENDS}
        assert msgs["native"] == msgs["python"], msgs


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_glob_of_17_fifos_loses_no_worker(backend, tmp_path):
    """More FIFOs than workers (16): every scrape returns at once with each
    FIFO ipvs_up 0 and the reason; no worker thread is left behind."""
    fifos = [str(tmp_path / f"ns{i:02d}") for i in range(17)]
    for p in fifos:
        os.mkfifo(p)
    baseline = threading.active_count()
    targets = TargetSet([str(tmp_path / "ns*")], namespace_targets(backends.opener(backend), 1.0))
    try:
        for scrape in range(3):
            t0 = time.monotonic()
            results = targets.collect(deadline=5.0)
            took = time.monotonic() - t0
            assert [r.namespace for r in results] == fifos
            bad = [(r.namespace, r.error) for r in results
                   if r.up or "not a network namespace (a FIFO)" not in (r.error or "")]
            assert bad == [], (scrape, bad)
            assert took < 3.0, (scrape, took)
    finally:
        targets.close()
        end = time.monotonic() + LIMIT
        while threading.active_count() > baseline and time.monotonic() < end:
            time.sleep(0.05)
        stuck = threading.active_count() - baseline
        _release_fifos(fifos)
    assert stuck == 0, f"{stuck} worker thread(s) still blocked"
