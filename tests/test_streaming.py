"""Streamed responses: a body made piece by piece, shared by concurrent
requests, released as it is sent, and never ended as if complete when it
was cut short."""
import asyncio
import gzip
import http.client
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ipvs_fast.http import payload as srv
from ipvs_fast.http.payload import Payload

from .test_server import ServerThread

PIECE = b"x" * 100_000 + b"\n"


class Pieces:
    """A collect() whose body is N pieces made lazily; counts what was made."""

    def __init__(self, n, fail_at=None, sleep_at=None, sleep=0.0):
        self.n, self.fail_at, self.sleep_at, self.sleep = n, fail_at, sleep_at, sleep
        self.made = 0
        self.collections = 0

    def __call__(self):
        self.collections += 1
        return Sized(self._gen(), self.n * (6 + len(PIECE)))

    def _gen(self):
        for i in range(self.n):
            if i == self.fail_at:
                raise RuntimeError("render failed")
            if i == self.sleep_at:
                time.sleep(self.sleep)
            self.made += 1
            yield b"%06d" % i + PIECE

    def body(self):
        return b"".join(b"%06d" % i + PIECE for i in range(self.n))


def test_streamed_body_is_whole_and_made_once_for_concurrent_readers():
    pieces = Pieces(60)                         # ~6 MB: several batches
    gate = threading.Event()

    def collect():
        gate.wait(5)
        return pieces()
    with ServerThread(collect) as s:
        out = []
        ts = [threading.Thread(target=lambda i=i: out.append(s.request(
            headers={"Accept-Encoding": "gzip"} if i % 2 else {}))) for i in range(6)]
        for t in ts:
            t.start()
        time.sleep(0.5)
        gate.set()
        for t in ts:
            t.join(20)
        assert len(out) == 6
        for status, headers, body in out:
            assert status == 200
            if headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            assert body == pieces.body()
        assert pieces.collections == 1 and pieces.made == 60


def test_http10_client_reads_to_close():
    pieces = Pieces(25)
    with ServerThread(pieces) as s:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            while True:
                k = c.recv(1 << 20)
                if not k:
                    break
                data += k
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200")
        assert b"chunked" not in head.lower()
        assert body == pieces.body()


def test_render_error_before_the_body_is_a_500():
    with ServerThread(Pieces(5, fail_at=0)) as s:
        status, _, body = s.request()
        assert status == 500 and body == b"collection failed\n"


@pytest.mark.parametrize("kind", ["render error", "request timeout"])
def test_body_cut_short_is_never_ended_as_complete(kind):
    if kind == "render error":
        pieces, kw = Pieces(40, fail_at=30), {}
    else:
        pieces, kw = Pieces(40, sleep_at=30, sleep=3.0), {"request_timeout": 1.0}
    with ServerThread(pieces, **kw) as s:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        assert r.status == 200                  # the headers went out before the failure
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            r.read()
        c.close()
        # the server goes on serving
        if kind == "request timeout":
            pieces.sleep_at = None
        else:
            pieces.fail_at = None
        status, _, body = s.request()
        assert status == 200 and body == pieces.body()


def test_slow_reader_holds_the_body_fast_reader_does_not():
    """Batches are dropped once every reader of their encoding wrote them."""
    async def main():
        pool = ThreadPoolExecutor(2)
        p = Payload(pool)
        p.pieces = iter([PIECE] * 40)                 # 4 MB: 4 batches
        fast, slow, gz = p.join(False), p.join(False), p.join(True)
        got = []
        while True:
            b = await p.batch(fast)
            if b is None:
                break
            got.append(b"".join(b))
            p.advance(fast)
        assert b"".join(got) == PIECE * 40
        held = [b[0] is not None for b in p.batches]
        assert all(held)                              # the slow reader has not read any
        assert await p.batch(slow) and await p.batch(gz)
        p.advance(slow)
        assert p.batches[0][0] is None and p.batches[1][0] is not None
        assert p.batches[0][1] is not None            # gzip part: its reader is at 0
        p.leave(slow)
        # no text reader left: only what the compressor has yet to read is kept
        assert p.zipped < len(p.batches)
        assert [b[0] is None for b in p.batches] == [j < p.zipped for j in range(len(p.batches))]
        p.leave(gz)
        assert all(b[0] is None and b[1] is None for b in p.batches)
        pool.shutdown()
    asyncio.run(main())


def test_pieces_are_made_as_the_reader_goes_not_all_at_once():
    async def main():
        pool = ThreadPoolExecutor(2)
        made = []

        def gen():
            for i in range(100):
                made.append(i)
                yield PIECE
        p = Payload(pool)
        p.pieces = gen()
        r = p.join(False)
        await p.batch(r)
        await asyncio.sleep(0.2)
        # the first batch and at most one more (made while the first is sent)
        assert len(made) <= 2 * (srv.BATCH_BYTES // len(PIECE) + 1) < 100
        p.leave(r)
        pool.shutdown()
    asyncio.run(main())


class Sized:
    """A body with a length announced up front (like exposition.Body)."""

    def __init__(self, pieces, length):
        self.pieces, self.length = pieces, length

    def __len__(self):
        return self.length

    def __iter__(self):
        return iter(self.pieces)


def test_known_length_is_sent_as_content_length():
    pieces = [b"a" * 300_000, b"b" * 900_000, b"c\n"]
    with ServerThread(lambda: Sized(pieces, 1_200_002)) as s:
        status, headers, body = s.request()
        assert status == 200 and body == b"".join(pieces)
        assert headers["content-length"] == "1200002"
        assert "transfer-encoding" not in headers
        _, headers, gz = s.request(headers={"Accept-Encoding": "gzip"})
        assert gzip.decompress(gz) == b"".join(pieces)
        assert headers["transfer-encoding"] == "chunked"


@pytest.mark.parametrize("announced", [1_000_000, 3_000_000])
def test_wrong_announced_length_breaks_the_response_not_the_server(announced):
    pieces = [b"a" * 1_200_000, b"b\n"]
    with ServerThread(lambda: Sized(pieces, announced)) as s:
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        c.request("GET", "/metrics")
        r = c.getresponse()
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            body = r.read()
            # too long for what was announced: never passed off as complete
            assert len(body) == announced and body != b"".join(pieces)
            raise ConnectionError("short read as expected")
        c.close()
        status, _, _ = s.request(path="/healthz")
        assert status == 200


def test_batch_done_before_its_callback_ran_is_taken_in():
    """The race seen with real bodies: a batch's future is done (its result
    set on the loop) but its done-callback, queued behind the reader, has
    not run when the reader asks for it; awaiting a done future does not
    yield, so the reader must take the batch in itself, not spin."""
    result = {}

    async def main():
        p = Payload(None)
        p.pieces = iter(())
        r = p.join(False)
        fut = asyncio.get_running_loop().create_future()
        p._making = fut
        fut.set_result(([PIECE], True))           # the callback p._made has not run
        result["batch"] = await p.batch(r)
        p.advance(r)
        result["end"] = await p.batch(r)

    t = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reader spun on a finished batch"
    assert result == {"batch": [PIECE], "end": None}
