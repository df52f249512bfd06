"""A Docker daemon inside the VM, for kernel tests that need real Docker
(Swarm's ingress_sbox / lb_* namespaces). Reusable: any VM test can
``with Dockerd() as d: d.docker("swarm", "init", ...)``.

The VM shares the host's filesystem read-only, so everything Docker writes
lives on tmpfs mounts made here: the data root (vfs storage driver: no
overlayfs-on-tmpfs questions), the exec root (its netns/ directory holds the
Swarm namespaces), the trust key. The daemon gets its own socket, pidfile and
exec root (not /var/run/docker), so it cannot collide with the suite's
simulated ingress_sbox at /var/run/docker/netns. Nothing leaves the VM: no
default route, images only from local tarballs (:func:`import_busybox`),
services created with --no-resolve-image.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"          # the docker.io client (not whatever else is on PATH)
BUSYBOX = "/bin/busybox"
IMAGE = "ipvsf-busybox:local"


def available() -> bool:
    return all(os.access(p, os.X_OK) for p in (DOCKERD, DOCKER, BUSYBOX)) and \
        shutil.which("containerd") is not None and shutil.which("runc") is not None


def _mounted(path: str) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Dockerd:
    """dockerd on tmpfs under *base*; ``start()`` waits until it answers."""

    def __init__(self, base: str = "/run/ipvsf-docker"):
        self.base = base
        self.data_root = os.path.join(base, "data")
        self.exec_root = os.path.join(base, "exec")
        self.sock = os.path.join(base, "docker.sock")
        self.host = "unix://" + self.sock
        self.netns_dir = os.path.join(self.exec_root, "netns")
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(tempfile.gettempdir(), "ipvsf-dockerd.log")

    # -- life cycle -----------------------------------------------------------------
    def start(self, timeout: float = 180) -> "Dockerd":
        os.makedirs(self.base, exist_ok=True)
        if not _mounted(self.base):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0711", "tmpfs", self.base],
                           check=True)
        for d in (self.data_root, self.exec_root):
            os.makedirs(d, exist_ok=True)
        self._cgroups()
        for mod in ("br_netfilter", "overlay", "vxlan", "ip_vs", "xt_ipvs", "veth", "bridge"):
            subprocess.run(["modprobe", mod], capture_output=True)
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [DOCKERD, "--host", self.host, "--data-root", self.data_root,
             "--exec-root", self.exec_root, "--pidfile", os.path.join(self.base, "docker.pid"),
             "--storage-driver", "vfs", "--config-file", self._config(), "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited ({self.proc.returncode}): {self.logtext()}")
            if self.docker("version", check=False).returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not answer in {timeout}s: {self.logtext()}")
            time.sleep(0.5)

    def _config(self) -> str:
        """daemon.json: the trust key (20.10 writes one at first start) goes
        to tmpfs too -- the host's /etc/docker is read-only here, and the key
        path is a config-file setting only."""
        path = os.path.join(self.base, "daemon.json")
        with open(path, "w") as f:
            json.dump({"deprecated-key-path": os.path.join(self.base, "key.json")}, f)
        return path

    @staticmethod
    def _cgroups() -> None:
        """runc needs a cgroup hierarchy; the VM's init may not mount one."""
        if not os.path.exists("/sys/fs/cgroup/cgroup.controllers") and \
                not os.path.isdir("/sys/fs/cgroup/memory"):
            os.makedirs("/sys/fs/cgroup", exist_ok=True)
            subprocess.run(["mount", "-t", "cgroup2", "none", "/sys/fs/cgroup"], check=True)

    def stop(self, timeout: float = 60) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL) and what it started."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self._our_pids():          # containerd / shims it left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        self.stop()
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1] for line in f]
        for m in sorted((m for m in mounts if m.startswith(self.base + "/")), key=len,
                        reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
        subprocess.run(["umount", "-l", self.base], capture_output=True)

    def _our_pids(self) -> list:
        """Processes whose command line names our roots (started by this daemon)."""
        out = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    cmd = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            if self.base in cmd:
                out.append(int(d))
        return out

    def __enter__(self) -> "Dockerd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- helpers -----------------------------------------------------------------------
    def docker(self, *args, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        p = subprocess.run([DOCKER, "--host", self.host, *args], capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed ({p.returncode}): "
                               f"{p.stderr.strip()}")
        return p

    def import_busybox(self, tag: str = IMAGE) -> str:
        """A local image: busybox-static and its applet links in a rootfs tarball."""
        with tempfile.TemporaryDirectory() as tmp:
            tar = os.path.join(tmp, "rootfs.tar")
            with tarfile.open(tar, "w") as t:
                t.add(BUSYBOX, arcname="bin/busybox")
                for applet in ("sh", "httpd", "sleep", "nc", "cat", "ls"):
                    info = tarfile.TarInfo(f"bin/{applet}")
                    info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                    t.addfile(info)
                for d in ("tmp", "www", "etc", "proc", "sys", "dev"):
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    t.addfile(info)
            self.docker("import", tar, tag)
        return tag

    def logtext(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""
