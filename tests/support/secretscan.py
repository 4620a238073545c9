"""A pytest plugin: no secret the suite sets may appear in anything it logs, at any level.

It watches three places for the values of :func:`support.secrets.known_secrets`:

- every log record created in the test process, whatever its level or logger (a handler on
  the root logger at level 0: what a DEBUG configuration would print), message, extras and
  traceback;
- the output pytest captures for each test phase (stdout, stderr — where subprocesses that
  inherit them write — and captured log records);
- texts handed to :func:`scan` (the reliability rig's runner logs, a subprocess's stderr).

A test whose phase logged a secret fails in its teardown with where it was seen (the secret
itself is never printed); anything seen outside a test fails the session.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from support.secrets import secrets_in

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                          "taskName"}


@dataclass
class Leaks:
    found: list[str] = field(default_factory=list)
    reported: int = 0


LEAKS = Leaks()


def scan(text: str, where: str) -> None:
    """Record every known secret found in ``text`` (``where`` says what it was)."""
    for name in secrets_in(text):
        LEAKS.found.append(f"{name} in {where}")


class _ScanningHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            parts = [record.getMessage()]
        except Exception:  # a broken format string is not our concern here
            parts = [str(record.msg), repr(record.args)]
        parts += [repr(v) for k, v in vars(record).items() if k not in _STANDARD]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(logging.Formatter().formatException(record.exc_info))
        scan("\n".join(parts), f"a {record.levelname} record of logger {record.name!r}")


_HANDLER = _ScanningHandler(level=0)


def pytest_sessionstart(session: pytest.Session) -> None:
    logging.getLogger().addHandler(_HANDLER)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    for title, content in report.sections:
        scan(content, f"{title} of {item.nodeid}")


@pytest.fixture(autouse=True)
def no_secret_in_logs() -> Iterator[None]:
    """Fail the test when anything it logged (so far) carried a secret."""
    yield
    new = LEAKS.found[LEAKS.reported:]
    LEAKS.reported = len(LEAKS.found)
    assert not new, "secrets were logged:\n" + "\n".join(sorted(set(new)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    logging.getLogger().removeHandler(_HANDLER)
    late = LEAKS.found[LEAKS.reported:]
    if late:
        print("\nsecrets were logged outside a test's call:\n" + "\n".join(sorted(set(late))))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
