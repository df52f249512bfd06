"""The transfer floor: an aiohttp/uvloop server (the same stack as the
exporter) answering every GET with the same prebuilt body of N bytes, sent
the way the exporter sends its text (Content-Length, ~1 MB writes). What
10 concurrent readers cost against it is what moving the bytes costs.

    python bench/static_body.py PORT NBYTES
"""
import sys

import uvloop
from aiohttp import web

PORT, N = int(sys.argv[1]), int(sys.argv[2])
BODY = (b"ipvs_destination_bytes_in_total{address=\"172.16.0.1\",fwmark=\"0\"} 0\n"
        * (N // 64 + 1))[:N]
STEP = 1 << 20


async def handle(request: web.BaseRequest) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.content_length = N
    await resp.prepare(request)
    for off in range(0, N, STEP):
        await resp.write(BODY[off:off + STEP])
    await resp.write_eof()
    return resp


async def main():
    runner = web.ServerRunner(web.Server(handle), handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    import asyncio
    uvloop.run(main())
