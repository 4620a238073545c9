"""Which characters a key may hold (issue 8, item 8; docs/INTEGRATION.md §1).

Control characters are refused whatever block they come from — C0, DEL and C1 (U+0085 is a line
break to Python, U+009B a terminal escape) — and so are the Unicode line separators and
noncharacters; the invisible format characters real filenames use are kept. A lone surrogate
anywhere in the body is not text at all.
"""

from __future__ import annotations

import json

import pytest

from waveflow_job.contract import ErrorCode, InvalidMessage, parse_message


def hash_body(key: str, stem_id: str = "stem-1") -> str:
    return json.dumps({"task": "app.tasks.generate_hash_and_webhook", "id": "hash-stem-1-1",
                       "kwargs": {"userId": "u", "trackId": "t", "stemId": stem_id,
                                  "filepath": key}})


@pytest.mark.parametrize("char", ["\x00", "\n", "\x1b", "\x7f", "\x80", "\x85", "\x9b", "\x9f",
                                  "\u2028", "\u2029", "\ufdd0", "\ufffe", "\uffff"])
def test_control_characters_separators_and_noncharacters_are_refused(char: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(hash_body(f"audio/a{char}b.wav"))
    assert caught.value.code is ErrorCode.KEY_INVALID
    assert f"U+{ord(char):04X}" in caught.value.problem
    assert caught.value.stem_id == "stem-1"  # a FAILURE can still be sent for the stem


@pytest.mark.parametrize("key", [
    "audio/\ufeffbom.wav",  # a BOM some editors put in front of a name
    "audio/\U0001f468\u200d\U0001f469\u200d\U0001f467.wav",  # an emoji ZWJ sequence
    "audio/\u0645\u06cc\u200c\u062e\u0648\u0627\u0645.wav",  # Persian with ZWNJ
    "audio/\u200f\u05e9\u05d9\u05e8.wav",  # Hebrew with a right-to-left mark
    "audio/사용자 업로드/첫 번째 곡 #1 + 믹스 & 마스터.wav",
    "audio/\u00a0nbsp and \u00a9.wav",  # U+00A0 is the first character after C1
])
def test_text_real_filenames_use_is_kept(key: str) -> None:
    assert parse_message(hash_body(key)).filepath == key


@pytest.mark.parametrize("body", [
    '{"task": "generate_hash_and_webhook", "userId": "u", "trackId": "t", "stemId": "s\\ud800",'
    ' "filepath": "a.wav"}',
    '{"task": "generate_hash_and_webhook", "userId": "u", "trackId": "t", "stemId": "s",'
    ' "filepath": "a\\udfff.wav"}',
    '{"task": "generate_hash_and_webhook", "userId": "u", "trackId": "t", "stemId": "s",'
    ' "filepath": "a.wav", "extra": [{"\\ud83d": 1}]}',
])
def test_a_lone_surrogate_anywhere_is_not_text(body: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(body)
    assert caught.value.code is ErrorCode.MESSAGE_INVALID
    assert caught.value.field == "body"


def test_an_escaped_surrogate_pair_is_one_real_character() -> None:
    body = json.dumps({"task": "generate_hash_and_webhook", "userId": "u", "trackId": "t",
                       "stemId": "s", "filepath": "audio/\U0001f3b5.wav"}, ensure_ascii=True)
    assert "\\ud83c" in body
    assert parse_message(body).filepath == "audio/\U0001f3b5.wav"
