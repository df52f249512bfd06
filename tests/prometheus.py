"""A real Prometheus (Debian's /usr/bin/prometheus) on loopback, for host
tests and the VM suite: a config text (plus any files it refers to) in a
temporary directory, the HTTP API, and a bounded wait for conditions."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

from .kernel.conftest import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


class Prometheus:
    """config: the text of prometheus.yml; files: {name: text or source path}
    written next to it (rule files, file_sd target files); args: more flags."""

    def __init__(self, config: str, files: dict | None = None, args=()):
        self.dir = tempfile.mkdtemp(prefix="prom-", dir="/tmp")
        self.port = free_port()
        for name, content in (files or {}).items():
            dest = os.path.join(self.dir, name)
            if os.path.isfile(content):
                shutil.copyfile(content, dest)
            else:
                with open(dest, "w") as f:
                    f.write(content)
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.dir, "log.txt"), "w+")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}", *args],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)

    def api(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.loads(r.read())

    def query(self, promql: str) -> list:
        reply = self.api("/api/v1/query", query=promql)
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def query_range(self, promql: str, start: float, end: float, step: float) -> list:
        reply = self.api("/api/v1/query_range", query=promql, start=start, end=end, step=step)
        assert reply["status"] == "success", reply
        return reply["data"]["result"]

    def value(self, promql: str):
        """The value of a single-series query (None while there is no series)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=10) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not get ready: {self.logtext()[-3000:]}")
            time.sleep(1)

    def logtext(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def until(check, timeout: float, what: str):
    """Call check() until it returns a tuple whose first item is true (returned); bounded."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last and last[0]:
            return last
        time.sleep(1)
    raise AssertionError(f"{what}: never happened within {timeout}s; last: {last}")
