"""The ledger: every message the runner holds, each in one explicit state. Pure: no asyncio, no
I/O; time comes from an injected clock, so its tests run in milliseconds.

A valid message goes ``RECEIVED → LAUNCHED → FINISHED`` and then, by its outcome:

- succeeded / rejected: ``FINISHED → DELETED``;
- failed: ``FINISHED → NOTIFIED → DEAD_LETTERED → DELETED`` (a FAILURE completion, then a copy
  to the dead-letter queue, then the delete).

An invalid message never launches: ``RECEIVED → NOTIFIED → DEAD_LETTERED → DELETED``. A message
the runner hands back (a launch refused for now, a stop) leaves as ``RECEIVED/LAUNCHED →
RETURNED``. Transitions are methods; an illegal one raises :class:`IllegalTransition`.

An entry may exist without a current receive (``entry.delivery is None``):

- a job an earlier run left running (an *orphan*: it takes an in-flight slot until its message
  comes back, at most one visibility timeout plus a minute);
- a result that arrived while its message was not held (restart, a stale receipt): kept, with
  how far settling got, until the message is redelivered and then settled once.

Deleted jobs are remembered (bounded) so an at-least-once duplicate is only deleted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from waveflow_job.contract import InvalidMessage, Outcome, StemMessage, parse_message
from waveflow_operator.runner.protocol import (
    Delivery,
    JobRequest,
    JobResult,
    invalid_key_for,
    job_name_for,
)
from waveflow_operator.runner.spec import SQS_MAX_VISIBILITY_SECONDS

__all__ = ["Duplicate", "Entry", "IllegalTransition", "Launch", "Ledger", "Settle", "State",
           "Step"]

#: Deleted jobs remembered, so an at-least-once duplicate is only deleted.
SETTLED_MEMORY = 20_000
#: Stop extending a receipt this long before SQS's 12-hour cap.
CAP_MARGIN_SECONDS = 5
#: A settle step that failed (SQS down) is tried again after this long.
SETTLE_RETRY_SECONDS = 2.0


class State(StrEnum):
    RECEIVED = "received"
    LAUNCHED = "launched"
    FINISHED = "finished"
    NOTIFIED = "notified"
    DEAD_LETTERED = "dead-lettered"
    DELETED = "deleted"
    RETURNED = "returned"


class Step(StrEnum):
    """The next settle step of an entry (settle.py performs it)."""

    NOTIFY = "notify"
    DEAD_LETTER = "dead-letter"
    DELETE = "delete"


class IllegalTransition(RuntimeError):
    """A transition the state machine does not allow (a bug in the caller)."""


@dataclass
class Entry:
    """One message the runner holds or still owes a settlement."""

    #: The job name, or ``invalid-<sqs message id>`` (:func:`invalid_key_for`) for a message
    #: that never becomes a job.
    key: str
    state: State
    #: The newest receive; None while the message is not held (orphan, kept result).
    delivery: Delivery | None = None
    message: StemMessage | None = None
    invalid: InvalidMessage | None = None
    result: JobResult | None = None
    #: Whether the backend accepted our FAILURE completion: "yes", "no", "no stemId".
    backend_told: str = "unknown"
    received_at: float = 0.0
    visible_until: float = 0.0
    launched_at: float | None = None
    #: An orphan stops taking a slot at this time.
    forget_at: float = 0.0
    #: A settle attempt is under way (no second one may start).
    settling: bool = False
    #: After a failed settle attempt: when to try again.
    retry_at: float | None = None
    warned_cap: bool = False

    @property
    def held(self) -> bool:
        return self.delivery is not None

    def next_step(self) -> Step | None:
        """What settling this entry needs next; None while it cannot settle yet."""
        failed = self.invalid is not None or (
            self.result is not None and self.result.outcome is Outcome.FAILED)
        if self.state is State.RECEIVED and self.invalid is not None:
            return Step.NOTIFY
        if self.state is State.FINISHED:
            return Step.NOTIFY if failed else Step.DELETE
        if self.state is State.NOTIFIED:
            return Step.DEAD_LETTER
        if self.state is State.DEAD_LETTERED:
            return Step.DELETE
        return None

    def request(self) -> JobRequest:
        assert self.delivery is not None and self.message is not None
        return JobRequest(self.key, self.message, self.delivery)


@dataclass(frozen=True)
class Launch:
    """``receive`` decided: launch (or adopt) this entry's job."""

    entry: Entry


@dataclass(frozen=True)
class Settle:
    """``receive`` decided: settle this entry now (invalid, or its result is known)."""

    entry: Entry


