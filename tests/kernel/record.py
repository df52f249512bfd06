"""Recorder: capture real kernel netlink replies as host test fixtures.

Run inside the VM (it builds the topologies itself):

    tests/kernel/record-fixtures.sh

For each topology it writes tests/fixtures/kernel/<name>/:
  services.bin        the raw GET_SERVICE dump reply (all datagrams, concatenated)
  dests.bin           every GET_DEST dump reply, concatenated
  dests.json          [{svc_index, svc_af, offset, length}] slices of dests.bin
  ipvsadm-stats.txt   `ipvsadm -Ln --stats --exact`  } taken before and after
  ipvsadm-rate.txt    `ipvsadm -Ln --rate --exact`   } the capture and equal,
  ipvsadm-plain.txt   `ipvsadm -Ln`                  } so they describe exactly
  ipvsadm-persist.txt `ipvsadm -Ln --persistent-conn`} the captured replies
  ip_vs_stats.txt     /proc/net/ip_vs_stats in that namespace
  kernel.txt          uname -r
and the namespace's settings:
  info.bin            the raw GET_INFO reply
  config.bin          the raw GET_CONFIG reply
  ipvsadm-timeout.txt `ipvsadm -Ln --timeout`
  sysctl.txt          `sysctl net.ipv4.vs` in that namespace
  sysctl-raw.json     {name: text} of /proc/sys/net/ipv4/vs/* as the backend read them

`record.py --settings-only` records only the settings files (into bare
namespaces set up the same way), leaving the dump fixtures as they are.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from ipvs_fast.backends.python import PythonBackend  # noqa: E402
from tests.kernel import topo  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "kernel")


def kernel_views(ns: str) -> dict:
    return {
        "ipvsadm-stats.txt": topo.ipvsadm("-Ln --stats --exact", ns),
        "ipvsadm-rate.txt": topo.ipvsadm("-Ln --rate --exact", ns),
        "ipvsadm-plain.txt": topo.ipvsadm("-Ln", ns),
        "ipvsadm-persist.txt": topo.ipvsadm("-Ln --persistent-conn", ns),
        "ip_vs_stats.txt": topo.sh("cat /proc/net/ip_vs_stats", ns=ns),
    }


def record(name: str, lab: topo.Lab) -> None:
    with PythonBackend(lab.netns_path) as b:
        def read():
            before = kernel_views(lab.director)
            raw = b.dump_raw()
            return before, raw, kernel_views(lab.director)
        views, (svc_reply, dest_replies) = topo.stable(read)
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "services.bin"), "wb") as f:
        f.write(svc_reply)
    index, off = [], 0
    with open(os.path.join(d, "dests.bin"), "wb") as f:
        for svc_index, svc_af, reply in dest_replies:
            f.write(reply)
            index.append({"svc_index": svc_index, "svc_af": svc_af, "offset": off, "length": len(reply)})
            off += len(reply)
    with open(os.path.join(d, "dests.json"), "w") as f:
        json.dump(index, f, indent=1)
    for fname, text in views.items():
        with open(os.path.join(d, fname), "w") as f:
            f.write(text)
    with open(os.path.join(d, "kernel.txt"), "w") as f:
        f.write(platform.release() + "\n")
    print(f"recorded {name}: {len(svc_reply)} bytes of services, {len(dest_replies)} dest dumps")


# The "standard" namespace runs with non-default settings, so that a parser
# reading the defaults (or another namespace's values) cannot pass.
STANDARD_TIMEOUTS = "1000 100 200"
STANDARD_SYSCTLS = {"expire_nodest_conn": "1", "conn_reuse_mode": "0",
                    "expire_quiescent_template": "1"}


def tune_settings(ns: str) -> None:
    topo.sh(f"ipvsadm --set {STANDARD_TIMEOUTS}", ns=ns)
    for name, value in STANDARD_SYSCTLS.items():
        topo.sh(f"sysctl -qw net.ipv4.vs.{name}={value}", ns=ns)


def record_settings(name: str, ns: str, ns_path: str) -> None:
    with PythonBackend(ns_path) as b:
        info, config = b.settings_raw()
        raw = {n: v.decode("ascii", "replace") for n, v in b._read_sysctls() if v is not None}
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for fname, data in (("info.bin", info), ("config.bin", config)):
        with open(os.path.join(d, fname), "wb") as f:
            f.write(data)
    texts = {"ipvsadm-timeout.txt": topo.ipvsadm("-Ln --timeout", ns),
             "sysctl.txt": topo.sh("sysctl net.ipv4.vs", ns=ns, check=False)}
    for fname, text in texts.items():
        with open(os.path.join(d, fname), "w") as f:
            f.write(text)
    with open(os.path.join(d, "sysctl-raw.json"), "w") as f:
        json.dump(raw, f, indent=1, sort_keys=True)
    print(f"recorded {name} settings: {len(raw)} sysctls")


def settings_only() -> None:
    for name, tune in (("empty", False), ("standard", True), ("many", False)):
        ns = topo.Bare(f"rec-{name}-{int(time.time())}")
        try:
            ns.build()
            if tune:
                tune_settings(ns.director)
            record_settings(name, ns.director, ns.netns_path)
        finally:
            ns.teardown()


def many_rules(n: int) -> str:
    """n services with 3 dests each: enough that dumps span several datagrams."""
    lines = []
    for i in range(n):
        vip = f"10.78.{i // 250}.{i % 250 + 1}"
        lines.append(f"-A -t {vip}:80 -s rr")
        for j in range(3):
            lines.append(f"-a -t {vip}:80 -r 10.77.11.{j + 2}:8080 -m -w {j}")
    return "\n".join(lines)


def main() -> None:
    subprocess_ok = os.system("modprobe ip_vs") == 0
    if not subprocess_ok:
        sys.exit("modprobe ip_vs failed")
    if "--settings-only" in sys.argv[1:]:
        settings_only()
        return
    lab = topo.Lab(prefix="rec")
    try:
        lab.build()
        record("empty", lab)
        record_settings("empty", lab.director, lab.netns_path)
        lab.ipvs(topo.STANDARD_RULES)
        lab.mangle(topo.STANDARD_MANGLE_V4)
        lab.mangle(topo.STANDARD_MANGLE_V6, v6=True)
        topo.standard_traffic(lab)
        tune_settings(lab.director)
        record("standard", lab)
        record_settings("standard", lab.director, lab.netns_path)
        topo.sh("ipvsadm -C", ns=lab.director)
        lab.ipvs(many_rules(300))
        record("many", lab)
        record_settings("many", lab.director, lab.netns_path)
    finally:
        lab.teardown()


if __name__ == "__main__":
    main()
