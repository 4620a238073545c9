"""A stand-in for ``waveflow-job run`` (WAVEFLOW_JOB_COMMAND), steered by environment variables.

    FAKEJOB_LOG           append "start <stemId>" / "done <stemId>" lines to this file
    FAKEJOB_SLEEP         seconds to sleep before exiting (default 0)
    FAKEJOB_EXIT          exit code (default 0)
    FAKEJOB_IGNORE_TERM   "1": ignore SIGTERM (a job that hangs hard; needs SIGKILL)
    FAKEJOB_HANG_STEMS    comma-separated stemIds that sleep for an hour instead
    FAKEJOB_SPAM          print one line of this many bytes first (a runaway log line)

It writes a file into $TMPDIR (so tests can check scratch is removed) and a summary line to
$WAVEFLOW_SUMMARY_FILE like the real job does.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    body = json.loads(os.environ["WAVEFLOW_MESSAGE"])
    stem = (body.get("kwargs") or body).get("stemId", "?")
    log = os.environ.get("FAKEJOB_LOG")

    def note(what: str) -> None:
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{what} {stem}\n")

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
