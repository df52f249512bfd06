"""``--web.config.file``: exporter-toolkit's web configuration (TLS, mutual
TLS, basic auth, response headers, rate limit), read, checked and applied.

The YAML is exporter-toolkit's (docs/web-configuration.md there), checked
as strictly as its ``yaml.UnmarshalStrict``: an unknown or repeated key,
or a value of the wrong type, is an error naming the key and its line.
Relative paths resolve against the file's directory.

What Python's ``ssl`` can honour is mapped onto an :class:`ssl.SSLContext`;
what it cannot is refused with a message saying so (see README, "Web
security"):

* ``client_auth_type``: ``NoClientCert`` and ``RequestClientCert`` admit
  every client (Go requests a certificate for the latter but never checks
  it; we do not ask); ``VerifyClientCertIfGiven`` -> CERT_OPTIONAL,
  ``RequireAndVerifyClientCert`` -> CERT_REQUIRED. ``RequireAnyClientCert``
  (a certificate demanded but not verified) has no equivalent: refused.
* ``cipher_suites``: Go's names mapped to OpenSSL's; TLS 1.3 suites are
  accepted and, as in Go, not configurable.
* ``curve_preferences``: one curve (OpenSSL's groups, TLS 1.2 and 1.3);
  a list of several is refused (Python's ssl sets a single group).
* ``min_version`` below TLS12 also lowers OpenSSL's security level to 0,
  without which OpenSSL 3 refuses TLS 1.0/1.1 handshakes anyway.

:class:`WebSecurity` keeps the configuration current: it watches the file
and every file it names, re-reads them when one changes, and applies a good
result (new TLS connections, new requests); a bad one keeps the last good
configuration.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
import ssl
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Optional

import yaml
from aiohttp import web

log = logging.getLogger(__name__)

#: seconds between two looks at the web config file and the files it names
POLL_INTERVAL = 1.0

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

#: Go's crypto/tls.CipherSuites() names -> OpenSSL names (TLS 1.2 and below)
CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
#: TLS 1.3 suites: always all enabled (Go ignores them in cipher_suites too)
TLS13_CIPHERS = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                 "TLS_CHACHA20_POLY1305_SHA256")

#: Go's curve names -> OpenSSL group names
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1",
          "X25519": "X25519"}

CLIENT_AUTH_TYPES = ("NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                     "RequireClientCert", "VerifyClientCertIfGiven",
                     "RequireAndVerifyClientCert")

#: exporter-toolkit's settable response headers -> allowed values (None: any)
HEADERS = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}")


class WebConfigError(ValueError):
    """The web config file (or a file it names) is unusable; the message
    names the file, and the key and line when the YAML is at fault."""


@dataclass(frozen=True)
class WebConfig:
    """One good reading of the file (see :func:`load`)."""
    path: str
    ssl_context: Optional[ssl.SSLContext] = None      # None: plain HTTP
    client_allowed_sans: tuple = ()
    headers: dict = field(default_factory=dict)
    http2: bool = True
    users: dict = field(default_factory=dict)          # user -> bcrypt hash (bytes)
    rate_limit: Optional[tuple] = None                 # (interval seconds, burst)
    #: the config file and every file it names (watched for changes)
    files: tuple = ()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None


# -- YAML with line numbers ----------------------------------------------------------

class _Node:
    """A YAML node checked against the schema: errors name its key path and line."""

    def __init__(self, path: str, node, where: str):
        self.node, self.path, self.where = node, path, where

    def fail(self, msg: str):
        line = self.node.start_mark.line + 1 if self.node is not None else 1
        key = f"{self.path}: " if self.path else ""
        raise WebConfigError(f"{self.where} line {line}: {key}{msg}")

    def is_null(self) -> bool:
        return self.node is None or (isinstance(self.node, yaml.ScalarNode)
                                     and self.node.tag == "tag:yaml.org,2002:null")

    def mapping(self, keys: Optional[tuple]) -> dict:
        """{key: _Node}; *keys*: the allowed keys (None: any string key)."""
        if self.is_null():
            return {}
        if not isinstance(self.node, yaml.MappingNode):
            self.fail("expected a mapping")
        out: dict = {}
        for k, v in self.node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag != "tag:yaml.org,2002:str":
                _Node(self.path, k, self.where).fail("keys must be strings")
            name = k.value
            sub = f"{self.path}.{name}" if self.path else name
            if keys is not None and name not in keys:
                _Node(sub, k, self.where).fail(f"unknown key {name!r} (known: {', '.join(keys)})")
            if name in out:
                _Node(sub, k, self.where).fail("key given twice")
            out[name] = _Node(sub, v, self.where)
        return out

    def _scalar(self):
        if not isinstance(self.node, yaml.ScalarNode):
            self.fail("expected a single value")
        return yaml.SafeLoader.construct_scalar(_LOADER, self.node), self.node.tag

    def string(self) -> str:
        if self.is_null():
            return ""
        value, tag = self._scalar()
        if tag not in ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int",
                       "tag:yaml.org,2002:float"):
            self.fail(f"expected a string, got {value!r}")
        return value

    def boolean(self) -> bool:
        value, tag = self._scalar()
        if tag != "tag:yaml.org,2002:bool":
            self.fail(f"expected true or false, got {value!r}")
        return _LOADER.construct_yaml_bool(self.node)

    def integer(self) -> int:
        value, tag = self._scalar()
        if tag != "tag:yaml.org,2002:int":
            self.fail(f"expected an integer, got {value!r}")
        return _LOADER.construct_yaml_int(self.node)

    def strings(self) -> list:
        if self.is_null():
            return []
        if not isinstance(self.node, yaml.SequenceNode):
            self.fail("expected a list")
        return [_Node(f"{self.path}[{i}]", n, self.where).string()
                for i, n in enumerate(self.node.value)]


_LOADER = yaml.SafeLoader("")

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Go's time.ParseDuration (``1s``, ``1m30s``, ``250ms``; ``0``) in seconds."""
    s = text.strip()
    if s in ("0", "+0", "-0"):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r} (e.g. 1s, 500ms, 1m30s)")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s:
        raise ValueError("empty duration")
    return total


