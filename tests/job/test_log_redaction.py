"""Log lines never show a secret, whoever logs it and at whatever level (issue 8, item 9).

The formatter itself scrubs: known values (the environment's AWS credentials and webhook
secret, and whatever the operator registers) and the shapes secrets take in HTTP. Third-party
loggers whose DEBUG output dumps signed requests are held at INFO even at LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from support.jobrun import restore_logging_after_test
from waveflow_job import logs, redact

ENV_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAREDACTME00000042",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+redact/me\"quoted\\slash",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEredactme//////////wEaCXVz==",
    "WEBHOOK_SECRET": "whsec-한국어-redact-me",
}


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    restore_logging_after_test(monkeypatch)
    monkeypatch.setattr(redact, "_values", frozenset())
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    logs.configure("DEBUG", out)
    yield out


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_environment_secret_is_masked_in_message_fields_and_tracebacks(
        stream: io.StringIO) -> None:
    log = logging.getLogger("waveflow_job.test")
    for value in ENV_SECRETS.values():
        log.debug("value %s in the message", value, extra={"field": {"nested": value}})
        try:
            raise RuntimeError(f"failed with {value!r}")
        except RuntimeError:
            log.exception("and in a traceback")

    text = stream.getvalue()
    assert [name for name, value in ENV_SECRETS.items()
            if value[:12] in text or json.dumps(value)[1:13] in text] == []
    assert text.count(redact.MASK) >= 3 * len(ENV_SECRETS)
    assert len(lines(stream)) == 2 * len(ENV_SECRETS)  # still one JSON object per line


@pytest.mark.parametrize("secret_shaped", [
    "{'Authorization': b'AWS4-HMAC-SHA256 Credential=ASIAXXXXXXXXXXXXXXXX/20261201/us-east-1/"
    "s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "ab" * 32 + "'}",
    "{'X-Amz-Security-Token': b'FwoGZXIvYXdzEOther+Token/Value=='}",
    "https://bucket.s3.amazonaws.com/k?X-Amz-Credential=AKIA0000/x&X-Amz-Signature=" + "c" * 64,
    "X-WaveFlow-Signature: t=1764590000,v1=" + "0f" * 32,
    "an access key id of another process: ASIA1234567890ABCDEF",
])
def test_secret_shapes_are_masked_whatever_their_value(stream: io.StringIO,
                                                       secret_shaped: str) -> None:
    logging.getLogger("waveflow_operator.test").info("request: %s", secret_shaped)

    [line] = lines(stream)
    message = str(line["message"])
    assert redact.MASK in message
    for fragment in ("Credential=ASIA", "FwoGZXIvYXdz", "ab" * 32, "c" * 64, "0f" * 32,
                     "ASIA1234567890ABCDEF", "AKIA0000/x"):
        assert fragment not in message


def test_a_value_registered_later_is_masked_from_then_on(stream: io.StringIO) -> None:
    value = "k8s-secret-value-from-a-Secret"
    log = logging.getLogger("waveflow_operator.test")
    log.info("before: %s", value)
    redact.register(value)
    log.info("after: %s", value)

    before, after = (str(line["message"]) for line in lines(stream))
    assert value in before  # nothing knew it was a secret yet
    assert after == f"after: {redact.MASK}"


def test_library_loggers_never_log_their_debug_output(stream: io.StringIO) -> None:
    for name in logs.THIRD_PARTY_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() == logging.INFO
    logging.getLogger("botocore.endpoint").debug("Sending http request: <AWSPreparedRequest>")
    assert lines(stream) == []
    assert logging.getLogger("waveflow_job").isEnabledFor(logging.DEBUG)


def test_a_lone_surrogate_in_a_message_does_not_break_the_log(stream: io.StringIO) -> None:
    logging.getLogger("waveflow_job.test").warning("key %s", "audio/\udcff.wav")
    [line] = lines(stream)
    assert line["message"] == "key audio/\udcff.wav"  # escaped on the way out, not lost
