"""End-to-end benchmark driver; runs as root INSIDE the VM (bench/vm_e2e.sh).

For each size (services x 10 dests): load the services with one `ipvsadm -R`,
then alternate, round by round, the measurements of every contender on the
same kernel state, and write everything to $OUT/e2e.json.

Contenders:
  ours_native / ours_python : GET /metrics of an already running, warmed-up
                              exporter (python -m ipvs_fast), identity encoding
  ours_native_gzip          : the same with Accept-Encoding: gzip
  ours_node[_gzip], ours_ipvs[_gzip]: the same for --format node / --format ipvs
  cpu_<contender>           : the exporter's CPU seconds (utime + stime of the
                              process, /proc/PID/stat) during that one scrape,
                              for ours_* and node_exporter[_gzip]
  render_ingress / render_node / render_ipvs: the format's renderer in this
                              process on the snapshot just dumped, steady state
                              (label cache warm), the body planned and read piece
                              by piece as the server does: "rendering"
  dump_native / dump_python : backend.dump() in this process (dump + parse,
                              no render, no HTTP): "our dump stage"
  table_native              : NativeBackend.dump_table() in this process: the
                              GET_SERVICE dump + /proc/net/ip_vs (what --format
                              node collects; node_exporter reads that file)
  ipvsadm                   : ipvsadm -Ln --stats --exact > /dev/null
  node_exporter[_gzip]      : GET /metrics of Debian's prometheus-node-exporter
                              with only the ipvs collector (and with
                              Accept-Encoding: gzip, as Prometheus scrapes)
  pyroute2                  : bench/pyroute2_dump.py (once at big sizes: slow)
  floor                     : bench/floor.c, GET_SERVICE + GET_DEST dumps into
                              a buffer, no parsing
  conc1/conc10_native[_gzip]: 1 vs 10 simultaneous GETs (native; threads,
                              raw sockets, read to EOF)
  static_get, conc1/conc10_static: the same GETs against bench/static_body.py,
                              a server on the same stack sending a prebuilt
                              body of the same size: the transfer floor

At BENCH_CURL_SIZES (default 5000) only the default format vs ipvsadm, with
curl as the client (curl_ours_native, curl_ours_native_gzip) beside
http.client (ours_native), and node_exporter with curl.

BENCH_SKIP (comma separated) leaves out the slow extras: python (the Python
backend), pyroute2, concurrency (conc*), static (the transfer floor).
BENCH_EXTRA=static_ipvs adds static_get_ipvs (and static_get): GETs of
prebuilt bodies the size of the --format ipvs and ingress bodies, one
client: what moving those bytes costs, without collecting or rendering.
At 10,000 x 10 it needs BENCH_MEMORY=4G: with 2 GiB the kernel killed the
driver (its three renderers' caches, the exporters' and a 336 MB body).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
OUT = os.environ["BENCH_OUT"]
FLOOR = os.path.join(OUT, "floor")
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "1000,10000").split(",") if x]
CURL_SIZES = [int(x) for x in os.environ.get("BENCH_CURL_SIZES", "5000").split(",") if x]
SKIP = set(os.environ.get("BENCH_SKIP", "").split(","))
EXTRA = set(os.environ.get("BENCH_EXTRA", "").split(","))
FORMATS = {"native": "ingress", "node_fmt": "node", "ipvs_fmt": "ipvs"}   # exporter -> format
CLK_TCK = os.sysconf("SC_CLK_TCK")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
NDEST = 10
PY = sys.executable
RESULTS: dict = {"sizes": {}, "meta": {}}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def save():
    with open(os.path.join(OUT, "e2e.json.tmp"), "w") as f:
        json.dump(RESULTS, f, indent=1)
    os.replace(os.path.join(OUT, "e2e.json.tmp"), os.path.join(OUT, "e2e.json"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rules(nsvc: int) -> str:
    """ipvsadm -R input: a quarter fwmark services, the rest TCP VIPs."""
    out = []
    for i in range(nsvc):
        if i % 4 == 0:
            key = "-f %d" % (256 + i)
        else:
            key = "-t 10.%d.%d.%d:%d" % (100 + (i >> 16) % 100, (i >> 8) & 255, i & 255, 80 + i % 1000)
        out.append("-A %s -s wlc" % key)
        for j in range(NDEST):
            out.append("-a %s -r 172.%d.%d.%d:%d -m -w 1" % (
                key, 16 + (i >> 16) % 16, (i >> 8) & 255, (i + j) & 255, 8080 + j))
    return "\n".join(out) + "\n"


def http_get(port: int, gzip: bool = False, timeout: float = 600) -> tuple[float, int, bytes]:
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gzip else {})
    r = c.getresponse()
    body = r.read()
    c.close()
    dt = time.monotonic() - t0
    if r.status != 200:
        raise RuntimeError(f"port {port}: HTTP {r.status}")
    if not gzip and b"ipvs_up{" in body and not re.search(rb"^ipvs_up\{[^}]*\} 1$", body, re.M):
        # a timed-out or failed collection is a small, fast body: never time it
        raise RuntimeError(f"port {port}: scrape with ipvs_up 0 ({len(body)} bytes)")
    return dt, len(body), body


def wait_http(port: int, path: str = "/", deadline: float = 600):
    end = time.monotonic() + deadline
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            c.getresponse().read()
            c.close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def timed(argv, **kw) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.monotonic() - t0


def status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def raw_get(port: int, gzip: bool, buf: bytearray) -> int:
    """GET /metrics over a plain socket (HTTP/1.0, read to EOF into a reused
    buffer): the cheapest client Python has; recv releases the GIL."""
    req = (b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n"
           + (b"Accept-Encoding: gzip\r\n" if gzip else b"") + b"\r\n")
    view = memoryview(buf)
    total = 0
    with socket.create_connection(("127.0.0.1", port), timeout=600) as s:
        s.sendall(req)
        while True:
            n = s.recv_into(view)
            if not n:
                break
            if total == 0 and buf[9:12] != b"200":
                raise RuntimeError(f"port {port}: {bytes(buf[:40])!r}")
            total += n
    return total


def scrapes(port: int, n: int, gzip: bool) -> float:
    """Wall time of n simultaneous scrapes (threads, raw sockets)."""
    barrier = threading.Barrier(n + 1)
    errs, sizes = [], []

    def one():
        buf = bytearray(1 << 20)
        barrier.wait()
        try:
            sizes.append(raw_get(port, gzip, buf))
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in ts:
        t.join()
    dt = time.monotonic() - t0
    if errs:
        raise errs[0]
    if min(sizes) < 1000:
        raise RuntimeError(f"short response: {sizes}")
    return dt


def cpu_seconds(pid: int) -> float:
    """utime + stime of process *pid* (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def curl_get(port: int, gzip: bool = False) -> float:
    t0 = time.monotonic()
    subprocess.run(["curl", "-sSf", "-o", "/dev/null"] + (["-H", "Accept-Encoding: gzip"] if gzip
                                                          else []) +
                   [f"http://127.0.0.1:{port}/metrics"], check=True)
    return time.monotonic() - t0


def render_streamed(renderer, results) -> float:
    """One steady-state render as served: planned, read piece by piece."""
    t0 = time.monotonic()
    body = renderer.render_pieces(results)
    n = 0
    for piece in body:
        n += len(piece)
    dt = time.monotonic() - t0
    if n != len(body):
        raise RuntimeError(f"rendered {n} bytes, {len(body)} planned")
    return dt


def scrape_duration(body: bytes) -> float:
    m = re.search(rb"^ipvs_scrape_duration_seconds\{[^}]*\} (\S+)$", body, re.M)
    return float(m.group(1)) if m else float("nan")


def stop_all(procs) -> None:
    """SIGTERM every process, then wait up to 10 s each (SIGKILL after)."""
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    from ipvs_fast.backends.native import NativeBackend
    from ipvs_fast.backends.python import PythonBackend

    subprocess.run(["modprobe", "ip_vs"], check=True)
    RESULTS["meta"] = {"kernel": os.uname().release, "cpus": os.cpu_count(),
                       "python": sys.version.split()[0], "rounds": ROUNDS,
                       "ipvsadm": subprocess.run(["ipvsadm", "--version"], capture_output=True,
                                                 text=True).stdout.strip(),
                       "node_exporter": subprocess.run(
                           ["prometheus-node-exporter", "--version"], capture_output=True,
                           text=True).stdout.split("\n")[0] + subprocess.run(
                           ["prometheus-node-exporter", "--version"], capture_output=True,
                           text=True).stderr.split("\n")[0]}
    try:
        import pyroute2
        RESULTS["meta"]["pyroute2"] = pyroute2.__version__
    except Exception:
        pass
    ports = {"native": free_port(), "node_fmt": free_port(), "ipvs_fmt": free_port(),
             "node": free_port()}
    if "python" not in SKIP:
        ports["python"] = free_port()
    logs = {k: open(os.path.join(OUT, f"{k}.log"), "w") for k in ports}
    def ours(k, backend, timeout, scrape_timeout):
        return subprocess.Popen([PY, "-m", "ipvs_fast", "--listen-address",
                                 f"127.0.0.1:{ports[k]}", "--namespace-path", "",
                                 "--format", FORMATS.get(k, "ingress"),
                                 "--backend", backend, "--timeout", str(timeout),
                                 "--scrape-timeout", str(scrape_timeout)],
                                stdout=logs[k], stderr=subprocess.STDOUT)
    procs = {k: ours(k, "native", 60, 120) for k in FORMATS}
    if "python" in ports:
        procs["python"] = ours("python", "python", 150, 300)
    procs["node"] = subprocess.Popen(["prometheus-node-exporter", "--collector.disable-defaults",
                                      "--collector.ipvs",
                                      f"--web.listen-address=127.0.0.1:{ports['node']}"],
                                     stdout=logs["node"], stderr=subprocess.STDOUT)
    try:
        for k in ports:
            if k != "node":
                wait_http(ports[k], "/healthz")
        wait_http(ports["node"], "/")
        log("exporters up", ports)
        for nsvc in SIZES:
            run_size(nsvc, ports, procs, NativeBackend, PythonBackend)
        for nsvc in CURL_SIZES:
            run_curl_size(nsvc, ports)
    finally:
        stop_all(procs.values())
    log("done")


def run_size(nsvc, ports, procs, NativeBackend, PythonBackend):
    R: dict = {"load": {}, "runs": {}, "rss": {}, "body": {}}
    RESULTS["sizes"][str(nsvc)] = R
    subprocess.run(["ipvsadm", "-C"], check=True)
    text = rules(nsvc)
    R["load"]["ipvsadm_R_seconds"] = timed(["ipvsadm", "-R"], input=text.encode())
    n = subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True).stdout.count("\n  -> ") - 1
    R["load"]["dests_loaded"] = n
    log(f"{nsvc} x {NDEST}: loaded in {R['load']['ipvsadm_R_seconds']:.1f}s ({n} dests)")
    big = nsvc >= 5000
    runs = R["runs"]

    def add(name, v):
        runs.setdefault(name, []).append(v)
        log(f"  {name}: {v:.3f}s")
        save()

    # warm-up: one scrape of each exporter (label caches, imports, sockets)
    for k in ports:
        if k == "node":
            continue
        dt, blen, body = http_get(ports[k])
        R["body"][k] = blen
        log(f"  warm {k}: {dt:.2f}s body {blen}")
    for k in FORMATS:
        R["body"][k + "_gzip"] = http_get(ports[k], gzip=True)[1]
    _, R["body"]["node_exporter"], _ = http_get(ports["node"])
    nb = NativeBackend("", timeout=60)
    pb = PythonBackend("", timeout=150) if "python" not in SKIP else None
    renderers = renderers_for_formats()
    from ipvs_fast.collection.target import CollectResult
    snap = nb.dump()
    for rd in renderers.values():                 # warm their label caches
        render_streamed(rd, [CollectResult("", True, 0.01, snap, {})])
    static = static_ipvs = None
    if "static" not in SKIP or "static_ipvs" in EXTRA:
        sport = free_port()
        static = subprocess.Popen([PY, os.path.join(ROOT, "bench", "static_body.py"), str(sport),
                                   str(R["body"]["native"])], stdout=subprocess.DEVNULL)
        wait_http(sport, "/")
    if "static_ipvs" in EXTRA:
        # the transfer floor of --format ipvs: a prebuilt body of its size
        iport = free_port()
        static_ipvs = subprocess.Popen([PY, os.path.join(ROOT, "bench", "static_body.py"),
                                        str(iport), str(R["body"]["ipvs_fmt"])],
                                       stdout=subprocess.DEVNULL)
        wait_http(iport, "/")

    def scrape_with_cpu(name, k, port, gzip):
        pid = procs[k].pid
        c0 = cpu_seconds(pid)
        dt, _, body = http_get(port, gzip=gzip)
        add(name, dt)
        add("cpu_" + name, cpu_seconds(pid) - c0)
        return body

    names = {"native": "ours_native", "node_fmt": "ours_node", "ipvs_fmt": "ours_ipvs"}
    for r in range(ROUNDS):
        log(f" round {r + 1}/{ROUNDS}")
        for k, name in names.items():
            body = scrape_with_cpu(name, k, ports[k], False)
            add(name + "_dump_in_exporter", scrape_duration(body))
            scrape_with_cpu(name + "_gzip", k, ports[k], True)
        t0 = time.monotonic()
        snap = nb.dump()
        add("dump_native", time.monotonic() - t0)
        t0 = time.monotonic()
        table = nb.dump_table()
        add("table_native", time.monotonic() - t0)
        assert table.ndests == nsvc * NDEST, table.ndests
        assert snap.ndests == nsvc * NDEST, snap.ndests
        res = [CollectResult("", True, 0.01, snap, {})]
        for fmt, rd in renderers.items():
            add("render_" + fmt, render_streamed(rd, res))
        fl = json.loads(subprocess.run([FLOOR, "1"], capture_output=True, text=True,
                                       check=True).stdout)["runs"][0]
        R["floor_bytes"] = fl["bytes"]
        add("floor", fl["seconds"])
        add("ipvsadm", timed("ipvsadm -Ln --stats --exact > /dev/null", shell=True))
        scrape_with_cpu("node_exporter", "node", ports["node"], False)
        scrape_with_cpu("node_exporter_gzip", "node", ports["node"], True)
        if "concurrency" not in SKIP:
            add("conc1_native", scrapes(ports["native"], 1, False))
            add("conc10_native", scrapes(ports["native"], 10, False))
            add("conc1_native_gzip", scrapes(ports["native"], 1, True))
            add("conc10_native_gzip", scrapes(ports["native"], 10, True))
        if static is not None:
            add("static_get", http_get(sport)[0])
        if static is not None and "static" not in SKIP:
            add("conc1_static", scrapes(sport, 1, False))
            add("conc10_static", scrapes(sport, 10, False))
        if static_ipvs is not None:
            add("static_get_ipvs", http_get(iport)[0])
        if pb is not None and (not big or r == 0):
            t0 = time.monotonic()
            pb.dump()
            add("dump_python", time.monotonic() - t0)
            add("ours_python", http_get(ports["python"])[0])
        if "pyroute2" not in SKIP and (not big or r == 0):
            p = subprocess.run([PY, os.path.join(ROOT, "bench", "pyroute2_dump.py")],
                               capture_output=True, text=True)
            if p.returncode == 0:
                add("pyroute2", json.loads(p.stdout)["seconds"])
            else:
                R["pyroute2_error"] = p.stderr[-2000:]
                log("  pyroute2 failed:", p.stderr[-500:])
    # peak RSS of one scrape per exporter: reset VmHWM, scrape, read it
    for k in ports:
        if k == "node":
            continue
        pid = procs[k].pid
        hwm0 = status(pid, "VmHWM")
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        rss0 = status(pid, "VmRSS")
        _, blen, _ = http_get(ports[k])
        R["rss"][k] = {"rss_before": rss0, "hwm_after_scrape": status(pid, "VmHWM"),
                       "hwm_since_start": hwm0, "body": blen}
        log(f"  rss {k}: {R['rss'][k]}")
    for p in (static, static_ipvs):
        if p is not None:
            p.terminate()
            p.wait(10)
    nb.close()
    if pb is not None:
        pb.close()
    save()


