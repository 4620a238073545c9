"""Secrets never reach a log line, whatever the level and whichever library wrote it.

Every line the JSON formatter (:mod:`waveflow_job.logs`) writes passes through
:func:`scrub`, which replaces

- the **values** of the secrets this process knows: the AWS credentials and ``WEBHOOK_SECRET``
  from the environment (read when logging is configured) and anything registered later with
  :func:`register` (the operator registers each Kubernetes Secret value it reads);
- the **shapes** secrets take in HTTP traffic, whatever their value: AWS access key ids,
  SigV4 ``Authorization`` headers, ``X-Amz-Security-Token``, request and webhook signatures.

Values shorter than :data:`MIN_SECRET_CHARS` are not scrubbed: replacing every "ab" in the logs
would destroy them and protect nothing a guess would not find.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping

__all__ = ["MIN_SECRET_CHARS", "SECRET_VARIABLES", "register", "register_environment", "scrub"]

#: Environment variables whose values are secrets.
SECRET_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                    "AWS_SECURITY_TOKEN", "WEBHOOK_SECRET")
MIN_SECRET_CHARS = 4
MASK = "[REDACTED]"

_SHAPES = [
    # AWS access key ids: long-term (AKIA), temporary (ASIA) and the other documented prefixes.
    re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}\b"),
    # A SigV4 Authorization header's value: credential scope, signed headers, signature.
    re.compile(r"(?<=AWS4-HMAC-SHA256 )[^'\"\\\n]+"),
    # The session token as a header or a query parameter, quoted (a dict's repr) or not.
    re.compile(r"(?i)(?<=x-amz-security-token)(['\"]?\s*[:=]\s*b?['\"]?)[^'\"\\&,\s}]+"),
    # Presigned-URL and header signatures; the webhook's ``t=...,v1=<hex>``.
    re.compile(r"(?i)(?<=signature=)[0-9a-f]{16,}"),
    re.compile(r"(?<=v1=)[0-9a-f]{64}"),
    re.compile(r"(?i)(?<=x-amz-credential=)[^&\s'\"\\]+"),
]

_lock = threading.Lock()
_values: frozenset[str] = frozenset()


def register(value: str | None) -> None:
    """Scrub ``value`` (and its JSON-escaped forms) from every log line from now on."""
    global _values
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    # As written, as a repr() writes it (tracebacks, dicts), and each as JSON escapes it.
    written = {value, repr(value)[1:-1]}
    forms = written | {json.dumps(form, ensure_ascii=ascii)[1:-1]
                       for form in written for ascii in (True, False)}
    with _lock:
        _values = _values | forms


def register_environment(environ: Mapping[str, str],
                         names: Iterable[str] = SECRET_VARIABLES) -> None:
    """Register the secrets among ``environ``'s variables."""
    for name in names:
        register(environ.get(name, "").strip() or None)


def scrub(text: str) -> str:
    """``text`` with every known secret value and every secret-shaped string masked."""
    # Longest first: a secret that contains another is masked whole.
    for value in sorted(_values, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    for shape in _SHAPES:
        text = shape.sub(_mask_keeping_separator, text)
    return text


def _mask_keeping_separator(match: re.Match[str]) -> str:
    """Keep a captured separator (``": '"``) so the line still reads as what it was."""
    separator = match.group(1) if match.re.groups else ""
    return f"{separator or ''}{MASK}"
