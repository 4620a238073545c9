"""``waveflow-job``: the job image's entrypoint (CONTRACT.md §4).

    waveflow-job run [--message-file PATH | --message JSON]   (else $WAVEFLOW_MESSAGE)
    waveflow-job waveform INPUT [-o OUTPUT.json] [--peaks N] [--detail OUTPUT.dat]

``run`` exits 0 when done, 3 when the message is rejected for good (the backend already got a
FAILURE completion where one could be sent), and 1 when a later attempt may succeed; 2 means
the command or its configuration is wrong. Every Job is a new process, so this module imports
only the standard library and the contract up front; boto3, requests and numpy are imported
by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from waveflow_job import contract
from waveflow_job.contract import ErrorCode, ExitCode, JobSummary, Outcome

if TYPE_CHECKING:
    from waveflow_job.config import JobConfig
    from waveflow_job.errors import WaveflowError
    from waveflow_job.stages import StageResult
    from waveflow_job.webhooks import WebhookClient

__all__ = ["main"]

log = logging.getLogger("waveflow_job")

#: Exit code for a wrong command line or configuration (argparse uses it too).
USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the subcommand; returns the process exit code."""
    args = _parser().parse_args(argv)
    return int(args.handler(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waveflow-job",
        description="Process one WaveFlow pipeline message, or draw a local file's waveform.")
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="show the installed version and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="process one SQS message (exit 0 done, 3 rejected, 1 retry later)",
        description="Process one SQS message body in any accepted envelope. The message comes "
                    "from --message-file, --message or $WAVEFLOW_MESSAGE; settings from the "
                    "environment (S3_BUCKET_NAME, WEBHOOK_URL, AWS_REGION, ...).")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--message-file", type=Path, metavar="PATH",
                        help="file holding the raw message body ('-' for stdin)")
    source.add_argument("--message", metavar="JSON", help="the raw message body itself")
    run.set_defaults(handler=_run)

    waveform = commands.add_parser(
        "waveform", help="write the waveform JSON of a local audio file (no AWS needed)",
        description="Decode INPUT and write the same waveform JSON the analysis stage stores.")
    waveform.add_argument("input", type=Path, metavar="INPUT")
    waveform.add_argument("-o", "--output", type=Path, metavar="OUTPUT.json",
                          help="where to write the JSON (default: standard output)")
    waveform.add_argument("--peaks", type=_num_peaks, default=contract.DEFAULT_NUM_PEAKS,
                          metavar="N", help=f"number of peaks, 1..{contract.MAX_NUM_PEAKS} "
                                            f"(default {contract.DEFAULT_NUM_PEAKS})")
    waveform.add_argument("--detail", type=Path, metavar="OUTPUT.dat",
                          help="also write the detail waveform (audiowaveform binary data v2, "
                               "as `audiowaveform -o x.dat` does), in the same decode pass")
    waveform.add_argument("--detail-samples-per-pixel", type=_positive, default=256,
                          metavar="N", help="frames per point of the detail waveform "
                                            "(default 256)")
    waveform.add_argument("--detail-bits", type=int, choices=(8, 16), default=8,
                          help="8 (default: what peaks.js reads) or 16")
    waveform.add_argument("--no-loudness", dest="loudness", action="store_false",
                          help="skip integrated loudness, loudness range and true peak")
    waveform.set_defaults(handler=_waveform)
    return parser


# --------------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> int:
    from waveflow_job import logs
    from waveflow_job.config import ConfigError, JobConfig

    started = time.perf_counter()
    logs.configure("INFO")  # until the configuration says otherwise (or cannot be read)
    try:
        config = JobConfig.from_env()
    except ConfigError as error:
        log.error("configuration error: %s", error, extra={"error_code": "CONFIG_INVALID"})
        return USAGE_ERROR
    logs.configure(config.log_level)
    raw = _read_message(args)
    if raw is None:
        log.error("no message: pass --message-file, --message or set WAVEFLOW_MESSAGE")
        return USAGE_ERROR
    with _terminate_cleanly():
        exit_code, summary = _process(raw, config)
    summary.timings["total"] = round(time.perf_counter() - started, 3)
    log.info("job finished", extra={"outcome": summary.outcome.value, "exit_code": exit_code,
                                    "error_code": summary.error_code})
    if config.summary_file is not None:
        _write_summary(config.summary_file, summary)
    return exit_code


@contextmanager
def _terminate_cleanly() -> Iterator[None]:
    """SIGTERM (deadline, eviction) unwinds like an exception, so ``finally`` blocks empty the
    scratch directory; the process then exits 143 as if killed (the runner retries)."""
    def terminate(signum: int, _frame: object) -> None:
        log.warning("terminated by signal %d", signum)
        sys.exit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (an embedding test harness): leave it alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_message(args: argparse.Namespace) -> str | bytes | None:
    if args.message_file is not None:
        if str(args.message_file) == "-":
            return sys.stdin.buffer.read()
        return args.message_file.read_bytes()
    if args.message is not None:
        return str(args.message)
    return os.environ.get(contract.env.MESSAGE) or None


