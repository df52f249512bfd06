"""Command line: ``ipvs-fast-exporter`` / ``python -m ipvs_fast``.

Flags compatible with ingress_ipvs_exporter (``--listen-address``,
``--telemetry-path``, ``--namespace-path``) plus ``--backend``,
``--timeout``, ``--log-level``, ``--log-format``, ``--format``, many
namespaces (``--namespace-path`` repeated / globs, ``--scrape-timeout*``),
cardinality controls (``--service.*``, ``--destination.labels``,
``--metrics.*``) and ``--version``. README.md has the table.
Invalid flags or values exit with status 2 and a usage message naming the
flag. Problems reaching IPVS (missing namespace, ip_vs not loaded, EPERM)
never stop the exporter: it keeps serving with ``ipvs_up 0``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import threading
import time
from typing import Optional

from . import __version__

log = logging.getLogger("ipvs_fast")

DEFAULT_LISTEN = ":9100"
DEFAULT_PATH = "/metrics"
DEFAULT_NAMESPACE = "/var/run/docker/netns/ingress_sbox"
LOG_LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("ingress", "node", "ipvs")
#: Every flag can also be set by an environment variable: this prefix + the
#: flag name upper-cased with '-' and '.' as '_' (--listen-address ->
#: IPVS_FAST_LISTEN_ADDRESS, --node.backend-labels -> IPVS_FAST_NODE_BACKEND_LABELS).
#: A flag on the command line wins over the variable.
ENV_PREFIX = "IPVS_FAST_"


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").replace(".", "_").upper()


def _backend_labels(value: str) -> tuple:
    from .formats.node import parse_backend_labels
    try:
        return parse_backend_labels(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _listen_address(value: str) -> str:
    from .http.listen import parse_listen_address
    try:
        parse_listen_address(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid listen address {e}") from None
    return value


def _telemetry_path(value: str) -> str:
    if not value.startswith("/"):
        raise argparse.ArgumentTypeError(f"{value!r} must start with '/'")
    if any(c in value for c in "?# \t\r\n"):
        raise argparse.ArgumentTypeError(f"{value!r} must be a plain URL path")
    if value in ("/", "/healthz"):
        raise argparse.ArgumentTypeError(f"{value!r} is taken (landing page, health check)")
    return value


def _max_requests(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 0")
    return n


def _seconds(allow_zero: bool):
    """argparse type: a number of seconds in (0, 3600], or [0, 3600] with allow_zero."""
    def parse(value: str) -> float:
        try:
            t = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        if not ((0 <= t if allow_zero else 0 < t) and t <= 3600):
            bound = ">=" if allow_zero else ">"
            raise argparse.ArgumentTypeError(f"{value!r} must be {bound} 0 and <= 3600 seconds")
        return t
    return parse


def _docker_host(value: str) -> str:
    if not value:
        return ""
    from .collection.swarm import parse_docker_host
    try:
        parse_docker_host(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return value


_margin = _seconds(allow_zero=True)
_timeout = _seconds(allow_zero=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ipvs-fast-exporter",
        description="Prometheus exporter for Linux IPVS (drop-in for ingress_ipvs_exporter).")
    p.add_argument("--listen-address", "--web.listen-address", dest="listen_address",
                   metavar="LISTEN-ADDRESS", type=_listen_address, action="append",
                   default=None,
                   help="address to set the http server to listen to, HOST:PORT; "
                        "':9100' = all interfaces; repeatable (listen on each), the "
                        f"environment variable takes a comma separated list "
                        f"(default: {DEFAULT_LISTEN})")
    p.add_argument("--web.systemd-socket", dest="web_systemd_socket", action="store_true",
                   help="use the listening sockets systemd passes (socket activation) "
                        "instead of --listen-address")
    p.add_argument("--telemetry-path", "--web.telemetry-path", dest="telemetry_path",
                   metavar="TELEMETRY-PATH", type=_telemetry_path,
                   default=DEFAULT_PATH,
                   help="endpoint to receive scrape requests from prometheus "
                        "(default: %(default)s)")
    p.add_argument("--web.config.file", dest="web_config_file", metavar="FILE", default="",
                   help="exporter-toolkit web configuration (TLS, client certificates, "
                        "basic auth, headers), re-read when it changes; see README "
                        "'Web security' (default: none, plain HTTP)")
    p.add_argument("--namespace-path", metavar="NAMESPACE-PATH", action="append", default=None,
                   help="absolute path to the network namespace where ipvs is configured; "
                        "empty string = the exporter's own namespace; may be repeated and may "
                        "be a glob (e.g. '/run/netns/*'), expanded again on every scrape; "
                        "the environment variable takes a comma separated list "
                        f"(default: {DEFAULT_NAMESPACE})")
    p.add_argument("--backend", choices=("native", "python"), default="native",
                   help="netlink backend; 'native' falls back to 'python' with a warning "
                        "when the compiled extension is missing (default: %(default)s)")
    p.add_argument("--timeout", type=_timeout, default=5.0, metavar="SECONDS",
                   help="timeout for kernel replies, seconds (default: %(default)s)")
    p.add_argument("--scrape-timeout", type=_timeout, default=10.0, metavar="SECONDS",
                   help="scrape timeout assumed when a request has no "
                        "X-Prometheus-Scrape-Timeout-Seconds header (default: %(default)s)")
    p.add_argument("--scrape-timeout-margin", type=_margin, default=0.5, metavar="SECONDS",
                   help="namespaces must be collected within the scrape timeout minus this "
                        "(never less than half the timeout); a namespace that is not gets "
                        "ipvs_up 0 (default: %(default)s)")
    p.add_argument("--web.max-requests", dest="web_max_requests", metavar="N",
                   type=_max_requests, default=40,
                   help="maximum number of scrapes served at once; more get 503 at once; "
                        "0 = no limit (default: %(default)s)")
    p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default="info",
                   help="(default: %(default)s)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="(default: %(default)s)")
    p.add_argument("--format", choices=FORMATS, default="ingress",
                   help="metric set: 'ingress' (ingress_ipvs_exporter drop-in), 'node' "
                        "(node_exporter ipvs collector drop-in), 'ipvs' (full set, see "
                        "docs/metrics.md) (default: %(default)s)")
    p.add_argument("--node.backend-labels", dest="node_backend_labels", metavar="LABELS",
                   type=_backend_labels, default=",".join(_node_labels()),
                   help="--format node: comma separated backend labels to keep, like "
                        "node_exporter's --collector.ipvs.backend-labels; series equal in "
                        "the kept labels are summed (default: %(default)s)")
    p.add_argument("--service.include", dest="service_include", metavar="SELECTOR",
                   action="append", default=None,
                   help="export only services matching one of these selectors: "
                        "PROTO:ADDRESS:PORT (tcp:10.0.0.0/8:*, udp:[fd00::/8]:53, "
                        "*:*:30000-32767) or fwmark:MARK (fwmark:260, fwmark:*); "
                        "repeatable, comma separated (default: all services)")
    p.add_argument("--service.exclude", dest="service_exclude", metavar="SELECTOR",
                   action="append", default=None,
                   help="do not export services matching one of these selectors (syntax as "
                        "--service.include; applied after it)")
    p.add_argument("--destination.labels", dest="destination_labels", metavar="LABELS",
                   default="all",
                   help="--format ingress/ipvs: 'all' = one series per destination, 'none' = "
                        "no destination series, or comma separated labels to keep on "
                        "destination series, which are summed over destinations equal in "
                        "them, e.g. 'address' (default: %(default)s)")
    p.add_argument("--metrics.include", dest="metrics_include", metavar="GLOB",
                   action="append", default=None,
                   help="write only metric families whose name matches one of these globs "
                        "(e.g. 'ipvs_up,ipvs_service_*'); repeatable, comma separated "
                        "(default: all)")
    p.add_argument("--metrics.exclude", dest="metrics_exclude", metavar="GLOB",
                   action="append", default=None,
                   help="do not write metric families whose name matches one of these globs "
                        "(e.g. '*_per_second,process_*'); repeatable, comma separated")
    p.add_argument("--docker.host", dest="docker_host", metavar="URL", type=_docker_host,
                   default="",
                   help="Docker Engine API (unix:///var/run/docker.sock, tcp://HOST:PORT): add "
                        "ipvs_swarm_service_info naming the Swarm service of each fwmark "
                        "service in ingress_sbox and lb_* namespaces; empty = off "
                        "(default: off)")
    p.add_argument("--docker.refresh-interval", dest="docker_refresh", metavar="SECONDS",
                   type=_timeout, default=30.0,
                   help="seconds between background refreshes of the Swarm service names "
                        "(default: %(default)s)")
    p.add_argument("--version", action="version", version=f"ipvs_fast {__version__}")
    _env_defaults(p)
    return p


def _node_labels() -> tuple:
    from .formats.node import NODE_LABELS
    return NODE_LABELS


def _env_defaults(p: argparse.ArgumentParser) -> None:
    """Defaults from IPVS_FAST_* variables (converted and checked like the
    flag itself when parsing; see _check_env_choices for choices)."""
    for a in p._actions:
        if not a.option_strings or a.dest in ("help", "version"):
            continue
        flag = a.option_strings[0]
        name = env_name(flag)
        a.help = (a.help or "") + f" [env {name}]"
        if isinstance(a, argparse._AppendAction):
            continue                        # list flags: see _list_values
        if name in os.environ:
            a.default = value = os.environ[name]
            if a.type is not None:
                a.type = _env_type(a.type, value, name)


def _env_type(conv, env_value: str, name: str):
    """*conv*, with errors on the environment's value naming the variable."""
    def convert(value):
        try:
            return conv(value)
        except (argparse.ArgumentTypeError, ValueError) as e:
            if value is env_value:
                raise argparse.ArgumentTypeError(
                    f"{e} (from environment variable {name})") from None
            raise
    convert.__name__ = getattr(conv, "__name__", "value")
    return convert


