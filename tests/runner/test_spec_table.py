"""The one table of queue defaults and ranges (runner/spec.py) against every other source: the
CRD's schema, the chart's values.yaml and values.schema.json, and ``waveflow local``'s
environment defaults. A number changed in one place and not the others fails here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from waveflow_job.config import JobConfig
from waveflow_operator.k8s.crd import (
    DEFAULT_JOB_TTL_SECONDS,
    REDELIVERY_MARGIN_SECONDS,
    SPEC_DEFAULTS,
    TEMPLATE_DEFAULTS,
    parse_spec,
)
from waveflow_operator.local.config import RunnerConfig, local_environment_help
from waveflow_operator.runner.spec import TASK_KEYS, TUNABLES, ConfigError, QueueSpec, Tunable

CHART = Path(__file__).resolve().parents[2] / "charts" / "waveflow"
CRD = yaml.safe_load((CHART / "files/crds/waveflowqueue.yaml").read_text())
CRD_SPEC = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())["queue"]
SCHEMA = json.loads((CHART / "values.schema.json").read_text())["properties"]["queue"]
REQUIRED_ENV = {"SQS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/audio",
                "S3_BUCKET_NAME": "b", "WEBHOOK_URL": "https://backend/webhook"}
IDS = [t.attribute for t in TUNABLES]


def schema_node(root: dict[str, Any], path: str) -> dict[str, Any]:
    node = root
    for part in path.split("."):
        node = node["properties"][part]
    return node


def value_at(root: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        root = root[part]
    return root


def declared_range(tunable: Tunable) -> tuple[Any, Any, Any, Any]:
    """(type, minimum, maximum, enum) a schema should declare for the row: a switch is a
    boolean."""
    if tunable.switch:
        return "boolean", None, None, None
    choices = None if tunable.choices is None else list(tunable.choices)
    return "integer", tunable.minimum, tunable.maximum, choices


@pytest.mark.parametrize("tunable", TUNABLES, ids=IDS)
def test_the_crd_declares_the_tables_default_and_range(tunable: Tunable) -> None:
    node = schema_node(CRD_SPEC, tunable.crd_path)
    assert (node.get("type"), node.get("minimum"), node.get("maximum"), node.get("enum")) == \
        declared_range(tunable)
    assert node.get("default") == tunable.default
    assert type(node.get("default")) is type(tunable.default)


@pytest.mark.parametrize("tunable", TUNABLES, ids=IDS)
def test_the_charts_values_and_their_schema_agree_with_the_table(tunable: Tunable) -> None:
    value = value_at(VALUES, tunable.crd_path)
    assert (value, type(value)) == (tunable.default, type(tunable.default))
    node = schema_node(SCHEMA, tunable.crd_path)
    assert (node.get("type"), node.get("minimum"), node.get("maximum"), node.get("enum")) == \
        declared_range(tunable)


JOB_REQUIRED = {"S3_BUCKET_NAME": "b", "WEBHOOK_URL": "https://backend/webhook"}


@pytest.mark.parametrize("tunable", [t for t in TUNABLES if t.job], ids=str)
def test_the_job_reads_each_job_setting_with_the_tables_default_and_range(
        tunable: Tunable) -> None:
    """The job (waveflow_job.config) cannot import the table: it must agree with it."""
    def config(value: float | None) -> JobConfig:
        extra = {} if value is None else {tunable.env: tunable.render(value)}
        return JobConfig.from_env({**JOB_REQUIRED, **extra})

    assert config(tunable.default) == config(None)
    assert config(tunable.floor) != config(None) or tunable.floor == tunable.default
    assert config(tunable.maximum) is not None
    if not tunable.switch:
        with pytest.raises(ConfigError, match=tunable.env):
            config(tunable.floor - 1)
        assert tunable.maximum is not None
        with pytest.raises(ConfigError, match=tunable.env):
            config(tunable.maximum + 1)
    if tunable.choices is not None:  # inside the range but not one of the choices
        assert tunable.maximum is not None
        for between in set(range(tunable.floor, tunable.maximum + 1)) - set(tunable.choices):
            with pytest.raises(ConfigError, match=tunable.env):
                config(between)


@pytest.mark.parametrize("tunable", [t for t in TUNABLES if t.job], ids=str)
def test_every_job_setting_reaches_the_jobs_environment(tunable: Tunable) -> None:
    """Explicitly, from the queue's value: what the table says is what the job is told."""
    from waveflow_job.contract import Task, json_envelope, parse_message
    from waveflow_operator.runner.jobenv import job_env
    from waveflow_operator.runner.protocol import Delivery, JobRequest, job_name_for

    body = json_envelope(Task.HASH, {"userId": "u", "trackId": "t", "stemId": "s",
                                     "filepath": "a/b.wav"}, message_id="hash-s-1")
    request = JobRequest(job_name_for(Task.HASH, "mid-1"), parse_message(body),
                         Delivery("mid-1", "rh", body, None, 1))
    value = tunable.maximum if tunable.maximum != tunable.default else tunable.floor
    assert value is not None
    spec = QueueSpec(name="q", queue_url="https://q", bucket="b", webhook_url="https://w",
                     **{tunable.attribute: tunable.typed(value)})
    assert job_env(request, spec)[tunable.env] == tunable.render(value)
    assert job_env(request, QueueSpec(name="q", queue_url="https://q", bucket="b",
                                      webhook_url="https://w"))[tunable.env] == \
        tunable.render(tunable.default)


