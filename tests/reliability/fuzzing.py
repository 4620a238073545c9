"""Shared settings of the hostile-input fuzzers: how many examples, and where figures go.

``make test`` runs a quick, derandomised size (the same inputs every run: a red test is
reproducible). ``WAVEFLOW_FUZZ_EXAMPLES=N`` (``make soak``) runs N examples per fuzzer with
fresh randomness. ``WAVEFLOW_FUZZ_REPORT=path`` appends each fuzzer's figures (inputs tried,
outcomes by error code, peak memory, slowest input) as one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, settings

LARGE = int(os.environ.get("WAVEFLOW_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(quick_examples: int) -> settings:
    """Hypothesis settings: ``quick_examples`` derandomised, or the large size if asked for."""
    return settings(
        max_examples=LARGE or quick_examples,
        derandomize=not LARGE,
        database=None,  # nothing written to the working tree
        deadline=None,  # a shared 2-core machine: hangs are caught by the fuzzers' own deadlines
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much,
                               HealthCheck.function_scoped_fixture],
        print_blob=True,
    )


def report(name: str, outcomes: Counter[str], **figures: Any) -> None:
    """Print the figures (seen with ``-s``) and append them to $WAVEFLOW_FUZZ_REPORT."""
    line = {"fuzzer": name, "inputs": sum(outcomes.values()),
            "outcomes": dict(outcomes.most_common()), **figures}
    print(f"\n{json.dumps(line)}", file=sys.stderr)
    path = os.environ.get("WAVEFLOW_FUZZ_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
