"""Collection, Docker Swarm names: which Swarm service owns each fwmark service (opt-in).

With ``--docker.host`` set, a background thread asks the Docker Engine API
(aiohttp, over the unix socket or TCP) for the Swarm services and networks
every ``--docker.refresh-interval`` seconds, and reads the mangle rules
(fwmark -> virtual IP) of the Docker load-balancer namespaces the exporter
scrapes. A scrape only looks the answer up (:meth:`SwarmNames.labels`):

* ``ingress_sbox`` (the routing mesh): fwmark -> published port (the port map
  the scrape already has) -> the service publishing that port in ingress mode;
  a mark without a port falls back to the VIP rule below.
* ``lb_<network id[:9]>`` (one per overlay network): fwmark -> virtual IP
  (``-d VIP/32 -j MARK --set-mark N`` rules) -> the service with that VIP on
  that network (``Endpoint.VirtualIPs``).

Nothing here can fail or slow a scrape: an unreachable or slow Docker API
only means no names (the previous answer is dropped), with one log line per
state change.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import threading
from typing import Callable, Optional
from urllib.parse import urlsplit

from .portmap import IPTABLES_SAVE_CANDIDATES, _command, _parse_mark, _run, mangle_rules

log = logging.getLogger(__name__)

INGRESS_SBOX = "ingress_sbox"
LB_PREFIX = "lb_"
STACK_LABEL = "com.docker.stack.namespace"
DEFAULT_REFRESH = 30.0
#: One Docker API round (all requests of a refresh) may take this long.
API_TIMEOUT = 10.0


def parse_docker_host(value: str) -> tuple:
    """``unix:///path`` -> ("unix", path); ``tcp://h:p`` / ``http://h:p`` ->
    ("http", "http://h:p"). Raises ValueError for anything else."""
    u = urlsplit(value)
    if u.scheme == "unix":
        if not u.path or u.netloc:
            raise ValueError(f"{value!r}: expected unix:///path/to/docker.sock")
        return "unix", u.path
    if u.scheme in ("tcp", "http"):
        if not u.hostname or u.path not in ("", "/"):
            raise ValueError(f"{value!r}: expected tcp://HOST:PORT")
        try:
            port = u.port or 2375
        except ValueError:
            raise ValueError(f"{value!r}: bad port") from None
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return "http", f"http://{host}:{port}"
    raise ValueError(f"{value!r}: expected unix:///path or tcp://HOST:PORT")


def parse_vip_marks(text: str) -> dict:
    """fwmark -> virtual IP from ``iptables-save -t mangle`` output: rules
    (any chain; Docker uses PREROUTING in load-balancer namespaces, OUTPUT in
    containers) matching one destination address and jumping to MARK."""
    marks: dict = {}
    for toks in mangle_rules(text):
        dest = mark = None
        is_mark = False
        for i, tok in enumerate(toks[:-1]):
            nxt = toks[i + 1]
            if tok in ("-d", "--destination") and toks[i - 1] != "!":
                dest = nxt
            elif tok in ("-j", "--jump"):
                is_mark = nxt == "MARK"
            elif tok in ("--set-xmark", "--set-mark"):
                mark = _parse_mark(nxt)
        if not (is_mark and mark is not None and dest):
            continue
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if net.num_addresses == 1:
            marks[mark] = str(net.network_address)
    return marks


def read_vip_marks(ns_path: str, timeout: float = 5.0) -> dict:
    """fwmark -> VIP for the namespace at *ns_path* (``{}`` on any failure)."""
    for binary in IPTABLES_SAVE_CANDIDATES:
        text = _run(_command(binary, ns_path), timeout)
        if text:
            marks = parse_vip_marks(text)
            if marks:
                return marks
    return {}


def _docker_service(svc) -> Optional[tuple]:
    """(id, name, stack, published ingress ports, [(network id, vip)]) of
    one /services entry; None if it does not look like one."""
    if not isinstance(svc, dict) or not isinstance(svc.get("ID"), str):
        return None
    spec = svc.get("Spec") if isinstance(svc.get("Spec"), dict) else {}
    labels = spec.get("Labels") if isinstance(spec.get("Labels"), dict) else {}
    name = spec.get("Name") if isinstance(spec.get("Name"), str) else ""
    stack = labels.get(STACK_LABEL) if isinstance(labels.get(STACK_LABEL), str) else ""
    ep = svc.get("Endpoint") if isinstance(svc.get("Endpoint"), dict) else {}
    ports = set()
    for p in ep.get("Ports") or ():
        if isinstance(p, dict) and p.get("PublishMode", "ingress") == "ingress" \
                and isinstance(p.get("PublishedPort"), int):
            ports.add(str(p["PublishedPort"]))
    vips = []
    for v in ep.get("VirtualIPs") or ():
        if isinstance(v, dict) and isinstance(v.get("NetworkID"), str) \
                and isinstance(v.get("Addr"), str):
            vips.append((v["NetworkID"], v["Addr"].split("/", 1)[0]))
    return svc["ID"], name, stack, ports, vips


class _View:
    """One answer of the Docker API, indexed for the scrape's lookups."""

    def __init__(self, services: list, ingress_id: str):
        self.ingress_id = ingress_id
        self.by_port: dict = {}       # published port -> service tuple (ambiguous: None)
        self.by_vip: dict = {}        # (network id, vip) -> service tuple
        for s in services:
            for port in s[3]:
                self.by_port[port] = None if port in self.by_port else s
            for net, vip in s[4]:
                self.by_vip[(net, vip)] = s

    def network_of(self, ns_path: str) -> Optional[str]:
        """The network whose load balancer the namespace at *ns_path* is."""
        base = os.path.basename(ns_path)
        if base == INGRESS_SBOX:
            return self.ingress_id or None
        if base.startswith(LB_PREFIX) and len(base) > len(LB_PREFIX):
            prefix = base[len(LB_PREFIX):]
            for net, _ in self.by_vip:
                if net.startswith(prefix):
                    return net
        return None


