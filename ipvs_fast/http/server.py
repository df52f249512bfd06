"""HTTP: aiohttp's low-level server on uvloop, serving an exposition source.

* ``GET``/``HEAD`` on the telemetry path -> the source's exposition,
  gzip-encoded when Accept-Encoding allows it; ``/`` landing page;
  ``/healthz``; 404 elsewhere; 405 for other methods on those paths.
* The source is anything with ``content_types`` (the media types it
  writes, preferred first) and ``collect(deadline, content_type) -> body``
  (a sized iterable of bytes pieces; *content_type* negotiated from the
  request's ``Accept``), e.g. :class:`ipvs_fast.exporter.Exporter`; the
  server knows no format. Collection runs in a small thread
  pool, never on the event loop; bodies are streamed by
  :class:`ipvs_fast.http.payload.Payload`. Concurrent scrapes share one
  in-flight collection (single-flight); a request arriving after it
  finished starts a new one. Collection gets a deadline from the
  ``X-Prometheus-Scrape-Timeout-Seconds`` header (see MetricsServer); a
  request joins only a collection whose deadline suits its own.
* Explicit limits: keep-alive / idle-connection timeout (also bounds how long
  a client may take to send its request head), header size limits, a
  per-request handling timeout, concurrent scrapes (``max_requests``), and a
  shutdown timeout. Malformed requests, odd HTTP versions, the Server
  header and connection resets: :mod:`ipvs_fast.http.protocol`.
"""
from __future__ import annotations

import asyncio
import html
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from aiohttp import web

