"""HTTP layer: aiohttp's low-level server on uvloop.

* ``GET``/``HEAD`` on the telemetry path -> text format 0.0.4, gzip-encoded
  (ISA-L level 1 if importable, else zlib level 1) when Accept-Encoding
  allows it; ``/`` landing page; ``/healthz``; 404 elsewhere; 405 for other
  methods on those paths.
* Collection, rendering and compression run in a small thread pool, never on
  the event loop. Concurrent scrapes share one in-flight collection
  (single-flight); a request arriving after it finished starts a new one.
  With a scrape timeout configured, collection gets a deadline from the
  ``X-Prometheus-Scrape-Timeout-Seconds`` header (see MetricsServer); the
  request that starts a collection sets its deadline.
* Explicit limits: keep-alive / idle-connection timeout (also bounds how long
  a client may take to send its request head), header size limits, a
  per-request handling timeout, and a shutdown timeout.
"""
from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import signal
import socket
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from .ingress import CONTENT_TYPE, Renderer

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


def zlib_gzip_stream():
    """A streaming gzip compressor (RFC 1952) at zlib level 1 (compress/flush)."""
    return zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)


try:  # ISA-L: several times faster than zlib at level 1
    from isal import isal_zlib as _isal_zlib

    def gzip_stream():
        """A streaming gzip compressor (RFC 1952) at ISA-L level 1 (compress/flush)."""
        return _isal_zlib.compressobj(1, _isal_zlib.DEFLATED, 16 + 15)

    GZIP_IMPL = "isal"
except Exception:  # pragma: no cover - depends on the environment
    gzip_stream = zlib_gzip_stream
    GZIP_IMPL = "zlib"


# ---------------------------------------------------------------------------
# Listen address ("host:port" like Go's net.Listen)

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


def _url_host(sockaddr) -> str:
    host = sockaddr[0]
    return f"[{host}]" if ":" in host else host


# ---------------------------------------------------------------------------

def accepts_gzip(header: Optional[str]) -> bool:
    """RFC 9110 Accept-Encoding: gzip (or ``*``) with a non-zero q-value."""
    if not header:
        return False
    gzip_q = None
    star_q = None
    for item in header.split(","):
        parts = item.strip().split(";")
        coding = parts[0].strip().lower()
        q = 1.0
        for p in parts[1:]:
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v.strip())
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            star_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return bool(star_q and star_q > 0)


# Pieces are handed to the HTTP writers in batches of about this many bytes
# (one thread-pool job renders, and compresses, one batch).
BATCH_BYTES = 1 << 20


class Reader:
    """One response reading a Payload: which encoding, how far it got."""
    __slots__ = ("gzip", "pos")

    def __init__(self, gzip: bool):
        self.gzip = gzip
        self.pos = 0


