"""--web.config.file: exporter-toolkit's web configuration (TLS, mutual TLS,
basic auth, headers, rate limit), proven with real clients (curl, Python's
ssl) against the real server on loopback; reloading without restart; the
YAML checked like the toolkit's UnmarshalStrict."""
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import warnings

import bcrypt
import pytest

from ipvs_fast.collection.target import NamespaceTarget
from ipvs_fast.http import sites, webconfig
from ipvs_fast.http.auth import BasicAuth, parse_basic
from ipvs_fast.http.webconfig import WebConfigError, WebSecurity, load, parse_duration
from tests.pki import CA, server_pair
from tests.test_server import ServerThread, World, exporter_for, parse

CURL = shutil.which("curl")


def hashpw(pw: str, cost: int = 4) -> str:
    return bcrypt.hashpw(pw.encode(), bcrypt.gensalt(cost)).decode()


class PKI:
    """Files in *d*: ca.crt, server.{crt,key}, client.{crt,key} (signed by
    the CA, SAN DNS prometheus.local), foreign.{crt,key} (another CA)."""

    def __init__(self, d):
        self.dir = str(d)
        self.ca = CA("test CA")
        self.server = self.ca.write(self.dir, "server", server_pair(self.ca))
        self.ca_file = os.path.join(self.dir, "ca.crt")
        with open(self.ca_file, "wb") as f:
            f.write(self.ca.pem)
        self.client = self.ca.write(self.dir, "client",
                                    self.ca.issue("prometheus", dns=["prometheus.local"]))
        self.other_client = self.ca.write(self.dir, "other",
                                          self.ca.issue("other", dns=["other.local"]))
        self.foreign_ca = CA("foreign CA")
        self.foreign = self.foreign_ca.write(self.dir, "foreign",
                                             self.foreign_ca.issue("prometheus",
                                                                   dns=["prometheus.local"]))


@pytest.fixture
def pki(tmp_path):
    return PKI(tmp_path)


def write(path, text):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@pytest.fixture(autouse=True)
def fast_polling(monkeypatch):
    monkeypatch.setattr(webconfig, "POLL_INTERVAL", 0.05)


