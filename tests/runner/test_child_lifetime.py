"""The child-lifetime record names a process by pid and start time, never by pid alone."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from support.waiting import wait_for
from waveflow_operator.local import child_lifetime


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "fakejob"],
                            start_new_session=True)


def test_ending_an_orphan_spares_a_process_that_got_its_pid_recycled(tmp_path: Path) -> None:
    """The record names a process by pid *and* start time: a stranger with the same pid lives."""
    stranger, orphan = sleeper(), sleeper()
    try:
        wait_for(lambda: child_lifetime.identify(stranger.pid) is not None, 5)
        wait_for(lambda: child_lifetime.identify(orphan.pid) is not None, 5)
        stranger_id = child_lifetime.identify(stranger.pid)
        assert stranger_id is not None
        recycled = child_lifetime.ProcessIdentity(stranger.pid, stranger_id.start_ticks - 1,
                                                  stranger_id.boot_id)
        assert child_lifetime.end_session(recycled) == 0
        orphan_id = child_lifetime.identify(orphan.pid)
        assert orphan_id is not None
        assert child_lifetime.end_session(orphan_id) == 1
        orphan.wait(timeout=5)
        time.sleep(0.2)
        assert stranger.poll() is None  # never signalled
        assert orphan.returncode == -signal.SIGKILL
    finally:
        for process in (stranger, orphan):
            if process.poll() is None:
                process.kill()
                process.wait()