def renderers_for_formats() -> dict:
    from ipvs_fast.formats.ingress import IngressRenderer
    from ipvs_fast.formats.ipvs import IPVSRenderer
    from ipvs_fast.formats.node import NodeRenderer
    return {"ingress": IngressRenderer(), "node": NodeRenderer(), "ipvs": IPVSRenderer()}


def run_curl_size(nsvc, ports):
    """The default format vs ipvsadm with curl as the client (as issue 15
    measured), beside the same scrape with http.client."""
    R: dict = {"load": {}, "runs": {}, "body": {}}
    RESULTS.setdefault("curl_sizes", {})[str(nsvc)] = R
    subprocess.run(["ipvsadm", "-C"], check=True)
    R["load"]["ipvsadm_R_seconds"] = timed(["ipvsadm", "-R"], input=rules(nsvc).encode())
    log(f"{nsvc} x {NDEST} (curl): loaded in {R['load']['ipvsadm_R_seconds']:.1f}s")

    def add(name, v):
        R["runs"].setdefault(name, []).append(v)
        log(f"  {name}: {v:.3f}s")
        save()
    R["body"]["native"] = http_get(ports["native"])[1]
    curl_get(ports["native"])
    for r in range(ROUNDS):
        log(f" round {r + 1}/{ROUNDS}")
        add("curl_ours_native", curl_get(ports["native"]))
        add("curl_ours_native_gzip", curl_get(ports["native"], gzip=True))
        add("ours_native", http_get(ports["native"])[0])
        add("ipvsadm", timed("ipvsadm -Ln --stats --exact > /dev/null", shell=True))
        add("curl_node_exporter", curl_get(ports["node"]))


if __name__ == "__main__":
    main()
