"""Streamed responses against a real kernel table big enough for many
batches (2,000 services x 10 destinations, ~17 MB of text): the identity
body carries its exact Content-Length, the gzip body is the same text, and
concurrent readers of one collection all get whole, identical bodies that
agree with ipvsadm."""
import gzip
import socket
import subprocess
import threading

import pytest

from . import topo

pytestmark = pytest.mark.kernel

NS = "ipvsf-big"
PATH = f"/run/netns/{NS}"
NSVC, NDEST = 2000, 10


def rules() -> str:
    out = []
    for i in range(NSVC):
        host = "%d.%d" % (1 + i // 200, 1 + i % 200)          # no .0 / .255
        vip = f"-t 10.77.{host}:{80 + i % 7}"
        out.append(f"-A {vip} -s rr")
        out += [f"-a {vip} -r 172.20.{host}:{8000 + j} -m -w 1" for j in range(NDEST)]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def big_ns():
    subprocess.run(["modprobe", "ip_vs"], check=True)
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    topo.sh(f"ip netns add {NS}")
    # routable real servers (IPVS refuses destinations it cannot classify)
    topo.sh("ip link set lo up", ns=NS)
    topo.sh("ip link add rs0 type dummy", ns=NS)
    topo.sh("ip addr add 172.20.255.254/16 dev rs0", ns=NS)
    topo.sh("ip link set rs0 up", ns=NS)
    topo.sh("ipvsadm -R", ns=NS, input=rules())
    yield PATH
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def get(port: int, gz: bool) -> tuple[dict, bytes]:
    """One HTTP/1.1 GET over a raw socket: (headers, body as sent)."""
    req = (b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           + (b"Accept-Encoding: gzip\r\n" if gz else b"") + b"\r\n")
    data = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=300) as s:
        s.sendall(req)
        while True:
            k = s.recv(1 << 20)
            if not k:
                break
            data += k
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return headers, body


def dechunk(body: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = body.index(b"\r\n", pos)
        n = int(body[pos:end], 16)
        if n == 0:
            assert body[end + 2:] == b"\r\n", "data after the last chunk"
            return bytes(out)
        out += body[end + 2:end + 2 + n]
        assert body[end + 2 + n:end + 4 + n] == b"\r\n"
        pos = end + 4 + n


def ipvs_lines(text: bytes) -> list:
    """The ipvs_* sample lines but the scrape duration, in order. (Plain line
    filtering: prometheus_client's parser takes minutes on ~100k samples
    under emulation; the format itself is checked by the other suites.)"""
    assert text.endswith(b"\n")
    return [ln for ln in text.split(b"\n")
            if ln.startswith(b"ipvs_") and not ln.startswith(b"ipvs_scrape_duration_seconds")]


def count(lines: list, name: bytes) -> int:
    return sum(1 for ln in lines if ln.startswith(name + b"{"))


def test_big_table_streams_whole_bodies(big_ns, exporter):
    e = exporter("--namespace-path", big_ns, "--backend", "native")
    headers, body = get(e.port, gz=False)
    assert "transfer-encoding" not in headers
    assert int(headers["content-length"]) == len(body) > 10_000_000
    identity = ipvs_lines(body)

    table = topo.sh("ipvsadm -Ln", ns=NS)
    nsvc, ndest = table.count("\nTCP  "), table.count("  -> ") - 1   # minus the header line
    assert (nsvc, ndest) == (NSVC, NSVC * NDEST)
    assert count(identity, b"ipvs_destination_active_connections_total") == ndest
    assert count(identity, b"ipvs_connections_total") == nsvc
    assert b'ipvs_services_total{namespace="%s"} %d' % (big_ns.encode(), nsvc) in identity

    headers, body = get(e.port, gz=True)
    assert headers["content-encoding"] == "gzip" and headers["transfer-encoding"] == "chunked"
    assert ipvs_lines(gzip.decompress(dechunk(body))) == identity

    # ten readers at once, half of them gzip: one collection, whole bodies
    got, errors = [], []

    def read(gz):
        try:
            h, b = get(e.port, gz)
            got.append(gzip.decompress(dechunk(b)) if gz else b)
            if not gz:
                assert int(h["content-length"]) == len(b)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    ts = [threading.Thread(target=read, args=(i % 2 == 1,)) for i in range(10)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not errors, errors
    assert len(got) == 10
    assert all(ipvs_lines(b) == identity for b in got)
    # process_* and the duration differ between collections; readers that
    # shared one collection got byte-identical text
    assert len({bytes(b) for b in got}) < 10
