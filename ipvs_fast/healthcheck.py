"""Container health check: ``python -m ipvs_fast.healthcheck``.

GETs ``/healthz`` of the exporter running as PID 1 of this container (the
image's HEALTHCHECK), so the image needs no curl or wget. The address is the
exporter's own: its command line (``/proc/1/cmdline``) and the same
``IPVS_FAST_*`` environment, read by the exporter's own parser, so
``docker run IMAGE --listen-address :9200`` is checked on port 9200. A
wildcard address is checked on loopback. Exit status 0 = healthy, 1 = not
(Docker's convention); one line on stderr says why.
"""
import ssl
import sys
import urllib.error
import urllib.request


def exporter_argv(cmdline: bytes) -> list:
    """The flags of an ``ipvs-fast-exporter ...`` or ``python -m ipvs_fast ...``
    command line (NUL-separated, as in /proc/PID/cmdline)."""
    argv = [a.decode("utf-8", "surrogateescape") for a in cmdline.split(b"\0")[:-1]]
    for i, a in enumerate(argv):
        if a.endswith("/ipvs-fast-exporter") or a == "ipvs-fast-exporter":
            return argv[i + 1:]
        if a == "ipvs_fast" and i and argv[i - 1] == "-m":
            return argv[i + 1:]
    raise ValueError("PID 1 is not ipvs-fast-exporter")


def health_url(argv: list) -> str:
    """The exporter's first listen address (https when its web config has TLS)."""
    from .cli import parse_args
    from .http.listen import parse_listen_address

    args = parse_args(argv)
    host, port = parse_listen_address(args.listen_address[0])
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    web_config = getattr(args, "web_config", None)
    scheme = "https" if web_config is not None and web_config.tls else "http"
    return f"{scheme}://{host}:{port}/healthz"


def main() -> int:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            url = health_url(exporter_argv(f.read()))
        # loopback liveness, not identity: the certificate is not checked
        context = ssl._create_unverified_context() if url.startswith("https:") else None
        try:
            with urllib.request.urlopen(url, timeout=4, context=context) as r:
                r.read()
        except urllib.error.HTTPError as e:
            if e.code != 401:        # basic auth configured: it answered, so it is alive
                raise
        return 0
    except (OSError, ValueError, SystemExit) as e:
        print(f"unhealthy: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
