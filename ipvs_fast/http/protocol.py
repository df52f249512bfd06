"""HTTP edges on top of aiohttp's low-level server: what malformed and odd
requests get, what every response says about us, how a response is cut off.

* A request aiohttp's parser rejects (garbage, a bad header, a missing
  ``Host``, an over-long line) gets a short fixed body and costs at most one
  short, rate-limited log line naming the error class and the peer address.
  (aiohttp's own handler logs the request's bytes with a traceback at ERROR,
  and echoes them in the body.)
* Request versions other than HTTP/1.0 and HTTP/1.1 (aiohttp's parser
  accepts 0.9 and 2.0 and would echo them in the status line) are marked;
  :func:`unsupported_version` lets the server answer 505 with an HTTP/1.1
  status line.
* Every response carries ``Server: ipvs_fast``, nothing about Python or aiohttp.
* :func:`reset` ends a connection with a TCP reset.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
from http import HTTPStatus

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.web_protocol import RequestHandler

from .limits import RateLimitedLog

log = logging.getLogger(__name__)

SERVER_TOKEN = "ipvs_fast"

#: Bad requests are logged at most once per this many seconds.
BAD_REQUEST_LOG_INTERVAL = 10.0
_bad_requests = RateLimitedLog(log, BAD_REQUEST_LOG_INTERVAL)
_failures = RateLimitedLog(log, BAD_REQUEST_LOG_INTERVAL)


def fixed_response(status: int, **kw) -> web.Response:
    """``status`` with the body ``"<status> <reason>\\n"``: never anything
    from the request."""
    s = HTTPStatus(status)
    return web.Response(status=status, text=f"{s.value} {s.phrase}\n", **kw)


def unsupported_version(request: web.BaseRequest) -> bool:
    """The request named an HTTP version other than 1.0 and 1.1."""
    return isinstance(request, _UnsupportedVersionRequest)


def reset(transport) -> None:
    """Close *transport*'s connection with a TCP reset (SO_LINGER 0), so the
    client sees a broken response, never one that merely ended early."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass                        # closed already: abort() below is all we can do
    transport.abort()


class _Request(web.BaseRequest):
    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        # after aiohttp's _prepare_headers, which sets its default Server header
        response.headers[hdrs.SERVER] = SERVER_TOKEN


class _UnsupportedVersionRequest(_Request):
    pass


def _make_request(message, payload, protocol, writer, task) -> web.BaseRequest:
    cls = _Request
    if message.version not in (HttpVersion10, HttpVersion11):
        # the status line is written in the request's version
        message = message._replace(version=HttpVersion11, should_close=True)
        cls = _UnsupportedVersionRequest
    return cls(message, payload, protocol, writer, task, asyncio.get_running_loop())


class _RequestHandler(RequestHandler):
    """aiohttp's connection handler, with errors answered and logged
    without the request's bytes."""

    def handle_error(self, request, status: int = 500, exc=None, message=None):
        name = type(exc).__name__ if exc is not None else "error"
        if status >= 500:
            _failures.log(logging.ERROR, "request from %s failed: %d %s",
                              request.remote, status, name)
            log.debug("request failure", exc_info=exc)
        else:
            _bad_requests.log(logging.INFO, "bad request from %s: %d %s",
                              request.remote, status, name)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        resp = fixed_response(status)
        resp.force_close()
        return resp


class Server(web.Server):
    """aiohttp's low-level server with the edges above."""

    def __init__(self, handler, **kwargs):
        super().__init__(handler, request_factory=_make_request, **kwargs)

    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)