def test_the_crds_other_defaults_are_the_job_templates() -> None:
    for path, value in TEMPLATE_DEFAULTS.items():
        assert schema_node(CRD_SPEC, path).get("default") == value, path
    assert set(SPEC_DEFAULTS) == {t.crd_path for t in TUNABLES} | set(TEMPLATE_DEFAULTS)


def test_waveflow_local_defaults_are_the_tables() -> None:
    queue = RunnerConfig.from_env(REQUIRED_ENV).queue
    for tunable in TUNABLES:
        if tunable.is_deadline:
            task = next(t for t, k in TASK_KEYS.items() if tunable.attribute.endswith(k.key))
            assert queue.deadline(task) == tunable.default
        else:
            assert getattr(queue, tunable.attribute) == tunable.default, tunable.attribute
        assert f"{tunable.env}={tunable.render(tunable.default)}" in local_environment_help()


def test_an_empty_crd_spec_gets_the_same_defaults_as_waveflow_local() -> None:
    minimal = {"queueUrl": REQUIRED_ENV["SQS_QUEUE_URL"], "bucket": "b",
               "webhookUrl": REQUIRED_ENV["WEBHOOK_URL"], "job": {"image": "job:1"}}
    from_crd, _ = parse_spec("audio", minimal)
    from_env = RunnerConfig.from_env(REQUIRED_ENV).queue
    for tunable in TUNABLES:
        if not tunable.is_deadline:
            assert getattr(from_crd, tunable.attribute) == getattr(from_env, tunable.attribute)
    assert from_crd.deadlines == from_env.deadlines


@pytest.mark.parametrize("tunable", [t for t in TUNABLES if not t.is_deadline], ids=str)
def test_the_runner_refuses_what_is_out_of_range_everywhere(tunable: Tunable) -> None:
    base = {"name": "q", "queue_url": "https://q", "bucket": "b", "webhook_url": "https://w"}
    QueueSpec(**base, **{tunable.attribute: tunable.floor})
    with pytest.raises(ConfigError, match=tunable.attribute):
        QueueSpec(**base, **{tunable.attribute: tunable.floor - 1})
    if tunable.maximum is not None:
        with pytest.raises(ConfigError, match=tunable.env):
            RunnerConfig.from_env({**REQUIRED_ENV, tunable.env: str(tunable.maximum + 1)})


def test_only_the_visibility_timeout_may_be_shorter_locally_than_in_the_crd() -> None:
    """The one deliberate column: laptops and tests use a few seconds; the CRD keeps 30."""
    relaxed = {t.attribute: t.runner_minimum for t in TUNABLES if t.runner_minimum is not None}
    assert relaxed == {"visibility_timeout_seconds": 1}
    assert RunnerConfig.from_env({**REQUIRED_ENV, "WAVEFLOW_VISIBILITY_TIMEOUT_SECONDS": "3"}
                                 ).queue.visibility_timeout_seconds == 3


