"""Content negotiation (RFC 9110 ``Accept``) between the media types an
exposition source offers; nothing here knows a format."""
from __future__ import annotations

from typing import Optional


def _media(text: str) -> tuple:
    """("type/subtype", {param: value}) of a media type or range, lower-cased."""
    parts = text.split(";")
    params = {}
    for p in parts[1:]:
        k, sep, v = p.partition("=")
        if sep:
            params[k.strip().lower()] = v.strip().strip('"').lower()
    return parts[0].strip().lower(), params


def negotiate(accept: Optional[str], offers: tuple) -> str:
    """The offer (a full media type, e.g. ``text/plain; version=0.0.4``)
    the client prefers: the q-value of the most specific matching range in
    *accept* decides, earlier offers win ties; the first offer when no
    Accept header or none acceptable (as client_golang's exporters answer
    text rather than 406). A range's parameters other than q and charset
    must equal the offer's (``version=1.0.0`` matches only that version)."""
    if not accept or len(offers) == 1:
        return offers[0]
    ranges = []
    for item in accept.split(",")[:64]:     # bounded work for a hostile header
        rng, params = _media(item)
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        params.pop("charset", None)
        ranges.append((rng, params, q if 0.0 <= q <= 1.0 else 0.0))
    best, best_q = offers[0], 0.0
    for offer in offers:
        typ, oparams = _media(offer)
        found = None                         # (specificity, q)
        for rng, params, q in ranges:
            if rng == typ:
                spec = 2
            elif rng == typ.split("/")[0] + "/*":
                spec = 1
            elif rng == "*/*":
                spec = 0
            else:
                continue
            if any(oparams.get(k) != v for k, v in params.items()):
                continue
            key = (spec, len(params))
            if found is None or key > found[0]:
                found = (key, q)
        if found is not None and found[1] > best_q:
            best, best_q = offer, found[1]
    return best
