"""Backend output: one namespace's IPVS state at one instant, as packed records."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .records import (DEST_SIZE, SETTINGS_SIZE, SVC_SIZE, Settings, decode_dests,
                      decode_services)

TOTALS_NAMES = ("conns", "inpkts", "outpkts", "inbytes", "outbytes",
                "cps", "inpps", "outpps", "inbps", "outbps")


def parse_ip_vs_stats(text: str) -> Optional[tuple]:
    """Parse /proc/net/ip_vs_stats (hex fields) into the 10 TOTALS_NAMES values.

    Format (kernel ip_vs_stats_show):
       Total Incoming Outgoing         Incoming         Outgoing
       Conns  Packets  Packets            Bytes            Bytes
           6       41       31             2508             2292

     Conns/s   Pkts/s   Pkts/s          Bytes/s          Bytes/s
           0        0        0                0                0
    Returns None if the text does not have that shape.
    """
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 5:
            try:
                rows.append(tuple(int(p, 16) for p in parts))
            except ValueError:
                continue
    if len(rows) != 2:
        return None
    return rows[0] + rows[1]


def parse_sysctl(raw: bytes) -> Optional[int]:
    """The value of a /proc/sys file holding one integer (``"1\\n"``,
    ``"-5\\n"``); None for anything else (several values, text, empty)."""
    text = raw.strip()
    if not text or len(text) > 24:
        return None
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit():
        return None
    return int(text)


def sysctl_values(files) -> tuple:
    """((name, value), ...) of the numeric ones of *files*: (name, raw
    bytes or None when unreadable) pairs, in order."""
    out = []
    for name, raw in files:
        v = None if raw is None else parse_sysctl(raw)
        if v is not None:
            out.append((name, v))
    return tuple(out)


@dataclass(frozen=True)
class Snapshot:
    services: bytes                   # n * SVC_SIZE packed ipvs_svc_rec
    dests: bytes                      # m * DEST_SIZE packed ipvs_dest_rec
    totals: Optional[tuple] = None    # TOTALS_NAMES values from ip_vs_stats
    meta: dict = field(default_factory=dict, compare=False)
    settings: bytes = b""             # SETTINGS_SIZE packed ipvs_settings_rec, or b""
    sysctls: tuple = ()               # ((name, int), ...) numeric net.ipv4.vs.*, by name

    @property
    def nservices(self) -> int:
        return len(self.services) // SVC_SIZE

    @property
    def ndests(self) -> int:
        return len(self.dests) // DEST_SIZE

    def decoded_settings(self) -> Optional[Settings]:
        return Settings.unpack(self.settings) if len(self.settings) == SETTINGS_SIZE else None

    def decoded(self):
        """(services, dests) as NamedTuples: for tests and tooling."""
        return decode_services(self.services), decode_dests(self.dests)
