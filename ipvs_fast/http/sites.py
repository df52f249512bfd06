"""aiohttp sites on bound sockets, plain or TLS, whose TLS context can be
replaced while they serve (a new certificate or client CA applies to new
connections; connections already open keep theirs).

asyncio fixes a server's SSLContext when it starts, and changing a live
context in place cannot drop what it trusts, so a new context gets a new
asyncio server on a duplicate of the same listening socket; the old one
stops accepting (its open connections live on). Both share one accept
queue, so no connection is refused while they change over.

A TLS handshake runs inside the event loop without blocking it (asyncio's
and uvloop's TLS are memory-BIO state machines driven by socket reads): a
client that stalls its handshake costs one socket until
TLS_HANDSHAKE_TIMEOUT, nothing else.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Optional

from aiohttp import web

#: seconds a client has to complete its TLS handshake
TLS_HANDSHAKE_TIMEOUT = 10.0


class ListenSite(web.SockSite):
    """A SockSite (aiohttp registers and stops it with the runner) serving
    *sock*, with TLS when *ssl_context* is given."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, *,
                 ssl_context: Optional[ssl.SSLContext] = None, backlog: int = 128):
        super().__init__(runner, sock, ssl_context=ssl_context, backlog=backlog)

    async def _serve(self, ctx: Optional[ssl.SSLContext]):
        loop = asyncio.get_running_loop()
        sock = self._sock.dup()      # each asyncio server closes its own
        try:
            return await loop.create_server(
                self._runner.server, sock=sock, ssl=ctx, backlog=self._backlog,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if ctx is not None else None)
        except BaseException:
            sock.close()
            raise

    async def start(self) -> None:
        await web.BaseSite.start(self)            # registers with the runner
        self._server = await self._serve(self._ssl_context)

    async def use_ssl_context(self, ctx: ssl.SSLContext) -> None:
        """Serve new connections with *ctx* from now on."""
        if self._server is None:
            self._ssl_context = ctx
            return
        new = await self._serve(ctx)
        old, self._server, self._ssl_context = self._server, new, ctx
        old.close()

    async def stop(self) -> None:
        await super().stop()
        self._sock.close()
