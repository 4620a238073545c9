"""The secrets the test suite sets, as recognisable sentinels, and where to look for them.

Every test that needs AWS credentials gets these (``MotoEndpoint.env()``); every webhook secret
the suite uses is listed by :func:`known_secrets`. The secret scan (``support.secretscan``)
looks for each of them in everything the suite logs — in-process records at any level, the
output pytest captures from tests and their subprocesses, and the runner logs of the
reliability rig — and fails the test that logged one.
"""

from __future__ import annotations

#: moto accepts any credentials; these are long and odd enough never to appear by chance.
AWS_ACCESS_KEY_ID = "AKIAWFSENTINEL7Q3XK2"
AWS_SECRET_ACCESS_KEY = "wfSentinelSecretAccessKey0b7e4c91d2"
AWS_SESSION_TOKEN = "wfSentinelSessionToken9c1d2e7f05aa"


def aws_env() -> dict[str, str]:
    """The credential variables a process gets in tests."""
    return {"AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
            "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN}


def known_secrets() -> dict[str, str]:
    """name → value of every secret the suite sets (webhook secrets of each test area too)."""
    secrets = {"AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID,
               "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
               "AWS_SESSION_TOKEN": AWS_SESSION_TOKEN}
    from support import operator_e2e, rig, runner

    for name, module in (("runner", runner), ("operator", operator_e2e)):
        secrets[f"WEBHOOK_SECRET ({name} tests)"] = module.SECRET
    secrets["WEBHOOK_SECRET (reliability rig)"] = rig.RIG_SECRET
    return secrets


def secrets_in(text: str) -> list[str]:
    """Names of the known secrets that occur in ``text``."""
    return [name for name, value in _cached().items() if value and value in text]


_CACHE: dict[str, str] = {}


def _cached() -> dict[str, str]:
    if not _CACHE:
        _CACHE.update(known_secrets())
    return _CACHE
