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
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", ids.trace_id())
    assert ids.trace_id(sampled=True).endswith(";Sampled=1")


def test_a_callers_trace_header_is_kept_only_when_it_is_one() -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    assert ids.accepted_trace(header, sampled=False) == header
    assert ids.accepted_trace(header, sampled=True) == header  # the caller's sampling decision stands
    root = "Root=1-5759e988-bd862e3fe1be46a994272793"
    assert ids.accepted_trace(root, sampled=True) == root + ";Sampled=1"
    assert ids.accepted_trace(root, sampled=False) == root
    for bad in (None, "", "Sampled=1", "Root=2-5759e988-bd862e3fe1be46a994272793", root + "\n", root + ";é"):
        assert ids.accepted_trace(bad, sampled=False) is None, bad
    assert ids.accepted_trace(root + ";" + "x" * ids.MAX_TRACE_HEADER, sampled=False) is None
