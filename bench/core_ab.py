"""A/B of two C cores on the real kernel: N services x 10 loaded once, then
NativeBackend.dump() timed in each tree (a fresh process per tree, 3 dumps,
alternating rounds) with utime+stime, and the records hashed (they must be
identical). Run inside the VM, with two trees whose ipvs_fast/ carries its
built core (e.g. a copy of ipvs_fast/ with the old _ipvs_core*.so):

    IPVS_FAST_VM_CMD="python bench/core_ab.py /work/ab/old /work/ab/new" \
        tests/kernel/run-in-vm.sh

(the trees must be outside /tmp: the VM has its own /tmp)."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("BENCH_OUT", "/tmp")
import vm_driver as d  # noqa: E402  (rules, timed)

N = int(os.environ.get("N", "10000"))
TREES = {"a": sys.argv[1], "b": sys.argv[2]}
CHILD = r'''
import hashlib, resource, sys, time
sys.path.insert(0, sys.argv[1])
import ipvs_fast._ipvs_core as c
from ipvs_fast.backends.native import NativeBackend
assert c.__file__.startswith(sys.argv[1]), c.__file__
b = NativeBackend("", timeout=60); b.dump()
ts = []
for i in range(3):
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.monotonic(); s = b.dump(); t = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    ts.append((round(t, 3), round(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, 3)))
h = hashlib.sha256(bytes(s.services) + bytes(s.dests)).hexdigest()[:16]
print(ts, h, s.ndests)
'''
subprocess.run(["modprobe", "ip_vs"], check=True)
t = d.timed(["ipvsadm", "-R"], input=d.rules(N).encode())
print(f"loaded {N} x 10 in {t:.1f}s", flush=True)
for r in range(3):
    for name, tree in TREES.items():
        out = subprocess.run([sys.executable, "-c", CHILD, tree], capture_output=True, text=True)
        print(r, name, out.stdout.strip(), out.stderr.strip()[-500:], flush=True)
    print(r, "ipvsadm", round(d.timed("ipvsadm -Ln --stats --exact > /dev/null", shell=True), 3), flush=True)
