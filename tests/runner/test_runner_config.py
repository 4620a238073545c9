"""Settings from the environment, and the one job environment both launchers use."""

from __future__ import annotations

import sys

import pytest

from waveflow_job.contract import Task, json_envelope, parse_message
from waveflow_operator.local.config import ConfigError, RunnerConfig
from waveflow_operator.runner.jobenv import job_env
from waveflow_operator.runner.protocol import Delivery, JobRequest, job_name_for
from waveflow_operator.runner.spec import QueueSpec

BASE = {"SQS_QUEUE_URL": "https://sqs.ap-northeast-2.amazonaws.com/123456789012/audio",
        "S3_BUCKET_NAME": "uploads", "WEBHOOK_URL": "https://backend.example.com/webhook/",
        "AWS_REGION": "ap-northeast-2"}


def test_the_old_services_variables_are_enough_to_run() -> None:
    config = RunnerConfig.from_env(BASE)
    queue = config.queue
    assert (queue.name, queue.bucket, queue.region) == ("audio", "uploads", "ap-northeast-2")
    assert queue.webhook_url == "https://backend.example.com/webhook"
    assert queue.dlq_url is None  # taken from the queue's RedrivePolicy
    assert queue.deadline(Task.ANALYSIS) == 3600 and queue.deadline(Task.DUPLICATE) == 300
    assert config.job_command[-1] == "run"


def test_runner_settings_and_the_job_command_override_are_read() -> None:
    config = RunnerConfig.from_env({
        **BASE, "SQS_DLQ_URL": "https://sqs/dlq", "UPLOAD_PREFIXES": "audio/, stems/",
        "WAVEFLOW_MAX_IN_FLIGHT": "7", "WAVEFLOW_VISIBILITY_TIMEOUT_SECONDS": "90",
        "WAVEFLOW_DEADLINE_HASH_SECONDS": "12.5", "WAVEFLOW_JOB_COMMAND": f"{sys.executable} "
        "'/tmp/a script.py' run", "WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "9", "LOG_LEVEL": "debug"})
    queue = config.queue
    assert queue.dlq_url == "https://sqs/dlq"
    assert queue.upload_prefixes == ("audio/", "stems/")
    assert (queue.max_in_flight, queue.visibility_timeout_seconds) == (7, 90)
    assert queue.deadline(Task.HASH) == 12.5 and queue.log_level == "DEBUG"
    assert config.job_command == (sys.executable, "/tmp/a script.py", "run")
    assert queue.job_env == {"WAVEFLOW_WEBHOOK_BUDGET_SECONDS": "9"}


@pytest.mark.parametrize(("variable", "value", "named"), [
    ("SQS_QUEUE_URL", "", "SQS_QUEUE_URL"),
    ("WEBHOOK_URL", "backend:3000", "WEBHOOK_URL"),
    ("WAVEFLOW_MAX_IN_FLIGHT", "many", "WAVEFLOW_MAX_IN_FLIGHT"),
    ("WAVEFLOW_MAX_IN_FLIGHT", "0", "max_in_flight"),
    ("WAVEFLOW_WAIT_TIME_SECONDS", "21", "wait_time_seconds"),
])
def test_a_bad_setting_is_named_in_the_error(variable: str, value: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        RunnerConfig.from_env({**BASE, variable: value})


def test_the_job_environment_carries_every_contract_variable_but_not_the_message() -> None:
    body = json_envelope(Task.HASH, {"userId": "u", "trackId": "t", "stemId": "s",
                                     "filepath": "a/b.wav"}, message_id="hash-s-1")
    settings = QueueSpec(name="q", queue_url="https://sqs/q", bucket="b",
                         webhook_url="https://backend/webhook", region="eu-west-1",
                         endpoint_url="http://127.0.0.1:5000", webhook_secret="s3cret",
                         upload_prefixes=("a/",), job_env={"WAVEFLOW_S3_MAX_ATTEMPTS": "2"})
    delivery = JobRequest(job_name_for(Task.HASH, "mid-1"), parse_message(body),
                          Delivery("mid-1", "rh", body, None, 1))
    env = job_env(delivery, settings)
    assert env == {
        "S3_BUCKET_NAME": "b", "SQS_QUEUE_URL": "https://sqs/q",
        "WEBHOOK_URL": "https://backend/webhook", "LOG_LEVEL": "INFO",
        "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "UPLOAD_PREFIXES": "a/",
        "WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL": "256", "WAVEFLOW_DETAIL_BITS": "8",
        "WAVEFLOW_LOUDNESS": "on",
        "WAVEFLOW_MIN_SAMPLE_RATE": "4000", "WAVEFLOW_MAX_SAMPLE_RATE": "768000",
        "WAVEFLOW_MAX_CHANNELS": "64", "WAVEFLOW_MAX_WAVEFORM_VALUES": "1048576",
        "WAVEFLOW_MAX_DETAIL_BYTES": "134217728", "WAVEFLOW_MAX_DURATION_SECONDS": "14400",
        "WAVEFLOW_MAX_FILE_BYTES": "2147483648", "WAVEFLOW_MAX_NUM_PEAKS": "65536",
        "WAVEFLOW_S3_MAX_ATTEMPTS": "2", "WEBHOOK_SECRET": "s3cret"}
    # The body travels its own way (a file, or a ConfigMap when large): an environment string
    # cannot exceed 128 KiB. Kubernetes takes the secret from a Secret, never inline.
    assert "WEBHOOK_SECRET" not in job_env(delivery, settings, include_secret=False)


def test_the_queues_detail_waveform_resolution_reaches_the_job() -> None:
    body = json_envelope(Task.HASH, {"userId": "u", "trackId": "t", "stemId": "s",
                                     "filepath": "a/b.wav"}, message_id="hash-s-1")
    delivery = JobRequest(job_name_for(Task.HASH, "mid-1"), parse_message(body),
                          Delivery("mid-1", "rh", body, None, 1))
    for value in (0, 512):
        settings = QueueSpec(name="q", queue_url="https://sqs/q", bucket="b",
                             webhook_url="https://backend/webhook",
                             detail_samples_per_pixel=value)
        assert job_env(delivery, settings)["WAVEFLOW_DETAIL_SAMPLES_PER_PIXEL"] == str(value)
