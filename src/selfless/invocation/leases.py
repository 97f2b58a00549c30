"""Concurrency leases, as AWS accounts for them.

Every invocation holds one lease while it runs. A function with reserved concurrency draws only from its
own reservation (0 turns it off); every other function shares the unreserved pool, which is the account
limit minus all reservations and never goes below AWS's minimum of 100 (or the whole limit, when the limit
itself is smaller). Out of leases is TooManyRequestsException with AWS's Reason:

- ReservedFunctionConcurrentInvocationLimitExceeded: the function's reservation is in use (or is 0);
- ConcurrentInvocationLimitExceeded: the unreserved pool is in use.

``acquire`` and ``release`` are synchronous and O(1): they run on the event loop on every invoke. Release is
idempotent per lease, so every path (response, error, timeout, crash, a client that went away) can give
its lease back without counting twice.
"""

from __future__ import annotations

from collections.abc import Mapping

from selfless.errors import InvalidParameterValue, TooManyRequests

MIN_UNRESERVED = 100


class Lease:
    __slots__ = ("function", "released", "reserved")

    def __init__(self, function: str, reserved: bool) -> None:
        self.function = function
        self.reserved = reserved
        self.released = False


class Leases:
    def __init__(self, account_limit: int) -> None:
        self.account_limit = account_limit
        self._reserved: dict[str, int] = {}
        self._in_use: dict[str, int] = {}  # per function, leases from its reservation
        self._unreserved_in_use = 0

    @property
    def min_unreserved(self) -> int:
        return min(MIN_UNRESERVED, self.account_limit)

    @property
    def unreserved_limit(self) -> int:
        return self.account_limit - sum(self._reserved.values())

    def load(self, reservations: Mapping[str, int]) -> None:
        self._reserved = dict(reservations)

    def check_reservation(self, function: str, value: int, pinned: int = 0) -> None:
        """Raise InvalidParameterValue, with AWS's message, if reserving ``value`` breaks the minimum.
        ``pinned``: provisioned concurrency of other functions without a reservation, which the unreserved
        pool holds too."""
        others = sum(v for k, v in self._reserved.items() if k != function)
        if self.account_limit - others - pinned - value < self.min_unreserved:
            raise InvalidParameterValue(
                "Specified ReservedConcurrentExecutions for function decreases account's "
                f"UnreservedConcurrentExecution below its minimum value of [{self.min_unreserved}]."
            )

    def reserve(self, function: str, value: int | None) -> None:
        """Set (an int) or remove (None) a function's reservation; checked with ``check_reservation``."""
        if value is None:
            self._reserved.pop(function, None)
        else:
            self._reserved[function] = value

    def reserved(self, function: str) -> int | None:
        return self._reserved.get(function)

    def acquire(self, function: str) -> Lease:
        reserved = self._reserved.get(function)
        if reserved is not None:
            used = self._in_use.get(function, 0)
            if used >= reserved:
                raise TooManyRequests("Rate Exceeded.", "ReservedFunctionConcurrentInvocationLimitExceeded")
            self._in_use[function] = used + 1
            return Lease(function, True)
        if self._unreserved_in_use >= self.unreserved_limit:
            raise TooManyRequests("Rate Exceeded.", "ConcurrentInvocationLimitExceeded")
        self._unreserved_in_use += 1
        return Lease(function, False)

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        if lease.reserved:
            left = self._in_use.get(lease.function, 0) - 1
            if left > 0:
                self._in_use[lease.function] = left
            else:
                self._in_use.pop(lease.function, None)
        else:
            self._unreserved_in_use -= 1

    def in_use(self, function: str | None = None) -> int:
        if function is None:
            return self._unreserved_in_use + sum(self._in_use.values())
        return self._in_use.get(function, 0)