class Payload:
    """One collection's output, shared by every request that joined it
    while it was in flight, and sent piece by piece.

    The collection (in the pool) sets ``pieces``, an iterable of bytes
    pieces made lazily (an :class:`ipvs_fast.exposition.Body`), and
    ``length`` when known. The body is cut into batches of about
    BATCH_BYTES. Two stages run in the pool, each in order and at most one
    batch ahead of the reader (or stage) that follows it: rendering, then,
    when some reader wants gzip, compressing (one compressor for all of
    them; ISA-L and the C formatter release the GIL, so batch k is
    compressed while batch k+1 is rendered). A batch's parts are dropped
    once every reader of that encoding (and, for the text, the compressor)
    is past it. So a body is never held whole unless a reader is slow, and
    it is rendered and compressed once however many requests share it. The
    reader set is fixed when the collection finishes (the server never
    joins a finished one); readers may leave early. Everything but the two
    stage functions runs on the event loop.
    """

    def __init__(self, pool):
        self._pool = pool
        self.pieces = None                  # set by the collection
        self.length: Optional[int] = None   # of the identity body, when known up front
        self.readers: list = []
        self.batches: list = []             # [text pieces | None, gzip bytes | None, last?]
        self.done = False                   # every batch rendered
        self.zipped = 0                     # batches compressed
        self.error: Optional[BaseException] = None
        self._making: Optional[asyncio.Future] = None
        self._zipping: Optional[asyncio.Future] = None
        self._gz = None
        self._freed = [0, 0]                # batches below these have no text / gzip part

    def join(self, gzip: bool) -> Reader:
        r = Reader(gzip)
        self.readers.append(r)
        return r

    def leave(self, reader: Reader) -> None:
        if reader in self.readers:
            self.readers.remove(reader)
            self._release()

    async def batch(self, reader: Reader):
        """The reader's next batch (a list of bytes-like pieces), or None at
        the end; raises what rendering or compressing raised."""
        i = reader.pos
        while True:
            if self.error is not None:
                raise self.error
            if reader.gzip:
                if i < self.zipped:
                    break
                if self.done and i >= len(self.batches):
                    return None
            else:
                if i < len(self.batches):
                    break
                if self.done:
                    return None
            self._pump()
            fut = self._zipping if reader.gzip and i < len(self.batches) else self._making
            if fut is None:                 # nothing can make progress: a bug
                raise RuntimeError("payload stalled")
            try:
                await asyncio.shield(fut)
            except Exception:
                pass                        # taken in below, raised above
            # Take the result in now: awaiting a future that is already done
            # does not yield to the loop, so its done-callback may not have
            # run yet, and this loop would spin.
            (self._zipped if fut is self._zipping else self._made)(fut)
        b = self.batches[i]
        self._pump()                        # make what follows while this is sent
        return [b[1]] if reader.gzip else b[0]

    def advance(self, reader: Reader) -> None:
        """The reader has written its current batch."""
        reader.pos += 1
        self._release()
        self._pump()

    # -- the two stages ----------------------------------------------------
    def _positions(self) -> tuple:
        """(positions of the text consumers, of the gzip readers). The
        compressor reads the text, so while gzip readers remain it counts as
        a text consumer at the first batch it has not compressed."""
        gz = [r.pos for r in self.readers if r.gzip]
        text = [r.pos for r in self.readers if not r.gzip]
        if gz:
            text.append(self.zipped)
        return text, gz

    def _pump(self) -> None:
        text, gz = self._positions()
        text_front = max(text) if text else -1
        gz_front = max(gz) if gz else None
        loop = asyncio.get_running_loop()
        if (not self.done and self._making is None and self.error is None
                and len(self.batches) <= text_front + 1):
            fut = loop.run_in_executor(self._pool, self._render_batch)
            self._making = fut
            fut.add_done_callback(self._made)
        if (gz_front is not None and self._zipping is None and self.error is None
                and self.zipped < len(self.batches) and self.zipped <= gz_front + 1):
            if self._gz is None:
                self._gz = gzip_stream()
            k = self.zipped
            fut = loop.run_in_executor(self._pool, self._compress_batch, self._gz,
                                       self.batches[k][0], self.batches[k][2])
            self._zipping = fut
            fut.add_done_callback(self._zipped)

    def _render_batch(self):
        pieces, size = [], 0
        for p in self.pieces:
            if p:
                pieces.append(p)
                size += len(p)
                if size >= BATCH_BYTES:
                    return pieces, False
        return pieces, True

    @staticmethod
    def _compress_batch(gz, pieces, last: bool) -> bytes:
        parts = [gz.compress(p) for p in pieces]
        if last:
            parts.append(gz.flush())
        return b"".join(parts)

    def _made(self, fut: asyncio.Future) -> None:
        if self._making is not fut:         # taken in already
            return
        self._making = None
        if self._failed(fut):
            return
        pieces, last = fut.result()
        self.batches.append([pieces, None, last])
        self.done = last
        self._release()
        self._pump()

    def _zipped(self, fut: asyncio.Future) -> None:
        if self._zipping is not fut:
            return
        self._zipping = None
        if self._failed(fut):
            return
        self.batches[self.zipped][1] = fut.result()
        self.zipped += 1
        self._release()
        self._pump()

    def _failed(self, fut: asyncio.Future) -> bool:
        if fut.cancelled():
            self.error = asyncio.CancelledError()
        elif fut.exception() is not None:
            self.error = fut.exception()
        return self.error is not None

    def _release(self) -> None:
        for k, pos in enumerate(self._positions()):
            upto = min(pos) if pos else len(self.batches)
            for j in range(self._freed[k], min(upto, len(self.batches))):
                self.batches[j][k] = None
            self._freed[k] = max(self._freed[k], min(upto, len(self.batches)))