class SecureServer(ServerThread):
    """The real MetricsServer + Exporter with a WebSecurity from *config_path*."""

    def __init__(self, config_path, tmp_path):
        world = World()
        ns = tmp_path / "ns"
        ns.write_text("")
        st = os.stat(ns)
        world.ident = (st.st_dev, st.st_ino)
        self.exporter = exporter_for(NamespaceTarget(str(ns), world.factory,
                                                     port_reader=lambda p: {}))
        self.security = WebSecurity(load(str(config_path)))
        self.exporter.add_collector(self.security)
        super().__init__(self.exporter, web_security=self.security)

    def client_context(self, cafile=None, cert=None, version=None, seclevel0=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile:
            ctx.load_verify_locations(cafile)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(*cert)
        if version is not None:
            if seclevel0:
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            with warnings.catch_warnings():     # TLS 1.0/1.1 clients on purpose
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ctx.maximum_version = version
        return ctx

    def tls_request(self, ctx, path="/metrics", headers=None, host="127.0.0.1"):
        """(status, headers, body, TLS version)."""
        c = http.client.HTTPSConnection(host, self.port, context=ctx, timeout=10)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            body = r.read()
            return (r.status, {k.lower(): v for k, v in r.getheaders()}, body,
                    c.sock.version())
        finally:
            c.close()


def tls_config(pki, extra="", **kw):
    lines = ["tls_server_config:", "  cert_file: server.crt", "  key_file: server.key"]
    lines += [f"  {k}: {v}" for k, v in kw.items()]
    return "\n".join(lines) + "\n" + extra


# -- TLS versions --------------------------------------------------------------------

def test_tls12_and_tls13_python_ssl(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            status, _, body, got = s.tls_request(s.client_context(pki.ca_file, version=v))
            assert (status, got) == (200, name)
            assert b"ipvs_up" in body
        # plain HTTP on the TLS port gets no metrics
        with pytest.raises((http.client.HTTPException, OSError)):
            s.request()


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_tls12_and_tls13_curl(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        for flags, want in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
                            (["--tlsv1.3"], "TLSv1.3")):
            p = subprocess.run([CURL, "-sS", "-v", "--cacert", pki.ca_file, *flags,
                                f"https://localhost:{s.port}/metrics"],
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == 0, p.stderr
            assert f"SSL connection using {want}" in p.stderr
            assert "ipvs_up" in p.stdout


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_refused_by_default_and_allowed_when_configured(pki, tmp_path, version):
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            s.tls_request(s.client_context(version=version, seclevel0=True))
    # the same client gets through when the file allows it: the refusal
    # above is the server's minimum version, not a client that cannot
    write(tmp_path / "web.yml", tls_config(pki, min_version="TLS10"))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        status, _, _, got = s.tls_request(s.client_context(version=version, seclevel0=True))
        assert status == 200 and got == {ssl.TLSVersion.TLSv1: "TLSv1",
                                         ssl.TLSVersion.TLSv1_1: "TLSv1.1"}[version]


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_old_tls_refused_curl(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        p = subprocess.run([CURL, "-sS", "--cacert", pki.ca_file, "--tlsv1.1", "--tls-max", "1.1",
                            "--ciphers", "DEFAULT:@SECLEVEL=0",
                            f"https://localhost:{s.port}/metrics"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 35 and "ipvs_up" not in p.stdout


def test_max_version_and_cipher_suites(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(
        pki, max_version="TLS12",
        cipher_suites="[TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256]",
        prefer_server_cipher_suites="true", curve_preferences="[CurveP256]"))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        ctx = s.client_context(pki.ca_file)
        c = http.client.HTTPSConnection("127.0.0.1", s.port, context=ctx, timeout=10)
        c.request("GET", "/healthz")
        assert c.getresponse().status == 200
        assert c.sock.version() == "TLSv1.2"
        assert c.sock.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
        c.close()
        # a client offering only another suite is refused
        ctx = s.client_context(pki.ca_file, version=ssl.TLSVersion.TLSv1_2)
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        with pytest.raises(ssl.SSLError):
            s.tls_request(ctx)
        # and one with only another curve
        ctx = s.client_context(pki.ca_file)
        ctx.set_ecdh_curve("secp384r1")
        with pytest.raises(ssl.SSLError):
            s.tls_request(ctx)


# -- client certificates -------------------------------------------------------------

def test_mutual_tls(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki, client_auth_type="RequireAndVerifyClientCert",
                                           client_ca_file="ca.crt"))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            status, _, body, _ = s.tls_request(s.client_context(pki.ca_file, pki.client, v))
            assert status == 200 and b"ipvs_up" in body
            for cert in (None, pki.foreign):     # none, or signed by another CA
                with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                    s.tls_request(s.client_context(pki.ca_file, cert, v))


@pytest.mark.skipif(CURL is None, reason="curl not installed")
def test_mutual_tls_curl(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki, client_auth_type="RequireAndVerifyClientCert",
                                           client_ca_file="ca.crt"))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        url = f"https://localhost:{s.port}/metrics"
        ok = subprocess.run([CURL, "-sS", "--cacert", pki.ca_file, "--cert", pki.client[0],
                             "--key", pki.client[1], url], capture_output=True, text=True)
        assert ok.returncode == 0 and "ipvs_up" in ok.stdout
        for args in ([], ["--cert", pki.foreign[0], "--key", pki.foreign[1]]):
            bad = subprocess.run([CURL, "-sS", "--cacert", pki.ca_file, *args, url],
                                 capture_output=True, text=True)
            assert bad.returncode != 0 and "ipvs_up" not in bad.stdout


def test_verify_client_cert_if_given(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki, client_auth_type="VerifyClientCertIfGiven",
                                           client_ca_file=pki.ca_file))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        assert s.tls_request(s.client_context(pki.ca_file))[0] == 200
        assert s.tls_request(s.client_context(pki.ca_file, pki.client))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            s.tls_request(s.client_context(pki.ca_file, pki.foreign))


def test_client_allowed_sans(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(
        pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt",
        client_allowed_sans="[prometheus.local, 10.0.0.1]"))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        assert s.tls_request(s.client_context(pki.ca_file, pki.client))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            s.tls_request(s.client_context(pki.ca_file, pki.other_client))


def test_request_client_cert_admits_everyone(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki, client_auth_type="RequestClientCert"))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        assert s.tls_request(s.client_context(pki.ca_file))[0] == 200
        assert s.tls_request(s.client_context(pki.ca_file, pki.foreign))[0] == 200


# -- basic auth ----------------------------------------------------------------------

def auth_header(user, pw):
    import base64
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


def test_basic_auth(tmp_path):
    write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {hashpw('s3cret')}\n"
                                f"  bob: {hashpw('other')}\n")
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        status, headers, body = s.request(headers=auth_header("alice", "s3cret"))
        assert status == 200 and b"ipvs_up" in body
        for h in ({}, auth_header("alice", "wrong"), auth_header("mallory", "s3cret"),
                  {"Authorization": "Basic !!!"}, {"Authorization": "Bearer x"}):
            status, headers, body = s.request(headers=h)
            assert status == 401 and headers["www-authenticate"] == "Basic"
            assert b"ipvs_up" not in body
            # the landing page and unknown paths are protected too
            assert s.request(path="/", headers=h)[0] == 401
            assert s.request(path="/nope", headers=h)[0] == 401
        # /healthz stays open (documented)
        assert s.request(path="/healthz")[0] == 200


def test_basic_auth_cache_and_unknown_users_cost_bcrypt(tmp_path):
    write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {hashpw('pw', cost=10)}\n")
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        auth = s.security.auth

        def timed(h):
            before, t = auth.hashes, time.perf_counter()
            status = s.request(headers=h)[0]
            return status, auth.hashes - before, time.perf_counter() - t

        status, hashes, t_known = timed(auth_header("alice", "pw"))
        assert (status, hashes) == (200, 1)
        status, hashes, t_cached = timed(auth_header("alice", "pw"))
        assert (status, hashes) == (200, 0)           # verified pair cached
        status, hashes, _ = timed(auth_header("alice", "nope"))
        assert (status, hashes) == (401, 1)
        # unknown users: bcrypt all the same, at the cost of the configured hash
        t_unknown = []
        for i in range(3):
            status, hashes, t = timed(auth_header(f"nobody{i}", "pw"))
            assert (status, hashes) == (401, 1)
            t_unknown.append(t)
        assert auth._dummy.split(b"$")[2] == b"10"
        assert t_cached < min(t_unknown)


def test_parse_basic():
    assert parse_basic("Basic YWxpY2U6cHc6eA==") == (b"alice", b"pw:x")
    assert parse_basic("basic YWxpY2U6") == (b"alice", b"")
    for bad in (None, "", "Basic", "Basic YWxpY2U=", "Basic ***", "Digest x", "Basic é"):
        assert parse_basic(bad) is None


def test_long_password_uses_72_bytes_like_go():
    a = BasicAuth()
    pw = "x" * 72
    a.configure({"u": hashpw(pw).encode()})
    assert a._verify((pw + "tail").encode(), a.users[b"u"])
    assert not a._verify(b"x" * 71, a.users[b"u"])
    a.close()


def test_headers_rate_limit(tmp_path):
    write(tmp_path / "web.yml", "http_server_config:\n  http2: false\n  headers:\n"
                                "    X-Frame-Options: sameorigin\n"
                                "    Content-Security-Policy: default-src 'none'\n"
                                "rate_limit:\n  interval: 1h\n  burst: 2\n")
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        codes = []
        for _ in range(3):
            status, headers, _ = s.request(path="/")
            codes.append(status)
            assert headers["x-frame-options"] == "sameorigin"
            assert headers["content-security-policy"] == "default-src 'none'"
        assert codes == [200, 200, 429]
        assert s.request(path="/healthz")[0] == 200


# -- the YAML ----------------------------------------------------------------------

@pytest.mark.parametrize("text,words", [
    ("tls_server_config:\n  cert_file: a\n  colour: red\n", ["line 3", "colour"]),
    ("basic_auth_users:\n  a: x\nbasic_auth_user:\n  b: y\n", ["line 3", "basic_auth_user"]),
    ("http_server_config:\n  headers:\n    Server: x\n", ["line 3", "Server"]),
    ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", ["line 3", "deny"]),
    ("http_server_config:\n  http2: maybe\n", ["line 2", "http2", "true or false"]),
    ("basic_auth_users:\n  alice: plaintext\n", ["line 2", "alice", "bcrypt"]),
    ("tls_server_config:\n  key_file: k\n", ["missing one of cert"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  min_version: TLS14\n", ["line 4", "min_version", "TLS14"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  min_version: TLS13\n  max_version: TLS12\n", ["above"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  client_auth_type: RequireAnyClientCert\n", ["line 4", "RequireAndVerifyClientCert"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  client_auth_type: Maybe\n", ["invalid client_auth_type"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  client_ca_file: ca.crt\n", ["without a Client Auth Policy"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"
     "  client_allowed_sans: [a]\n", ["line 6", "RequireAndVerifyClientCert"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n", ["line 4", "unknown cipher"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  curve_preferences: [X25519, CurveP256]\n", ["line 4", "one curve"]),
    ("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
     "  curve_preferences: [Curve25519]\n", ["unknown curve"]),
    ("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
     ["cannot read cert_file", "missing.crt"]),
    ("tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n",
     ["cannot load the certificate"]),
    ("rate_limit:\n  interval: soon\n", ["line 2", "invalid duration"]),
    ("tls_server_config: [1, 2]\n", ["line 1", "expected a mapping"]),
    ("a: [\n", ["invalid YAML"]),
])
def test_bad_files(pki, tmp_path, text, words):
    write(tmp_path / "web.yml", text)
    with pytest.raises(WebConfigError) as e:
        load(str(tmp_path / "web.yml"))
    for w in words:
        assert w in str(e.value)
    assert str(tmp_path / "web.yml") in str(e.value)


def test_good_files(pki, tmp_path):
    write(tmp_path / "empty.yml", "")
    c = load(str(tmp_path / "empty.yml"))
    assert not c.tls and not c.users and c.headers == {}
    # inline cert/key/client_ca (indented PEM blocks)
    cert, key = (open(p).read() for p in pki.server)
    ind = lambda s: "\n".join("    " + ln for ln in s.strip().splitlines())
    write(tmp_path / "inline.yml", f"tls_server_config:\n  cert: |\n{ind(cert)}\n"
                                   f"  key: |\n{ind(key)}\n"
                                   f"  client_auth_type: RequireAndVerifyClientCert\n"
                                   f"  client_ca: |\n{ind(pki.ca.pem.decode())}\n")
    c = load(str(tmp_path / "inline.yml"))
    assert c.tls and c.ssl_context.verify_mode == ssl.CERT_REQUIRED
    # relative paths are relative to the file's directory, not the cwd
    sub = tmp_path / "sub"
    sub.mkdir()
    write(sub / "web.yml", "tls_server_config:\n  cert_file: ../server.crt\n"
                           "  key_file: ../server.key\n")
    cwd = os.getcwd()
    try:
        os.chdir("/")
        c = load(str(sub / "web.yml"))
    finally:
        os.chdir(cwd)
    assert c.tls and os.path.join(str(sub), "../server.crt") in c.files


def test_duration():
    assert parse_duration("1m30s") == 90 and parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0
    for bad in ("", "1", "1d", "s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# -- reloading without restart -------------------------------------------------------

def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_certificate_rotation(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        old_ctx = s.client_context(pki.ca_file)
        assert s.tls_request(old_ctx)[0] == 200
        keep = http.client.HTTPSConnection("127.0.0.1", s.port, context=old_ctx, timeout=10)
        keep.request("GET", "/healthz")
        assert keep.getresponse().read() == b"ok"
        # a new server certificate from a new CA, written over the old files
        new_ca = CA("rotated CA")
        new_ca.write(pki.dir, "server", server_pair(new_ca))
        new_ca_file = os.path.join(pki.dir, "new-ca.crt")
        with open(new_ca_file, "wb") as f:
            f.write(new_ca.pem)
        new_ctx = s.client_context(new_ca_file)

        def rotated():
            try:
                return s.tls_request(new_ctx)[0] == 200
            except ssl.SSLError:
                return False
        assert wait_for(rotated)
        with pytest.raises(ssl.SSLError):          # new connections: new certificate
            s.tls_request(old_ctx)
        keep.request("GET", "/healthz")            # an open connection lives on
        assert keep.getresponse().read() == b"ok"
        keep.close()
        assert s.security.last_reload_successful


def test_password_rotation_and_invalid_edit(tmp_path, caplog):
    path = tmp_path / "web.yml"
    write(path, f"basic_auth_users:\n  alice: {hashpw('one')}\n")
    with SecureServer(path, tmp_path) as s:
        metric = lambda: parse(s.request(headers=auth_header("alice", "two") if
                                         s.security.config.users["alice"] != first
                                         else auth_header("alice", "one"))[2])
        first = s.security.config.users["alice"]
        assert s.request(headers=auth_header("alice", "one"))[0] == 200
        write(path, f"basic_auth_users:\n  alice: {hashpw('two')}\n")
        assert wait_for(lambda: s.request(headers=auth_header("alice", "two"))[0] == 200)
        assert s.request(headers=auth_header("alice", "one"))[0] == 401
        assert metric()[("ipvs_exporter_web_config_last_reload_successful", ())] == 1
        # an invalid edit: the last good configuration stays, the metric says 0
        caplog.clear()
        write(path, "basic_auth_users:\n  alice: two\n")
        assert wait_for(lambda: not s.security.last_reload_successful)
        time.sleep(0.3)                            # several polls: still one log line
        assert s.request(headers=auth_header("alice", "two"))[0] == 200
        assert metric()[("ipvs_exporter_web_config_last_reload_successful", ())] == 0
        errors = [r for r in caplog.records if "not reloaded" in r.getMessage()]
        assert len(errors) == 1 and "line 2" in errors[0].getMessage()
        # another bad edit is another change: logged once more
        write(path, "basic_auth_users:\n  alice: three\n# x\n")
        assert wait_for(lambda: len([r for r in caplog.records
                                     if "not reloaded" in r.getMessage()]) == 2)
        # fixed: applied, metric back to 1
        write(path, f"basic_auth_users:\n  alice: {hashpw('three')}\n")
        assert wait_for(lambda: s.security.last_reload_successful)
        assert s.request(headers=auth_header("alice", "three"))[0] == 200


def test_switching_tls_off_needs_restart(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        write(tmp_path / "web.yml", "")
        assert wait_for(lambda: not s.security.last_reload_successful)
        assert s.tls_request(s.client_context(pki.ca_file))[0] == 200


def test_mtls_ca_rotation(pki, tmp_path):
    """A new client CA (the old one dropped) applies to new connections."""
    write(tmp_path / "web.yml", tls_config(pki, client_auth_type="RequireAndVerifyClientCert",
                                           client_ca_file="ca.crt"))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        server_ca = str(tmp_path / "server-ca.crt")
        shutil.copy(pki.ca_file, server_ca)
        assert s.tls_request(s.client_context(server_ca, pki.client))[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            s.tls_request(s.client_context(server_ca, pki.foreign))
        with open(pki.ca_file, "wb") as f:       # the client CA is now the foreign one
            f.write(pki.foreign_ca.pem)

        def swapped():
            try:
                return s.tls_request(s.client_context(server_ca, pki.foreign))[0] == 200
            except (ssl.SSLError, ConnectionError, http.client.HTTPException):
                return False
        assert wait_for(swapped)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            s.tls_request(s.client_context(server_ca, pki.client))


# -- hostile TLS clients ---------------------------------------------------------------

def _stall(port, hello, n=300) -> list:
    """*n* connections that never finish a handshake: silent ones, ones
    stuck half-way through a ClientHello, ones that sent a whole ClientHello
    and went quiet."""
    out = []
    for i in range(n):
        c = socket.create_connection(("127.0.0.1", port))
        if i % 3 == 1:
            c.sendall(hello[:20])
        elif i % 3 == 2:
            c.sendall(hello)
        out.append(c)
    return out


def test_stalled_handshakes_do_not_delay_scrapes(pki, tmp_path):
    """With the handshake timeout at its default (10 s), a loop that waited
    on any stalled handshake would delay the scrapes by seconds."""
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        ctx = s.client_context(pki.ca_file)
        s.tls_request(ctx)
        stalled = _stall(s.port, _client_hello(ctx))
        try:
            worst = 0.0
            for _ in range(5):
                t = time.perf_counter()
                assert s.tls_request(ctx)[0] == 200
                worst = max(worst, time.perf_counter() - t)
            assert worst < 2.0, worst
        finally:
            for c in stalled:
                c.close()


def test_stalled_handshakes_are_closed(pki, tmp_path, monkeypatch):
    monkeypatch.setattr(sites, "TLS_HANDSHAKE_TIMEOUT", 1.0)
    write(tmp_path / "web.yml", tls_config(pki))
    with SecureServer(tmp_path / "web.yml", tmp_path) as s:
        ctx = s.client_context(pki.ca_file)
        stalled = _stall(s.port, _client_hello(ctx), n=30)
        time.sleep(1.0)
        for c in stalled:
            assert _closed_by_peer(c, timeout=5.0)
            c.close()
        assert s.tls_request(ctx)[0] == 200


def _closed_by_peer(c, timeout) -> bool:
    c.settimeout(timeout)
    try:
        while c.recv(65536):          # e.g. a ServerHello, then the end
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _client_hello(ctx) -> bytes:
    """The bytes of a real ClientHello (captured from an in-memory handshake)."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


# -- the command line --------------------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_exporter(args, env=None, **kw):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "ipvs_fast", "--namespace-path", "", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                            cwd=ROOT, **kw)


def test_invalid_file_at_start_exits_2(tmp_path):
    write(tmp_path / "web.yml", "tls_server_config:\n  cert_file: a.crt\n  certfile: b\n")
    for args, env in (([f"--web.config.file={tmp_path / 'web.yml'}"], {}),
                      ([], {"IPVS_FAST_WEB_CONFIG_FILE": str(tmp_path / "web.yml")})):
        p = run_exporter(["--listen-address", "127.0.0.1:0", *args], env)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 2
        assert "--web.config.file" in err and "line 3" in err and "'certfile'" in err
    p = run_exporter(["--listen-address", "127.0.0.1:0",
                      f"--web.config.file={tmp_path / 'missing.yml'}"])
    assert p.wait(60) == 2 and "missing.yml" in p.stderr.read()


def _get_tls(port, ctx, path="/healthz"):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=5)
    try:
        c.request("GET", path)
        return c.getresponse().status
    finally:
        c.close()


def _wait_listening(port, proc, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("exporter not listening: " + (proc.stderr.read() if proc.poll()
                                                        is not None else ""))


def test_node_exporter_flag_names_several_listeners(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki))
    ports = [_free_port(), _free_port()]
    p = run_exporter([f"--web.listen-address=127.0.0.1:{ports[0]}",
                      f"--web.listen-address=127.0.0.1:{ports[1]}",
                      "--web.telemetry-path=/m", f"--web.config.file={tmp_path / 'web.yml'}"])
    try:
        ctx = ssl.create_default_context(cafile=pki.ca_file)
        for port in ports:
            _wait_listening(port, p)
            assert _get_tls(port, ctx, "/m") == 200
            assert _get_tls(port, ctx, "/metrics") == 404
    finally:
        p.terminate()
        p.wait(30)


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate not installed")
def test_systemd_socket_activation(pki, tmp_path):
    write(tmp_path / "web.yml", tls_config(pki))
    port = _free_port()
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen(["systemd-socket-activate", "-l", f"127.0.0.1:{port}",
                          "-E", "PYTHONPATH", sys.executable, "-m", "ipvs_fast",
                          "--namespace-path", "", "--web.systemd-socket",
                          "--listen-address", "127.0.0.1:1",     # ignored
                          f"--web.config.file={tmp_path / 'web.yml'}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e,
                         cwd=ROOT)
    try:
        _wait_listening(port, p)
        ctx = ssl.create_default_context(cafile=pki.ca_file)
        end = time.monotonic() + 60
        while True:        # systemd-socket-activate starts the exporter on the first connection
            try:
                assert _get_tls(port, ctx, "/metrics") == 200
                break
            except (OSError, http.client.HTTPException):
                if time.monotonic() > end:
                    raise
                time.sleep(0.2)
    finally:
        p.terminate()
        p.wait(30)
    # without the sockets: a clear error, not a crash
    q = run_exporter(["--web.systemd-socket"])
    assert q.wait(60) == 1 and "socket activation" in q.stderr.read()


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_sighup_rereads_the_web_config(tmp_path):
    """SIGHUP applies a changed --web.config.file now (the periodic check
    would too, later) and says so in the log; the process keeps serving."""
    import signal

    from tests.test_cli import Exporter as ExporterProcess
    path = tmp_path / "web.yml"
    write(path, f"basic_auth_users:\n  alice: {hashpw('one')}\n")
    e = ExporterProcess("--namespace-path", "", "--web.config.file", str(path))
    try:
        assert e.get("/healthz")[0] == 200
        assert e.get("/metrics")[0] == 401
        e.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert e.proc.poll() is None
        assert e.get("/healthz")[0] == 200
        rc, _, err = e.stop()
    finally:
        if e.proc.poll() is None:
            e.proc.kill()
    assert rc == 0, err
    assert "SIGHUP: re-reading the web configuration" in err
    assert "ignored" not in err
