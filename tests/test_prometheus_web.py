"""A real Prometheus (Debian's /usr/bin/prometheus, on loopback, temporary
data dir) scrapes two exporters secured by --web.config.file: one over TLS
with basic auth, one over TLS with a client certificate. Both targets go
up and their samples are ingested (Prometheus asks for OpenMetrics first,
so this is also its parser reading our OpenMetrics); the same scrapes with
a wrong password or without a client certificate stay down."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.test_websecurity import PKI, SecureServer, hashpw, tls_config, write

PROMETHEUS = shutil.which("prometheus")

pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Prometheus:
    def __init__(self, directory, config: str):
        self.dir = str(directory)
        self.port = free_port()
        path = os.path.join(self.dir, "prometheus.yml")
        write(path, config)
        self.log = open(os.path.join(self.dir, "prometheus.log"), "w+")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={path}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)

    def api(self, path: str, **params):
        url = f"http://127.0.0.1:{self.port}{path}?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            reply = json.loads(r.read())
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, promql: str) -> list:
        return self.api("/api/v1/query", query=promql)["result"]

    def values(self, promql: str) -> dict:
        """{job: value} of a query."""
        return {r["metric"].get("job"): float(r["value"][1]) for r in self.query(promql)}

    def wait(self, cond, timeout=90.0):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                break
            try:
                last = cond()
                if last:
                    return last
            except OSError:
                pass
            time.sleep(0.5)
        self.log.seek(0)
        raise AssertionError(f"timed out ({last!r}); prometheus log:\n" + self.log.read()[-3000:])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def test_prometheus_scrapes_tls_basic_auth_and_client_cert(tmp_path):
    pki = PKI(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / "web.yml",
          tls_config(pki, extra=f"basic_auth_users:\n  prometheus: {hashpw('s3cret', 10)}\n")
          .replace("server.crt", "../server.crt").replace("server.key", "../server.key"))
    write(tmp_path / "b" / "web.yml",
          tls_config(pki, client_auth_type="RequireAndVerifyClientCert",
                     client_ca_file="../ca.crt")
          .replace("server.crt", "../server.crt").replace("server.key", "../server.key"))
    with SecureServer(tmp_path / "a" / "web.yml", tmp_path / "a") as a, \
            SecureServer(tmp_path / "b" / "web.yml", tmp_path / "b") as b:
        cert, key = pki.client
        prom = Prometheus(tmp_path, f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: basic_auth
    scheme: https
    tls_config: {{ca_file: {pki.ca_file}}}
    basic_auth: {{username: prometheus, password: s3cret}}
    static_configs: [{{targets: ['127.0.0.1:{a.port}']}}]
  - job_name: client_cert
    scheme: https
    tls_config: {{ca_file: {pki.ca_file}, cert_file: {cert}, key_file: {key}}}
    static_configs: [{{targets: ['localhost:{b.port}']}}]
  - job_name: wrong_password
    scheme: https
    tls_config: {{ca_file: {pki.ca_file}}}
    basic_auth: {{username: prometheus, password: guess}}
    static_configs: [{{targets: ['127.0.0.1:{a.port}']}}]
  - job_name: no_client_cert
    scheme: https
    tls_config: {{ca_file: {pki.ca_file}}}
    static_configs: [{{targets: ['localhost:{b.port}']}}]
""")
        try:
            up = prom.wait(lambda: (lambda v: v if len(v) == 4 else None)(prom.values("up")))
            up = prom.wait(lambda: (lambda v: v if v.get("basic_auth") == 1 and
                                    v.get("client_cert") == 1 else None)(prom.values("up")))
            assert up == {"basic_auth": 1, "client_cert": 1, "wrong_password": 0,
                          "no_client_cert": 0}
            # samples ingested, as the exporters wrote them
            for job, server in (("basic_auth", a), ("client_cert", b)):
                series = prom.query(f'ipvs_connections_total{{job="{job}"}}')
                assert len(series) == 2
                got = {r["metric"]["fwmark"]: float(r["value"][1]) for r in series}
                assert got == {"260": 0.0, "261": 1.0}
                assert prom.values(f'ipvs_exporter_web_config_last_reload_successful'
                                   f'{{job="{job}"}}') == {job: 1.0}
                # a counter from OpenMetrics keeps its _total name in Prometheus
                assert prom.query(f'process_cpu_seconds_total{{job="{job}"}}')
                # the metadata Prometheus keeps says it read OpenMetrics: a
                # counter family named without _total, and a UNIT
                meta = {m["metric"]: m for m in prom.api(
                    "/api/v1/targets/metadata", match_target=f'{{job="{job}"}}')}
                assert meta["ipvs_connections"]["type"] == "counter"
                assert meta["ipvs_scrape_duration_seconds"]["unit"] == "seconds"
        finally:
            prom.stop()
