"""JSON Schemas of every wire format, DERIVED from the types (exported to ``docs/schemas``).

Nothing here lists a field: :func:`schema_of` reads a ``TypedDict``, a dataclass or a type
annotation and writes its schema; ``Annotated`` keywords (:mod:`~waveflow_job.contract.fields`)
add the constraints. What is left by hand is what is not a type: titles, and that a
completion's ``result`` depends on its ``status``. ``python -m waveflow_job.contract DIR`` (and
``make schemas``) writes the files; a test checks the committed ones are current.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

from waveflow_job.contract.messages import TASK_MODULE, Task, task_kwargs
from waveflow_job.contract.results import JobSummary
from waveflow_job.contract.waveform import WaveformDocument
from waveflow_job.contract.webhooks import (
    AnalysisResult,
    CompletionBody,
    DuplicateDeletedResult,
    FailureResult,
    HashCheckBody,
)

__all__ = ["json_schemas", "schema_of", "write_schemas"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"
_SCALARS: dict[Any, str] = {str: "string", bool: "boolean", int: "integer", float: "number",
                            type(None): "null"}


def schema_of(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of one Python type as the contract uses them."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        schema = schema_of(args[0])
        for keywords in args[1:]:
            schema.update(keywords)
        return schema
    if annotation is Any:
        return {}
    if origin is None and annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if origin is typing.Literal:
        return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"enum": [member.value for member in annotation]}
    if origin in (typing.Union, types.UnionType):
        return _union(args)
    if origin is list:
        return {"type": "array", **({"items": schema_of(args[0])} if args[0] is not Any else {})}
    if origin is dict:
        values = schema_of(args[1])
        return {"type": "object", **({"additionalProperties": values} if values else {})}
    if typing.is_typeddict(annotation) or dataclasses.is_dataclass(annotation):
        return _object(annotation)
    raise TypeError(f"no JSON Schema for {annotation!r}")


def _union(members: tuple[Any, ...]) -> dict[str, Any]:
    schemas = [schema_of(member) for member in members]
    if all(set(schema) == {"type"} for schema in schemas):
        return {"type": [schema["type"] for schema in schemas]}
    return {"anyOf": schemas}


def _object(cls: Any) -> dict[str, Any]:
    """A ``TypedDict`` (required keys as it declares them) or a dataclass (fields without a
    default are required); properties in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    if dataclasses.is_dataclass(cls):
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
    else:
        required = [name for name in hints if name in cls.__required_keys__]
    hints = {name: _strip_required(hint) for name, hint in hints.items()}
    return {"type": "object", "required": required,
            "properties": {name: schema_of(hint) for name, hint in hints.items()}}


def _strip_required(hint: Any) -> Any:
    """``NotRequired[X]`` → ``X`` (``get_type_hints`` keeps the wrapper with extras)."""
    while typing.get_origin(hint) in (typing.NotRequired, typing.Required):
        hint = typing.get_args(hint)[0]
    return hint


def _document(title: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"$schema": _DIALECT, "title": title, **extra, **schema}


def _message(task: Task) -> dict[str, Any]:
    kwargs = {**schema_of(task_kwargs(task)), "additionalProperties": True}
    return _document(
        f"SQS message: {task.value}",
        {"type": "object", "required": ["task", "kwargs"], "properties": {
            "task": {"enum": [task.value, TASK_MODULE + task.value]},
            "id": {"type": "string", "description": "hash-|duplicate-|analysis- + stemId + ms"},
            "args": {"type": "array"},
            "kwargs": kwargs}},
        description="The JSON envelope the backend sends. Also accepted: the kwargs flat "
                    "beside 'task', and a kombu protocol-2 envelope (CONTRACT.md §1).")


def _completion() -> dict[str, Any]:
    schema = schema_of(CompletionBody)
    schema["if"] = {"properties": {"status": {"const": "FAILURE"}}}
    schema["then"] = {"properties": {"result": schema_of(FailureResult)}}
    schema["else"] = {"properties": {"result": {"oneOf": [
        schema_of(AnalysisResult), schema_of(DuplicateDeletedResult)]}}}
    return _document("POST {WEBHOOK_URL}/completion", schema)


def json_schemas() -> dict[str, dict[str, Any]]:
    """Every wire format as a JSON Schema, keyed by the file name it is exported to."""
    schemas = {f"message.{task.value}.json": _message(task) for task in Task}
    schemas["webhook.hash-check.json"] = _document("POST {WEBHOOK_URL}/hash-check",
                                                   schema_of(HashCheckBody))
    schemas["webhook.completion.json"] = _completion()
    schemas["waveform.json"] = _document(
        "Waveform JSON (waveforms/{stemId}_waveform_{suffix}.json)", schema_of(WaveformDocument))
    schemas["job-summary.json"] = _document(
        "waveflow-job one-line summary (WAVEFLOW_SUMMARY_FILE)", schema_of(JobSummary))
    return schemas


def write_schemas(directory: Path) -> list[Path]:
    """Export :func:`json_schemas` as pretty, stable files (a test checks they are current)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / name
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