@dataclass(frozen=True)
class Duplicate:
    """``receive`` decided: already settled by this process; delete this receipt only."""

    delivery: Delivery
    outcome: Outcome


Decision = Launch | Settle | Duplicate | None


class Ledger:
    """Every held message of one queue, and the rules that move it."""

    def __init__(self, visibility_timeout_seconds: int, *,
                 clock: Callable[[], float], settled_memory: int = SETTLED_MEMORY) -> None:
        self.visibility_timeout = visibility_timeout_seconds
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._settled: OrderedDict[str, Outcome] = OrderedDict()
        self._settled_memory = settled_memory

    # ------------------------------------------------------------------ views

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def held(self) -> list[Entry]:
        return [e for e in self._entries.values() if e.held]

    @property
    def in_flight(self) -> int:
        """Held messages plus orphans still within their grace (they take a slot too)."""
        now = self._clock()
        return sum(1 for e in self._entries.values()
                   if e.held or (e.state is State.LAUNCHED and e.forget_at > now))

    def settled(self, key: str) -> Outcome | None:
        return self._settled.get(key)

    # ------------------------------------------------------------------ arrivals

    def recover(self, running: Iterable[str], finished: Mapping[str, JobResult]) -> None:
        """Jobs an earlier run left: running ones become orphans, finished ones kept results."""
        forget_at = self._clock() + self.visibility_timeout + 60
        for name in running:
            self._entries.setdefault(name, Entry(name, State.LAUNCHED, forget_at=forget_at))
        for name, result in finished.items():
            self._entries[name] = Entry(name, _finished_state(result), result=result)

    def receive(self, delivery: Delivery) -> Decision:
        """Route one receive: a new message, a redelivery, or a duplicate of a settled one."""
        now = self._clock()
        try:
            message = parse_message(delivery.body)
        except InvalidMessage as invalid:
            key = invalid_key_for(delivery.sqs_message_id)
            if key in self._settled:
                return Duplicate(delivery, self._settled[key])
            if self._refresh(key, delivery, now):
                return None
            # Kept across a stale receipt, or recovered from a settling note of an earlier run:
            # how far its settling got is not forgotten (its dead letter is not sent twice).
            entry = self._entries.setdefault(key, Entry(key, State.RECEIVED))
            entry.invalid = invalid
            self._hold(entry, delivery, now)
            return Settle(entry)
        name = job_name_for(message.task, delivery.sqs_message_id)
        if name in self._settled:
            return Duplicate(delivery, self._settled[name])
        if self._refresh(name, delivery, now):
            return None
        entry = self._entries.setdefault(name, Entry(name, State.RECEIVED))
        if entry.state is State.LAUNCHED:
            entry.state = State.RECEIVED  # an orphan's message is back: adopt its job
        entry.message = message
        self._hold(entry, delivery, now)
        if entry.next_step() is not None:
            return Settle(entry)  # it finished while its message was not held
        return Launch(entry)

    def _refresh(self, key: str, delivery: Delivery, now: float) -> bool:
        """A redelivery of a held message (a missed heartbeat): the newest receipt counts."""
        entry = self._entries.get(key)
        if entry is None or not entry.held:
            return False
        self._hold(entry, delivery, now)
        return True

    def _hold(self, entry: Entry, delivery: Delivery, now: float) -> None:
        entry.delivery = delivery
        entry.received_at = now
        entry.visible_until = now + self.visibility_timeout

    # ------------------------------------------------------------------ transitions

    def launched(self, key: str) -> Entry:
        entry = self._expect(key, State.RECEIVED)
        entry.state = State.LAUNCHED
        entry.launched_at = self._clock()
        return entry

    def finished(self, result: JobResult) -> Entry | None:
        """A job's final result. Returns the entry when it can settle now (its message is held);
        a result for a message not held is kept until the message comes back."""
        key = result.job_name
        if key in self._settled:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = Entry(key, _finished_state(result), result=result)
            return None
        if entry.state not in (State.RECEIVED, State.LAUNCHED):
            return None  # reported twice: the first result wins
        entry.state, entry.result = _finished_state(result), result
        return entry if entry.held else None

    def notified(self, key: str, told: str) -> None:
        entry = self._entries.get(key)
        if entry is None or entry.next_step() is not Step.NOTIFY:
            raise IllegalTransition(f"{key}: notify in state {entry and entry.state}")
        entry.state, entry.backend_told = State.NOTIFIED, told

    def dead_lettered(self, key: str) -> Entry:
        """The copy is in the dead-letter queue: only the delete is left (``result`` says so
        too, for the note a launcher keeps in case the runner dies before the delete; an
        invalid message gets such a result here, its first)."""
        entry = self._expect(key, State.NOTIFIED)
        entry.state = State.DEAD_LETTERED
        if entry.result is not None:
            entry.result = replace(entry.result, dead_lettered=True)
        elif entry.invalid is not None:  # never a job: the note is all that says how far it got
            entry.result = JobResult(key, Outcome.FAILED, entry.invalid.code.value,
                                     str(entry.invalid), dead_lettered=True)
        return entry

    def deleted(self, key: str) -> Entry:
        """The message is gone from SQS: the entry leaves; a job's outcome is remembered."""
        entry = self._entries.get(key)
        if entry is None or entry.next_step() is not Step.DELETE or not entry.held:
            raise IllegalTransition(f"{key}: delete in state {entry and entry.state}")
        entry.state, entry.settling = State.DELETED, False
        del self._entries[key]
        if entry.result is not None:
            self._settled[key] = entry.result.outcome
            while len(self._settled) > self._settled_memory:
                self._settled.popitem(last=False)
        return entry

    def returned(self, key: str) -> Entry:
        """Handed back to SQS (launch refused for now, or a stop): the entry leaves."""
        entry = self._entries.get(key)
        if entry is None or not entry.held or entry.state not in (State.RECEIVED,
                                                                  State.LAUNCHED):
            raise IllegalTransition(f"{key}: return in state {entry and entry.state}")
        entry.state = State.RETURNED
        del self._entries[key]
        return entry

    # ------------------------------------------------------------------ settling

    def claim(self, key: str) -> Entry | None:
        """Start a settle attempt; None when one is under way or nothing can settle yet."""
        entry = self._entries.get(key)
        if entry is None or entry.settling or not entry.held or entry.next_step() is None:
            return None
        entry.settling, entry.retry_at = True, None
        return entry

    def settle_failed(self, key: str, *, receipt_stale: bool) -> None:
        """A settle step failed. A stale receipt (received again elsewhere, or expired) lets go
        of the message and keeps the progress for its redelivery; else retry soon."""
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.settling = False
        if receipt_stale:
            entry.delivery = None
        else:
            entry.retry_at = self._clock() + SETTLE_RETRY_SECONDS

    def retries_due(self) -> list[str]:
        now = self._clock()
        return [e.key for e in self._entries.values()
                if e.held and not e.settling and e.retry_at is not None and now >= e.retry_at]

    def unsettled(self) -> list[Entry]:
        """Held messages no settle attempt is working on (to hand back on stop)."""
        return [e for e in self._entries.values() if e.held and not e.settling
                and e.state in (State.RECEIVED, State.LAUNCHED)]

    # ------------------------------------------------------------------ heartbeat

    def heartbeats_due(self) -> tuple[dict[str, tuple[str, int]], list[str]]:
        """``({key: (receipt handle, seconds)}, keys that just reached SQS's 12-hour cap)``.

        A held message is extended once half its visibility is used, by one visibility timeout,
        never past SQS's cap on one receipt."""
        now = self._clock()
        timeout = self.visibility_timeout
        due: dict[str, tuple[str, int]] = {}
        capped: list[str] = []
        for entry in self.held():
            assert entry.delivery is not None
            if now < entry.visible_until - timeout / 2:
                continue
            left = SQS_MAX_VISIBILITY_SECONDS - (now - entry.received_at) - CAP_MARGIN_SECONDS
            extend = int(min(timeout, left))
            if extend <= 0:
                if not entry.warned_cap:
                    entry.warned_cap = True
                    capped.append(entry.key)
                continue
            due[entry.key] = (entry.delivery.receipt_handle, extend)
        return due, capped

    def extended(self, key: str, seconds: int, since: float) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.held:
            entry.visible_until = since + seconds

    def now(self) -> float:
        return self._clock()

    # ------------------------------------------------------------------ internals

    def _expect(self, key: str, state: State) -> Entry:
        entry = self._entries.get(key)
        if entry is None or entry.state is not state:
            raise IllegalTransition(f"{key}: expected {state}, found {entry and entry.state}")
        return entry


def _finished_state(result: JobResult) -> State:
    """A result a launcher kept from a crashed run may say its dead letter was already sent:
    then only the delete is left, never a second copy."""
    return State.DEAD_LETTERED if result.dead_lettered else State.FINISHED
