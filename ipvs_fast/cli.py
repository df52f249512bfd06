"""Command line: ``ipvs-fast-exporter`` / ``python -m ipvs_fast``.

Flags compatible with ingress_ipvs_exporter (``--listen-address``,
``--telemetry-path``, ``--namespace-path``) plus ``--backend``,
``--timeout``, ``--log-level``, ``--log-format`` and ``--version``.
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
    from .nodefmt import parse_backend_labels
    try:
        return parse_backend_labels(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _listen_address(value: str) -> str:
    from .server import parse_listen_address
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
    return value


def _timeout(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not (0 < t <= 3600):
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0 and <= 3600 seconds")
    return t


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ipvs-fast-exporter",
        description="Prometheus exporter for Linux IPVS (drop-in for ingress_ipvs_exporter).")
    p.add_argument("--listen-address", metavar="LISTEN-ADDRESS", type=_listen_address,
                   default=DEFAULT_LISTEN,
                   help="address to set the http server to listen to, HOST:PORT; "
                        "':9100' = all interfaces (default: %(default)s)")
    p.add_argument("--telemetry-path", metavar="TELEMETRY-PATH", type=_telemetry_path,
                   default=DEFAULT_PATH,
                   help="endpoint to receive scrape requests from prometheus "
                        "(default: %(default)s)")
    p.add_argument("--namespace-path", metavar="NAMESPACE-PATH", default=DEFAULT_NAMESPACE,
                   help="absolute path to the network namespace where ipvs is configured; "
                        "empty string = the exporter's own namespace (default: %(default)s)")
    p.add_argument("--backend", choices=("native", "python"), default="native",
                   help="netlink backend; 'native' falls back to 'python' with a warning "
                        "when the compiled extension is missing (default: %(default)s)")
    p.add_argument("--timeout", type=_timeout, default=5.0, metavar="SECONDS",
                   help="timeout for kernel replies, seconds (default: %(default)s)")
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
    p.add_argument("--version", action="version", version=f"ipvs_fast {__version__}")
    _env_defaults(p)
    return p


def _node_labels() -> tuple:
    from .nodefmt import NODE_LABELS
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


def parse_args(argv: Optional[list] = None):
    p = build_parser()
    args = p.parse_args(argv)
    _check_env_choices(p, args)
    return args


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
    """The renderer for --format (``render(results, build_info, extra)``)."""
    if args.format == "node":
        from .nodefmt import NodeRenderer
        return NodeRenderer(args.node_backend_labels, namespace_label=namespaces > 1)
    if args.format == "ipvs":
        from .ipvsfmt import IPVSRenderer
        return IPVSRenderer()
    from .ingress import Renderer
    return Renderer()


def main(argv: Optional[list] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, args.log_format)

    from .ingress import default_build_info
    from .server import GZIP_IMPL, Exporter, MetricsServer, run
    from .target import NamespaceTarget

    target = NamespaceTarget(args.namespace_path, backend=args.backend, timeout=args.timeout)
    exporter = Exporter([target], build_info=default_build_info(target.backend),
                        renderer=make_renderer(args))
    server = MetricsServer(exporter.collect, args.telemetry_path, version=__version__,
                           request_timeout=max(60.0, 4 * args.timeout))
    log.info("ipvs_fast %s starting: namespace=%r format=%s backend=%s timeout=%gs gzip=%s",
             __version__, args.namespace_path, args.format, target.backend, args.timeout,
             GZIP_IMPL)
    rc = 0
    try:
        run(server, args.listen_address)
    except OSError as e:
        if server.addresses:       # failed while serving, not while binding
            log.exception("server failed: %s", e)
        else:
            log.error("cannot listen on %s: %s", args.listen_address, e)
        rc = 1
    except KeyboardInterrupt:  # pragma: no cover - signal arrived before the loop ran
        pass
    finally:
        # bounded: a target busy in a stuck kernel call must not block exit
        closer = threading.Thread(target=exporter.close, name="close-targets", daemon=True)
        closer.start()
        closer.join(timeout=2.0)
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
