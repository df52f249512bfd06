"""Tiny traffic tools for the kernel test bed.

  traffic.py serve                     TCP on :8080 and :8081, UDP echo on :5353 (v4+v6)
  traffic.py tcp HOST PORT COUNT SIZE  COUNT request/response exchanges, one connection each
  traffic.py udp HOST PORT COUNT SIZE  COUNT datagrams, each answered by an echo
  traffic.py sctp HOST PORT COUNT SIZE COUNT SCTP associations with one exchange each
  traffic.py http HOST PORT COUNT SIZE COUNT HTTP/1.0 GETs (a SIZE-byte header), one
                                       connection each; the reply is read to its end
  traffic.py multi KIND,HOST,PORT,COUNT,SIZE ...   several of the above in one process
                                       (interpreter start-up is seconds under emulation)
  traffic.py loop SECONDS KIND,HOST,PORT,COUNT,SIZE ...
                                       repeat the flows for SECONDS (sustained load for
                                       the kernel's rate estimator), then print the rounds
"""
import socket
import sys
import threading
import time


def _tcp_server(port: int, proto: int = 0) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(128)
    while True:
        c, _ = s.accept()
        try:
            c.settimeout(5)
            data = c.recv(65536)
            if proto != socket.IPPROTO_SCTP:
                # TCP: read up to the client's half-close. Closing with
                # request bytes still unread (a request of two segments, the
                # second not yet in) makes the kernel answer with a reset,
                # and the client loses the reply (ECONNRESET).
                while chunk := c.recv(65536):
                    data += chunk
            c.sendall(b"R" * (len(data) * 2 + 1))
        except OSError:
            pass
        finally:
            c.close()


def _udp_server(port: int) -> None:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        data, peer = s.recvfrom(65536)
        s.sendto(data + b"!", peer)


def serve() -> None:
    threads = [threading.Thread(target=_tcp_server, args=(8080,), daemon=True),
               threading.Thread(target=_tcp_server, args=(8081,), daemon=True),
               threading.Thread(target=_udp_server, args=(5353,), daemon=True)]
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()
        threads.append(threading.Thread(target=_tcp_server, args=(8082, socket.IPPROTO_SCTP), daemon=True))
    except OSError:
        pass
    for t in threads:
        t.start()
    threading.Event().wait()


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


#: A connect that times out is retried (a fresh socket, so a fresh source
#: port) this many times before the flow fails. Under emulation a SYN now and
#: then goes unanswered for seconds: the client reuses a source port quickly
#: (the server closes first, so the TIME_WAIT is the server's) while IPVS
#: still holds the old connection entry for that port.
CONNECT_ATTEMPTS = 3


def _connect(host: str, port: int, proto: int) -> socket.socket:
    for attempt in range(CONNECT_ATTEMPTS):
        s = socket.socket(_family(host), socket.SOCK_STREAM, proto)
        s.settimeout(10)
        try:
            s.connect((host, port))
            return s
        except TimeoutError:
            s.close()
            print(f"connect to {host} port {port} timed out (attempt {attempt + 1})",
                  file=sys.stderr)
    raise TimeoutError(f"connect to {host} port {port}: {CONNECT_ATTEMPTS} attempts timed out")


def stream(host: str, port: int, count: int, size: int, proto: int = 0) -> None:
    got = 0
    for _ in range(count):
        with _connect(host, port, proto) as s:
            s.sendall(b"Q" * size)
            if proto != socket.IPPROTO_SCTP:
                s.shutdown(socket.SHUT_WR)  # the whole request is in (SCTP keeps messages whole)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
    print(got)


def http(host: str, port: int, count: int, size: int) -> None:
    got = 0
    request = b"GET / HTTP/1.0\r\nX-Pad: " + b"Q" * size + b"\r\n\r\n"
    for _ in range(count):
        with _connect(host, port, 0) as s:
            s.sendall(request)
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            if not reply.startswith(b"HTTP/1."):
                sys.exit(f"not an HTTP reply from {host}:{port}: {reply[:80]!r}")
            got += len(reply)
    print(got)


def udp(host: str, port: int, count: int, size: int) -> None:
    got = 0
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for _ in range(count):
            s.sendto(b"D" * size, (host, port))
            got += len(s.recv(65536))
    print(got)


def run(cmd: str, host: str, port: int, count: int, size: int) -> None:
    if cmd == "tcp":
        stream(host, port, count, size)
    elif cmd == "sctp":
        stream(host, port, count, size, socket.IPPROTO_SCTP)
    elif cmd == "udp":
        udp(host, port, count, size)
    elif cmd == "http":
        http(host, port, count, size)
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serve":
        serve()
    elif cmd == "multi":
        for spec in sys.argv[2:]:
            kind, host, port, count, size = spec.split(",")
            run(kind, host, int(port), int(count), int(size))
    elif cmd == "loop":
        flows = [spec.split(",") for spec in sys.argv[3:]]
        end = time.monotonic() + float(sys.argv[2])
        rounds = 0
        while time.monotonic() < end:
            for kind, host, port, count, size in flows:
                run(kind, host, int(port), int(count), int(size))
            rounds += 1
        print(f"rounds {rounds}")
    else:
        run(cmd, sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
