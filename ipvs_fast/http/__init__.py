"""HTTP: listen sockets (``listen.py``), the streamed body shared by
concurrent scrapes (``payload.py``) and the aiohttp server (``server.py``),
which serves any exposition source and knows no metric format."""
