"""Identifiers on the hot path: request ids and trace ids.

These name things; they guard nothing (credentials and signed links use ``secrets``). So they come from a
Mersenne Twister seeded from the OS once, which costs a fraction of ``uuid.uuid4()`` (a getrandbits
syscall and an object per call).
"""

from __future__ import annotations

import datetime
import random
import re
import time

_random = random.Random()
# As uuid.UUID(version=4) does: version nibble (bits 76-79) = 4, variant bits (62-63) = 0b10.
_VERSION_4 = (4 << 76) | (0b10 << 62)
_MASK = ~((0xF << 76) | (0b11 << 62)) & ((1 << 128) - 1)


def request_id() -> str:
    """A random UUID (version 4) in its canonical text form."""
    h = f"{(_random.getrandbits(128) & _MASK) | _VERSION_4:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def trace_id(sampled: bool = False) -> str:
    """A new X-Ray trace header, as Lambda makes one for a call that came without:
    ``Root=1-<epoch hex>-<24 hex>;Parent=<16 hex>;Sampled=0|1`` (sampled: the function's TracingConfig is
    Active)."""
    bits = _random.getrandbits(160)
    parent = bits & 0xFFFFFFFFFFFFFFFF
    return f"Root=1-{int(time.time()):08x}-{bits >> 64:024x};Parent={parent:016x};Sampled={int(sampled)}"


def accepted_trace(header: str | None, sampled: bool) -> str | None:
    """The X-Ray trace header a caller sent (X-Amzn-Trace-Id), if it is one: printable ASCII of at most
    ``MAX_TRACE_HEADER`` characters that names a ``Root=1-<8 hex>-<24 hex>``; otherwise None, and the call gets
    a trace of its own (as Lambda ignores a header it cannot read). A header that says nothing about sampling
    gets ``Sampled=1`` when the function's tracing is Active."""
    if header is None or len(header) > MAX_TRACE_HEADER or not header.isascii() or not header.isprintable():
        return None
    fields = [part.strip() for part in header.split(";") if part.strip()]
    if not any(_TRACE_ROOT.fullmatch(part) for part in fields):
        return None
    if sampled and not any(part.startswith("Sampled=") for part in fields):
        fields.append("Sampled=1")
    return ";".join(fields)


MAX_TRACE_HEADER = 1024
_TRACE_ROOT = re.compile(r"Root=1-[0-9a-fA-F]{8}-[0-9a-fA-F]{24}")


def now_lastmodified() -> str:
    """Lambda's timestamp form (LastModified, CreatedDate): 2026-11-22T20:40:02.123+0000."""
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"
