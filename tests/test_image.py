"""The container image, built and run by a real Docker engine on the host.

The engine is started here (tests/docker_engine.py: dockerd, vfs storage,
no bridge, no iptables); the image is built by deploy/docker/build.sh, the
same script users run, and saved to the cache for the Swarm test in the VM.
The host kernel has no IPVS, so the exporter serves ipvs_up 0 here; what the
image reads from a real Swarm's IPVS is tests/kernel/test_swarm_vm.py's part.
"""
import os
import re
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .docker_engine import CACHE, DOCKER, IMAGE, IMAGE_TARBALL, ROOT, DockerEngine, source_key, version

LOCAL_BASE = "ipvs-fast-base:bookworm"
SHUTDOWN_TIMEOUT = 5.0     # MetricsServer's default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 10) -> tuple:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


def wait_http(port: int, path: str, timeout: float, alive=lambda: True) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return http_get(port, path)[1]
        except OSError:
            if time.monotonic() > deadline or not alive():
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def engine():
    eng = DockerEngine(CACHE / "docker-host", exec_root=Path("/run/ipvs-fast-dockerd"))
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def image(engine):
    """Built with deploy/docker/build.sh (the local base made on first use),
    saved with `docker save` for the VM stage together with its source key."""
    tag = f"{IMAGE}:{version()}"
    start = time.monotonic()
    r = subprocess.run([str(ROOT / "deploy/docker/build.sh"), "--save", str(IMAGE_TARBALL)],
                       env=engine.env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, f"build.sh failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    (CACHE / "ipvs-fast-exporter.key").write_text(source_key() + "\n")
    print(f"image built in {time.monotonic() - start:.0f} s")
    # earlier builds' images (this engine is the tests' own): vfs keeps full copies
    engine.docker("image", "prune", "--force")
    return tag


@pytest.fixture
def container(engine, image):
    """`docker run -d` with the given arguments; removed afterwards."""
    names = []

    def run(*args, image_args=()):
        name = f"ipvsf-test-{os.getpid()}-{len(names)}"
        names.append(name)
        engine.docker("run", "-d", "--name", name, *args, image, *image_args)
        return name

    yield run
    for name in names:
        engine.docker("rm", "-f", name, check=False)


def restricted(port: int) -> list:
    """As the README runs it: read-only, every capability dropped but NET_ADMIN, host network."""
    return ["--read-only", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--network", "host",
            "-e", f"IPVS_FAST_LISTEN_ADDRESS=127.0.0.1:{port}", "-e", "IPVS_FAST_NAMESPACE_PATH="]


def running(engine, name) -> bool:
    return engine.inspect(name)[0]["State"]["Running"]


def test_serves_read_only_with_only_net_admin(engine, container):
    port = free_port()
    name = container(*restricted(port))
    assert wait_http(port, "/healthz", 60, lambda: running(engine, name)) == "ok"
    body = http_get(port, "/metrics")[1]
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body) for s in fam.samples}
    # the host kernel has no IPVS: served as ipvs_up 0, not an error
    assert samples[("ipvs_up", (("namespace", ""),))] == 0
    state = engine.inspect(name)[0]
    assert state["HostConfig"]["ReadonlyRootfs"] is True
    assert state["HostConfig"]["CapDrop"] == ["ALL"]
    logs = engine.docker("logs", name).stdout + engine.docker("logs", name).stderr
    assert "Traceback" not in logs and "Read-only file system" not in logs, logs


def test_healthcheck_turns_healthy_and_fails_on_a_dead_port(engine, container):
    port = free_port()
    name = container(*restricted(port))
    deadline = time.monotonic() + 90
    while (health := engine.inspect(name)[0]["State"]["Health"]["Status"]) != "healthy":
        assert health == "starting" and time.monotonic() < deadline, engine.inspect(name)[0]["State"]
        time.sleep(1)
    # The check reads the exporter's own address: pointed elsewhere it fails.
    r = engine.docker("exec", "-e", "IPVS_FAST_LISTEN_ADDRESS=127.0.0.1:1", name,
                      "python", "-m", "ipvs_fast.healthcheck", check=False)
    assert r.returncode == 1 and "unhealthy" in r.stderr, r


def test_listen_address_flag_is_what_the_healthcheck_checks(engine, container):
    port = free_port()
    name = container(*restricted(free_port()), image_args=("--listen-address", f"127.0.0.1:{port}"))
    wait_http(port, "/healthz", 60, lambda: running(engine, name))
    r = engine.docker("exec", name, "python", "-m", "ipvs_fast.healthcheck", check=False)
    assert r.returncode == 0, r


def test_sigterm_stops_within_the_shutdown_timeout(engine, container):
    port = free_port()
    name = container(*restricted(port))
    wait_http(port, "/healthz", 60, lambda: running(engine, name))
    start = time.monotonic()
    engine.docker("kill", "--signal", "TERM", name)
    code = int(engine.docker("wait", name, timeout=60).stdout.strip())
    took = time.monotonic() - start
    assert code == 0, engine.docker("logs", name).stderr
    assert took < SHUTDOWN_TIMEOUT + 2, took
    assert "stopped" in engine.docker("logs", name).stderr