class Exporter:
    """Synchronous collection: targets -> CollectResults -> bytes.

    *targets*: a list of targets (``collect() -> CollectResult``, collected
    one after the other), or a :class:`ipvs_fast.namespaces.TargetSet`
    (anything with ``collect(deadline) -> [CollectResult]``; namespaces are
    collected in parallel under the deadline).
    *metric_filter*: ``name -> bool`` applied to the process metrics (the
    renderer filters its own families). *service_filter*: a
    :class:`ipvs_fast.policy.ServiceFilter` applied to every snapshot
    before rendering.

    ``collect(deadline=None)`` runs in a worker thread. Process metrics (``process_*``,
    the same names the Go original's default registry exports) come from
    prometheus_client's ProcessCollector in a private registry. The platform
    (``python_info``) and GC (``python_gc_*``) collectors are left out: they
    are the Python analogue of the Go runtime's ``go_*`` series, which no
    dashboard for this exporter would use.
    """

    def __init__(self, targets, build_info: Optional[dict] = None,
                 renderer: Optional[Renderer] = None, process_metrics: bool = True,
                 metric_filter: Optional[Callable[[str], bool]] = None,
                 service_filter=None):
        if isinstance(targets, (list, tuple)):
            self.targets = list(targets)
            self.target_set = None
        else:
            self.targets = []
            self.target_set = targets
        self.build_info = build_info
        self.renderer = renderer or Renderer()
        self.metric_filter = metric_filter
        self.service_filter = service_filter
        self._lock = threading.Lock()
        self._extra = None
        if process_metrics:
            self._extra = CollectorRegistry(auto_describe=False)
            ProcessCollector(registry=self._extra)

    def collect(self, deadline: Optional[float] = None) -> bytes:
        """The exposition for one scrape; *deadline*: seconds the namespaces
        may take (a TargetSet only; plain target lists wait for every one)."""
        return b"".join(self.collect_pieces(deadline))

    def collect_pieces(self, deadline: Optional[float] = None):
        """:meth:`collect` as an iterable of bytes pieces with a ``len()``
        (a :class:`ipvs_fast.exposition.Body` when the renderer has
        ``render_pieces``, else bytes): the collection happens now, the text
        is made as it is iterated."""
        with self._lock:
            if self.target_set is not None:
                results = self.target_set.collect(deadline)
            else:
                results = [t.collect() for t in self.targets]
            if self.service_filter is not None:
                results = self.service_filter.apply_results(results)
            extra = ""
            if self._extra is not None:
                extra = generate_latest(self._extra).decode("utf-8")
                if self.metric_filter is not None:
                    extra = filter_exposition(extra, self.metric_filter)
            render_pieces = getattr(self.renderer, "render_pieces", None)
            if render_pieces is not None:
                return render_pieces(results, self.build_info, extra)
            return self.renderer.render(results, self.build_info, extra)

    def close(self) -> None:
        if self.target_set is not None:
            try:
                self.target_set.close()
            except Exception as e:
                log.debug("closing targets failed: %r", e)
        for t in self.targets:
            try:
                t.close()
            except Exception as e:
                log.debug("closing target failed: %r", e)


def filter_exposition(text: str, keep: Callable[[str], bool]) -> str:
    """Text format 0.0.4 with only the families whose name passes *keep*
    (a family = its HELP/TYPE lines and the samples that follow them)."""
    out = []
    name = None
    keep_it = True
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            n = line.split(" ", 3)[2].rstrip("\n")
            if n != name:
                name, keep_it = n, keep(n)
        elif name is None and line and not line.startswith("#"):
            keep_it = keep(line.split("{", 1)[0].split(" ", 1)[0])
        if keep_it:
            out.append(line)
    return "".join(out)


LANDING = """<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>IPVS Exporter</title></head>
<body>
<h1>IPVS Exporter</h1>
<p>ipvs_fast {version} &mdash; Prometheus exporter for Linux IPVS.</p>
<p><a href="{path}">Metrics</a></p>
</body>
</html>
"""


