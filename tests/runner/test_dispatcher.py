"""The dispatcher's loops, against moto's SQS and a recording backend.

The launcher here is scripted (jobs finish when the test says so); everything else is real:
SQS over HTTP, the webhook client, the dead-letter queue. Nothing here sleeps: timing rules
(heartbeat due times, orphans' grace, settle retries) are the ledger's, tested with a fake clock
in test_ledger.py; the local launcher's end-to-end tests live in test_local_runner.py.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from support.aws import MotoEndpoint
from support.flaky_proxy import running_flaky_proxy
from support.queues import Queues, backend_message, make_queues
from support.runner import ScriptedLauncher, queue_settings
from support.waiting import eventually
from support.webhooks import WebhookRecorder
from waveflow_job.contract import Outcome, Task, flat_envelope, kombu_envelope
from waveflow_operator.metrics import Metrics
from waveflow_operator.runner.dispatcher import Dispatcher
from waveflow_operator.runner.notify import WebhookFailureNotifier
from waveflow_operator.runner.protocol import JobResult, Recovered, job_name_for

HASH = "a" * 64


@pytest.fixture
def queues(aws: MotoEndpoint) -> Queues:
    return make_queues(aws)


def dispatcher_for(queues: Queues, webhooks: WebhookRecorder, launcher: ScriptedLauncher,
                   **overrides: object) -> Dispatcher:
    return Dispatcher(queue_settings(queues, webhooks.url, **overrides), launcher,
                      metrics=Metrics())


def test_job_names_are_deterministic_dns_labels() -> None:
    names = {job_name_for(task, "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab") for task in Task}
    again = {job_name_for(task, "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab") for task in Task}
    assert names == again and len(names) == 3
    for name in names:
        assert len(name) <= 63
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert job_name_for(Task.HASH, "x") != job_name_for(Task.HASH, "y")


async def test_poison_message_goes_to_the_dlq_with_its_reason_and_never_becomes_a_job(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    launcher = ScriptedLauncher()
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    bad_task = {"task": "app.tasks.make_coffee", "id": "x-1", "args": [],
                "kwargs": {"stemId": "stem-poison", "userId": "u", "trackId": "t"}}
    queues.send(bad_task)
    queues.send("not json at all {")
    await dispatcher.start()
    try:
        await eventually(lambda: dispatcher.status.dead_lettered == 2, message="2 dead letters")
        await eventually(lambda: queues.counts() == (0, 0), message="main queue empty")
    finally:
        await dispatcher.stop(1)
    assert launcher.launched == []
    dead = sorted(queues.drain_dlq(), key=lambda m: m["MessageAttributes"]["WaveflowReason"]
                  ["StringValue"])
    reasons = [m["MessageAttributes"]["WaveflowReason"]["StringValue"] for m in dead]
    assert reasons == ["MESSAGE_INVALID", "UNKNOWN_TASK"]
    assert dead[1]["Body"] == json.dumps(bad_task)
    assert "make_coffee" in dead[1]["MessageAttributes"]["WaveflowReasonDetail"]["StringValue"]
    notified = [m["MessageAttributes"]["WaveflowBackendNotified"]["StringValue"] for m in dead]
    assert notified == ["no stemId", "yes"]
    # The backend hears about the stem it could identify, as a final (non-retryable) failure.
    [failure] = webhooks.bodies("/completion")
    assert failure["stemId"] == "stem-poison" and failure["status"] == "FAILURE"
    assert failure["result"]["error_code"] == "UNKNOWN_TASK"
    assert failure["result"]["retryable"] is False
    metrics = dispatcher.metrics
    assert metrics.value("waveflow_messages_dead_lettered_total", queue="test",
                         reason="UNKNOWN_TASK") == 1
    assert metrics.total("waveflow_jobs_created_total") == 0


async def test_receives_only_up_to_the_in_flight_maximum(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    launcher = ScriptedLauncher()
    dispatcher = dispatcher_for(queues, webhooks, launcher, max_in_flight=2)
    for i in range(5):
        queues.send(backend_message("generate_hash_and_webhook", f"stem-{i}"))
    await dispatcher.start()
    try:
        await eventually(lambda: len(launcher.launched) == 2, message="two launches")
        # The poll loop now waits for a free slot (test_ledger.py: in_flight counts held ones).
        await eventually(lambda: dispatcher.status.last_poll_time, message="a poll")
        assert len(launcher.launched) == 2
        assert queues.counts() == (3, 2)  # the rest waits in SQS, not in memory
        await launcher.finish(launcher.launched[0].job_name, Outcome.SUCCEEDED)
        await eventually(lambda: len(launcher.launched) == 3, message="a third launch")
        assert dispatcher.in_flight == 2
    finally:
        await dispatcher.stop(0)
    # Stopping returned the unfinished messages at once: 4 are visible again.
    assert queues.counts() == (4, 0)


async def test_outcomes_settle_as_the_contract_says(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    launcher = ScriptedLauncher()
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    for stem in ("ok", "rejected", "failed"):
        queues.send(backend_message("process_audio_analysis", f"stem-{stem}", audio_hash=HASH))
    await dispatcher.start()
    try:
        await eventually(lambda: len(launcher.launched) == 3, message="three launches")
        by_stem = {d.message.stem_id: d for d in launcher.launched}
        await launcher.finish(by_stem["stem-ok"].job_name, Outcome.SUCCEEDED)
        await launcher.finish(by_stem["stem-rejected"].job_name, Outcome.REJECTED,
                              "AUDIO_CORRUPT")
        await launcher.finish(by_stem["stem-failed"].job_name, Outcome.FAILED,
                              "JOB_DEADLINE_EXCEEDED", "ran past its 600 s deadline")
        await eventually(lambda: queues.counts() == (0, 0), message="every message deleted")
    finally:
        await dispatcher.stop(1)
    # Only the failed job produces a runner FAILURE (the rejecting job told the backend itself).
    [request] = webhooks.received("/completion")
    body = request.json()
    assert body["stemId"] == "stem-failed" and body["status"] == "FAILURE"
    assert body["result"] == {"error_code": "JOB_DEADLINE_EXCEEDED",
                              "error_message": "ran past its 600 s deadline",
                              "task": "process_audio_analysis", "retryable": True}
    assert request.header("X-WaveFlow-Event") == "completion"
    assert request.header("X-WaveFlow-Delivery", ).startswith("completion-")
    [dead] = queues.drain_dlq()
    assert dead["MessageAttributes"]["WaveflowReason"]["StringValue"] == "JOB_DEADLINE_EXCEEDED"
    assert dead["MessageAttributes"]["WaveflowBackendNotified"]["StringValue"] == "yes"
    assert json.loads(dead["Body"])["kwargs"]["stemId"] == "stem-failed"
    assert (dispatcher.status.succeeded, dispatcher.status.rejected,
            dispatcher.status.failed) == (1, 1, 1)
    metrics = dispatcher.metrics
    assert metrics.value("waveflow_jobs_finished_total", queue="test",
                         task="process_audio_analysis", outcome="failed") == 1
    assert metrics.value("waveflow_dispatch_latency_seconds_count", queue="test") == 3


async def test_a_result_from_an_earlier_run_settles_the_redelivered_message_once(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    message_id = queues.send(backend_message("process_audio_analysis", "stem-r",
                                             audio_hash=HASH))
    name = job_name_for(Task.ANALYSIS, message_id)
    earlier = {name: JobResult(name, Outcome.FAILED, "JOB_BACKOFF_LIMIT", "failed 3 times")}
    launcher = ScriptedLauncher(earlier)
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    await dispatcher.start()
    try:
        await eventually(lambda: queues.counts() == (0, 0), message="settlement")
        await eventually(lambda: dispatcher.status.failed == 1, message="the count")
    finally:
        await dispatcher.stop(1)
    assert launcher.launched == [] and launcher.adopted == []
    assert len(webhooks.bodies("/completion")) == 1
    assert len(queues.drain_dlq()) == 1
    assert dispatcher.status.failed == 1


async def test_a_failed_job_is_noted_before_its_failure_and_after_its_dead_letter(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    """The launcher keeps how far settling got (a crash must not repeat a step) and forgets it
    once the message is deleted."""
    message_id = queues.send(backend_message("generate_hash_and_webhook", "stem-n"))
    name = job_name_for(Task.HASH, message_id)
    launcher = ScriptedLauncher()
    noted: list[tuple[bool, int, int]] = []
    note = launcher.note_settling

    async def watching(result: JobResult) -> None:  # what was sent when each note was taken
        noted.append((result.dead_lettered, len(webhooks.bodies("/completion")),
                      sum(queues.counts(queues.dlq_url))))
        await note(result)

    launcher.note_settling = watching  # type: ignore[method-assign]
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    await dispatcher.start()
    try:
        await eventually(lambda: launcher.launched, message="the launch")
        await launcher.finish(name, Outcome.FAILED, "JOB_BACKOFF_LIMIT", "failed")
        await eventually(lambda: queues.counts() == (0, 0), message="settlement")
    finally:
        await dispatcher.stop(1)
    assert noted == [(False, 0, 0), (True, 1, 1)]
    assert launcher.notes == {}


async def test_a_noted_dead_letter_of_an_earlier_run_is_only_deleted(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    message_id = queues.send(backend_message("generate_hash_and_webhook", "stem-d"))
    name = job_name_for(Task.HASH, message_id)
    earlier = {name: JobResult(name, Outcome.FAILED, "JOB_BACKOFF_LIMIT", "failed 3 times",
                               dead_lettered=True)}
    launcher = ScriptedLauncher(earlier)
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    await dispatcher.start()
    try:
        await eventually(lambda: queues.counts() == (0, 0), message="the delete")
        await eventually(lambda: dispatcher.status.failed == 1, message="the count")
    finally:
        await dispatcher.stop(1)
    assert launcher.launched == [] and launcher.adopted == []
    assert webhooks.bodies("/completion") == []
    assert queues.drain_dlq() == []


async def test_an_adopted_job_noted_as_dead_lettered_is_only_deleted(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    """Kubernetes: the finished Job is found on a 409 and carries the dead-letter note."""
    message_id = queues.send(backend_message("generate_hash_and_webhook", "stem-e"))
    name = job_name_for(Task.HASH, message_id)
    launcher = ScriptedLauncher()
    launcher.earlier[name] = JobResult(name, Outcome.FAILED, "JOB_BACKOFF_LIMIT", "failed",
                                       dead_lettered=True)  # not recovered: adopted on launch
    launcher.recover = lambda: _nothing()  # type: ignore[method-assign]
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    await dispatcher.start()
    try:
        await eventually(lambda: queues.counts() == (0, 0), message="the delete")
    finally:
        await dispatcher.stop(1)
    assert [r.job_name for r in launcher.adopted] == [name]
    assert webhooks.bodies("/completion") == []
    assert queues.drain_dlq() == []


async def _nothing() -> Recovered:
    return Recovered()


async def test_a_redelivered_running_job_is_adopted_not_launched_again(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    message_id = queues.send(backend_message("generate_hash_and_webhook", "stem-a"))
    name = job_name_for(Task.HASH, message_id)
    launcher = ScriptedLauncher({name: None})
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    await dispatcher.start()
    try:
        await eventually(lambda: launcher.adopted, message="adoption")
        await launcher.finish(name, Outcome.SUCCEEDED)
        await eventually(lambda: queues.counts() == (0, 0), message="deletion")
    finally:
        await dispatcher.stop(1)
    assert launcher.launched == []
    assert dispatcher.metrics.total("waveflow_jobs_created_total") == 0


async def test_every_envelope_form_is_dispatched(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    kwargs = {"userId": "u", "trackId": "t", "stemId": "stem-k", "filepath": "audio/a.wav"}
    kombu = kombu_envelope(Task.HASH, kwargs, message_id="hash-stem-k-1")
    queues.send(kombu)
    queues.send(flat_envelope(Task.HASH, {**kwargs, "stemId": "stem-f"}))
    queues.send(backend_message("generate_hash_and_webhook", "stem-j"))
    launcher = ScriptedLauncher()
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    await dispatcher.start()
    try:
        await eventually(lambda: len(launcher.launched) == 3, message="three launches")
    finally:
        await dispatcher.stop(0)
    assert sorted(d.message.stem_id for d in launcher.launched) == ["stem-f", "stem-j", "stem-k"]
    # The job gets the body byte-for-byte, whatever its envelope.
    assert kombu in {d.body for d in launcher.launched}


async def test_an_unreachable_queue_is_reported_without_crashing(
        aws: MotoEndpoint, webhooks: WebhookRecorder) -> None:
    queues = Queues(aws, f"{aws.url}/123456789012/does-not-exist",
                    f"{aws.url}/123456789012/nor-this")
    launcher = ScriptedLauncher()
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    await dispatcher.start()
    try:
        await eventually(lambda: dispatcher.status.last_error, message="an error")
    finally:
        await dispatcher.stop(0)
    assert dispatcher.status.polling is False
    assert dispatcher.status.last_error_retryable is False
    assert "NonExistentQueue" in (dispatcher.status.last_error or "")
    assert dispatcher.metrics.value("waveflow_sqs_errors_total", queue="test",
                                    operation="receive") >= 1


async def test_sqs_throttling_and_5xx_are_backed_off_and_polling_carries_on(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    with running_flaky_proxy(queues.endpoint.url) as proxy:
        # Queue URLs name moto's host; boto3 sends to the endpoint (the proxy) all the same.
        launcher = ScriptedLauncher()
        dispatcher = dispatcher_for(queues, webhooks, launcher, endpoint_url=proxy.url)
        # More failures than boto3's own 3 attempts per call: some calls fail for the runner.
        proxy.fail_next(9, code="ThrottlingException")
        await dispatcher.start()
        try:
            await eventually(lambda: proxy.failures_left == 0, message="the throttling")
            proxy.fail_next(9, status=503, code="ServiceUnavailable")
            await eventually(lambda: proxy.failures_left == 0, message="the outage")
            queues.send(backend_message("generate_hash_and_webhook", "stem-after"))
            await eventually(lambda: launcher.launched, message="a launch after recovery")
            alive, _ = dispatcher.alive()
            assert alive and dispatcher.status.polling
        finally:
            await dispatcher.stop(0)
    assert proxy.failed == 18
    assert dispatcher.metrics.total("waveflow_sqs_errors_total", queue="test") >= 2
    assert dispatcher.status.last_error_retryable is True
    assert [d.message.stem_id for d in launcher.launched] == ["stem-after"]


async def test_a_failure_the_backend_cannot_take_is_still_dead_lettered_and_says_so(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    launcher = ScriptedLauncher()
    settings = queue_settings(queues, webhooks.url)
    notifier = WebhookFailureNotifier(webhooks.url, budget=0.5, backoff=0.05)
    dispatcher = Dispatcher(settings, launcher, notifier=notifier, metrics=Metrics())
    webhooks.fail_next(1000)  # the backend is down for longer than the runner waits
    queues.send(backend_message("generate_hash_and_webhook", "stem-down"))
    await dispatcher.start()
    try:
        await eventually(lambda: launcher.launched, message="a launch")
        await launcher.finish(launcher.launched[0].job_name, Outcome.FAILED,
                              "JOB_BACKOFF_LIMIT", "failed 3 time(s)")
        await eventually(lambda: queues.counts() == (0, 0), message="settlement")
    finally:
        await dispatcher.stop(1)
        notifier.close()
    [dead] = queues.drain_dlq()
    assert dead["MessageAttributes"]["WaveflowBackendNotified"]["StringValue"] == "no"
    assert len(webhooks.received("/completion")) >= 2  # it was retried before giving up


async def test_stop_is_one_shared_stop_that_a_cancelled_caller_does_not_cut_short(
        queues: Queues, webhooks: WebhookRecorder) -> None:
    """kopf cancels the queue's daemon while it stops; its cleanup handler awaits the same stop."""
    launcher = ScriptedLauncher()
    dispatcher = dispatcher_for(queues, webhooks, launcher)
    queues.send(backend_message("generate_hash_and_webhook", "stem-s"))
    await dispatcher.start()
    await eventually(lambda: launcher.launched, message="a launch")
    daemon = asyncio.ensure_future(dispatcher.stop(0))
    await asyncio.sleep(0)  # the stop has begun
    daemon.cancel()
    # The stop goes on without its cancelled caller: the message is handed back (visibility 0)
    # long before its 30 s visibility timeout.
    await eventually(lambda: queues.counts() == (1, 0), 10, "the message handed back")
    unfinished = await dispatcher.stop(0)  # the cleanup handler: the same stop, finished
    assert unfinished == [launcher.launched[0].job_name]
    assert daemon.cancelled()