def _check_env_choices(p: argparse.ArgumentParser, args) -> None:
    # argparse applies type= to string defaults but never checks choices= on them
    for a in p._actions:
        if a.choices is None or not a.option_strings:
            continue
        v = getattr(args, a.dest, None)
        if v not in a.choices:
            p.error(f"argument {a.option_strings[0]} (from environment variable "
                    f"{env_name(a.option_strings[0])}): invalid choice: {v!r} "
                    f"(choose from {', '.join(map(repr, a.choices))})")


def _list_values(p: argparse.ArgumentParser, args) -> dict:
    """Repeatable flags not given on the command line take their variable,
    split on commas. Returns {dest: variable name} for values taken from
    the environment (for error messages)."""
    from_env = {}
    for a in p._actions:
        if not isinstance(a, argparse._AppendAction) or getattr(args, a.dest) is not None:
            continue
        name = env_name(a.option_strings[0])
        if name in os.environ:
            raw = os.environ[name]
            if a.dest == "namespace_path":      # items verbatim (stripped); "" = own netns
                setattr(args, a.dest, [x.strip() for x in raw.split(",")])
            elif a.dest == "listen_address":
                setattr(args, a.dest, [x.strip() for x in raw.split(",")])
            else:
                setattr(args, a.dest, [raw])
            from_env[a.dest] = name
        elif a.dest == "namespace_path":
            setattr(args, a.dest, [DEFAULT_NAMESPACE])
        elif a.dest == "listen_address":
            setattr(args, a.dest, [DEFAULT_LISTEN])
        else:
            setattr(args, a.dest, [])
    return from_env