class MetricsServer:
    """The HTTP server. *collect* is a thread-safe ``() -> body``, or, when
    *scrape_timeout* is set, ``(deadline_seconds) -> body``; a body is bytes
    or an iterator of bytes pieces (made as the response is written).

    Deadline: ``X-Prometheus-Scrape-Timeout-Seconds`` (which Prometheus
    sends with every scrape) or, when absent or not a positive number,
    *scrape_timeout*; minus *scrape_timeout_margin* (time left for
    rendering, compression and transfer), but never less than half the
    timeout. Single-flight: a collection already in flight is shared by every
    request arriving while it runs, and it runs under the deadline of the
    request that started it (the first); later requests do not shorten or
    extend it.

    Responses are streamed (chunked on HTTP/1.1): see :class:`Payload`.
    *request_timeout* bounds a whole response, transfer included; a
    response cut short after its headers went out is aborted (the
    connection is reset), never ended as if complete. ``HEAD`` answers with
    the headers alone and collects nothing.
    """

    def __init__(self, collect: Callable[..., object], telemetry_path: str = "/metrics", *,
                 keepalive_timeout: float = 15.0, request_timeout: float = 60.0,
                 shutdown_timeout: float = 5.0, max_line_size: int = 8190,
                 max_field_size: int = 8190, max_headers: int = 100, workers: int = 4,
                 version: str = "", scrape_timeout: Optional[float] = None,
                 scrape_timeout_margin: float = 0.5):
        if not telemetry_path.startswith("/"):
            raise ValueError("telemetry path must start with '/'")
        self._collect_fn = collect
        self.scrape_timeout = scrape_timeout
        self.scrape_timeout_margin = scrape_timeout_margin
        self.telemetry_path = telemetry_path
        self.keepalive_timeout = keepalive_timeout
        self.request_timeout = request_timeout
        self.shutdown_timeout = shutdown_timeout
        self._server_kwargs = dict(keepalive_timeout=keepalive_timeout,
                                   max_line_size=max_line_size,
                                   max_field_size=max_field_size,
                                   max_headers=max_headers,
                                   access_log=None,
                                   handler_cancellation=True)
        self._pool = ThreadPoolExecutor(max_workers=max(2, workers),
                                        thread_name_prefix="ipvs-collect")
        self._inflight: Optional[tuple] = None     # (collection future, Payload)
        self._landing = LANDING.format(version=html.escape(version),
                                       path=html.escape(telemetry_path, quote=True)).encode()
        self._runner: Optional[web.ServerRunner] = None
        self.addresses: list = []
        self.collections = 0       # number of collections started (for tests/debugging)
        self.last_deadline: Optional[float] = None   # of the last collection started

    # -- request handling ---------------------------------------------------
    def deadline_for(self, headers) -> Optional[float]:
        """Seconds a collection started for a request with *headers* may take
        (None without *scrape_timeout*: collect() takes no deadline)."""
        if self.scrape_timeout is None:
            return None
        t = self.scrape_timeout
        raw = headers.get(SCRAPE_TIMEOUT_HEADER) if headers is not None else None
        if raw:
            try:
                v = float(raw)
            except ValueError:
                v = 0.0
            if 0 < v < float("inf"):
                t = v
        return max(t - self.scrape_timeout_margin, t / 2)

    def _join(self, deadline: Optional[float], gzip: bool):
        """(collection future, payload, reader): the collection in flight,
        or a new one. Synchronous, so the reader is registered before the
        collection can finish."""
        if self._inflight is None or self._inflight[0].done():
            loop = asyncio.get_running_loop()
            self.collections += 1
            self.last_deadline = deadline
            payload = Payload(self._pool)
            fut = loop.run_in_executor(self._pool, self._collect_payload, payload, deadline)
            self._inflight = (fut, payload)

            def _clear(f, self=self):
                if self._inflight is not None and self._inflight[0] is f:
                    self._inflight = None
            fut.add_done_callback(_clear)
        fut, payload = self._inflight
        return fut, payload, payload.join(gzip)

    def _collect_payload(self, payload: Payload, deadline: Optional[float] = None) -> None:
        body = self._collect_fn() if deadline is None else self._collect_fn(deadline)
        payload.length = len(body) if hasattr(body, "__len__") else None
        payload.pieces = iter((body,)) if isinstance(body, (bytes, bytearray)) else iter(body)

    async def _metrics_response(self, request: web.BaseRequest, state: dict) -> web.StreamResponse:
        headers = {"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding",
                   "Cache-Control": "no-store"}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        gzip = accepts_gzip(request.headers.get("Accept-Encoding"))
        fut, payload, reader = self._join(self.deadline_for(request.headers), gzip)
        try:
            # shield: a disconnecting client must not cancel the shared collection
            await asyncio.shield(fut)
            batch = await payload.batch(reader)     # errors so far still make a 500
            if gzip:
                headers["Content-Encoding"] = "gzip"
            resp = web.StreamResponse(headers=headers)
            if not gzip and payload.length is not None:
                resp.content_length = payload.length    # no chunked framing to make or parse
            await resp.prepare(request)
            state["resp"] = resp
            sent = 0
            while batch is not None:
                for piece in batch:
                    await resp.write(piece)
                    sent += len(piece)
                payload.advance(reader)
                batch = await payload.batch(reader)
            if resp.content_length is not None and sent != resp.content_length:
                raise RuntimeError("body of %d bytes, %d announced" % (sent, resp.content_length))
            await resp.write_eof()
            return resp
        finally:
            payload.leave(reader)

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        state: dict = {}
        try:
            return await asyncio.wait_for(self._metrics_response(request, state),
                                          self.request_timeout)
        except Exception as e:
            if "resp" in state:
                # The status line is out: reset the connection, without the
                # last chunk, so that the client sees a broken body, not a
                # short one that parses. (aiohttp's closing write_eof then
                # fails quietly on the closed transport.)
                log.warning("scrape aborted mid-body: %r", e)
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return state["resp"]
            if isinstance(e, asyncio.TimeoutError):
                log.warning("scrape timed out after %.1fs", self.request_timeout)
                return web.Response(status=503, text="collection timed out\n")
            log.exception("collection failed")
            return web.Response(status=500, text="collection failed\n")

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == self.telemetry_path:
            kind = "metrics"
        elif path == "/":
            kind = "landing"
        elif path == "/healthz":
            kind = "health"
        else:
            return web.Response(status=404, text="404 page not found\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="405 method not allowed\n",
                                headers={"Allow": "GET, HEAD"})
        if kind == "metrics":
            return await self._metrics(request)
        if kind == "landing":
            return web.Response(body=self._landing, content_type="text/html", charset="utf-8")
        return web.Response(text="ok", content_type="text/plain")

    # -- lifecycle -------------------------------------------------------------
    async def start(self, listen_address: str) -> list:
        """Bind and start serving; returns the bound socket addresses."""
        host, port = parse_listen_address(listen_address)
        sock = bind_listen_socket(host, port)
        try:
            server = web.Server(self.handle, **self._server_kwargs)
            self._runner = web.ServerRunner(server, handle_signals=False,
                                            shutdown_timeout=self.shutdown_timeout)
            await self._runner.setup()
            site = web.SockSite(self._runner, sock, backlog=128)
            await site.start()
        except BaseException:
            sock.close()
            raise
        self.addresses = [sock.getsockname()]
        for a in self.addresses:
            log.info("listening on http://%s:%d%s", _url_host(a), a[1], self.telemetry_path)
        return self.addresses

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        # a collection stuck in the kernel must not block shutdown
        self._pool.shutdown(wait=False, cancel_futures=True)


def new_event_loop_factory():
    """uvloop's loop factory, or None (plain asyncio) when uvloop is missing."""
    try:
        import uvloop
        return uvloop.new_event_loop
    except Exception:  # pragma: no cover
        log.debug("uvloop not available, using the default asyncio event loop")
        return None


def run(server: MetricsServer, listen_address: str,
        on_started: Optional[Callable[[list], None]] = None) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        await server.start(listen_address)
        if on_started is not None:
            on_started(server.addresses)
        try:
            await stop.wait()
        finally:
            log.info("shutting down (shutdown_timeout=%gs)", server.shutdown_timeout)
            await server.stop()

    factory = new_event_loop_factory()
    if hasattr(asyncio, "Runner"):                      # Python >= 3.11
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    else:  # pragma: no cover - older Pythons
        loop = factory() if factory else asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(main())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