def minimal_spec(**fields: Any) -> dict[str, Any]:
    job = {"image": "job:1", **fields.pop("job", {})}
    return {"queueUrl": REQUIRED_ENV["SQS_QUEUE_URL"], "bucket": "b",
            "webhookUrl": REQUIRED_ENV["WEBHOOK_URL"], "job": job, **fields}


def test_a_finished_job_outlives_the_redelivery_of_its_message_by_default() -> None:
    """The Job is the record of its result until the message is deleted: a message whose
    operator died after the Job ended comes back one visibility timeout later and must find
    it (else the work runs again). Unset, the TTL is 3600 s or the visibility timeout plus the
    margin, whichever is longer."""
    assert REDELIVERY_MARGIN_SECONDS >= 600
    _, template = parse_spec("audio", minimal_spec())
    assert template.ttl_seconds_after_finished == DEFAULT_JOB_TTL_SECONDS == 3600
    _, template = parse_spec("audio", minimal_spec(visibilityTimeoutSeconds=43200))
    assert template.ttl_seconds_after_finished == 43200 + REDELIVERY_MARGIN_SECONDS
    _, template = parse_spec("audio", minimal_spec(job={"ttlSecondsAfterFinished": 7200}))
    assert template.ttl_seconds_after_finished == 7200


def test_a_ttl_shorter_than_redelivery_needs_is_refused() -> None:
    floor = 3600 + REDELIVERY_MARGIN_SECONDS
    _, template = parse_spec("audio", minimal_spec(visibilityTimeoutSeconds=3600,
                                                   job={"ttlSecondsAfterFinished": floor}))
    assert template.ttl_seconds_after_finished == floor
    for ttl in (floor - 1, 3600, 0):
        with pytest.raises(ConfigError, match="ttlSecondsAfterFinished"):
            parse_spec("audio", minimal_spec(visibilityTimeoutSeconds=3600,
                                             job={"ttlSecondsAfterFinished": ttl}))


def test_the_crd_leaves_the_ttl_to_the_operator_and_says_why() -> None:
    """A CRD default would be stored in every object and hide "unset" from the operator."""
    node = schema_node(CRD_SPEC, "job.ttlSecondsAfterFinished")
    assert "default" not in node and "visibilityTimeoutSeconds" in node["description"]
    assert value_at(VALUES, "job.ttlSecondsAfterFinished") is None


def test_a_sample_rate_range_upside_down_is_refused_by_the_runner_and_the_crd() -> None:
    base = {"name": "q", "queue_url": "https://q", "bucket": "b", "webhook_url": "https://w"}
    with pytest.raises(ConfigError, match="min_sample_rate"):
        QueueSpec(**base, min_sample_rate=48000, max_sample_rate=44100)
    with pytest.raises(ConfigError, match="WAVEFLOW_MIN_SAMPLE_RATE"):
        JobConfig.from_env({**JOB_REQUIRED, "WAVEFLOW_MIN_SAMPLE_RATE": "48000",
                            "WAVEFLOW_MAX_SAMPLE_RATE": "44100"})
    [rule] = schema_node(CRD_SPEC, "job.limits")["x-kubernetes-validations"]
    assert "self.minSampleRate <= self.maxSampleRate" in rule["rule"]


def test_the_detail_bits_are_a_queue_field_with_two_choices() -> None:
    """8 is what peaks.js reads by default; 16 is selectable per queue, nothing in between."""
    queue, _ = parse_spec("audio", minimal_spec(job={"detailBits": 16}))
    assert queue.detail_bits == 16
    assert parse_spec("audio", minimal_spec())[0].detail_bits == 8
    with pytest.raises(ConfigError, match=re.escape("must be one of 8|16, got 12")):
        parse_spec("audio", minimal_spec(job={"detailBits": 12}))