def _policy(p: argparse.ArgumentParser, args, from_env: dict) -> None:
    """Parse the cardinality flags into args.service_filter,
    args.metric_filter and args.destinations (p.error naming the flag)."""
    from .formats.policy import (FamilyFilter, ServiceFilter, parse_destination_labels,
                                 parse_selectors)

    def fail(flag, dest, e):
        src = ""
        if dest in from_env:
            src = f" (from environment variable {from_env[dest]})"
        elif os.environ.get(env_name(flag)) == getattr(args, dest):
            src = f" (from environment variable {env_name(flag)})"
        p.error(f"argument {flag}{src}: {e}")

    sel = {}
    for flag, dest in (("--service.include", "service_include"),
                       ("--service.exclude", "service_exclude")):
        try:
            sel[dest] = parse_selectors(getattr(args, dest))
        except ValueError as e:
            fail(flag, dest, e)
    args.service_filter = ServiceFilter(sel["service_include"], sel["service_exclude"])
    from .formats.policy import split_list
    globs = {}
    for flag, dest in (("--metrics.include", "metrics_include"),
                       ("--metrics.exclude", "metrics_exclude")):
        items = split_list(getattr(args, dest))
        try:
            FamilyFilter(items)
        except ValueError as e:
            fail(flag, dest, e)
        globs[dest] = items
    args.metric_filter = FamilyFilter(globs["metrics_include"], globs["metrics_exclude"])
    try:
        args.destinations = parse_destination_labels(args.destination_labels, args.format)
    except ValueError as e:
        fail("--destination.labels", "destination_labels", e)


def parse_args(argv: Optional[list] = None):
    p = build_parser()
    args = p.parse_args(argv)
    _check_env_choices(p, args)
    from_env = _list_values(p, args)
    _policy(p, args, from_env)
    _web(p, args, from_env)
    return args


