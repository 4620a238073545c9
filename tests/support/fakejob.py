"""A stand-in for ``waveflow-job run`` (WAVEFLOW_JOB_COMMAND), steered by environment variables.

    FAKEJOB_LOG           append "start <stemId>" / "done <stemId>" lines to this file
    FAKEJOB_SLEEP         seconds to sleep before exiting (default 0)
    FAKEJOB_EXIT          exit code (default 0)
    FAKEJOB_IGNORE_TERM   "1": ignore SIGTERM (a job that hangs hard; needs SIGKILL)
    FAKEJOB_HANG_STEMS    comma-separated stemIds that sleep for an hour instead
    FAKEJOB_SPAM          print one line of this many bytes first (a runaway log line)
    FAKEJOB_RECORD        append "job <stemId> <pid> <pid>" (and "child …" lines) to this file,
                          and "body <stemId> <sha256 of the body>"
    FAKEJOB_CHILD         "1": start a process of its own that sleeps for an hour (a job's
                          helper process, which must not outlive the job's runner either)

Like the real job it reads the message from ``--message-file PATH`` or $WAVEFLOW_MESSAGE. It
writes a file into $TMPDIR (so tests can check scratch is removed) and a summary line to
$WAVEFLOW_SUMMARY_FILE like the real job does.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def read_message(argv: list[str]) -> str:
    if "--message-file" in argv:
        return Path(argv[argv.index("--message-file") + 1]).read_text(encoding="utf-8")
    return os.environ["WAVEFLOW_MESSAGE"]


def main() -> int:
    raw = read_message(sys.argv[1:])
    body = json.loads(raw)
    stem = (body.get("kwargs") or body).get("stemId", "?")
    log = os.environ.get("FAKEJOB_LOG")

    def note(what: str) -> None:
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{what} {stem}\n")

    def record(line: str) -> None:
        if os.environ.get("FAKEJOB_RECORD"):
            with open(os.environ["FAKEJOB_RECORD"], "a", encoding="utf-8") as f:
                f.write(line + "\n")

    record(f"job {stem} {os.getpid()} {os.getpid()}")
    record(f"body {stem} {hashlib.sha256(raw.encode('utf-8')).hexdigest()}")
    if os.environ.get("FAKEJOB_CHILD") == "1":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)",
                                  "fakejob-child"])
        record(f"child {stem} {child.pid} {os.getpid()}")

    if os.environ.get("FAKEJOB_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(os.environ["TMPDIR"], "scratch.bin").write_bytes(b"\0" * 4096)
    note("start")
    spam = int(os.environ.get("FAKEJOB_SPAM", "0"))
    if spam:
        sys.stdout.write("x" * spam + "\n")
        sys.stdout.flush()
    print(json.dumps({"level": "INFO", "message": f"fake job for {stem}"}), flush=True)
    hang = stem in os.environ.get("FAKEJOB_HANG_STEMS", "").split(",")
    time.sleep(3600 if hang else float(os.environ.get("FAKEJOB_SLEEP", "0")))
    code = int(os.environ.get("FAKEJOB_EXIT", "0"))
    outcome = {0: "succeeded", 3: "rejected"}.get(code, "failed")
    summary = os.environ.get("WAVEFLOW_SUMMARY_FILE")
    if summary:
        Path(summary).write_text(json.dumps({
            "task": body.get("task"), "outcome": outcome, "stem_id": stem,
            "error_code": None if code == 0 else "INTERNAL_ERROR", "bytes": 4096,
            "audio_seconds": 1.5}) + "\n")
    note("done")
    return code


if __name__ == "__main__":
    sys.exit(main())
