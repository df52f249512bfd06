"""A real Docker engine started by the tests (Debian's docker.io).

On the host: `dockerd --storage-driver=vfs` with its own socket, data root
and exec root, no bridge and no iptables rules (containers use
`--network host` or `--network none`), so it touches nothing else on the
machine and cannot meet another engine. Its data root lives in the cache
(IPVS_FAST_CACHE, default /var/lib/ipvs-fast) so the local base image and
the build cache survive between runs; a lock file makes concurrent test
runs take turns.

The VM's Swarm node (tests/kernel/test_swarm_vm.py) has its own engine
class, tests/kernel/swarmnode.py; it loads the image saved here
(IMAGE_TARBALL, made by test_image.py or tests/image_tarball.py).
"""
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("IPVS_FAST_CACHE", "/var/lib/ipvs-fast"))
# Debian's client: it has BuildKit built in (a newer client without the
# buildx plugin falls back to the legacy builder, which has no secrets).
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
IMAGE = "ipvs-fast-exporter"
IMAGE_TARBALL = CACHE / "ipvs-fast-exporter.tar"


def version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise RuntimeError("no version in pyproject.toml")


def source_key() -> str:
    """A digest of what the image is built from (the build context the
    .dockerignore lets through, and the build script): the VM stage uses the
    saved image only if it was built from this tree."""
    import hashlib
    h = hashlib.sha256()
    files = [ROOT / "Dockerfile", ROOT / ".dockerignore", ROOT / "pyproject.toml",
             ROOT / "setup.py", ROOT / "MANIFEST.in", ROOT / "deploy/docker/build.sh"]
    for d in ("csrc", "ipvs_fast"):
        files += sorted(p for p in (ROOT / d).rglob("*")
                        if p.is_file() and p.suffix in (".py", ".c", ".h"))
    for p in files:
        h.update(str(p.relative_to(ROOT)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class DockerEngine:
    def __init__(self, data_root: Path, *, exec_root: Path | None = None,
                 storage_driver: str = "vfs", host_only: bool = True, log: Path | None = None,
                 own_containerd: bool = False):
        self.data_root = Path(data_root)
        # Under emulation dockerd gives up waiting for the containerd it
        # starts itself; one started first and waited for has all the time it needs.
        self.own_containerd = own_containerd
        self.containerd = None
        self.exec_root = exec_root
        self.storage_driver = storage_driver
        self.host_only = host_only
        self.log_path = log or self.data_root.parent / (self.data_root.name + "-dockerd.log")
        if exec_root is None:
            self.sock = "/var/run/docker.sock"
            self.pidfile = "/var/run/docker.pid"
        else:
            self.sock = str(Path(exec_root) / "docker.sock")
            self.pidfile = str(Path(exec_root) / "dockerd.pid")
        self.proc = None
        self._lock = None

    @property
    def env(self) -> dict:
        return {**os.environ, "DOCKER_HOST": f"unix://{self.sock}", "DOCKER": DOCKER}

    def start(self, timeout: float = 120) -> "DockerEngine":
        if shutil.which("dockerd") is None:
            raise RuntimeError("dockerd missing: tests/setup-env.sh installs docker.io")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._lock = open(str(self.data_root) + ".lock", "w")
        fcntl.flock(self._lock, fcntl.LOCK_EX)        # another test run's engine: wait for it
        config = self.data_root.parent / (self.data_root.name + "-daemon.json")
        config.write_text("{}\n")                     # not the machine's /etc/docker/daemon.json
        argv = ["dockerd", "--config-file", str(config), "--data-root", str(self.data_root),
                "--storage-driver", self.storage_driver, "--host", f"unix://{self.sock}",
                "--pidfile", self.pidfile]
        if self.exec_root is not None:
            Path(self.exec_root).mkdir(parents=True, exist_ok=True)
            argv += ["--exec-root", str(self.exec_root)]
        if self.host_only:
            argv += ["--bridge=none", "--iptables=false", "--ip6tables=false"]
        self.log = open(self.log_path, "w")
        deadline = time.monotonic() + timeout
        if self.own_containerd:
            argv += ["--containerd", self._start_containerd(deadline)]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd did not start: {self.log_text()[-3000:]}")
            time.sleep(0.5)
        return self

    def _start_containerd(self, deadline: float) -> str:
        state = Path("/run/ipvs-fast-containerd")
        state.mkdir(parents=True, exist_ok=True)
        sock = state / "containerd.sock"
        config = state / "config.toml"
        # no Kubernetes CRI plugin: dockerd does not use it, and it is slow to start
        config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
        self.containerd = subprocess.Popen(
            ["containerd", "--config", str(config), "--address", str(sock),
             "--root", str(self.data_root / "containerd"), "--state", str(state / "state")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        while not sock.exists():
            if self.containerd.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"containerd did not start: {self.log_text()[-3000:]}")
            time.sleep(0.5)
        return str(sock)

    def ping(self) -> bool:
        """GET /_ping on the engine's socket (the docker client is a large Go
        binary: seconds per start under emulation)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(self.sock)
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b"OK" in s.recv(1024)
        except OSError:
            return False

    def docker(self, *args, check=True, timeout=600, input=None) -> subprocess.CompletedProcess:
        r = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: exit {r.returncode}: {r.stderr[-3000:]}")
        return r

    def inspect(self, *names) -> list:
        return json.loads(self.docker("inspect", *names).stdout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=60).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
        for proc in (self.proc, self.containerd):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)   # with the containerd dockerd started
                proc.wait()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