def _web(p: argparse.ArgumentParser, args, from_env: dict) -> None:
    """Listen addresses from the environment, --web.systemd-socket from
    it, and --web.config.file read and checked (into args.web_config)."""
    if "listen_address" in from_env:
        for a in args.listen_address:
            try:
                _listen_address(a)
            except argparse.ArgumentTypeError as e:
                p.error(f"argument --listen-address (from environment variable "
                        f"{from_env['listen_address']}): {e}")
    if isinstance(args.web_systemd_socket, str):    # from the environment
        v = args.web_systemd_socket.strip().lower()
        if v not in ("1", "true", "yes", "0", "false", "no", ""):
            p.error(f"argument --web.systemd-socket (from environment variable "
                    f"{env_name('--web.systemd-socket')}): expected true or false, got {v!r}")
        args.web_systemd_socket = v in ("1", "true", "yes")
    args.web_config = None
    if args.web_config_file:
        from .http.webconfig import WebConfigError, load
        try:
            args.web_config = load(args.web_config_file)
        except WebConfigError as e:
            p.error(f"argument --web.config.file: {e}")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # aiohttp's own loggers are noisy at info
    logging.getLogger("aiohttp").setLevel(max(logging.WARNING, root.level))


def make_renderer(args, namespaces: int = 1):
    """The renderer for --format (``render(results, build_info, extra)``).
    *namespaces* > 1: the configuration can yield several namespaces (the
    node format then labels its series with ``namespace``)."""
    mf = getattr(args, "metric_filter", None) or None
    dests = getattr(args, "destinations", None)
    if args.format == "node":
        from .formats.node import NodeRenderer
        return NodeRenderer(args.node_backend_labels, namespace_label=namespaces > 1,
                            metric_filter=mf)
    if args.format == "ipvs":
        from .formats.ipvs import IPVSRenderer
        return IPVSRenderer(metric_filter=mf, destinations=dests)
    from .formats.ingress import IngressRenderer
    return IngressRenderer(metric_filter=mf, destinations=dests)


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)

    from . import backends, privileges
    from .collection.namespaces import TargetSet, can_be_several, namespace_targets
    from .exporter import Exporter
    from .formats.ingress import default_build_info
    from .http.payload import GZIP_IMPL
    from .http.server import MetricsServer, run

    backend = backends.resolve(args.backend)
    renderer = make_renderer(args, 2 if can_be_several(args.namespace_path) else 1)
    targets = TargetSet(args.namespace_path,
                        namespace_targets(backends.opener(backend), args.timeout,
                                          port_map=renderer.uses_port_map,
                                          counters=renderer.uses_counters))
    swarm = None
    if args.docker_host:
        from .collection.swarm import SwarmNames
        swarm = SwarmNames(args.docker_host, args.docker_refresh).start()
    exporter = Exporter(targets, renderer,
                        build_info=default_build_info(backend),
                        metric_filter=args.metric_filter or None,
                        service_filter=args.service_filter or None, swarm=swarm)
    security = None
    if args.web_config is not None:
        from .http.webconfig import WebSecurity
        security = WebSecurity(args.web_config)
        exporter.add_collector(security)
    listen = args.listen_address
    if args.web_systemd_socket:
        from .http.listen import systemd_sockets
        try:
            listen = systemd_sockets()
        except ValueError as e:
            log.error("--web.systemd-socket: %s", e)
            return 1
    server = MetricsServer(exporter, args.telemetry_path, version=__version__,
                           web_security=security,
                           request_timeout=max(60.0, 4 * args.timeout, 2 * args.scrape_timeout),
                           scrape_timeout=args.scrape_timeout,
                           scrape_timeout_margin=args.scrape_timeout_margin,
                           max_requests=args.web_max_requests)
    log.info("ipvs_fast %s starting: namespace=%s format=%s backend=%s timeout=%gs "
             "scrape-timeout=%gs-%gs gzip=%s docker=%s", __version__,
             ",".join(map(repr, args.namespace_path)), args.format, backend, args.timeout,
             args.scrape_timeout, args.scrape_timeout_margin, GZIP_IMPL,
             args.docker_host or "off")
    rc = 0
    try:
        # bound (a privileged port needs no capability kept), not yet serving
        run(server, listen,
            on_started=lambda _: privileges.drop_to(privileges.needed(args.namespace_path)))
    except OSError as e:
        if server.addresses:       # failed while serving, not while binding
            log.exception("server failed: %s", e)
        else:
            log.error("cannot listen on %s: %s", ", ".join(map(str, args.listen_address)), e)
        rc = 1
    except KeyboardInterrupt:  # pragma: no cover - signal arrived before the loop ran
        pass
    finally:
        # bounded: a target busy in a stuck kernel call must not block exit
        closer = threading.Thread(target=exporter.close, name="close-targets", daemon=True)
        closer.start()
        closer.join(timeout=2.0 if server.exit_by is None
                    else max(0.1, server.exit_by - time.monotonic()))
    log.info("stopped")
    logging.shutdown()
    # A collection thread stuck in a kernel call must not keep us alive.
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread()
           for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