NO_BUILD_TOOLS = r"""
found=""
for c in gcc cc c99 cpp ld as x86_64-linux-gnu-gcc-12 make pip pip3; do
    command -v "$c" >/dev/null 2>&1 && found="$found $c"
done
h=$(find / -xdev -name Python.h 2>/dev/null | head -1); [ -n "$h" ] && found="$found $h"
python3 -c 'import pip' 2>/dev/null && found="$found pip-module"
echo "found:$found"
"""


def build_tools(engine, image) -> str:
    r = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image,
                      "-c", NO_BUILD_TOOLS)
    return r.stdout.strip()


def test_runtime_image_has_no_compiler_headers_or_pip(engine, image):
    assert build_tools(engine, image) == "found:"
    # the same check finds them in the builder stage (cached layers: quick)
    r = subprocess.run([str(ROOT / "deploy/docker/build.sh"), "--target", "builder"],
                       env={**engine.env, "IMAGE": "ipvs-fast-builder-check"},
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    found = build_tools(engine, f"ipvs-fast-builder-check:{version()}").split()
    assert "gcc" in found and any(f.endswith("Python.h") for f in found), found
    engine.docker("rmi", f"ipvs-fast-builder-check:{version()}", "ipvs-fast-builder-check:latest",
                  check=False)


def test_runtime_image_can_read_the_mangle_port_map(engine, image):
    """iptables-save and nsenter: how the exporter maps Swarm's fwmarks to ports."""
    r = engine.docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image,
                      "-c", "command -v iptables-save; command -v nsenter")
    assert len(r.stdout.split()) == 2, r.stdout


def test_metadata(engine, image):
    cfg = engine.inspect(image)[0]["Config"]
    labels = cfg["Labels"]
    assert labels["org.opencontainers.image.version"] == version()
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == rev
    assert cfg["Entrypoint"] == ["/opt/ipvs-fast/bin/ipvs-fast-exporter"]
    assert list(cfg["ExposedPorts"]) == ["9100/tcp"]
    assert cfg["Healthcheck"]["Test"][:1] == ["CMD"]
    size = engine.inspect(image)[0]["Size"]
    print(f"image size {size / 1e6:.0f} MB")
    stated = re.search(r"The image is about \*\*(\d+) MB\*\*", (ROOT / "README.md").read_text())
    # Packages move with the day's Debian and PyPI: the claim holds within 5%.
    assert stated and abs(int(stated.group(1)) - size / 1e6) <= 0.05 * size / 1e6, (stated, size)


def readme_run_command() -> str:
    """The sh block under '## Run the exporter' in the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Run the exporter\n", 1)[1]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    return m.group(1)


def source_tar() -> bytes:
    """The checkout as a new user has it (tracked and new files, nothing ignored)."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryFile() as f:
        with tarfile.open(fileobj=f, mode="w") as tar:
            for name in files:
                if (ROOT / name).is_file():
                    tar.add(ROOT / name, arcname=f"ipvs_fast/{name}")
        f.seek(0)
        return f.read()


def test_readme_run_command_works_on_debian12_python(engine, image, tmp_path):
    """The README's command, verbatim, in a clean Debian 12 (debootstrap
    minbase + python3) as root: its own Python refuses `pip install .`
    (PEP 668), the README's venv command must not."""
    cmd = readme_run_command()
    assert "pip install" in cmd and "ipvs-fast-exporter" in cmd
    regcfg = tmp_path / "registry"
    subprocess.run([str(ROOT / "deploy/docker/registry-config.sh"), str(regcfg)], check=True)
    (tmp_path / "readme.sh").write_text(cmd)
    port = free_port()
    mounts = ["-v", f"{tmp_path / 'readme.sh'}:/run/readme.sh:ro",
              "-v", f"{regcfg / 'pip.conf'}:/etc/pip.conf:ro",
              "-v", f"{regcfg / 'apt.conf'}:/etc/apt/apt.conf.d/99machine:ro"]
    if (regcfg / "pip-cert").exists():
        mounts += ["-v", f"{regcfg / 'pip-cert'}:/run/secrets/pip-cert:ro"]
    name = f"ipvsf-readme-{os.getpid()}"
    engine.docker("create", "--name", name, "--network", "host", "-w", "/root/ipvs_fast",
                  "-e", f"IPVS_FAST_LISTEN_ADDRESS=127.0.0.1:{port}", *mounts,
                  LOCAL_BASE, "sh", "-eux", "/run/readme.sh")
    try:
        subprocess.run([DOCKER, "cp", "-", f"{name}:/root"], input=source_tar(), env=engine.env,
                       check=True, capture_output=True)
        engine.docker("start", name)
        start = time.monotonic()
        wait_http(port, "/healthz", 600, lambda: running(engine, name))
        body = http_get(port, "/metrics")[1]
        assert 'ipvs_up{namespace=""} 0' in body
        print(f"README command: serving after {time.monotonic() - start:.0f} s")
    except Exception:
        print(engine.docker("logs", name, check=False).stderr[-5000:])
        raise
    finally:
        engine.docker("rm", "-f", name, check=False)
