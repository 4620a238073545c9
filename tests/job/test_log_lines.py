"""One log record is one line, whatever a message carries (found by the `waveflow-job run`
fuzzer: a message id with U+0085 split a JSON log line in two for line-oriented readers)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from support.jobrun import restore_logging_after_test
from waveflow_job import logs

BREAKERS = ["\u0085", "\u009b", "\u2028", "\u2029", "\u0080"]


@pytest.mark.parametrize("breaker", BREAKERS)
def test_a_value_with_a_line_breaking_character_stays_on_one_line_and_reads_back(
        monkeypatch: pytest.MonkeyPatch, breaker: str) -> None:
    restore_logging_after_test(monkeypatch)
    out = io.StringIO()
    logs.configure("INFO", out)
    message_id = f"hash-stem{breaker}1-1732600000000"
    with logs.bind(stemId="stem-1", task="generate_hash_and_webhook", messageId=message_id):
        logging.getLogger("waveflow_job.test").info("key %s", f"audio/a{breaker}b.wav")
    text = out.getvalue()
    [line] = text.splitlines()  # str.splitlines breaks at all of BREAKERS
    assert breaker not in line
    document = json.loads(line)
    assert document["messageId"] == message_id
    assert document["message"] == f"key audio/a{breaker}b.wav"


def test_other_unicode_is_written_as_is() -> None:
    formatter = logs.JsonFormatter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "보컬 stem ✓", None, None)
    assert "보컬 stem ✓" in formatter.format(record)
