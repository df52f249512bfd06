import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from . import topo

INGRESS_SBOX = "/var/run/docker/netns/ingress_sbox"


@pytest.fixture(scope="session", autouse=True)
def ip_vs_module():
    subprocess.run(["modprobe", "ip_vs"], check=True)
    yield


@pytest.fixture(scope="module")
def lab():
    """The standard topology, reachable at Docker's ingress_sbox path, with traffic."""
    lab = topo.Lab(prefix="ipvsf", alias_path=INGRESS_SBOX)
    try:
        lab.build()
        lab.ipvs(topo.STANDARD_RULES)
        lab.mangle(topo.STANDARD_MANGLE_V4)
        lab.mangle(topo.STANDARD_MANGLE_V6, v6=True)
        topo.standard_traffic(lab)
        yield lab
    finally:
        lab.teardown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    def __init__(self, args, env=None):
        self.port = free_port()
        self.log = open(f"/tmp/exporter-{self.port}.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ipvs_fast", "--listen-address", f"127.0.0.1:{self.port}", *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/healthz")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"exporter did not start: {self.logtext()}")
                time.sleep(0.2)

    def get(self, path="/metrics", timeout=60) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            return r.read().decode()

    def logtext(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def exporter():
    started = []

    def start(*args, env=None):
        e = Exporter(list(args), env=env)
        started.append(e)
        return e

    yield start
    for e in started:
        e.stop()