# -- loading --------------------------------------------------------------------------

def _resolve(directory: str, p: str) -> str:
    return p if not p or os.path.isabs(p) else os.path.join(directory, p)


def _read(path: str, what: str, where: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise WebConfigError(f"{where}: cannot read {what} {path}: {e.strerror or e}") from None


def load(path: str) -> WebConfig:
    """Read and check *path* and the files it names; WebConfigError if
    anything is wrong. Slow parts (TLS context, one bcrypt hash when basic
    auth is on) happen here, never on the event loop."""
    where = f"web config {path}"
    text = _read(path, "the file", where)
    try:
        doc = yaml.compose(text.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError:
        raise WebConfigError(f"{where}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise WebConfigError(f"{where}{line}: invalid YAML: "
                             f"{getattr(e, 'problem', None) or e}") from None
    top = _Node("", doc, where).mapping(
        ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"))
    directory = os.path.dirname(os.path.abspath(path))
    files = [os.path.abspath(path)]

    ctx, sans = None, ()
    if "tls_server_config" in top:
        ctx, sans = _tls(top["tls_server_config"], directory, files, where)

    headers: dict = {}
    http2 = True
    if "http_server_config" in top:
        h = top["http_server_config"].mapping(("http2", "headers"))
        if "http2" in h:
            http2 = h["http2"].boolean()
        for header, node in h.get("headers", _Node("", None, where)).mapping(None).items():
            if header not in HEADERS:
                node.fail(f"HTTP header {header!r} can not be configured "
                          f"(allowed: {', '.join(HEADERS)})")
            value = node.string()
            allowed = HEADERS[header]
            if allowed is not None and value not in allowed:
                node.fail(f"expected one of {', '.join(allowed)}, got {value!r}")
            if any(c in value for c in "\r\n\0"):
                node.fail("header values cannot contain line breaks")
            if value:
                headers[header] = value

    users: dict = {}
    if "basic_auth_users" in top:
        for user, node in top["basic_auth_users"].mapping(None).items():
            h = node.string()
            if not _BCRYPT_HASH.fullmatch(h) or not 4 <= int(h.split("$")[2]) <= 31:
                node.fail("expected a bcrypt hash ($2y$10$... as `htpasswd -nBC 10` writes)")
            users[user] = h.encode()

    rate = None
    if "rate_limit" in top:
        r = top["rate_limit"].mapping(("burst", "interval"))
        burst = r["burst"].integer() if "burst" in r else 0
        interval = 0.0
        if "interval" in r:
            try:
                interval = parse_duration(r["interval"].string())
            except ValueError as e:
                r["interval"].fail(str(e))
        if burst < 0 or interval < 0:
            top["rate_limit"].fail("burst and interval must not be negative")
        if interval > 0:
            rate = (interval, burst)

    if ctx is not None:
        # responses are HTTP/1.1 whatever http2 says: offer only that by ALPN
        ctx.set_alpn_protocols(["http/1.1"])
    return WebConfig(path=path, ssl_context=ctx, client_allowed_sans=sans, headers=headers,
                     http2=http2, users=users, rate_limit=rate, files=tuple(files))


def _tls(node: _Node, directory: str, files: list, where: str):
    t = node.mapping(("cert", "key", "client_ca", "cert_file", "key_file",
                      "client_auth_type", "client_ca_file", "cipher_suites",
                      "curve_preferences", "min_version", "max_version",
                      "prefer_server_cipher_suites", "client_allowed_sans"))
    s = {k: t[k].string() for k in ("cert", "key", "client_ca", "cert_file", "key_file",
                                    "client_auth_type", "client_ca_file") if k in t}
    if not any(s.values()):
        if len(t):       # e.g. only min_version: TLS stays off, as in exporter-toolkit
            log.debug("%s: tls_server_config without certificate: TLS is off", where)
        return None, ()
    for a, b in (("cert_file", "cert"), ("key_file", "key"), ("client_ca_file", "client_ca")):
        if s.get(a) and s.get(b):
            t[b].fail(f"cannot give both {a} and {b}")
    if not (s.get("cert_file") or s.get("cert")):
        node.fail("missing one of cert or cert_file")
    if not (s.get("key_file") or s.get("key")):
        node.fail("missing one of key or key_file")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    versions = {}
    for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = t[k].string() if k in t else default
        if v not in TLS_VERSIONS:
            t[k].fail(f"unknown TLS version {v!r} (one of {', '.join(TLS_VERSIONS)})")
        versions[k] = v
    lo, hi = TLS_VERSIONS[versions["min_version"]], TLS_VERSIONS[versions["max_version"]]
    if lo > hi:
        node.fail(f"min_version {versions['min_version']} is above "
                  f"max_version {versions['max_version']}")
    with warnings.catch_warnings():     # TLS 1.0/1.1 are deprecated: asked for explicitly
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = lo, hi
    seclevel = ":@SECLEVEL=0" if lo < ssl.TLSVersion.TLSv1_2 else ""

    names = t["cipher_suites"].strings() if "cipher_suites" in t else []
    openssl_names = []
    for i, n in enumerate(names):
        if n in TLS13_CIPHERS:
            continue
        if n not in CIPHERS:
            _Node(f"{node.path}.cipher_suites[{i}]", t["cipher_suites"].node.value[i],
                  where).fail(f"unknown cipher {n!r} (one of {', '.join(CIPHERS)}, "
                              f"{', '.join(TLS13_CIPHERS)})")
        openssl_names.append(CIPHERS[n])
    if names and not openssl_names:
        t["cipher_suites"].fail("lists only TLS 1.3 suites, which are not configurable; "
                                "list TLS 1.2 suites or leave cipher_suites out")
    try:
        ctx.set_ciphers((":".join(openssl_names) if openssl_names else "DEFAULT") + seclevel)
    except ssl.SSLError:
        t["cipher_suites"].fail("none of these cipher suites is available in this OpenSSL")
    have = {c["name"] for c in ctx.get_ciphers()}
    for go, ossl in zip([n for n in names if n not in TLS13_CIPHERS], openssl_names):
        if ossl not in have:
            t["cipher_suites"].fail(f"{go} is not available in this OpenSSL")
    prefer = t["prefer_server_cipher_suites"].boolean() if "prefer_server_cipher_suites" in t \
        else True
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE

    curves = t["curve_preferences"].strings() if "curve_preferences" in t else []
    for c in curves:
        if c not in CURVES:
            t["curve_preferences"].fail(f"unknown curve {c!r} (one of {', '.join(CURVES)})")
    if len(curves) > 1:
        t["curve_preferences"].fail(
            "Python's ssl can restrict the key exchange to one curve only: list one "
            "(or leave curve_preferences out for OpenSSL's defaults)")
    if curves:
        ctx.set_ecdh_curve(CURVES[curves[0]])

    # the certificate (files are read now; a change re-reads them)
    cert_file = _resolve(directory, s.get("cert_file", ""))
    key_file = _resolve(directory, s.get("key_file", ""))
    cert = _read(cert_file, "cert_file", where) if cert_file else s["cert"].encode()
    key = _read(key_file, "key_file", where) if key_file else s["key"].encode()
    files += [f for f in (cert_file, key_file) if f]
    _load_cert_chain(ctx, cert, key, where)

    auth = s.get("client_auth_type") or "NoClientCert"
    if auth not in CLIENT_AUTH_TYPES:
        t["client_auth_type"].fail(f"invalid client_auth_type {auth!r} "
                                   f"(one of {', '.join(CLIENT_AUTH_TYPES)})")
    if auth in ("RequireAnyClientCert", "RequireClientCert"):
        t["client_auth_type"].fail(
            f"{auth} (a client certificate demanded but not verified) cannot be honoured "
            "by Python's ssl: use RequireAndVerifyClientCert with client_ca_file")
    ca_file = _resolve(directory, s.get("client_ca_file", ""))
    ca = _read(ca_file, "client_ca_file", where) if ca_file else s.get("client_ca", "").encode()
    if ca_file:
        files.append(ca_file)
    if ca and auth == "NoClientCert":
        node.fail("client CA's have been configured without a Client Auth Policy "
                  "(set client_auth_type)")
    if auth in ("VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
        ctx.verify_mode = (ssl.CERT_REQUIRED if auth == "RequireAndVerifyClientCert"
                           else ssl.CERT_OPTIONAL)
        if ca:
            try:
                ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError):
                (t.get("client_ca_file") or t["client_ca"]).fail(
                    "no PEM certificate in the client CA")
        else:      # as Go with no ClientCAs: the system's roots
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)

    sans = tuple(t["client_allowed_sans"].strings()) if "client_allowed_sans" in t else ()
    if "client_allowed_sans" in t and auth != "RequireAndVerifyClientCert":
        t["client_allowed_sans"].fail(
            "client_allowed_sans requires client_auth_type RequireAndVerifyClientCert")
    return ctx, sans


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes, where: str) -> None:
    """ssl can only load a certificate from files: write both to a private
    temporary directory, load, delete."""
    with tempfile.TemporaryDirectory(prefix="ipvs-fast-tls-") as d:
        cp, kp = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for p, data in ((cp, cert), (kp, key)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            # password: an encrypted key fails instead of prompting on a tty
            ctx.load_cert_chain(cp, kp, password=lambda: b"")
        except (ssl.SSLError, ValueError) as e:
            raise WebConfigError(f"{where}: cannot load the certificate and key "
                                 f"(PEM, matching, unencrypted key): {e}") from None


def peer_sans(ssl_object) -> set:
    """The Subject Alternative Names of a TLS connection's verified client
    certificate, written as Go's x509 does (DNS, e-mail, IP, URI)."""
    cert = ssl_object.getpeercert() if ssl_object is not None else None
    out = set()
    for kind, value in (cert or {}).get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                pass
        if kind in ("DNS", "email", "IP Address", "URI"):
            out.add(value)
    return out


# -- watching and applying --------------------------------------------------------

def _signature(files: tuple) -> tuple:
    sig = []
    for f in files:
        try:
            st = os.stat(f)
            sig.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError as e:
            sig.append(e.errno)
    return tuple(sig)


class WebSecurity:
    """The current web configuration of a running server, kept current.

    ``start()`` (on the event loop) looks at the file and the files it names
    every POLL_INTERVAL seconds; on a change it re-reads them in a thread and
    applies a good result to new TLS connections (:meth:`add_site` sites get
    the new context) and new requests (users, headers, rate limit). A bad one
    keeps the last good configuration, is logged once per change and sets
    ``ipvs_exporter_web_config_last_reload_successful`` to 0. :meth:`reload`
    re-reads now, whatever changed (the hook for a SIGHUP handler).
    """

    def __init__(self, config: WebConfig):
        from .auth import BasicAuth     # (imports bcrypt)
        self.path = config.path
        self.config = config
        self.auth = BasicAuth()
        self.auth.configure(config.users)
        self._sites: list = []
        #: the files looked at, and how they were when last read
        self._watched = config.files
        self._signature = _signature(config.files)
        self._task: Optional[asyncio.Task] = None
        self._reloading: Optional[asyncio.Future] = None
        self.last_reload_successful = True
        self.last_reload_success_time = time.time()
        self._limiter = _Limiter(config.rate_limit)

    # -- serving ------------------------------------------------------------------
    def add_site(self, site) -> None:
        """*site* (``use_ssl_context(ctx)``) gets every new TLS context."""
        self._sites.append(site)

    @property
    def headers(self) -> dict:
        return self.config.headers

    def allowed_peer(self, transport) -> bool:
        """False when client_allowed_sans is set and the connection's client
        certificate has none of them."""
        sans = self.config.client_allowed_sans
        if not sans or transport is None:
            return True
        return not peer_sans(transport.get_extra_info("ssl_object")).isdisjoint(sans)

    async def admit(self, request, *, open_path: bool = False):
        """None when *request* may be served, else the response refusing it
        (the connection is cut when its client certificate lacks an allowed
        SAN, as exporter-toolkit fails such a handshake). *open_path*: no
        rate limit or basic auth (``/healthz``)."""
        if not self.allowed_peer(request.transport):
            log.debug("connection closed: client certificate has no allowed SAN")
            request.transport.abort()
            return web.Response(status=403, text="403 forbidden\n")
        if open_path:
            return None
        if not self._limiter.allow():
            return web.Response(status=429, text="429 too many requests\n",
                                headers=self.headers)
        if not self.auth.enabled:
            return None
        ok = await self.auth.check(request.headers.get("Authorization"))
        if ok:
            return None
        if ok is None:
            return web.Response(status=429, text="429 too many requests\n",
                                headers={**self.headers, "Retry-After": "1"})
        return web.Response(status=401, text="401 unauthorized\n",
                            headers={**self.headers, "WWW-Authenticate": "Basic"})

    # -- reloading ---------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.auth.close()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self.check()
            except Exception:   # a bug here must not end the watching
                log.exception("checking the web config failed")

    async def check(self) -> Optional[bool]:
        """Re-read when the file or a file it names changed: True/False
        (applied/refused), None (nothing changed)."""
        if _signature(self._watched) == self._signature:
            return None
        return await self.reload()

    async def reload(self) -> bool:
        """Re-read the configuration now and apply it if it is good."""
        if self._reloading is not None:         # one reload at a time
            return await asyncio.shield(self._reloading)
        loop = asyncio.get_running_loop()
        self._reloading = loop.create_future()
        try:
            ok = await self._reload(loop)
            self._reloading.set_result(ok)
            return ok
        except BaseException as e:
            self._reloading.set_exception(e)
            self._reloading.exception()     # retrieved: no "never retrieved" warning
            raise
        finally:
            self._reloading = None

    async def _reload(self, loop) -> bool:
        # Taken before reading: a file that changes while it is read is
        # read again at the next look. The files named by the current text
        # are watched even when it is bad (the fix may be in one of them).
        self._watched, self._signature = await loop.run_in_executor(None, self._look)
        try:
            new = await loop.run_in_executor(None, load, self.path)
            if new.tls != self.config.tls:
                raise WebConfigError(f"web config {self.path}: switching TLS "
                                     f"{'on' if new.tls else 'off'} needs a restart")
            await loop.run_in_executor(None, self.auth.prepare, new.users)
        except Exception as e:
            if not isinstance(e, WebConfigError):
                log.debug("reading the web config failed", exc_info=True)
                e = f"web config {self.path}: {e!r}"
            # once per change: the next look finds nothing new until an edit
            log.error("web config not reloaded, keeping the last good one: %s", e)
            self.last_reload_successful = False
            return False
        for site in self._sites:
            if new.ssl_context is not None:
                await site.use_ssl_context(new.ssl_context)
        self.auth.configure(new.users)
        if new.rate_limit != self.config.rate_limit:
            self._limiter = _Limiter(new.rate_limit)
        self.config = new
        self.last_reload_successful = True
        self.last_reload_success_time = time.time()
        log.info("web config reloaded from %s (tls=%s, basic auth users=%d)",
                 self.path, new.tls, len(new.users))
        return True

    def _look(self) -> tuple:
        watched = tuple(dict.fromkeys(self.config.files + _named_files(self.path)))
        return watched, _signature(watched)

    # -- metrics (a prometheus_client collector) ------------------------------
    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        yield GaugeMetricFamily(
            "ipvs_exporter_web_config_last_reload_successful",
            "Whether the last reading of --web.config.file was good and applied (1) or "
            "refused, keeping the last good configuration (0).",
            value=1 if self.last_reload_successful else 0)
        yield GaugeMetricFamily(
            "ipvs_exporter_web_config_last_reload_success_timestamp_seconds",
            "When --web.config.file was last read and applied, seconds since the epoch.",
            value=self.last_reload_success_time)


def _named_files(path: str) -> tuple:
    """The config file and the files a (perhaps invalid) version of it
    names, as well as can be made out."""
    out = [os.path.abspath(path)]
    try:
        with open(path, "rb") as f:
            doc = yaml.safe_load(f)
        t = (doc or {}).get("tls_server_config") or {}
        d = os.path.dirname(os.path.abspath(path))
        out += [_resolve(d, t[k]) for k in ("cert_file", "key_file", "client_ca_file")
                if isinstance(t.get(k), str) and t[k]]
    except Exception:
        pass
    return tuple(out)


class _Limiter:
    """exporter-toolkit's rate_limit: a token bucket (Go's rate.Limiter),
    one token per *interval*, at most *burst* saved."""

    def __init__(self, rate: Optional[tuple]):
        self.rate = rate
        self._tokens = float(rate[1]) if rate else 0.0
        self._last = time.monotonic()

    def allow(self) -> bool:
        if self.rate is None:
            return True
        interval, burst = self.rate
        now = time.monotonic()
        self._tokens = min(float(burst), self._tokens + (now - self._last) / interval)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
