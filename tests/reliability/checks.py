"""Predicates for fault rules and the checks the reliability tests share."""

from __future__ import annotations

from support.rig import Rig


def s3_object(key: str, *methods: str):  # type: ignore[no-untyped-def]
    """Requests for one object (any method unless ``methods`` names some)."""
    return lambda r: r.service == "s3" and r.target == key and (not methods
                                                                or r.method in methods)


def sqs(*operations: str):  # type: ignore[no-untyped-def]
    return lambda r: r.service == "sqs" and r.operation in operations


def hook(event: str, stem: str):  # type: ignore[no-untyped-def]
    return lambda r: r.service == "webhook" and r.operation == event and \
        r.json().get("stemId") == stem


def assert_holds(rig: Rig, uploaded: dict[str, str]) -> dict[str, object]:
    verdict = rig.verdict(uploaded=uploaded)
    assert verdict.problems == [], "\n".join(verdict.problems)
    return verdict.figures()


def status(rig: Rig, stem: str) -> str | None:
    record = rig.backend.stems.get(stem)
    return record.status if record else None


def failure_of(rig: Rig, stem: str) -> dict[str, object]:
    [failure] = [w["body"]["result"] for w in rig.accepted_webhooks("completion")
                 if w["body"]["stemId"] == stem and w["body"]["status"] == "FAILURE"]
    return failure


def reasons(rig: Rig) -> list[str]:
    return sorted(d["MessageAttributes"]["WaveflowReason"]["StringValue"]
                  for d in rig.drain_dead_letters())
