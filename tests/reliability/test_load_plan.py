"""The load generator meets the size asked, exactly, with the mix it promises (no runner)."""

from __future__ import annotations

from collections import Counter

import pytest

from reliability.load import MESSAGES_PER, MIX, QUICK, LoadSettings, plan, top_up


def _messages(uploads: list) -> int:  # type: ignore[type-arg]
    return sum(MESSAGES_PER[u.kind] for u in uploads)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 150, 151, 999, 1000, 1001])
@pytest.mark.parametrize("seed", [0, 8, 31])
def test_a_plan_adds_up_to_exactly_the_size_asked(size: int, seed: int) -> None:
    assert _messages(plan(LoadSettings(size, seed, 0))) == size


def test_a_plan_is_the_same_for_the_same_seed_and_differs_for_another() -> None:
    first, again = plan(LoadSettings(300, 5, 0)), plan(LoadSettings(300, 5, 0))
    assert [(u.kind, u.key, u.target) for u in first] == [(u.kind, u.key, u.target) for u in again]
    other = plan(LoadSettings(300, 6, 0))
    assert [u.kind for u in first] != [u.kind for u in other]


def test_the_mix_follows_its_weights_and_waits_only_on_earlier_fresh_uploads() -> None:
    uploads = plan(LoadSettings(1000, 8, 0))
    kinds = Counter(u.kind for u in uploads)
    assert set(kinds) == set(MIX)
    share = kinds["fresh"] / len(uploads)
    assert abs(share - MIX["fresh"] / sum(MIX.values())) < 0.08
    fresh_before: set[str] = set()
    for upload in uploads:
        if upload.kind in ("duplicate", "resent", "overwrite"):
            assert upload.target in fresh_before
        else:
            assert upload.target is None
        if upload.kind == "fresh":
            fresh_before.add(upload.stem)
    assert len({u.stem for u in uploads if u.kind != "resent"}) == \
        sum(1 for u in uploads if u.kind != "resent")


def test_a_top_up_is_one_message_each_and_collides_with_nothing_planned() -> None:
    uploads = plan(LoadSettings(200, 3, 0))
    extra = top_up(17, seed=3, first=len(uploads))
    assert len(extra) == 17 and {u.kind for u in extra} <= set(QUICK)
    assert _messages(extra) == 17
    assert not {u.key for u in extra} & {u.key for u in uploads}
    assert not {u.stem for u in extra} & {u.stem for u in uploads}
    assert top_up(0, seed=3, first=5) == []