def is_docker_lb(ns_path: str) -> bool:
    base = os.path.basename(ns_path)
    return base == INGRESS_SBOX or (base.startswith(LB_PREFIX) and len(base) > len(LB_PREFIX))


class SwarmNames:
    """Swarm service names for fwmark services, refreshed in the background.

    *host*: the Docker API address (``unix:///var/run/docker.sock``,
    ``tcp://HOST:PORT``). *vip_reader(path) -> {mark: vip}* reads a
    namespace's VIP rules (default: iptables-save in it). ``start()`` starts
    the refresher thread, ``close()`` stops it (bounded)."""

    def __init__(self, host: str, refresh: float = DEFAULT_REFRESH, *,
                 vip_reader: Callable[[str], dict] = read_vip_marks,
                 api_timeout: float = API_TIMEOUT):
        self.host = host
        self._kind, self._where = parse_docker_host(host)
        self.refresh = float(refresh)
        self.api_timeout = float(api_timeout)
        self._vip_reader = vip_reader
        self._lock = threading.Lock()
        self._view: Optional[_View] = None
        self._vips: dict = {}             # namespace path -> {mark: vip}
        self._watched: set = set()        # Docker LB namespaces seen in scrapes
        self._state = None                # None, "ok" or an error kind (log per change)
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._started = threading.Event()
        self.refreshes = 0                # completed refresh rounds (tests)

    # -- scrape side (any thread; never blocks on Docker) --------------------------
    def labels(self, results) -> list:
        """Label dicts of ``ipvs_swarm_service_info`` for *results*."""
        from ..backends.records import SVC_SIZE, SVC_STRUCT
        out = []
        seen = set()
        with self._lock:
            view, vips = self._view, self._vips
            for r in results:
                if is_docker_lb(r.namespace):
                    seen.add(r.namespace)
            self._watched = seen
        if view is None:
            return out
        for r in results:
            snap = r.snapshot
            if r.namespace not in seen or not r.up or snap is None:
                continue
            net = view.network_of(r.namespace)
            ingress = os.path.basename(r.namespace) == INGRESS_SBOX
            ns_vips = vips.get(r.namespace, {})
            ports = r.ports or {}
            done = set()
            buf = snap.services
            for s in SVC_STRUCT.iter_unpack(buf[:len(buf) // SVC_SIZE * SVC_SIZE]):
                mark = s[4]
                if not mark or mark in done:
                    continue
                done.add(mark)
                svc = view.by_port.get(ports.get(mark)) if ingress and mark in ports else None
                if svc is None and net is not None and mark in ns_vips:
                    svc = view.by_vip.get((net, ns_vips[mark]))
                if svc is None:
                    continue
                out.append({"namespace": r.namespace, "fwmark": str(mark),
                            "port": ports.get(mark, ""), "service_id": svc[0],
                            "service_name": svc[1], "stack": svc[2]})
        return out

    # -- background refresher ----------------------------------------------------------
    def start(self) -> "SwarmNames":
        self._thread = threading.Thread(target=self._run, name="swarm-names", daemon=True)
        self._thread.start()
        self._started.wait(5)
        return self

    def close(self, timeout: float = 5.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:        # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as e:          # a bug: say so once, keep the exporter going
            log.error("swarm names: refresher stopped: %r", e)
        finally:
            self._started.set()

    async def _main(self) -> None:
        import aiohttp
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        if self._kind == "unix":
            connector = aiohttp.UnixConnector(path=self._where)
            base = "http://docker"
        else:
            connector = aiohttp.TCPConnector()
            base = self._where
        timeout = aiohttp.ClientTimeout(total=self.api_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         base_url=base) as session:
            while not self._stop.is_set():
                await self._refresh(session)
                try:
                    await asyncio.wait_for(self._stop.wait(), self.refresh)
                except asyncio.TimeoutError:
                    pass

    async def _get(self, session, path: str):
        async with session.get(path) as resp:
            if resp.status != 200:
                raise _APIError(f"GET {path}: HTTP {resp.status}")
            return await resp.json(content_type=None)

    async def _refresh(self, session) -> None:
        import aiohttp
        try:
            services = await self._get(session, "/services")
            networks = await self._get(session, "/networks")
            if not isinstance(services, list) or not isinstance(networks, list):
                raise _APIError("unexpected JSON (not a list)")
            ingress_id = next((n.get("Id") for n in networks if isinstance(n, dict)
                               and n.get("Ingress") is True and isinstance(n.get("Id"), str)), "")
            view = _View([s for s in map(_docker_service, services) if s is not None],
                         ingress_id)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError,
                _APIError) as e:
            with self._lock:
                self._view = None
            self._transition(_kind(e), _describe(e))
            self.refreshes += 1
            return
        with self._lock:
            watched = sorted(self._watched)
        loop = asyncio.get_running_loop()
        vips = {}
        for path in watched:
            vips[path] = await loop.run_in_executor(None, self._vip_reader, path)
        with self._lock:
            self._view, self._vips = view, vips
        self._transition("ok", "%d services" % len(services))
        self.refreshes += 1

    def _transition(self, state: str, text: str) -> None:
        if state == self._state:
            return
        if state == "ok":
            log.info("swarm names: Docker API at %s reachable (%s); "
                     "ipvs_swarm_service_info exported", self.host, text)
        else:
            log.warning("swarm names: Docker API at %s unavailable (%s); "
                        "ipvs_swarm_service_info absent until it answers", self.host, text)
        self._state = state


class _APIError(Exception):
    pass


def _kind(e: BaseException) -> str:
    return type(e).__name__ + (":" + str(e) if isinstance(e, _APIError) else "")


def _describe(e: BaseException) -> str:
    """A short, fixed-vocabulary reason (no bytes from the API in the log)."""
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, _APIError):
        return str(e)
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    if isinstance(e, ValueError):
        return "invalid JSON"
    return type(e).__name__
