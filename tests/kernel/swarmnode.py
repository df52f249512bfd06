"""A real single-node Docker Swarm inside the VM (Debian's docker.io).

Laid out the way a Swarm node has it, so deploy/swarm/stack.yml runs as
shipped: dockerd's default socket (/var/run/docker.sock) and exec root
(/var/run/docker, so Swarm's namespaces are /var/run/docker/netns/*),
iptables on. What Docker writes goes to tmpfs mounts made here (the VM's
root is the host's): the data root (overlay2 -- tmpfs supports it, and vfs
would copy every layer whole, minutes under emulation) and the exec root
(made a shared mount, so the stack's rslave bind of /var/run/docker/netns
sees namespaces created later). containerd is started first and waited for
(dockerd gives up on the one it starts itself when emulation is slow). No
docker0 bridge: the routing mesh needs docker_gwbridge only.

Nothing leaves the VM: it has no default route, the resolver is pointed at
loopback while the node runs, images come from local tarballs only, and
dockerd runs with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 (Swarm's agent
otherwise tries a registry pull for every task, even of a local image).

Everything is undone by ``stop()``: processes (by the ids we started),
mounts, links, the root namespace's iptables rules, the resolver.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from pathlib import Path

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"          # Debian's client (20.10, like the daemon)
BUSYBOX = "/bin/busybox"            # busybox-static: the workload image
BUSYBOX_IMAGE = "ipvsf-busybox:local"
SOCK = "/var/run/docker.sock"
EXEC_ROOT = Path("/run/docker")     # = /var/run/docker (the VM's /var/run is a link to /run)
DATA = Path("/run/ipvsf-swarm")     # data root, containerd state, logs, configs
NETNS_DIR = "/var/run/docker/netns"
LINK = "ipvsf-swarm0"               # dummy link carrying the node's address
ADDR = "10.199.0.1"
TABLES = ("filter", "nat", "mangle", "raw")


def sh(*argv, check=True, timeout=120, input=None) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def mounts() -> list:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f]


class WaitError(AssertionError):
    pass


def wait_for(what: str, check, timeout: float, every: float = 2.0, why=lambda: ""):
    """check() until truthy; AssertionError naming *what* (and why()) after *timeout* s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitError(f"timed out after {timeout:.0f} s waiting for {what}\n{why()}")
        time.sleep(every)


