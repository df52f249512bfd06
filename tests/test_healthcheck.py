"""python -m ipvs_fast.healthcheck: the address it checks is the exporter's own."""
import pytest

from ipvs_fast.healthcheck import exporter_argv, health_url


def cmdline(*argv) -> bytes:
    return b"".join(a.encode() + b"\0" for a in argv)


def test_flags_of_the_console_script_and_of_python_m():
    assert exporter_argv(cmdline("/opt/ipvs-fast/bin/python3", "/opt/ipvs-fast/bin/ipvs-fast-exporter",
                                 "--listen-address", ":9200")) == ["--listen-address", ":9200"]
    assert exporter_argv(cmdline("python", "-m", "ipvs_fast", "--namespace-path", "")) == \
        ["--namespace-path", ""]
    with pytest.raises(ValueError, match="not ipvs-fast-exporter"):
        exporter_argv(cmdline("/bin/sh", "-c", "sleep 1"))


@pytest.mark.parametrize("argv, env, url", [
    ([], None, "http://127.0.0.1:9100/healthz"),
    (["--listen-address", ":9200"], None, "http://127.0.0.1:9200/healthz"),
    (["--listen-address=10.1.2.3:9300"], None, "http://10.1.2.3:9300/healthz"),
    (["--listen-address", "[::]:9400"], None, "http://[::1]:9400/healthz"),
    (["--listen-address", "[fd00::1]:9400"], None, "http://[fd00::1]:9400/healthz"),
    ([], "0.0.0.0:9500", "http://127.0.0.1:9500/healthz"),
    (["--listen-address", ":9600"], "0.0.0.0:9500", "http://127.0.0.1:9600/healthz"),
])
def test_health_url_follows_flags_and_environment(monkeypatch, argv, env, url):
    if env is None:
        monkeypatch.delenv("IPVS_FAST_LISTEN_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("IPVS_FAST_LISTEN_ADDRESS", env)
    assert health_url(argv) == url
