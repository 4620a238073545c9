"""The real ``waveflow-job run``, in this process, with a record of its life for the tests.

Given as ``WAVEFLOW_JOB_COMMAND`` (``python recordingjob.py run``), it appends one JSON line to
``RECORDING_JOB_LOG`` when it starts and one when it ends (pid, the body's id, exit code), so
the reliability tests can count job processes per message and how many ran at once — across
runner restarts, since the file outlives any runner. Two gates make a test stop
the world at an exact step:

    RECORDING_JOB_GATE         a directory: before working, wait until ``<dir>/<body id>.go``
                               exists when ``<dir>/<body id>.wait`` does (a job held while
                               running)
    RECORDING_JOB_HOLD_AFTER   a directory: after the job has finished (its webhooks sent),
                               stay alive while ``<dir>/<body id>.hold`` exists (the runner
                               has not yet seen the exit)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def _raw_body() -> str:
    """The body as ``waveflow-job run`` reads it: ``--message-file`` (what the runner passes),
    else $WAVEFLOW_MESSAGE."""
    argv = sys.argv[1:]
    if "--message-file" in argv[:-1]:
        try:
            return Path(argv[argv.index("--message-file") + 1]).read_text(encoding="utf-8")
        except OSError:
            return ""
    return os.environ.get("WAVEFLOW_MESSAGE", "")


def _body_id() -> str:
    try:
        body = json.loads(_raw_body())
    except ValueError:
        return "?"
    return str(body.get("id", "?")) if isinstance(body, dict) else "?"


def _record(event: str, **fields: Any) -> None:
    path = os.environ.get("RECORDING_JOB_LOG")
    if not path:
        return
    line = json.dumps({"event": event, "pid": os.getpid(), "t": time.time(),
                       "body_id": _body_id(), **fields})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _wait_while(predicate: Any) -> None:
    while predicate():
        time.sleep(0.05)


def main() -> int:
    body_id = _body_id()

    def on_term(signum: int, _: Any) -> None:
        _record("end", code=-signum, how="signal")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    _record("start")
    gate = os.environ.get("RECORDING_JOB_GATE")
    if gate:
        wait, go = Path(gate, f"{body_id}.wait"), Path(gate, f"{body_id}.go")
        _wait_while(lambda: wait.exists() and not go.exists())
    from waveflow_job import cli

    code = cli.main(sys.argv[1:])
    _record("end", code=code, how="exit")
    hold = os.environ.get("RECORDING_JOB_HOLD_AFTER")
    if hold:
        marker = Path(hold, f"{body_id}.hold")
        if marker.exists():
            _record("holding")
            _wait_while(marker.exists)
    return code


if __name__ == "__main__":
    sys.exit(main())