from .limits import RequestLimit, may_share, scrape_timeout
from .listen import listen_sockets, url_host
from .negotiate import negotiate
from .payload import Payload
from .protocol import Server, fixed_response, reset, unsupported_version
from .sites import ListenSite

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"


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
    """The HTTP server for *source* (``content_types`` and a thread-safe
    ``collect(deadline_seconds, content_type) -> body``; a body is a sized
    iterable of bytes pieces, made as the response is written).

    Deadline: ``X-Prometheus-Scrape-Timeout-Seconds`` (which Prometheus
    sends with every scrape; at most *request_timeout*) or, when absent or
    not a finite positive number, *scrape_timeout*; minus
    *scrape_timeout_margin* (time left for rendering, compression and
    transfer), but never less than half the timeout. Single-flight: a
    collection in flight is shared by a request for the same content type
    arriving while it runs if its deadline ends no later than the request's
    own and not much earlier (:func:`ipvs_fast.http.limits.may_share`);
    otherwise the request starts its own (namespaces already being
    collected are shared below, by the TargetSet). So no client's header
    makes another's scrape fail or wait past its own deadline.

    *max_requests* scrapes at once (0 = no limit); more get 503 at once.

    Responses are streamed (chunked on HTTP/1.1): see :class:`Payload`.
    *request_timeout* bounds a whole response, transfer included; a
    response cut short after its headers went out is aborted (the
    connection is reset), never ended as if complete. ``HEAD`` answers with
    the headers alone and collects nothing.
    """

    def __init__(self, source, telemetry_path: str = "/metrics", *,
                 keepalive_timeout: float = 15.0, request_timeout: float = 60.0,
                 shutdown_timeout: float = 5.0, max_line_size: int = 8190,
                 max_field_size: int = 8190, max_headers: int = 100, workers: int = 4,
                 version: str = "", scrape_timeout: float = 10.0,
                 scrape_timeout_margin: float = 0.5, web_security=None,
                 max_requests: int = 40):
        if not telemetry_path.startswith("/"):
            raise ValueError("telemetry path must start with '/'")
        if telemetry_path in ("/", "/healthz"):
            raise ValueError("telemetry path %r is taken" % telemetry_path)
        self._source = source
        #: ipvs_fast.http.webconfig.WebSecurity (--web.config.file) or None
        self.web_security = web_security
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
        self._limit = RequestLimit(max_requests)
        # Payload's render/compress jobs; collections wait for their
        # namespaces in a pool of their own, one thread per scrape at most
        self._pool = ThreadPoolExecutor(max_workers=max(2, workers),
                                        thread_name_prefix="ipvs-render")
        self._collectors = ThreadPoolExecutor(max_workers=max_requests or 64,
                                              thread_name_prefix="ipvs-collect")
        #: [(collection future, Payload, content type, ends at (loop time))] in flight
        self._inflight: list = []
        self._scrapes: dict = {}       # id -> request being answered on the telemetry path
        self.exit_by: Optional[float] = None   # time.monotonic() shutdown must end by
        self._landing = LANDING.format(version=html.escape(version),
                                       path=html.escape(telemetry_path, quote=True)).encode()
        self._runner: Optional[web.ServerRunner] = None
        self.addresses: list = []
        self.collections = 0       # number of collections started (for tests/debugging)
        self.last_deadline: Optional[float] = None   # of the last collection started

    # -- request handling ---------------------------------------------------
    def deadline_for(self, headers) -> float:
        """Seconds a collection started for a request with *headers* may take."""
        raw = headers.get(SCRAPE_TIMEOUT_HEADER) if headers is not None else None
        t = scrape_timeout(raw, self.scrape_timeout, self.request_timeout)
        return max(t - self.scrape_timeout_margin, t / 2)

    def _join(self, deadline: float, gzip: bool, content_type: str):
        """(collection future, payload, reader): a collection in flight
        for *content_type* that suits *deadline*, or a new one. Synchronous,
        so the reader is registered before the collection can finish."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + deadline
        for fut, payload, ctype, inflight_ends in self._inflight:
            if (ctype == content_type and not fut.done()
                    and may_share(inflight_ends, ends, deadline)):
                return fut, payload, payload.join(gzip)
        self.collections += 1
        self.last_deadline = deadline
        payload = Payload(self._pool)
        fut = loop.run_in_executor(self._collectors, self._collect_payload, payload, deadline,
                                   content_type)
        entry = (fut, payload, content_type, ends)
        self._inflight.append(entry)
        fut.add_done_callback(lambda _f: self._inflight.remove(entry))
        return fut, payload, payload.join(gzip)

    def _collect_payload(self, payload: Payload, deadline: float, content_type: str) -> None:
        body = self._source.collect(deadline, content_type)
        payload.length = len(body)
        payload.pieces = iter(body)

    async def _metrics_response(self, request: web.BaseRequest, state: dict) -> web.StreamResponse:
        content_type = negotiate(request.headers.get("Accept"), self._source.content_types)
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding",
                   "Cache-Control": "no-store", **self._extra_headers()}
        if request.method == "HEAD":
            return web.Response(headers=headers)
        gzip = accepts_gzip(request.headers.get("Accept-Encoding"))
        fut, payload, reader = self._join(self.deadline_for(request.headers), gzip,
                                          content_type)
        try:
            # shield: a disconnecting client must not cancel the shared collection
            await asyncio.shield(fut)
            batch = await payload.batch(reader)     # errors so far still make a 500
            if gzip:
                headers["Content-Encoding"] = "gzip"
            resp = web.StreamResponse(headers=headers)
            if not gzip:
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
        if not self._limit.acquire():
            return fixed_response(503, headers={"Retry-After": "1"})
        self._scrapes[id(request)] = request
        try:
            return await self._metrics_limited(request)
        finally:
            del self._scrapes[id(request)]
            self._limit.release()

    async def _metrics_limited(self, request: web.BaseRequest) -> web.StreamResponse:
        state: dict = {}
        try:
            return await asyncio.wait_for(self._metrics_response(request, state),
                                          self.request_timeout)
        except asyncio.CancelledError:
            # shutdown, or the client went away: a started body must not
            # look complete (aiohttp would otherwise close cleanly)
            if "resp" in state:
                reset(request.transport)
            raise
        except Exception as e:
            if "resp" in state:
                # The status line is out: reset the connection, without the
                # last chunk, so that the client sees a broken body, not a
                # short one that parses. (aiohttp's closing write_eof then
                # fails quietly on the closed transport.)
                if isinstance(e, ConnectionError):      # the client hung up
                    log.debug("scrape aborted mid-body: %r", e)
                else:
                    log.warning("scrape aborted mid-body: %r", e)
                reset(request.transport)
                return state["resp"]
            if isinstance(e, asyncio.TimeoutError):
                log.warning("scrape timed out after %.1fs", self.request_timeout)
                return web.Response(status=503, text="collection timed out\n")
            log.exception("collection failed")
            return web.Response(status=500, text="collection failed\n")

    def _extra_headers(self) -> dict:
        return self.web_security.headers if self.web_security is not None else {}

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if unsupported_version(request):
            resp = fixed_response(505)
            resp.force_close()
            return resp
        if self.web_security is not None:
            refused = await self.web_security.admit(request, open_path=request.path == "/healthz")
            if refused is not None:
                return refused
        resp = await self._route(request)
        if not resp.prepared:
            resp.headers.update(self._extra_headers())
        return resp

    async def _route(self, request: web.BaseRequest) -> web.StreamResponse:
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
    async def start(self, listen_address) -> list:
        """Bind and start serving; returns the bound socket addresses.
        *listen_address*: one HOST:PORT, several, or listening sockets
        (e.g. from systemd socket activation)."""
        socks = listen_sockets(listen_address)
        security = self.web_security
        ctx = security.config.ssl_context if security is not None else None
        try:
            server = Server(self.handle, **self._server_kwargs)
            self._runner = web.ServerRunner(server, handle_signals=False,
                                            shutdown_timeout=self.shutdown_timeout)
            await self._runner.setup()
            for sock in socks:
                site = ListenSite(self._runner, sock, ssl_context=ctx, backlog=128)
                await site.start()
                if security is not None:
                    security.add_site(site)
        except BaseException:
            for sock in socks:
                sock.close()
            raise
        if security is not None:
            security.start()
        self.addresses = [sock.getsockname() for sock in socks]
        for a in self.addresses:
            log.info("listening on %s://%s:%d%s", "https" if ctx else "http",
                     url_host(a), a[1], self.telemetry_path)
        return self.addresses

    async def stop(self) -> None:
        """Stop serving, within *shutdown_timeout* from :attr:`exit_by`
        (set when the stop signal came; now if unset): scrapes under way
        may finish until shortly before it, then their connections are
        reset (aiohttp alone would take up to twice the timeout and close
        cut-off responses cleanly)."""
        if self.exit_by is None:
            self.exit_by = time.monotonic() + self.shutdown_timeout
        reserve = min(1.0, self.shutdown_timeout / 4)   # for resets and closing
        if self.web_security is not None:
            await self.web_security.stop()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            cleanup = asyncio.ensure_future(runner.cleanup())
            grace = self.exit_by - reserve - time.monotonic()
            done, _ = await asyncio.wait({cleanup}, timeout=max(0.0, grace))
            if not done:
                cut = list(self._scrapes.values())
                for request in cut:
                    reset(request.transport)
                log.info("shutdown: %d scrape(s) cut off with a connection reset", len(cut))
                done, _ = await asyncio.wait({cleanup}, timeout=reserve / 2)
                if not done:
                    cleanup.cancel()
                    log.warning("shutdown: connections still open after the shutdown timeout")
        # a collection stuck in the kernel must not block shutdown
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._collectors.shutdown(wait=False, cancel_futures=True)


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
    """Serve until SIGTERM/SIGINT, then shut down within the server's
    shutdown_timeout. SIGHUP re-reads --web.config.file now (it is also
    re-read when it changes); without one it is logged and ignored."""

    async def main():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def stop_now():
            if server.exit_by is None:
                server.exit_by = time.monotonic() + server.shutdown_timeout
            stop.set()

        def reload():
            if server.web_security is None:
                log.info("SIGHUP: nothing to reload, ignored")
                return
            log.info("SIGHUP: re-reading the web configuration")
            loop.create_task(server.web_security.reload())

        for sig, action in ((signal.SIGTERM, stop_now), (signal.SIGINT, stop_now),
                            (signal.SIGHUP, reload)):
            try:
                loop.add_signal_handler(sig, action)
            except (NotImplementedError, RuntimeError, ValueError):  # pragma: no cover
                signal.signal(sig, lambda *_, a=action: loop.call_soon_threadsafe(a))
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
