"""A namespace glob matching 17 FIFOs (more than the 16 collection workers),
/dev/null and a mount namespace, next to one real network namespace.

Opening a FIFO for reading blocks until a writer comes: a backend that
open()s it plainly loses a worker for good, and once all are lost every
namespace reports ipvs_up 0. Required, for both backends: every scrape
returns without waiting for the deadline, the real namespace stays
ipvs_up 1, each odd path is ipvs_up 0 with the reason logged once, and no
exporter thread is left blocked in open() of a FIFO -- checked against a
process that is (it shows the signature looked for: openat in
/proc/PID/task/TID/syscall, waiting in fifo_open in .../wchan).
"""
import os
import subprocess
import sys
import time

import pytest

from . import topo

pytestmark = pytest.mark.kernel

BACKENDS = ["native", "python"]
REAL = "ipvsf-odd-real"
FIFOS = 17
SCRAPES = 3
SCRAPE_TIMEOUT = 60     # seconds; a jammed exporter would wait about this long
SYS_OPENAT = 257        # x86_64


@pytest.fixture
def odd_dir(ip_vs_module, tmp_path):
    ns = topo.Bare(REAL, "-A -t 10.98.0.1:80 -s rr\n-a -t 10.98.0.1:80 -r 10.98.0.2:8080 -m -w 1")
    ns.build()
    d = tmp_path / "ns"
    d.mkdir()
    for i in range(FIFOS):
        os.mkfifo(d / f"fifo{i:02d}")
    os.symlink("/dev/null", d / "dev-null")
    # /proc/self: the exporter resolves it to its own mount namespace (another
    # process's, e.g. /proc/1/ns/mnt, is EACCES once it has dropped capabilities)
    os.symlink("/proc/self/ns/mnt", d / "mnt-ns")
    os.symlink(ns.netns_path, d / "zz-real")   # sorted last: queued behind the FIFOs
    try:
        yield d
    finally:
        for i in range(FIFOS):                # release any reader still blocked
            try:
                os.close(os.open(d / f"fifo{i:02d}", os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        ns.teardown()


def thread_syscalls(pid: int) -> dict:
    """{tid: syscall number, or -1 while running}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                first = f.read().split()[0]
        except (OSError, IndexError):
            continue
        out[int(tid)] = -1 if first == "running" else int(first)
    return out


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


FIFO_WCHANS = ("fifo_open", "wait_for_partner")     # where open() waits for a writer


def in_fifo_open(pid: int) -> set:
    out = set()
    for tid, n in thread_syscalls(pid).items():
        if n != SYS_OPENAT:
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                wchan = f.read().strip()
        except OSError:
            continue
        if wchan in FIFO_WCHANS:
            out.add(tid)
    return out


def blocked_in_open(pid: int) -> list:
    """Threads waiting in openat() for a FIFO's writer, in two looks half a
    second apart."""
    first = in_fifo_open(pid)
    time.sleep(0.5)
    return sorted(first & in_fifo_open(pid))


def test_fifo_glob_loses_no_worker(odd_dir, exporter, tmp_path):
    # The signature: a process blocked opening a FIFO shows openat in /proc/PID/syscall.
    control_fifo = tmp_path / "control"
    os.mkfifo(control_fifo)
    control = subprocess.Popen([sys.executable, "-c", f"open({str(control_fifo)!r})"])
    try:
        deadline = time.monotonic() + 30
        while not blocked_in_open(control.pid):
            assert time.monotonic() < deadline, {
                t: (n, open(f"/proc/{control.pid}/task/{t}/wchan").read())
                for t, n in thread_syscalls(control.pid).items()}
    finally:
        try:
            os.close(os.open(control_fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:         # not (yet) reading: nothing to release
            control.kill()
        control.wait(30)

    env = dict(os.environ, IPVS_FAST_SCRAPE_TIMEOUT=str(SCRAPE_TIMEOUT))
    exps = {b: exporter("--namespace-path", str(odd_dir / "*"), "--backend", b,
                        "--format", "ipvs", env=env, wait=False) for b in BACKENDS}
    for e in exps.values():
        e.wait_ready(timeout=300)     # two interpreters starting under emulation
    real = str(odd_dir / "zz-real")
    odd = {str(odd_dir / f"fifo{i:02d}"): "a FIFO" for i in range(FIFOS)}
    odd[str(odd_dir / "dev-null")] = "a character device"
    odd[str(odd_dir / "mnt-ns")] = "a mount namespace"
    for backend, e in exps.items():
        counts = []
        for scrape in range(SCRAPES):
            t0 = time.monotonic()
            s = e.samples()
            took = time.monotonic() - t0
            up = {dict(labels)["namespace"]: v for (name, labels), v in s.items()
                  if name == "ipvs_up"}
            assert up == {real: 1.0, **{p: 0.0 for p in odd}}, (backend, scrape, up,
                                                                e.logtext()[-3000:])
            services = [v for (name, labels), v in s.items()
                        if name == "ipvs_services" and dict(labels)["namespace"] == real]
            assert services == [1.0], (backend, services)
            # a scrape that waited for the deadline took about SCRAPE_TIMEOUT
            assert took < SCRAPE_TIMEOUT / 2, (backend, scrape, took)
            counts.append(threads(e.pid))
            print(f"{backend} scrape {scrape}: {took:.2f}s, {counts[-1]} threads")
        assert blocked_in_open(e.pid) == [], (backend, thread_syscalls(e.pid))
        # The pool starts its 16 workers lazily, so the count may creep up while
        # it warms; lost workers would show above as threads blocked in openat.
        assert max(counts) <= counts[0] + 16, (backend, counts)
        log = e.logtext()
        for path, kind in odd.items():
            lines = [ln for ln in log.splitlines() if path in ln and "ipvs_up=0" in ln]
            assert len(lines) == 1, (backend, path, lines)
            assert f"not a network namespace ({kind})" in lines[0], (backend, lines[0])
        assert "workers busy" not in log and "deadline exceeded" not in log, (backend, log)
        assert "Traceback" not in log, (backend, log)
