"""Listen addresses: parsing ``HOST:PORT`` like Go's net.Listen, and binding.

The HTTP server takes sockets from here; nothing here knows HTTP.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import socket
from typing import Optional

log = logging.getLogger(__name__)


def parse_listen_address(addr: str) -> tuple[str, int]:
    """``":9100"`` -> ("", 9100) (all interfaces), ``"127.0.0.1:9100"``,
    ``"[::1]:9100"``, ``"localhost:9100"``. Raises ValueError."""
    if not isinstance(addr, str) or ":" not in addr:
        raise ValueError(f"{addr!r}: missing port (expected HOST:PORT, e.g. :9100)")
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0 or addr[end + 1:end + 2] != ":":
            raise ValueError(f"{addr!r}: expected [IPv6]:PORT")
        host, port_s = addr[1:end], addr[end + 2:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{addr!r}: {host!r} is not an IPv6 address") from None
    else:
        host, _, port_s = addr.rpartition(":")
        if ":" in host:
            raise ValueError(f"{addr!r}: IPv6 addresses must be in brackets, e.g. [::1]:9100")
        if host:
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                labels = host.rstrip(".").split(".")
                if not all(lbl and len(lbl) <= 63 and all(c.isalnum() or c == "-" for c in lbl)
                           and lbl.isascii() and not lbl.startswith("-")
                           for lbl in labels) or len(host) > 253:
                    raise ValueError(f"{addr!r}: {host!r} is not a valid host name or address")
    if not port_s.isdigit() or not port_s.isascii():
        raise ValueError(f"{addr!r}: port {port_s!r} is not a number")
    port = int(port_s)
    if port > 65535:
        raise ValueError(f"{addr!r}: port {port} out of range")
    return host, port


def _new_socket(family: int, sockaddr, *, v6only: Optional[bool] = None) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        s.bind(sockaddr)
        s.setblocking(False)
        return s
    except BaseException:
        s.close()
        raise


def bind_listen_socket(host: str, port: int) -> socket.socket:
    """One listening-ready socket for (host, port).

    "" -> a dual-stack ``[::]`` socket (IPv4 and IPv6), or ``0.0.0.0`` when
    the host has no IPv6. A host name binds its first address, IPv4
    preferred (as Go's net.Listen does). Raises OSError.
    """
    if host == "":
        if socket.has_ipv6:
            try:
                return _new_socket(socket.AF_INET6, ("::", port), v6only=False)
            except OSError as e:
                log.debug("dual-stack bind failed (%s); using IPv4 only", e)
        return _new_socket(socket.AF_INET, ("0.0.0.0", port))
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    infos.sort(key=lambda i: 0 if i[0] == socket.AF_INET else 1)
    last: Optional[OSError] = None
    for family, _, _, _, sockaddr in infos:
        try:
            return _new_socket(family, sockaddr, v6only=True if family == socket.AF_INET6 else None)
        except OSError as e:
            last = e
    raise last or OSError(f"cannot resolve {host!r}")


def url_host(sockaddr) -> str:
    host = sockaddr[0]
    return f"[{host}]" if ":" in host else host


def listen_sockets(addresses) -> list:
    """Listening-ready sockets for *addresses*: one ``HOST:PORT``, a list
    of them, or sockets (passed through). All or none: on an error the
    ones bound already are closed. Raises OSError or ValueError."""
    if isinstance(addresses, (str, socket.socket)):
        addresses = [addresses]
    out: list = []
    try:
        for a in addresses:
            if isinstance(a, socket.socket):
                out.append(a)
            else:
                out.append(bind_listen_socket(*parse_listen_address(a)))
    except BaseException:
        for s in out:
            s.close()
        raise
    return out


SD_LISTEN_FDS_START = 3


def systemd_sockets() -> list:
    """The listening sockets systemd passed (socket activation:
    ``LISTEN_PID``/``LISTEN_FDS``, descriptors from 3 on), as Go's
    coreos/go-systemd activation.Listeners() takes them: the variables are
    unset afterwards. Raises ValueError when there are none or one is not a
    listening stream socket."""
    pid, fds = os.environ.get("LISTEN_PID", ""), os.environ.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not pid.isdigit() or int(pid) != os.getpid():
        raise ValueError("no socket activation file descriptors found "
                         "(LISTEN_PID is not this process)")
    if not fds.isdigit() or int(fds) < 1:
        raise ValueError("no socket activation file descriptors found (LISTEN_FDS)")
    out = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(fds)):
        try:
            s = socket.socket(fileno=fd)
        except OSError as e:
            raise ValueError(f"socket activation fd {fd}: {e.strerror}") from None
        if s.type != socket.SOCK_STREAM or not s.getsockopt(socket.SOL_SOCKET,
                                                            socket.SO_ACCEPTCONN):
            s.detach()
            raise ValueError(f"socket activation fd {fd} is not a listening TCP socket")
        os.set_inheritable(fd, False)
        s.setblocking(False)
        out.append(s)
    return out
