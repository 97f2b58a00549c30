"""Identifiers on the hot path: request ids and trace ids.

These name things; they guard nothing (credentials and signed links use ``secrets``). So they come from a
Mersenne Twister seeded from the OS once, which costs a fraction of ``uuid.uuid4()`` (a getrandbits
syscall and an object per call).
"""

from __future__ import annotations

import datetime
import random
import time

_random = random.Random()
# As uuid.UUID(version=4) does: version nibble (bits 76-79) = 4, variant bits (62-63) = 0b10.
_VERSION_4 = (4 << 76) | (0b10 << 62)
_MASK = ~((0xF << 76) | (0b11 << 62)) & ((1 << 128) - 1)


def request_id() -> str:
    """A random UUID (version 4) in its canonical text form."""
    h = f"{(_random.getrandbits(128) & _MASK) | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def trace_id() -> str:
    """An X-Ray style trace header value: ``Root=1-<epoch hex>-<24 hex>;Sampled=0``."""
    return f"Root=1-{int(time.time()):08x}-{_random.getrandbits(96):024x};Sampled=0"


def now_lastmodified() -> str:
    """Lambda's timestamp form (LastModified, CreatedDate): 2026-11-22T20:40:02.123+0000."""
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"
