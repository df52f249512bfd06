"""HTTP basic auth against bcrypt hashes (exporter-toolkit's
``basic_auth_users``).

* bcrypt runs in one dedicated thread (never on the event loop; one hash at
  a time, as exporter-toolkit serialises them), at most MAX_PENDING waiting:
  beyond that a request is answered 429 without hashing.
* An unknown user costs the same bcrypt work as a known one: the password
  is checked against a dummy hash of the highest cost configured, so timing
  does not tell which users exist.
* A checked (user, hash, password) is cached (a keyed HMAC of it, never the
  password), good or bad, so Prometheus' scrape does not pay bcrypt every
  time; the hash is part of the key, so a changed password is checked anew.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import bcrypt

CACHE_SIZE = 1024
MAX_PENDING = 32
#: bcrypt uses the first 72 bytes of a password (Go's x/crypto/bcrypt does
#: the same implicitly; the Python package refuses longer ones)
BCRYPT_MAX = 72


def parse_basic(header: Optional[str]) -> Optional[tuple]:
    """(user, password) bytes from ``Authorization: Basic ...``, or None,
    as Go's Request.BasicAuth reads it."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        raw = base64.b64decode(header[6:].strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user, password


def _cost(h: bytes) -> int:
    return int(h.split(b"$")[2])


class BasicAuth:
    def __init__(self):
        self.users: dict = {}               # user (bytes) -> hash (bytes)
        self._dummies: dict = {}            # cost -> dummy hash
        self._dummy: Optional[bytes] = None
        self._key = os.urandom(32)
        self._cache: OrderedDict = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ipvs-bcrypt")
        self._pending = 0
        self.hashes = 0                     # bcrypt checks done (tests)

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def prepare(self, users: dict) -> None:
        """Make the dummy hash *users* need (slow: call off the event loop)."""
        if users:
            cost = max(_cost(h) for h in users.values())
            if cost not in self._dummies:
                self._dummies[cost] = bcrypt.hashpw(os.urandom(16).hex().encode(),
                                                    bcrypt.gensalt(cost))

    def configure(self, users: dict) -> None:
        """Use *users* (name -> bcrypt hash) from now on."""
        self.prepare(users)
        self.users = {u.encode("utf-8"): h for u, h in users.items()}
        self._dummy = (self._dummies[max(_cost(h) for h in users.values())]
                       if users else None)

    async def check(self, header: Optional[str]) -> Optional[bool]:
        """True: good credentials; False: missing or wrong; None: too many
        checks waiting already (answer 429)."""
        cred = parse_basic(header)
        if cred is None:
            return False
        user, password = cred
        known = self.users.get(user)
        hashed = known if known is not None else self._dummy
        key = hmac.new(self._key, b"\0".join((user, hashed, password)), "sha256").digest()
        ok = self._cache.get(key)
        if ok is None:
            if self._pending >= MAX_PENDING:
                return None
            self._pending += 1
            try:
                ok = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._verify, password, hashed)
            finally:
                self._pending -= 1
            ok = ok and known is not None
            self._cache[key] = ok
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return ok

    def _verify(self, password: bytes, hashed: bytes) -> bool:
        self.hashes += 1
        try:
            return bcrypt.checkpw(password[:BCRYPT_MAX], hashed)
        except ValueError:
            return False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
