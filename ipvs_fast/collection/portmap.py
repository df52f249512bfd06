"""Collection, port map: fwmark -> published port, from the namespace's iptables mangle table.

Docker Swarm's routing mesh puts every published port of a service behind
one IPVS *fwmark* service inside the ``ingress_sbox`` namespace. The mark is
set by mangle-table PREROUTING rules such as::

    -A PREROUTING -p tcp -m tcp --dport 30000 -j MARK --set-xmark 0x104/0xffffffff

(mark 260 <-> port 30000). ``parse_iptables_save`` turns ``iptables-save``
output into ``{260: "30000"}``; ``read_port_map`` runs ``iptables-save``
inside the namespace. Neither raises: a port map is a nicety, the IPVS
numbers are exported without it (``port=""``).
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess

log = logging.getLogger(__name__)

_MARK_OPTS = ("--set-xmark", "--set-mark")
_PORT_OPTS = ("--dport", "--destination-port", "--dports", "--destination-ports")

#: Tried in order; the first one that yields at least one mark wins. Plain
#: ``iptables-save`` is whatever the host's alternatives point at; Docker may
#: be using the other flavour (legacy vs nft), so that is tried as well.
IPTABLES_SAVE_CANDIDATES = ("iptables-save", "iptables-legacy-save", "iptables-nft-save")


def _parse_mark(value: str) -> int | None:
    """``0x104/0xffffffff`` / ``0x104`` / ``260`` / ``260/4294967295`` -> 260."""
    v = value.split("/", 1)[0].strip()
    try:
        mark = int(v, 0)  # 0x.. hex, plain decimal ("0" prefix octal is not used by iptables-save)
    except ValueError:
        try:
            mark = int(v, 10)  # e.g. "0260": decimal with leading zero
        except ValueError:
            return None
    if not 0 <= mark <= 0xFFFFFFFF:
        return None
    return mark


def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError:  # unbalanced quote in a comment: fall back to whitespace
        return line.split()


def mangle_rules(text: str):
    """The ``-A`` rules of the mangle table in ``iptables-save`` output, each
    as its tokens (a bare rule list, without a ``*table`` header, is taken as
    mangle)."""
    table = "mangle"
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:].strip()
        elif table == "mangle" and line.startswith("-A "):
            yield _split(line)


def parse_iptables_save(text: str) -> dict[int, str]:
    """Map fwmark -> published port from ``iptables-save [-t mangle]`` output.

    Only ``PREROUTING`` rules of the mangle table that match a destination
    port (``--dport``/``--dports``, not negated) and jump to ``MARK`` with
    ``--set-xmark``/``--set-mark`` (with or without ``/mask``, decimal or
    hex) count. When several rules set the same mark, the last one wins.
    """
    marks: dict[int, str] = {}
    for toks in mangle_rules(text):
        if len(toks) < 2 or toks[1] != "PREROUTING":
            continue
        port = None
        mark = None
        is_mark_target = False
        i = 2
        n = len(toks)
        while i < n:
            tok = toks[i]
            if tok in _PORT_OPTS and i + 1 < n:
                if toks[i - 1] != "!":
                    port = toks[i + 1]
                i += 2
                continue
            if tok in ("-j", "--jump") and i + 1 < n:
                is_mark_target = toks[i + 1] == "MARK"
                i += 2
                continue
            if tok in _MARK_OPTS and i + 1 < n:
                mark = _parse_mark(toks[i + 1])
                i += 2
                continue
            i += 1
        if is_mark_target and mark is not None and port:
            marks[mark] = port
    return marks


def _command(binary: str, ns_path: str) -> list[str]:
    if ns_path:
        return ["nsenter", f"--net={ns_path}", binary, "-t", "mangle"]
    return [binary, "-t", "mangle"]


def _run(cmd: list[str], timeout: float) -> str | None:
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        log.debug("port map: %s timed out after %.1fs", " ".join(cmd), timeout)
        return None
    except OSError as e:
        log.debug("port map: cannot run %s: %s", " ".join(cmd), e)
        return None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        log.debug("port map: %s exited %d: %s", " ".join(cmd), proc.returncode,
                  err[-1] if err else "")
        return None
    return proc.stdout.decode("utf-8", "replace")


IP6TABLES_SAVE_CANDIDATES = ("ip6tables-save", "ip6tables-legacy-save", "ip6tables-nft-save")


def _first_marks(candidates: tuple, ns_path: str, timeout: float) -> dict[int, str]:
    """Marks from the first candidate binary that yields any."""
    for binary in candidates:
        if shutil.which(binary) is None:
            continue
        text = _run(_command(binary, ns_path), timeout)
        if text is None:
            continue
        marks = parse_iptables_save(text)
        if marks:
            return marks
    return {}


def read_port_map(ns_path: str, timeout: float = 5.0) -> dict[int, str]:
    """fwmark -> port for the namespace at *ns_path* ("" = our own namespace).

    Runs ``nsenter --net=PATH iptables-save -t mangle`` (or plain
    ``iptables-save -t mangle``) and the same with ``ip6tables-save``, with a
    timeout. IPv6 fwmark services are marked by ip6tables rules; a mark found
    in both tables takes the IPv4 rule's port (the same mark on both families
    is, in keepalived and Docker setups, one logical service). Never raises: a
    missing binary, a failing command or a timeout yield ``{}`` and a debug
    log line.
    """
    try:
        if ns_path and shutil.which("nsenter") is None:
            log.debug("port map: nsenter not found in PATH")
            return {}
        if not any(shutil.which(b) for b in IPTABLES_SAVE_CANDIDATES + IP6TABLES_SAVE_CANDIDATES):
            log.debug("port map: no iptables-save binary found in PATH")
            return {}
        marks = _first_marks(IP6TABLES_SAVE_CANDIDATES, ns_path, timeout)
        marks.update(_first_marks(IPTABLES_SAVE_CANDIDATES, ns_path, timeout))
        return marks
    except Exception as e:  # never let the port map break a scrape
        log.debug("port map: unexpected error: %r", e)
        return {}
