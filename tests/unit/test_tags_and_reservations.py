"""AWS's rules for tags and reserved concurrency that the model does not carry."""

from __future__ import annotations

import pytest

from selfless.errors import InvalidParameterValue
from selfless.functions import MAX_TAGS, check_tags
from selfless.invocation.leases import Leases


def test_fifty_tags_at_most() -> None:
    check_tags({f"k{i}": "v" for i in range(MAX_TAGS)})
    with pytest.raises(InvalidParameterValue, match=r"^Number of tags exceeds resource tag limit\.$"):
        check_tags({f"k{i}": "v" for i in range(MAX_TAGS + 1)})


@pytest.mark.parametrize("key", ["aws:owner", "AWS:Stack", "Aws:x"])
def test_the_aws_prefix_is_reserved_in_any_case(key: str) -> None:
    with pytest.raises(InvalidParameterValue, match="reserved"):
        check_tags({key: "v"})
    check_tags({"awsome": "v", "my:aws:key": "v"})


def test_reservations_leave_the_unreserved_minimum_counting_provisioned_concurrency() -> None:
    leases = Leases(1000)
    leases.check_reservation("f", 900)
    with pytest.raises(InvalidParameterValue, match=r"below its minimum value of \[100\]\.$"):
        leases.check_reservation("f", 901)
    # Provisioned concurrency of functions without a reservation is held by the unreserved pool too.
    with pytest.raises(InvalidParameterValue):
        leases.check_reservation("f", 900, pinned=1)
