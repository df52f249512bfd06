"""Command line: flags, exit codes, and the exporter as a real subprocess."""
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ipvs_fast import __version__, cli

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout=30):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "ipvs_fast", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=str(ROOT))


@pytest.mark.parametrize("args, flag", [
    (["--listen-address", "nonsense"], "--listen-address"),
    (["--listen-address", ":99999"], "--listen-address"),
    (["--listen-address", "::1:9100"], "--listen-address"),
    (["--telemetry-path", "metrics"], "--telemetry-path"),
    (["--backend", "rust"], "--backend"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "soon"], "--timeout"),
    (["--log-level", "loud"], "--log-level"),
    (["--log-format", "xml"], "--log-format"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_flags_exit_2(args, flag):
    p = run_cli(*args)
    assert p.returncode == 2, p.stderr
    assert "usage:" in p.stderr
    assert flag in p.stderr


def test_bad_flags_in_process(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--telemetry-path", "nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--telemetry-path" in err


def test_version():
    p = run_cli("--version")
    assert p.returncode == 0
    assert __version__ in p.stdout
    assert __version__ == "0.1.0"


def test_help_lists_original_flags():
    p = run_cli("--help")
    assert p.returncode == 0
    for flag in ("--listen-address", "--telemetry-path", "--namespace-path", "--backend",
                 "--timeout", "--log-level", "--log-format", "--version"):
        assert flag in p.stdout
    assert ":9100" in p.stdout and "/var/run/docker/netns/ingress_sbox" in p.stdout


def test_defaults():
    a = cli.parse_args([])
    assert a.listen_address == [":9100"]
    assert a.telemetry_path == "/metrics"
    assert a.namespace_path == ["/var/run/docker/netns/ingress_sbox"]
    assert a.backend == "native"
    assert (a.scrape_timeout, a.scrape_timeout_margin) == (10.0, 0.5)
    assert a.destinations is None and not a.service_filter and not a.metric_filter
    a = cli.parse_args(["--namespace-path", "", "--listen-address=[::1]:1"])
    assert a.namespace_path == [""] and a.listen_address == ["[::1]:1"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Exporter:
    def __init__(self, *args):
        env = dict(os.environ,
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ipvs_fast", "--listen-address", f"127.0.0.1:{self.port}",
             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            cwd=str(ROOT))

    def get(self, path="/metrics", deadline=20.0):
        end = time.monotonic() + deadline
        while True:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                c.request("GET", path)
                r = c.getresponse()
                return r.status, r.read().decode()
            except OSError:
                if time.monotonic() > end or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)
            finally:
                c.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError("exporter did not stop on SIGTERM:\n" + err)
        return self.proc.returncode, out, err


def test_missing_namespace_keeps_serving():
    e = Exporter("--namespace-path", "/nonexistent", "--log-format", "text")
    try:
        for _ in range(5):
            status, body = e.get()
            assert status == 200
            assert 'ipvs_up{namespace="/nonexistent"} 0\n' in body
            assert "ipvs_services_total" not in body
            assert 'ipvs_scrape_duration_seconds{namespace="/nonexistent"}' in body
        assert e.get("/healthz") == (200, "ok")
        assert e.proc.poll() is None
    finally:
        rc, _, err = e.stop()
    assert rc == 0, err
    down = [line for line in err.splitlines() if "ipvs_up=0" in line]
    assert len(down) == 1, err
    assert "/nonexistent" in down[0] and "ENOENT" in down[0]
    assert f"listening on http://127.0.0.1:{e.port}/metrics" in err


def test_json_logs_and_port_zero():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ipvs_fast", "--listen-address", "127.0.0.1:0",
         "--namespace-path", "/nonexistent", "--log-format", "json", "--backend", "python"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    try:
        import json
        port = None
        t0 = time.monotonic()
        while port is None and time.monotonic() - t0 < 20:
            line = proc.stderr.readline()
            if not line:
                break
            rec = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= rec.keys()
            if rec["msg"].startswith("listening on http://127.0.0.1:"):
                port = int(rec["msg"].rsplit(":", 1)[1].split("/")[0])
        assert port and port != 0
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        c.close()
        assert 'ipvs_up{namespace="/nonexistent"} 0' in body
        assert 'backend="python"' in body
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


def test_port_in_use_exits_nonzero():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        p = run_cli("--listen-address", f"127.0.0.1:{s.getsockname()[1]}",
                    "--namespace-path", "/nonexistent")
    finally:
        s.close()
    assert p.returncode == 1
    assert "cannot listen" in p.stderr