class SwarmNode:
    def __init__(self):
        self.dockerd = None
        self.containerd = None
        self.timings: dict = {}
        self._saved_resolv = None
        self._saved_rules: dict = {}
        self._new_modules: list = []
        self._mounted: list = []

    # -- timings ---------------------------------------------------------------------
    def mark(self, name: str, start: float) -> float:
        now = time.monotonic()
        self.timings[name] = round(now - start, 1)
        self.progress(f"{name}: {self.timings[name]} s")
        return now

    @staticmethod
    def progress(line: str) -> None:
        """A line in $IPVS_FAST_VM_OUT/swarm-progress.txt: readable on the
        host while the VM runs (pytest's own output comes at the end)."""
        out = os.environ.get("IPVS_FAST_VM_OUT")
        if out and os.path.isdir(out):
            with open(os.path.join(out, "swarm-progress.txt"), "a") as f:
                f.write(time.strftime("%H:%M:%S ") + line + "\n")

    # -- life cycle -------------------------------------------------------------------
    def start(self, timeout: float = 600) -> "SwarmNode":
        t = time.monotonic()
        self._isolate()
        self._mount(DATA, "size=900m")
        self._mount(EXEC_ROOT, "mode=0711")
        # shared: the stack's rslave bind mount of netns/ follows later namespaces
        sh("mount", "--make-shared", str(EXEC_ROOT))
        with open("/proc/modules") as f:
            loaded = {line.split()[0] for line in f}
        for mod in ("overlay", "br_netfilter", "vxlan", "xt_ipvs", "ip_vs_rr"):
            if mod not in loaded and sh("modprobe", mod, check=False).returncode == 0:
                self._new_modules.append(mod)
        sh("ip", "link", "add", LINK, "type", "dummy")
        sh("ip", "addr", "add", f"{ADDR}/24", "dev", LINK)
        sh("ip", "link", "set", LINK, "up")
        deadline = time.monotonic() + timeout
        self._start_containerd(deadline)
        t = self.mark("containerd", t)
        config = DATA / "daemon.json"
        config.write_text(json.dumps({"bridge": "none"}) + "\n")
        self.dockerd_log = open(DATA / "dockerd.log", "w")
        self.dockerd = subprocess.Popen(
            [DOCKERD, "--config-file", str(config), "--data-root", str(DATA / "docker"),
             "--exec-root", str(EXEC_ROOT), "--host", f"unix://{SOCK}",
             "--pidfile", str(DATA / "docker.pid"), "--storage-driver", "overlay2",
             "--containerd", str(DATA / "containerd.sock")],
            stdout=self.dockerd_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
            start_new_session=True)
        wait_for("dockerd to answer", lambda: self.dockerd.poll() is not None or self.ping(),
                 max(deadline - time.monotonic(), 1), 0.5, self.logs)
        if self.dockerd.poll() is not None:
            raise RuntimeError(f"dockerd exited {self.dockerd.returncode}:\n{self.logs()}")
        self.mark("dockerd", t)
        return self

    def _isolate(self) -> None:
        """Nothing may leave the VM: no default route (checked), resolver on loopback."""
        for fam in ("-4", "-6"):
            routes = sh("ip", fam, "route", "show", "default").stdout.strip()
            assert not routes, f"the VM has a default route ({routes}): nothing may leave it"
        self._saved_resolv = Path("/etc/resolv.conf").read_text()
        Path("/etc/resolv.conf").write_text("nameserver 127.0.0.1\n")
        for tool in ("iptables", "ip6tables"):
            self._saved_rules[tool] = sh(f"{tool}-save").stdout

    def _mount(self, path: Path, opts: str) -> None:
        path.mkdir(parents=True, exist_ok=True)
        sh("mount", "-t", "tmpfs", "-o", opts, "ipvsf-swarm", str(path))
        self._mounted.append(str(path))

    def _start_containerd(self, deadline: float) -> None:
        sock = DATA / "containerd.sock"
        config = DATA / "containerd.toml"
        # no Kubernetes CRI plugin: dockerd does not use it, and it is slow to start
        config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
        self.containerd_log = open(DATA / "containerd.log", "w")
        self.containerd = subprocess.Popen(
            ["containerd", "--config", str(config), "--address", str(sock),
             "--root", str(DATA / "containerd"), "--state", str(DATA / "containerd-state")],
            stdout=self.containerd_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
        wait_for("containerd's socket", lambda: self.containerd.poll() is not None or sock.exists(),
                 max(deadline - time.monotonic(), 1), 0.5, self.logs)
        if self.containerd.poll() is not None:
            raise RuntimeError(f"containerd exited {self.containerd.returncode}:\n{self.logs()}")

    def ping(self) -> bool:
        """GET /_ping on the socket (the docker client takes seconds to start here)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(SOCK)
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b"OK" in s.recv(1024)
        except OSError:
            return False

    def stop_dockerd(self, timeout: float = 120) -> None:
        """SIGTERM, as `systemctl stop docker` does; SIGKILL after *timeout*."""
        if self.dockerd is None or self.dockerd.poll() is not None:
            return
        self.dockerd.send_signal(signal.SIGTERM)
        try:
            self.dockerd.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dockerd.kill()
            self.dockerd.wait()

    def stop(self) -> None:
        """Undo everything start() and Docker did; never raises."""
        steps = [self._leave, self.stop_dockerd, self._stop_containerd, self._unmount,
                 self._links, self._rules, self._restore_resolv, self._modules]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as e:       # keep cleaning; report at the end
                errors.append(f"{step.__name__}: {e!r}")
        self.cleanup_errors = errors

    def _leave(self) -> None:
        if self.dockerd is not None and self.dockerd.poll() is None:
            self.docker("swarm", "leave", "--force", check=False, timeout=180)

    def _stop_containerd(self) -> None:
        proc = self.containerd
        if proc is None:
            return
        # shims of containers dockerd did not stop (it was killed): by their
        # session's process ids, which are ours (containerd was started with
        # start_new_session, its shims stay in other sessions: found by parent)
        shims = [pid for pid in _children(proc.pid)]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in shims + _leftover_shims():
            _kill_tree(pid)
        # containers left in Docker's cgroups (cgroupfs driver, cgroup v2)
        for cg in Path("/sys/fs/cgroup/docker").glob("*/cgroup.kill"):
            try:
                cg.write_text("1")
            except OSError:
                pass
        for log in (getattr(self, "containerd_log", None), getattr(self, "dockerd_log", None)):
            if log is not None:
                log.close()

    def _unmount(self) -> None:
        # namespace files Docker bind-mounted (they would shadow the kernel
        # suite's simulated ingress_sbox), then our tmpfs mounts; logs first
        # go where the failure message can find them
        self._keep_logs()
        for root in (str(EXEC_ROOT), str(DATA)):
            for m in sorted((m for m in mounts() if m.startswith(root + "/")), key=len,
                            reverse=True):
                sh("umount", "-l", m, check=False)
        for m in reversed(self._mounted):
            sh("umount", "-l", m, check=False)
        self._mounted = []
        for cg in sorted(Path("/sys/fs/cgroup/docker").glob("*"), reverse=True):
            if cg.is_dir():
                try:
                    cg.rmdir()
                except OSError:
                    pass

    def _keep_logs(self) -> None:
        dirs = [Path(tempfile.gettempdir())]
        if os.path.isdir(os.environ.get("IPVS_FAST_VM_OUT", "")):
            dirs.append(Path(os.environ["IPVS_FAST_VM_OUT"]))      # for the host
        for name in ("dockerd.log", "containerd.log"):
            src = DATA / name
            if src.exists():
                for d in dirs:
                    (d / f"ipvsf-swarm-{name}").write_bytes(src.read_bytes())

    @staticmethod
    def _links() -> None:
        for link in (LINK, "docker_gwbridge", "docker0"):
            sh("ip", "link", "del", link, check=False)

    def _rules(self) -> None:
        """The root namespace's iptables as before Docker (its chains, FORWARD DROP)."""
        for tool, saved in self._saved_rules.items():
            for table in TABLES:
                sh(tool, "-t", table, "-F", check=False)
                sh(tool, "-t", table, "-X", check=False)
                for chain in ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"):
                    sh(tool, "-t", table, "-P", chain, "ACCEPT", check=False)
            if saved.strip():
                sh(f"{tool}-restore", input=saved, check=False)

    def _restore_resolv(self) -> None:
        if self._saved_resolv is not None:
            Path("/etc/resolv.conf").write_text(self._saved_resolv)

    def _modules(self) -> None:
        # br_netfilter sends bridged traffic through iptables: not for later tests
        if "br_netfilter" in self._new_modules:
            sh("rmmod", "br_netfilter", check=False)

    # -- using it ---------------------------------------------------------------------
    def docker(self, *args, check=True, timeout=300, input=None) -> subprocess.CompletedProcess:
        r = subprocess.run([DOCKER, "--host", f"unix://{SOCK}", *args], capture_output=True,
                           text=True, timeout=timeout, input=input, stdin=None if input else
                           subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: exit {r.returncode}: "
                               f"{r.stderr.strip()[-3000:]}")
        return r

    def logs(self, n: int = 6000) -> str:
        out = []
        for name in ("dockerd.log", "containerd.log"):
            for where in (DATA / name, Path(tempfile.gettempdir()) / f"ipvsf-swarm-{name}"):
                try:
                    out.append(f"--- {name} (tail)\n" + where.read_text(errors="replace")[-n:])
                    break
                except OSError:
                    continue
        return "\n".join(out)

    def import_busybox(self, tag: str = BUSYBOX_IMAGE) -> str:
        """A local image: busybox-static, its applet links and a web root."""
        with tempfile.TemporaryDirectory() as tmp:
            tar = os.path.join(tmp, "rootfs.tar")
            with tarfile.open(tar, "w") as t:
                t.add(BUSYBOX, arcname="bin/busybox")
                for applet in ("sh", "httpd", "sleep"):
                    info = tarfile.TarInfo(f"bin/{applet}")
                    info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                    t.addfile(info)
                for d in ("tmp", "www", "etc", "proc", "sys", "dev"):
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    t.addfile(info)
                page = b"<html>" + b"ipvs_fast " * 50 + b"</html>\n"
                info = tarfile.TarInfo("www/index.html")
                info.size, info.mode = len(page), 0o644
                t.addfile(info, fileobj=io.BytesIO(page))
            self.docker("import", tar, tag)
        return tag

    def service_ps(self, service: str) -> str:
        return self.docker("service", "ps", "--no-trunc", service, check=False).stdout

    def api(self, path: str):
        """GET *path* of the Engine API, decoded JSON. Used for polling: the
        docker client costs seconds of emulated CPU per start, this nothing."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(SOCK)
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")):
            raise RuntimeError(f"GET {path}: {head[:200]!r} {body[:500]!r}")
        return json.loads(body)

    def running(self, service: str) -> int:
        """Running tasks of *service* (as `docker service ps` counts them)."""
        filters = urllib.parse.quote(json.dumps({"service": [service],
                                                 "desired-state": ["running"]}))
        try:
            tasks = self.api(f"/tasks?filters={filters}")
        except (OSError, RuntimeError, ValueError):
            return 0
        return sum(1 for t in tasks if t.get("Status", {}).get("State") == "running")

    def wait_running(self, services: dict, timeout: float = 480) -> None:
        """{service: replicas}: until each has that many running tasks; on
        timeout the tasks' states and errors (docker service ps --no-trunc)
        and the daemons' logs are in the message."""
        def why():
            return "\n".join(self.service_ps(s) for s in services) + "\n" + self.logs()
        wait_for(f"running tasks {services}",
                 lambda: all(self.running(s) >= n for s, n in services.items()), timeout, 3, why)

    def task_addresses(self, service: str, network: str = "ingress") -> set:
        """Addresses of the service's running tasks on *network* (the IPVS
        destinations Docker must have written)."""
        ids = self.docker("service", "ps", service, "--filter", "desired-state=running",
                          "-q", "--no-trunc").stdout.split()
        out = set()
        for task in json.loads(self.docker("inspect", *ids).stdout):
            for att in task.get("NetworksAttachments") or []:
                if att["Network"]["Spec"]["Name"] == network:
                    out |= {a.split("/")[0] for a in att["Addresses"]}
        return out

    def lb_marks(self, network: str) -> dict:
        """{fwmark: service name} as Docker itself reports it: the network's
        verbose inspect gives each service's LocalLBIndex, its fwmark on this node."""
        info = json.loads(self.docker("network", "inspect", "--verbose", network).stdout)[0]
        return {int(v["LocalLBIndex"]): name for name, v in (info.get("Services") or {}).items()
                if name and v.get("LocalLBIndex")}

    def network_id(self, network: str) -> str:
        return self.docker("network", "inspect", network, "--format", "{{.Id}}").stdout.strip()

    def lb_path(self, network: str) -> str:
        return os.path.join(NETNS_DIR, "lb_" + self.network_id(network)[:9])


def kernel_marks(path: str) -> set:
    """fwmarks of the IPVS services in the namespace at *path* (ipvsadm's view)."""
    r = subprocess.run(["nsenter", f"--net={path}", "ipvsadm", "-Ln"], capture_output=True,
                       text=True, timeout=60)
    return {int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("FWM ")}


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _leftover_shims() -> list:
    """containerd shims serving our containerd (their command line names our
    socket, under DATA: nothing else on the machine can)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and \
                any(str(DATA).encode() in c for c in cmd):
            out.append(int(d))
    return out


def _kill_tree(pid: int) -> None:
    for child in _children(pid):
        _kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
