"""Job status → the launcher's final result: each way a Job ends, named as CONTRACT.md §4 wants."""

from __future__ import annotations

from typing import Any

from waveflow_job.contract import Outcome
from waveflow_operator.k8s.launcher import job_outcome, result_from_status

SUMMARY = ('{"task":"process_audio_analysis","outcome":"succeeded","stem_id":"s1","bytes":2048,'
           '"audio_seconds":12.5,"timings":{"total":1.2}}')


def job(kind: str | None, reason: str = "", message: str = "", **status: Any) -> dict[str, Any]:
    conditions = [] if kind is None else [
        {"type": "FailureTarget" if kind == "Failed" else "SuccessCriteriaMet",
         "status": "True", "reason": reason},
        {"type": kind, "status": "True", "reason": reason, "message": message}]
    return {"metadata": {"name": "wf-analysis-abc"},
            "status": {"conditions": conditions, "startTime": "2026-11-26T10:00:00Z",
                       "completionTime": "2026-11-26T10:00:30Z", **status}}


def pod(exit_code: int | None = None, *, reason: str = "Error", message: str = "",
        waiting: str | None = None, finished: str = "2026-11-26T10:00:29Z",
        evicted: bool = False) -> dict[str, Any]:
    state: dict[str, Any] = ({"waiting": {"reason": waiting}} if waiting else
                             {"terminated": {"exitCode": exit_code, "reason": reason,
                                             "message": message, "finishedAt": finished}})
    status: dict[str, Any] = {"containerStatuses": [{"name": "job", "state": state}]}
    if exit_code is not None:
        status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
    if evicted:
        status["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                 "reason": "EvictionByEvictionAPI"}]
    return {"metadata": {"name": "p", "labels": {"batch.kubernetes.io/job-name": "wf"}},
            "status": status}


def test_a_running_job_has_no_result_yet() -> None:
    assert job_outcome(job(None, active=1)) is None
    assert result_from_status(job(None, active=1), []) is None


def test_a_complete_job_succeeded_with_the_summary_from_its_termination_message() -> None:
    result = result_from_status(job("Complete"), [pod(0, reason="Completed", message=SUMMARY)])
    assert result is not None and result.outcome is Outcome.SUCCEEDED
    assert result.summary is not None and result.summary.audio_seconds == 12.5
    assert result.summary.bytes == 2048 and result.duration_seconds == 30.0


def test_the_pod_failure_policy_means_the_job_rejected_the_message() -> None:
    summary = ('{"task":"generate_hash_and_webhook","outcome":"rejected",'
               '"error_code":"OBJECT_NOT_FOUND"}')
    result = result_from_status(job("Failed", "PodFailurePolicy", "exit code 3"),
                                [pod(3, message=summary)])
    assert result is not None and result.outcome is Outcome.REJECTED
    assert result.error_code == "OBJECT_NOT_FOUND"


def test_the_backoff_limit_is_a_failure_naming_the_attempts() -> None:
    result = result_from_status(
        job("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit",
            failed=3), [pod(1), pod(1, finished="2026-11-26T10:00:10Z")])
    assert result is not None and result.outcome is Outcome.FAILED
    assert result.error_code == "JOB_BACKOFF_LIMIT"
    assert "3 time(s)" in (result.error_message or "")


def test_the_deadline_is_its_own_failure() -> None:
    result = result_from_status(job("Failed", "DeadlineExceeded", "active too long"),
                                [pod(137, reason="Error")])
    assert result is not None and result.error_code == "JOB_DEADLINE_EXCEEDED"


def test_an_oom_kill_of_the_last_attempt_is_named() -> None:
    result = result_from_status(job("Failed", "BackoffLimitExceeded"),
                                [pod(137, reason="OOMKilled"),
                                 pod(1, finished="2026-11-26T10:00:01Z")])
    assert result is not None and result.error_code == "JOB_OOM_KILLED"
    assert "memory" in (result.error_message or "")


def test_an_image_that_never_pulled_is_named_even_when_the_deadline_ends_the_job() -> None:
    result = result_from_status(job("Failed", "DeadlineExceeded"),
                                [pod(waiting="ImagePullBackOff")])
    assert result is not None and result.error_code == "JOB_IMAGE_PULL"


def test_a_termination_message_that_is_not_a_summary_is_ignored() -> None:
    result = result_from_status(job("Complete"), [pod(0, message="kubelet says hi")])
    assert result is not None and result.summary is None


FAILED_SUMMARY = '{"task":"process_audio_analysis","outcome":"failed","stem_id":"s1"}'


def test_a_complete_job_has_the_summary_of_its_succeeded_pod_whatever_ended_that_second(
        ) -> None:
    """finishedAt has whole seconds: a retry that failed in the same second as the pod that
    succeeded (listed first, as an API server may) must not lend the result its summary."""
    result = result_from_status(job("Complete"), [pod(1, message=FAILED_SUMMARY),
                                                  pod(0, reason="Completed", message=SUMMARY)])
    assert result is not None and result.summary is not None
    assert result.summary.outcome == "succeeded" and result.summary.bytes == 2048


def test_an_evicted_pod_never_names_a_failure_the_podfailurepolicy_did_not_count_it_for(
        ) -> None:
    """The podFailurePolicy ignores a disrupted pod: the OOM kill that spent the budget names
    the failure, not the eviction (SIGKILL, 137) that ended in the same second."""
    result = result_from_status(job("Failed", "BackoffLimitExceeded", failed=1),
                                [pod(137, evicted=True), pod(137, reason="OOMKilled")])
    assert result is not None and result.error_code == "JOB_OOM_KILLED"
