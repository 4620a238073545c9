"""A dead letter's attributes give way to its body near the DLQ's size limit (deadletter.py)."""

from __future__ import annotations

import pytest

from waveflow_operator.runner.deadletter import (
    DROP_ORDER,
    dead_letter_attributes,
    fit_attributes,
    message_size,
)

LIMIT = 262_144


def attributes(detail: str = "the job failed 3 time(s)") -> dict:  # type: ignore[type-arg]
    return dead_letter_attributes(reason="JOB_BACKOFF_LIMIT", detail=detail, queue="audio",
                                  message_id="0f8e2c4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
                                  backend_notified="yes", receive_count=3)


def test_a_small_body_keeps_every_attribute_as_it_was() -> None:
    full = attributes("é" * 5000)
    fitted, dropped = fit_attributes("{}", full, LIMIT)
    assert fitted == full and dropped == []
    assert len(full["WaveflowReasonDetail"]["StringValue"]) == 1024  # ours, always short


def test_the_detail_is_shortened_first_and_counted_in_bytes() -> None:
    full = attributes("é" * 1000)  # 2 bytes each
    body = "x" * (LIMIT - message_size("", full) + 500)
    fitted, dropped = fit_attributes(body, full, LIMIT)
    assert dropped == [] and message_size(body, fitted) <= LIMIT
    kept = fitted["WaveflowReasonDetail"]["StringValue"]
    assert kept and "é".startswith(kept[-1]) and len(kept) < 1000
    assert {n: a for n, a in fitted.items() if n != "WaveflowReasonDetail"} == \
        {n: a for n, a in full.items() if n != "WaveflowReasonDetail"}


@pytest.mark.parametrize("room", [200, 120, 80, 40, 0])
def test_then_attributes_are_dropped_least_needed_first_and_the_body_always_fits(
        room: int) -> None:
    body = "x" * (LIMIT - room)
    fitted, dropped = fit_attributes(body, attributes(), LIMIT)
    assert message_size(body, fitted) <= LIMIT
    assert dropped == list(DROP_ORDER[:len(dropped)])  # in order, none skipped
    if room >= 120:
        assert {"WaveflowReason", "WaveflowSourceMessageId"} <= set(fitted)
    if room == 0:
        assert fitted == {}


def test_a_body_over_the_limit_on_its_own_cannot_fit() -> None:
    body = "x" * (LIMIT + 1)
    fitted, _ = fit_attributes(body, attributes(), LIMIT)
    assert fitted == {} and message_size(body, fitted) > LIMIT
