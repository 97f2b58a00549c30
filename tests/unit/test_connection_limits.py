"""The API port's limits as settings, and the open-files limit checked against the connection cap."""

from __future__ import annotations

import resource

import pytest

from selfless.app import descriptor_budget, descriptor_reserve
from selfless.config import Settings, SettingsError


def test_limits_default_and_read_from_the_environment() -> None:
    defaults = Settings.from_env({})
    assert (defaults.max_connections, defaults.max_header_bytes, defaults.max_headers) == (4096, 32768, 100)
    assert (defaults.head_timeout_s, defaults.min_body_rate) == (20.0, 4096)
    s = Settings.from_env(
        {
            "SELFLESS_MAX_CONNECTIONS": "64",
            "SELFLESS_MAX_HEADER_BYTES": "65536",
            "SELFLESS_MAX_HEADERS": "200",
            "SELFLESS_HEAD_TIMEOUT": "1.5",
            "SELFLESS_MIN_BODY_RATE": "1000",
        }
    )
    assert (s.max_connections, s.max_header_bytes, s.max_headers) == (64, 65536, 200)
    assert (s.head_timeout_s, s.min_body_rate) == (1.5, 1000)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SELFLESS_MAX_CONNECTIONS", "0"),
        ("SELFLESS_MAX_HEADER_BYTES", "100"),
        ("SELFLESS_MAX_HEADERS", "3"),
        ("SELFLESS_HEAD_TIMEOUT", "0"),
        ("SELFLESS_HEAD_TIMEOUT", "many"),
        ("SELFLESS_MIN_BODY_RATE", "0"),
    ],
)
def test_limits_that_cannot_work_are_refused(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable if value != "many" else "not a number"):
        Settings.from_env({variable: value})


class Limits:
    """RLIMIT_NOFILE as a fake: what was asked, and whether raising works."""

    def __init__(self, soft: int, hard: int, *, can_raise: bool = True) -> None:
        self.soft, self.hard, self.can_raise = soft, hard, can_raise
        self.set_to: tuple[int, int] | None = None

    def get(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.soft, self.hard

    def set(self, which: int, limits: tuple[int, int]) -> None:
        if not self.can_raise:
            raise ValueError("not allowed")
        self.set_to = limits
        self.soft, self.hard = limits


def test_enough_open_files_leave_everything_as_it_is() -> None:
    limits = Limits(20_000, 20_000)
    assert descriptor_budget(4096, descriptor_reserve(1000), limits.get, limits.set) == (4096, None)
    assert limits.set_to is None


def test_the_soft_limit_is_raised_to_the_hard_one_when_the_cap_needs_it() -> None:
    limits = Limits(1024, 524_288)
    assert descriptor_budget(4096, descriptor_reserve(1000), limits.get, limits.set) == (4096, None)
    assert limits.set_to == (524_288, 524_288)


def test_a_hard_limit_too_low_shrinks_the_cap_and_says_so() -> None:
    limits = Limits(1024, 8192)
    cap, warning = descriptor_budget(4096, 6000, limits.get, limits.set)
    assert limits.set_to == (8192, 8192)
    assert cap == 8192 - 6000
    assert warning is not None
    assert "open files are limited to 8192" in warning and f"capped at {cap}" in warning
    assert "SELFLESS_MAX_CONNECTIONS" in warning


def test_when_the_limit_cannot_be_raised_connections_keep_a_quarter_of_it() -> None:
    limits = Limits(1024, 65_536, can_raise=False)
    cap, warning = descriptor_budget(4096, descriptor_reserve(1000), limits.get, limits.set)
    assert cap == 256
    assert warning is not None and "limited to 1024" in warning
