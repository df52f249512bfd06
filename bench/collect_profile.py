"""Where the exporter's collection time goes (issue 15's unexplained gap:
the collection measured inside the exporter was 1.2-4x the same dump done by
the benchmark driver). Run inside the VM, in one boot:

    IPVS_FAST_VM_CMD="python bench/collect_profile.py" tests/kernel/run-in-vm.sh

At PROFILE_SERVICES (default 10,000) x 10 destinations, three rounds of:

  driver_dump          NativeBackend.dump() in this process, main thread
  driver_dump_thread   the same in a worker thread
  driver_collect       NamespaceTarget.collect() (dump + port map) in a thread
  exporter_<fmt>       GET /metrics of a running exporter, and its
                       ipvs_scrape_duration_seconds (its collection) and CPU
  ipvsadm              ipvsadm -Ln --stats --exact > /dev/null

Writes $IPVS_FAST_VM_OUT/collect_profile.json and prints a summary. (strace
-c of a 10,000-service dump is not here: under emulation it ran for more
than ten minutes.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
OUT = os.environ.get("IPVS_FAST_VM_OUT", "/tmp")
os.environ.setdefault("BENCH_OUT", OUT)

import vm_driver as d  # noqa: E402  (rules, http_get, cpu_seconds, free_port, ...)

NSVC = int(os.environ.get("PROFILE_SERVICES", "10000"))
ROUNDS = int(os.environ.get("PROFILE_ROUNDS", "3"))
FORMATS = ("node", "ingress", "ipvs")


def in_thread(fn):
    box = {}

    def run():
        t0 = time.monotonic()
        box["v"] = fn()
        box["t"] = time.monotonic() - t0
    t = threading.Thread(target=run)
    t.start()
    t.join()
    return box["t"], box["v"]


def main():
    from ipvs_fast.backends import opener
    from ipvs_fast.backends.native import NativeBackend
    from ipvs_fast.collection.target import NamespaceTarget

    subprocess.run(["modprobe", "ip_vs"], check=True)
    R = {"services": NSVC, "runs": {}}

    def add(name, v):
        R["runs"].setdefault(name, []).append(round(v, 4))
        d.log(f"  {name}: {v:.3f}")

    ports = {f: d.free_port() for f in FORMATS}
    logs = {f: open(os.path.join(OUT, f"profile-{f}.log"), "w") for f in FORMATS}
    procs = {f: subprocess.Popen([sys.executable, "-m", "ipvs_fast", "--listen-address",
                                  f"127.0.0.1:{ports[f]}", "--namespace-path", "",
                                  "--format", f, "--timeout", "60", "--scrape-timeout", "120"],
                                 stdout=logs[f], stderr=subprocess.STDOUT) for f in FORMATS}
    try:
        for f in FORMATS:
            d.wait_http(ports[f], "/healthz")
        subprocess.run(["ipvsadm", "-C"], check=True)
        t = d.timed(["ipvsadm", "-R"], input=d.rules(NSVC).encode())
        d.log(f"{NSVC} x 10 loaded in {t:.1f}s")
        for f in FORMATS:                       # warm: caches, port map
            d.http_get(ports[f])
        nb = NativeBackend("", timeout=60)
        target = NamespaceTarget("", opener("native"), 60)
        nb.dump()
        target.collect()
        for r in range(ROUNDS):
            d.log(f"round {r + 1}")
            t0 = time.monotonic()
            nb.dump()
            add("driver_dump", time.monotonic() - t0)
            add("driver_dump_thread", in_thread(nb.dump)[0])
            dt, res = in_thread(target.collect)
            add("driver_collect", dt)
            add("driver_collect_own", res.duration)
            for f in FORMATS:
                pid = procs[f].pid
                c0 = d.cpu_seconds(pid)
                dt, _, body = d.http_get(ports[f])
                add(f"exporter_{f}", dt)
                add(f"exporter_{f}_collection", d.scrape_duration(body))
                add(f"exporter_{f}_cpu", d.cpu_seconds(pid) - c0)
            add("ipvsadm", d.timed("ipvsadm -Ln --stats --exact > /dev/null", shell=True))
    finally:
        d.stop_all(procs.values())
    with open(os.path.join(OUT, "collect_profile.json"), "w") as f:
        json.dump(R, f, indent=1)
    for name, v in R["runs"].items():
        print(f"{name:34s} " + " ".join(f"{x:8.3f}" for x in v))


if __name__ == "__main__":
    main()
