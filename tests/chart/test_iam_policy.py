"""The IAM policies in the chart docs grant exactly the AWS calls the operator and the job make."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chart.helm import CHART, REPO

IAM = CHART / "docs" / "iam"
#: boto3 client methods → the IAM action each needs.
SQS_ACTIONS = {
    "receive_message": "sqs:ReceiveMessage",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "get_queue_url": "sqs:GetQueueUrl",
    "send_message": "sqs:SendMessage",
}
S3_ACTIONS = {
    "head_object": "s3:GetObject",
    "get_object": "s3:GetObject",
    "get_object_tagging": "s3:GetObjectTagging",
    "put_object_tagging": "s3:PutObjectTagging",
    "delete_object": "s3:DeleteObject",
    "put_object": "s3:PutObject",
    "head_bucket": "s3:ListBucket",
    "list_objects_v2": "s3:ListBucket",
}


def policy(name: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads((IAM / name).read_text())
    return parsed


def allowed_actions(document: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        action = statement["Action"]
        actions |= {action} if isinstance(action, str) else set(action)
    return actions


def calls(source: Path, pattern: str) -> set[str]:
    return set(re.findall(pattern, source.read_text()))


@pytest.mark.parametrize("name", ["operator-policy.json", "job-policy.json"])
def test_policies_name_no_wildcard_action_or_resource(name: str) -> None:
    for statement in policy(name)["Statement"]:
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            assert resource != "*" and resource.startswith("arn:aws:")
        assert all("*" not in action for action in allowed_actions({"Statement": [statement]}))


def test_the_operator_policy_grants_the_sqs_calls_the_operator_makes() -> None:
    sqs = REPO / "operator" / "waveflow_operator" / "runner" / "sqs.py"
    # The poller names boto3 methods as strings: `self._call("receive", "receive_message", ...)`.
    methods = calls(sqs, r'"([a-z_]+)"') & set(SQS_ACTIONS)
    assert methods, "no SQS call found in sqs.py"
    assert allowed_actions(policy("operator-policy.json")) == {SQS_ACTIONS[m] for m in methods}


def test_the_job_policy_grants_the_s3_calls_the_job_makes() -> None:
    s3 = REPO / "jobimage" / "waveflow_job" / "s3.py"
    methods = calls(s3, r"client\.([a-z_]+)\(") & set(S3_ACTIONS)
    assert methods, "no S3 call found in s3.py"
    assert allowed_actions(policy("job-policy.json")) == {S3_ACTIONS[m] for m in methods}


def test_the_job_may_delete_only_under_upload_prefixes_and_write_only_waveforms() -> None:
    for statement in policy("job-policy.json")["Statement"]:
        actions = allowed_actions({"Statement": [statement]})
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        if "s3:DeleteObject" in actions:
            assert all(r.endswith("/audio/*") for r in resources)
        if "s3:PutObject" in actions:
            assert resources == ["arn:aws:s3:::${BUCKET}/waveforms/*"]
