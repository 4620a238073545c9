"""values.yaml is documented, described by values.schema.json, and bad values are refused."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from types import ModuleType

import jsonschema
import pytest
import yaml

from chart.helm import CHART, REPO, find, render, template

VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
#: Enough for a working queue: what a user's my-values.yaml holds at least.
MINIMAL_QUEUE = (
    "queue.queueUrl=https://sqs.eu-west-1.amazonaws.com/123456789012/audio",
    "queue.bucket=audio-uploads",
    "queue.webhookUrl=https://backend.example.com/webhook",
)


@functools.cache
def chart_docs() -> ModuleType:
    """charts/dev/chart_docs.py, the generator `make chart-docs` runs."""
    spec = importlib.util.spec_from_file_location("chart_docs", REPO / "charts/dev/chart_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def schema_paths(node: dict, prefix: str = "") -> set[str]:
    paths = set()
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        paths.add(path)
        paths |= schema_paths(child, f"{path}.")
    return paths


def test_every_value_is_documented_where_it_is_defined() -> None:
    docs, keys = chart_docs().parse(VALUES.read_text())
    documented = {doc.path for doc in docs}
    for key in keys:
        parts = key.split(".")
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        is_section = any(other.startswith(key + ".") for other in keys)
        assert is_section or ancestors & documented, f"{key} has no `# --` comment"


def test_the_schema_describes_exactly_the_values() -> None:
    docs, keys = chart_docs().parse(VALUES.read_text())
    schema = json.loads(SCHEMA.read_text())
    documented = {doc.path for doc in docs}
    described = schema_paths(schema) - {"global"}
    # Free-form objects (resources, labels...) have keys in values.yaml, none in the schema.
    assert documented <= described, documented - described
    assert described <= set(keys), described - set(keys)
    for doc in docs:
        assert chart_docs().schema_node(schema, doc.path)["description"]


def test_the_readme_and_schema_descriptions_are_up_to_date() -> None:
    for path, text in chart_docs().generated().items():
        assert path.read_text() == text, f"{path.name} is stale: run `make chart-docs`"


def test_the_default_values_satisfy_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load(VALUES.read_text()))


def test_a_minimal_queue_config_is_all_a_user_needs() -> None:
    kinds = {m["kind"] for m in render(sets=MINIMAL_QUEUE)}
    assert "WaveflowQueue" in kinds


@pytest.mark.parametrize(
    ("sets", "pointer"),
    [
        (("operator.replicas=2",), "/operator/replicas"),
        (("operator.logLevel=TRACE",), "/operator/logLevel"),
        (("operator.image.pullPolicy=Sometimes",), "/operator/image/pullPolicy"),
        (("replicaCount=2",), "replicaCount"),
        (("serviceAccount.roleArn=waveflow-role",), "/serviceAccount/roleArn"),
        (("queue.maxInFlight=0",), "/queue/maxInFlight"),
        (("queue.maxInFlight=1001",), "/queue/maxInFlight"),
        (("queue.receiveBatchSize=11",), "/queue/receiveBatchSize"),
        (("queue.visibilityTimeoutSeconds=10",), "/queue/visibilityTimeoutSeconds"),
        (("queue.region=Europe",), "/queue/region"),
        (("queue.uploadPrefixes={audio/,waveforms/}",), "/queue/uploadPrefixes/1"),
        (("queue.job.scratch.medium=Tmpfs",), "/queue/job/scratch/medium"),
        (("queue.job.resources.analyse.requests.cpu=1",), "/queue/job/resources"),
        (("queue.job.resources.hash.requests.cpu=lots",), "/queue/job/resources/hash/requests/cpu"),
        (("queue.queueUrl=https://sqs.eu-west-1.amazonaws.com/1/q",), "/queue/bucket"),
        (("queue.queueUrl=sqs://not-a-url",), "/queue/queueUrl"),
        ((*MINIMAL_QUEUE, "queue.bucket=Audio_Uploads"), "/queue/bucket"),
        (("queue.webhookSecret.create=true",), "/queue/webhookSecret/value"),
        (
            (
                "queue.webhookSecret.create=true",
                "queue.webhookSecret.value=k",
                "queue.webhookSecret.existingSecret=s",
            ),
            "/queue/webhookSecret/existingSecret",
        ),
        (
            ("metrics.prometheusRule.jobFailureRatio=1.5",),
            "/metrics/prometheusRule/jobFailureRatio",
        ),
        (("metrics.serviceMonitor.interval=often",), "/metrics/serviceMonitor/interval"),
        (("emulator.enabled=true",), "/queue/queueUrl"),
    ],
)
def test_the_schema_rejects_bad_values(sets: tuple[str, ...], pointer: str) -> None:
    result = template(sets=sets)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert pointer in result.stderr, result.stderr


def test_the_job_ttl_is_left_to_the_operator_unless_set_and_never_shorter_than_redelivery(
        ) -> None:
    """Unset, the queue carries no TTL (the operator takes 3600 s or the visibility timeout
    plus its margin); set, it must outlive a redelivered message (crd.job_ttl, same rule)."""
    from waveflow_operator.k8s.crd import REDELIVERY_MARGIN_SECONDS, parse_spec

    queue = find(render(sets=MINIMAL_QUEUE), "WaveflowQueue")
    assert "ttlSecondsAfterFinished" not in queue["spec"]["job"]
    assert parse_spec("q", queue["spec"])[1].ttl_seconds_after_finished == 3600
    floor = 3600 + REDELIVERY_MARGIN_SECONDS
    long_visibility = (*MINIMAL_QUEUE, "queue.visibilityTimeoutSeconds=3600")
    queue = find(render(sets=(*long_visibility, f"queue.job.ttlSecondsAfterFinished={floor}")),
                 "WaveflowQueue")
    assert queue["spec"]["job"]["ttlSecondsAfterFinished"] == floor
    result = template(sets=(*long_visibility, f"queue.job.ttlSecondsAfterFinished={floor - 1}"))
    assert result.returncode != 0
    assert f"must be at least queue.visibilityTimeoutSeconds + {REDELIVERY_MARGIN_SECONDS} " \
           f"({floor})" in result.stderr, result.stderr
