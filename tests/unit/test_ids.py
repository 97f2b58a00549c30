"""Hot-path identifiers keep the formats AWS uses."""

from __future__ import annotations

import re
import uuid

from selfless import ids


def test_request_ids_are_version_4_uuids() -> None:
    seen = set()
    for _ in range(5000):
        text = ids.request_id()
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
        seen.add(text)
    assert len(seen) == 5000


def test_trace_ids() -> None:
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Sampled=0", ids.trace_id())
