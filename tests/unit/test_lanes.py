"""Lanes: calls run in order off the event loop, a full lane makes its producer wait, the first failure
stops the lane and reaches the producer, close waits for the call at work and drops the rest."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from selfless.lanes import Lane


def test_calls_run_in_order_off_the_loop_and_drain_waits_for_them() -> None:
    async def scenario() -> None:
        seen: list[bytes] = []
        threads: set[int] = set()

        def note(data: bytes) -> None:
            threads.add(threading.get_ident())
            time.sleep(0.001)
            seen.append(data)

        lane = Lane()
        pieces = [str(i).encode() for i in range(200)]
        for piece in pieces:
            await lane.submit(note, piece)
        await lane.drain()
        assert seen == pieces and threading.get_ident() not in threads
        await lane.submit(note, b"again")  # an idle lane takes work again
        await lane.drain()
        assert seen[-1] == b"again"
        await lane.close()

    asyncio.run(scenario())


def test_a_full_lane_makes_its_producer_wait() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        lane = Lane(limit=10)
        await lane.submit(lambda _: gate.wait(5), b"x" * 6)
        await lane.submit(lambda _: None, b"y" * 4)  # 10 bytes queued: at the limit, not past it
        third = asyncio.ensure_future(lane.submit(lambda _: None, b"z"))
        await asyncio.sleep(0.1)
        assert not third.done()  # past the limit: waits for room
        gate.set()
        await asyncio.wait_for(third, 5)
        await lane.drain()

    asyncio.run(scenario())


def test_the_first_failure_stops_the_lane_and_reaches_the_producer() -> None:
    async def scenario() -> None:
        ran: list[bytes] = []

        def work(data: bytes) -> None:
            if data == b"bad":
                raise OSError("no space left")
            ran.append(data)

        lane = Lane()
        await lane.submit(work, b"a")
        await lane.submit(work, b"bad")
        with pytest.raises(OSError, match="no space left"):
            await lane.drain()
        with pytest.raises(OSError, match="no space left"):
            await lane.submit(work, b"c")
        assert ran == [b"a"]
        await lane.close()  # never raises

    asyncio.run(scenario())


def test_close_drops_what_waits_and_waits_for_the_call_at_work() -> None:
    async def scenario() -> None:
        started, ran = threading.Event(), []

        def slow(data: bytes) -> None:
            started.set()
            time.sleep(0.2)
            ran.append(data)

        lane = Lane()
        await lane.submit(slow, b"first")
        for i in range(5):
            await lane.submit(slow, str(i).encode())
        await asyncio.to_thread(started.wait, 5)
        await lane.close()
        assert ran == [b"first"]  # the call at work finished before close returned; the rest never ran
        await asyncio.sleep(0.3)
        assert ran == [b"first"]

    asyncio.run(scenario())
