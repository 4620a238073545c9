"""One JSON object per line on stderr, each carrying the message's stemId, task and id.

Modules log with ``logging.getLogger(__name__)`` and never configure anything; the CLI calls
:func:`configure` once and wraps the work in :func:`bind` so every line names the message it is
about (Kubernetes keeps a Job's stderr; a log pipeline can index the fields directly).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from waveflow_job import redact

__all__ = ["THIRD_PARTY_LOGGERS", "JsonFormatter", "bind", "configure"]

#: Libraries whose DEBUG output carries credentials or URLs: never below INFO.
THIRD_PARTY_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer")

_context: ContextVar[dict[str, Any]] = ContextVar("waveflow_log_context", default={})  # noqa: B039

#: Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged too.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                          "taskName"}

#: Characters JSON allows raw that line-oriented readers (Python's ``splitlines``, some log
#: shippers) take as line breaks: C1 controls (NEL U+0085 among them) and U+2028/2029. Escaped,
#: a value from a message (its id, a key) can never split one log line into two.
_LINE_BREAKERS = re.compile("[\u0080-\u009f\u2028\u2029]")


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (e.g. stemId, task, messageId) to every log line inside the block."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of strict JSON: time, level, logger, message, context."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update({k: v for k, v in _context.get().items() if v is not None})
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                document[key] = value
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        line = redact.scrub(json.dumps(document, default=str, ensure_ascii=False))
        line = _LINE_BREAKERS.sub(lambda found: f"\\u{ord(found.group()):04x}", line)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (from argv, say): show it, don't crash
            line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        return line


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every logger's records to ``stream`` (stderr) as JSON lines; safe to call again.

    Every line is scrubbed of secrets (:mod:`waveflow_job.redact`); the AWS credentials and
    webhook secret in the environment are registered here.
    """
    redact.register_environment(os.environ)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_waveflow", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._waveflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_level(level))
    # Libraries chatter about every connection and credential lookup: warnings only; INFO at
    # LOG_LEVEL=DEBUG, never their DEBUG: botocore's dumps every signed request (access key
    # id, session token, signature), urllib3's every URL.
    quiet = logging.INFO if root.level <= logging.DEBUG else logging.WARNING
    for noisy in THIRD_PARTY_LOGGERS:
        logging.getLogger(noisy).setLevel(quiet)


def _level(name: str) -> int:
    value = logging.getLevelName(name.upper())
    return value if isinstance(value, int) else logging.INFO


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"
