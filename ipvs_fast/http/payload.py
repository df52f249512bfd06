"""Streaming: one exposition body, rendered and gzip-compressed batch by
batch while it is written, shared by every response that joined it.

:class:`Payload` is the mechanism; it knows nothing of HTTP beyond "a reader
wants identity or gzip". ISA-L does the gzip when installed (several times
faster than zlib at level 1), zlib otherwise.
"""
from __future__ import annotations

import asyncio
import zlib
from typing import Optional


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
    pieces made lazily (an :class:`ipvs_fast.formats.exposition.Body`), and
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
