"""How the reference backend refuses a request: NestJS's 400 with a list of messages.

Webhook bodies are checked against the contract's own JSON Schemas
(:func:`waveflow_job.contract.json_schemas`), so the backend refuses exactly what the documented
contract refuses: a body WaveFlow sends that the schema does not allow fails the tests.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from waveflow_job.contract import WebhookEvent, json_schemas

__all__ = ["BadRequest", "require_strings", "validate_webhook"]

_VALIDATORS = {event: Draft202012Validator(json_schemas()[f"webhook.{event.value}.json"])
               for event in WebhookEvent}


class BadRequest(Exception):
    """Answered as ``{"statusCode", "message": [...], "error": "Bad Request"}``."""

    def __init__(self, status: int, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = messages


def validate_webhook(event: WebhookEvent, body: dict[str, Any]) -> None:
    """Refuse a body its contract schema refuses, naming every problem."""
    errors = sorted(_VALIDATORS[event].iter_errors(body),
                    key=lambda e: [str(part) for part in e.absolute_path])
    if errors:
        raise BadRequest(400, [_describe(leaf) for error in errors for leaf in _leaves(error)])


def require_strings(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The backend's own endpoints (``/upload-complete``): these fields, non-empty strings."""
    problems = [f"{name} must be a string" for name in names
                if not isinstance(body.get(name), str) or not body.get(name)]
    if problems:
        raise BadRequest(400, problems)
    return {name: str(body[name]) for name in names}


def _leaves(error: ValidationError) -> list[ValidationError]:
    """For "valid under none of" (``oneOf``), the errors of the branch that came closest."""
    if not error.context:
        return [error]
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    return [leaf for sub in min(branches.values(), key=len) for leaf in _leaves(sub)]


def _describe(error: ValidationError) -> str:
    where = ".".join(str(part) for part in error.absolute_path)
    return f"{where} {error.message}" if where else error.message