def _process(raw: str | bytes, config: JobConfig) -> tuple[int, JobSummary]:
    """Parse, run the stage, and map its outcome to an exit code, a summary and webhooks."""
    from waveflow_job import logs
    from waveflow_job.errors import MessageError, Rejected
    from waveflow_job.webhooks import WebhookClient

    with WebhookClient.from_config(config) as webhooks:
        try:
            message = contract.parse_message(raw, max_num_peaks=config.max_num_peaks)
        except contract.InvalidMessage as invalid:
            task = _short_task(invalid.task)
            summary = JobSummary(task=task, outcome=Outcome.REJECTED, stem_id=invalid.stem_id,
                                 message_id=invalid.message_id)
            with logs.bind(stemId=invalid.stem_id, task=task, messageId=invalid.message_id):
                return _rejected(MessageError.from_invalid(invalid), summary, webhooks,
                                 raw=raw, report=invalid.stem_id is not None)
        summary = JobSummary(task=message.task.value, outcome=Outcome.FAILED,
                             stem_id=message.stem_id, message_id=message.message_id)
        with logs.bind(**message.log_context()):
            log.info("processing", extra={"filepath": message.filepath,
                                          "envelope": message.envelope.value})
            try:
                result = _run_stage(message, raw, config, webhooks)
            except Rejected as error:
                silent = bool(getattr(error, "silent", False))
                return _rejected(error, summary, webhooks, raw=raw, report=not silent)
            except Exception as error:  # every failure must end in an exit code
                return _failed(error, summary)
        summary.outcome = Outcome.SUCCEEDED
        summary.bytes = result.bytes
        summary.audio_seconds = round(result.audio_seconds, 3)
        summary.timings.update(result.timings)
        summary.note = result.note
        return ExitCode.DONE, summary


def _run_stage(message: contract.StemMessage, raw: str | bytes, config: JobConfig,
               webhooks: WebhookClient) -> StageResult:
    from waveflow_job.s3 import Storage
    from waveflow_job.stages import Job, run_stage

    storage = Storage(config)
    try:
        return run_stage(Job(message, raw, config, storage, webhooks))
    finally:
        storage.client.close()


def _rejected(error: WaveflowError, summary: JobSummary, webhooks: WebhookClient, *,
              raw: str | bytes, report: bool) -> tuple[int, JobSummary]:
    """Exit 3 after telling the backend; exit 1 when it could not be told (retry tells it)."""
    from waveflow_job.errors import WebhookUndelivered

    summary.outcome = Outcome.REJECTED
    summary.error_code = error.code.value
    log.error("rejected: %s", error.message,
              extra={"error_code": error.code.value, "failure_sent": report})
    if not report or summary.stem_id is None:
        if not report:
            summary.note = f"no webhook sent: {error.message}"
        return ExitCode.REJECTED, summary
    failure = contract.failure_completion(
        stem_id=summary.stem_id, task=summary.task, code=error.code, message=error.message,
        retryable=False, message_id=summary.message_id, raw_body=raw)
    try:
        webhooks.send(failure)
    except WebhookUndelivered as undelivered:
        log.error("could not deliver the FAILURE completion; exiting for a retry: %s",
                  undelivered.message, extra={"error_code": undelivered.code.value})
        summary.outcome = Outcome.FAILED
        summary.error_code = undelivered.code.value
        return ExitCode.FAILED, summary
    return ExitCode.REJECTED, summary


def _failed(error: Exception, summary: JobSummary) -> tuple[int, JobSummary]:
    """Exit 1 without any FAILURE webhook: the runner retries, and reports when it gives up."""
    from waveflow_job.errors import Transient

    if isinstance(error, Transient):
        summary.error_code = error.code.value
        log.warning("failed, may succeed later: %s", error.message,
                    extra={"error_code": error.code.value})
    else:
        summary.error_code = ErrorCode.INTERNAL_ERROR.value
        log.error("unexpected error: %s: %s", type(error).__name__, error,
                  exc_info=error, extra={"error_code": ErrorCode.INTERNAL_ERROR.value})
    summary.outcome = Outcome.FAILED
    return ExitCode.FAILED, summary


def _write_summary(path: Path, summary: JobSummary) -> None:
    try:
        path.write_text(summary.to_json() + "\n", encoding="utf-8")
    except OSError as error:
        log.warning("could not write the summary to %s: %s", path, error)


def _short_task(name: str | None) -> str | None:
    return name.removeprefix("app.tasks.") if name else name


# --------------------------------------------------------------------------- waveform


def _waveform(args: argparse.Namespace) -> int:
    from waveflow_job import logs, waveform
    from waveflow_job.errors import WaveflowError

    logs.configure("WARNING")  # a local tool: quiet unless something is wrong
    try:
        detail = None
        if args.detail is not None:
            detail = waveform.DetailRequest(args.detail, args.detail_samples_per_pixel,
                                            args.detail_bits)
        waveform.write_waveform_file(args.input, args.output, args.peaks, detail=detail,
                                     loudness=args.loudness)
    except WaveflowError as error:
        print(f"waveflow-job: {args.input}: {error}", file=sys.stderr)
        return int(error.exit_code)
    except OSError as error:
        print(f"waveflow-job: {error}", file=sys.stderr)
        return ExitCode.REJECTED
    return ExitCode.DONE


def _integer_in(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``low..high`` (no upper bound when None)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be {low}..{'' if high is None else high}, got {value}")
        return value
    return parse


_num_peaks = _integer_in(1, contract.MAX_NUM_PEAKS)
_positive = _integer_in(1)


class _VersionAction(argparse.Action):
    """Like argparse's "version", but looks the version up only when asked (start-up time)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object, **__: object) -> None:
        from waveflow_job.webhooks import user_agent

        print(user_agent().replace("waveflow/", "waveflow-job "))
        parser.exit()


if __name__ == "__main__":
    sys.exit(main())
