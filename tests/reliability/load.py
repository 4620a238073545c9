"""The load run: a seeded mix of uploads through the rig, faults at seeded-random points,
optional SIGKILLs of the runner, and a report of the figures.

The mix (shares of uploads; each upload is one or two messages):

- ``fresh``      new audio: hash → analysis → completed
- ``duplicate``  the bytes of a completed stem, same user and track, another key: hash →
                 duplicate deleted
- ``resent``     a completed stem's upload announced again: hash → delete refused silently
- ``overwrite``  another stem PUTs the same bytes to a completed stem's key (the PUT wipes its
                 tags): hash → "duplicate" → the delete is refused, the original stays
- ``corrupt``    garbage behind a RIFF header: hash → analysis rejected (AUDIO_CORRUPT)
- ``missing``    announced, never PUT: hash rejected (OBJECT_NOT_FOUND)
- ``s3_down``    S3 answers 500 for this key forever: retried, dead-lettered
- ``poison``     a message with a path-traversal key sent straight to SQS: dead-lettered

``WAVEFLOW_LOAD_MESSAGES`` picks the size, ``WAVEFLOW_LOAD_SEED`` the seed,
``WAVEFLOW_LOAD_KILLS`` how many SIGKILLs of the runner (spread over the run).

The size is met exactly: ``plan`` adds up to it (the last message, if one is left, goes to a
one-message kind), and since the backend decides the follow-ups (a duplicate whose original
failed is never sent, a hash that was dead-lettered gets no analysis) the run ends with
``top_up``: one-message uploads until the messages sent reach the size.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from reliability.audio import corrupt, wav
from support.faultproxy import Request, Rule, seeded_chance
from support.rig import Rig, Verdict

MIX = {"fresh": 50, "duplicate": 12, "resent": 6, "overwrite": 4, "corrupt": 10, "missing": 6,
       "s3_down": 6, "poison": 6}
MESSAGES_PER = {"fresh": 2, "duplicate": 2, "resent": 2, "overwrite": 2, "corrupt": 2,
                "missing": 1, "s3_down": 1, "poison": 1}
#: Kinds that are always exactly one message, whatever the faults: they fill what is left.
SINGLE = [kind for kind, count in MESSAGES_PER.items() if count == 1]
#: The one-message kinds that settle at once (no retries): a top-up at the end stays short.
QUICK = ["missing", "poison"]


@dataclass
class Upload:
    kind: str
    stem: str
    key: str
    user: str
    track: str
    seed: int
    #: For duplicate, resent and overwrite: the stem whose completion it waits for.
    target: str | None = None


@dataclass
class LoadSettings:
    messages: int
    seed: int
    kills: int

    @classmethod
    def from_env(cls, *, messages: int, kills: int) -> LoadSettings:
        return cls(int(os.environ.get("WAVEFLOW_LOAD_MESSAGES", messages)),
                   int(os.environ.get("WAVEFLOW_LOAD_SEED", 8)),
                   int(os.environ.get("WAVEFLOW_LOAD_KILLS", kills)))


def plan(settings: LoadSettings) -> list[Upload]:
    """Uploads whose expected messages add up to exactly ``settings.messages``."""
    generator = random.Random(settings.seed)
    kinds, weights = list(MIX), list(MIX.values())
    uploads: list[Upload] = []
    fresh: list[Upload] = []
    total = 0
    while total < settings.messages:
        left = settings.messages - total
        kind = generator.choices(kinds, weights)[0]
        if MESSAGES_PER[kind] > left:
            kind = _single(generator)
        if kind in ("duplicate", "resent", "overwrite") and not fresh:
            kind = "fresh" if left >= MESSAGES_PER["fresh"] else _single(generator)
        n = len(uploads)
        track = f"track-{generator.randrange(12)}"
        upload = Upload(kind, f"stem-{n}", f"audio/{kind}/{n}.wav", "user-1", track, n)
        if kind in ("duplicate", "resent", "overwrite"):
            target = generator.choice(fresh)
            upload.target, upload.track, upload.seed = target.stem, target.track, target.seed
            if kind == "resent":
                upload.stem, upload.key = target.stem, target.key
            if kind == "overwrite":
                upload.key = target.key
        if kind == "fresh":
            fresh.append(upload)
        uploads.append(upload)
        total += MESSAGES_PER[kind]
    return uploads


def top_up(count: int, *, seed: int, first: int) -> list[Upload]:
    """``count`` one-message uploads (numbered from ``first``) to make up a shortfall."""
    generator = random.Random(seed * 7919 + first)
    uploads = []
    for n in range(first, first + count):
        kind = generator.choice(QUICK)
        uploads.append(Upload(kind, f"stem-{n}", f"audio/{kind}/{n}.wav", "user-1",
                              f"track-{generator.randrange(12)}", n))
    return uploads


def _single(generator: random.Random) -> str:
    return generator.choices(SINGLE, [MIX[kind] for kind in SINGLE])[0]


@dataclass
class Faults:
    """Seeded-random faults on the proxies; counts what fired, by kind."""

    injected: Counter[str] = field(default_factory=Counter)

    def count(self, kind: str):  # type: ignore[no-untyped-def]
        def fired(_: Request) -> None:
            self.injected[kind] += 1
        return fired

    def install(self, rig: Rig, seed: int) -> None:
        def chance(p: float, salt: int):  # type: ignore[no-untyped-def]
            return seeded_chance(seed * 1000 + salt, p)

        def s3(method: str, p: float, salt: int):  # type: ignore[no-untyped-def]
            pick = chance(p, salt)
            return lambda r: r.service == "s3" and r.method == method and \
                r.target.startswith("audio/") and pick(r)

        def sqs(p: float, salt: int):  # type: ignore[no-untyped-def]
            pick = chance(p, salt)
            return lambda r: r.service == "sqs" and r.operation in (
                "ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch",
                "SendMessage", "ChangeMessageVisibility") and pick(r)

        def hooks(p: float, salt: int):  # type: ignore[no-untyped-def]
            pick = chance(p, salt)
            return lambda r: r.service == "webhook" and pick(r)

        proxy, backend = rig.aws_proxy, rig.hooks
        for rule in (
            Rule(s3("GET", 0.03, 1), "answer", status=503, code="SlowDown", times=None,
                 on_fire=self.count("s3 5xx")),
            Rule(s3("HEAD", 0.02, 2), "answer", status=500, code="InternalError", times=None,
                 on_fire=self.count("s3 5xx")),
            Rule(s3("GET", 0.02, 3), "cut", times=None, on_fire=self.count("s3 reset mid-body")),
            Rule(s3("GET", 0.03, 4), "slow", seconds=0.005, times=None,
                 on_fire=self.count("s3 slow body")),
            Rule(sqs(0.03, 5), "answer", status=400, code="ThrottlingException", times=None,
                 on_fire=self.count("sqs throttling")),
        ):
            proxy.add(rule)
        for rule in (
            Rule(hooks(0.03, 6), "answer", status=503, code="Service Unavailable", times=None,
                 on_fire=self.count("webhook 5xx")),
            Rule(hooks(0.01, 7), "answer", status=429, code="Too Many Requests",
                 headers={"Retry-After": "1"}, times=None, on_fire=self.count("webhook 429")),
            Rule(hooks(0.01, 8), "hang", seconds=1.3, times=None,
                 on_fire=self.count("webhook hang past timeout")),
            Rule(hooks(0.01, 9), "answer", status=400, code="Bad Request", times=None,
                 on_fire=self.count("webhook 400")),
        ):
            backend.add(rule)

    def break_key(self, rig: Rig, key: str) -> None:
        """S3 answers 500 for this key, always (a partition of the store, say)."""
        rig.aws_proxy.rules.insert(0, Rule(
            lambda r, k=key: r.service == "s3" and r.target == k, "answer", status=500,
            code="InternalError", times=None, on_fire=self.count("s3 down for a key")))


@dataclass
class LoadRun:
    rig: Rig
    settings: LoadSettings
    faults: Faults = field(default_factory=Faults)
    uploaded: dict[str, str] = field(default_factory=dict)
    sent_uploads: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    #: One-message uploads sent at the end because follow-ups fell short of the size.
    topped_up: Counter[str] = field(default_factory=Counter)
    kill_times: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def run(self, *, pace_per_second: float = 25.0) -> Verdict:
        rig, uploads = self.rig, plan(self.settings)
        self.faults.install(rig, self.settings.seed)
        began = time.monotonic()
        rig.start_runner()
        estimated = max(20.0, len(uploads) / pace_per_second + self.settings.messages * 0.15)
        killer = threading.Thread(target=self._kill_loop, args=(estimated,), daemon=True)
        killer.start()
        waiting: deque[Upload] = deque()

        def ready(upload: Upload) -> bool | None:
            record = rig.backend.stems.get(upload.target or "")
            state = record.status if record else None
            if state == "completed":
                return True
            return None if state in ("failed", "duplicate_deleted") else False

        def send(upload: Upload) -> None:
            self.sent_uploads[upload.kind] += 1
            if upload.kind == "poison":
                rig.send({"task": "app.tasks.process_audio_analysis",
                          "id": f"analysis-{upload.stem}-{int(time.time() * 1000)}", "args": [],
                          "kwargs": {"userId": upload.user, "trackId": upload.track,
                                     "stemId": upload.stem, "filepath": "../../etc/passwd",
                                     "audio_hash": "0" * 64}})
                return
            data: bytes | None = {"fresh": wav, "duplicate": wav, "overwrite": wav,
                                  "corrupt": corrupt}.get(upload.kind, lambda _: None)(upload.seed)
            if upload.kind == "s3_down":
                data = wav(upload.seed)
                self.faults.break_key(rig, upload.key)
            if data is not None:
                self.uploaded.setdefault(upload.key, upload.stem)
            rig.upload(upload.key, data, upload.stem, user=upload.user, track=upload.track)

        for upload in uploads:
            self._retry_waiting(waiting, ready, send)
            if upload.target is not None and ready(upload) is not True:
                waiting.append(upload)
            else:
                send(upload)
            time.sleep(1 / pace_per_second)
        deadline = time.monotonic() + 120 + self.settings.messages * 0.3
        while waiting and time.monotonic() < deadline:
            self._retry_waiting(waiting, ready, send)
            time.sleep(0.2)
        for upload in waiting:
            self.skipped[upload.kind] += 1
        killer.join()
        if rig.runner is None or rig.runner.poll() is not None:
            rig.start_runner()
        rig.wait_settled(timeout=120 + self.settings.messages * 2.0)
        shortfall = self.settings.messages - len(rig.sent_ids())
        if shortfall > 0:
            for upload in top_up(shortfall, seed=self.settings.seed, first=len(uploads)):
                send(upload)
                self.topped_up[upload.kind] += 1
                time.sleep(1 / pace_per_second)
            rig.wait_settled(timeout=120 + shortfall * 2.0)
        self.seconds = time.monotonic() - began
        return rig.verdict(uploaded=self.uploaded)

    def _retry_waiting(self, waiting: deque[Upload], ready: Any, send: Any) -> None:
        for _ in range(len(waiting)):
            upload = waiting.popleft()
            state = ready(upload)
            if state is True:
                send(upload)
            elif state is None:
                self.skipped[upload.kind] += 1
            else:
                waiting.append(upload)

    def _kill_loop(self, estimated: float) -> None:
        """SIGKILL the runner at seeded moments spread over the run; restart it at once."""
        generator = random.Random(self.settings.seed + 99)
        kills = self.settings.kills
        moments = sorted(generator.uniform(0.15, 0.85) * estimated for _ in range(kills))
        began = time.monotonic()
        for moment in moments:
            time.sleep(max(0.0, began + moment - time.monotonic()))
            try:
                self.rig.kill_runner()
                self.faults.injected["runner SIGKILL"] += 1
                self.kill_times.append(round(time.monotonic() - began, 1))
                time.sleep(0.5)
                self.rig.start_runner()
            except Exception as error:  # reported, not swallowed: the test fails on it
                self.errors.append(f"kill at {moment:.1f}s failed: {error!r}")

    def report(self, verdict: Verdict) -> str:
        memory = self.rig.monitor.memory if self.rig.monitor else []
        step = max(1, len(memory) // 12)
        series = [(t, round(r / 2**20, 1)) for t, r in memory[::step]]
        document = {
            **verdict.figures(),
            "seed": self.settings.seed, "seconds": round(self.seconds, 1),
            "uploads": dict(self.sent_uploads), "uploads_skipped": dict(self.skipped),
            "uploads_topped_up": dict(self.topped_up),
            "faults_injected": dict(sorted(self.faults.injected.items())),
            "kills_at_seconds": self.kill_times, "max_in_flight": self.rig.max_in_flight,
            "runner_rss_mib_over_time": series, "problems": verdict.problems[:20],
        }
        return json.dumps(document, indent=1)
