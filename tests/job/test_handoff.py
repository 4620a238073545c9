"""The hand-off between a decoder and the thread reducing its blocks: order, bounded memory,
errors in stream order whichever side fails, and never a thread left waiting."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from waveflow_job.audio.handoff import Handoff

#: Generous bound for a thread to reach a state it is about to reach (never hit when correct).
WAIT = 10.0


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert set(threading.enumerate()) <= before


class Broken(Exception):
    pass


def test_items_are_reduced_in_order_by_one_other_thread() -> None:
    seen: list[tuple[int, str]] = []
    with Handoff(lambda i: seen.append((i, threading.current_thread().name))) as put:
        for i in range(100):
            put(i)
    assert [i for i, _ in seen] == list(range(100))
    assert {name for _, name in seen} == {"reduce"}


def test_a_failing_reduction_stops_the_caller_with_its_error() -> None:
    seen: list[int] = []
    failure = Broken("item 3")

    def reduce(i: int) -> None:
        if i == 3:
            raise failure
        seen.append(i)

    put_calls = 0
    with pytest.raises(Broken) as caught, Handoff(reduce) as put:
        for i in range(1000):
            put_calls += 1
            put(i)
    assert caught.value is failure
    assert seen == [0, 1, 2]  # nothing reduced after the failure
    assert put_calls < 1000


def test_items_handed_over_before_the_caller_fails_are_reduced_first() -> None:
    seen: list[int] = []
    with pytest.raises(Broken, match="decoder"), Handoff(seen.append) as put:
        for i in range(5):
            put(i)
        raise Broken("decoder")
    assert seen == [0, 1, 2, 3, 4]


def test_an_earlier_items_failure_wins_over_the_callers_later_one() -> None:
    # As in one thread: block 1's NaN is reported, not the decode error at block 4.
    release = threading.Event()

    def reduce(i: int) -> None:
        release.wait(WAIT)
        if i == 1:
            raise Broken("item 1")

    with pytest.raises(Broken, match="item 1") as caught, Handoff(reduce) as put:
        for i in range(3):
            put(i)
        release.set()
        raise Broken("decoder at 4")
    assert "decoder at 4" in str(caught.value.__context__)


def test_at_most_depth_items_wait_and_one_is_reduced() -> None:
    release, taken = threading.Event(), threading.Event()
    handed = []

    def reduce(_: int) -> None:
        taken.set()
        release.wait(WAIT)

    with Handoff(reduce, depth=2) as put:
        def caller() -> None:
            for i in range(10):
                put(i)
                handed.append(i)

        feeder = threading.Thread(target=caller)
        feeder.start()
        assert taken.wait(WAIT)
        feeder.join(0.3)  # it cannot get further than depth + 1
        assert feeder.is_alive() and handed == [0, 1, 2]
        release.set()
        feeder.join(WAIT)
        assert handed == list(range(10))


def test_a_reduction_dying_while_the_caller_waits_for_room_does_not_deadlock() -> None:
    release = threading.Event()
    outcome: list[BaseException] = []

    def reduce(i: int) -> None:
        release.wait(WAIT)
        raise Broken(f"item {i}")

    def caller() -> None:
        try:
            with Handoff(reduce, depth=1) as put:
                for i in range(1000):
                    put(i)
        except Broken as exc:
            outcome.append(exc)

    feeder = threading.Thread(target=caller)
    feeder.start()
    feeder.join(0.3)
    assert feeder.is_alive()  # waiting for room: the worker holds item 0, item 1 waits
    release.set()
    feeder.join(WAIT)
    assert not feeder.is_alive() and str(outcome[0]) == "item 0"


def test_the_worker_ends_when_the_caller_is_interrupted() -> None:
    release = threading.Event()
    with pytest.raises(KeyboardInterrupt), Handoff(lambda _: release.wait(WAIT)) as put:
        put(0)
        put(1)
        release.set()
        raise KeyboardInterrupt
