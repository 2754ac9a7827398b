"""Incremental detokenization with stop strings."""

from __future__ import annotations

from relaygraph.llm.stops import TextAssembler


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> str:
    return "".join(assembler.feed(p) for p in pieces) + assembler.finish()


def test_without_stops_everything_is_emitted() -> None:
    a = TextAssembler()
    assert feed_all(a, [b"Hel", b"lo"]) == "Hello"
    assert not a.stopped


def test_stop_string_spanning_tokens_is_cut_and_never_emitted() -> None:
    a = TextAssembler(stop=["\nQ:"])
    emitted = [a.feed(p) for p in [b"Paris", b".\n", b"Q", b": next"]]
    assert emitted == ["Paris", ".", "", ""]
    assert a.stopped and a.text == "Paris."


def test_held_back_prefix_is_released_when_it_does_not_complete() -> None:
    a = TextAssembler(stop=["END"])
    assert a.feed(b"the EN") == "the "
    assert a.feed(b"D") == ""
    assert a.stopped and a.text == "the "
    b = TextAssembler(stop=["END"])
    assert b.feed(b"the EN") == "the "
    assert b.feed(b"gine") == "ENgine"


def test_earliest_of_several_stops_wins() -> None:
    a = TextAssembler(stop=["c", "ab"])
    feed_all(a, [b"xxabc"])
    assert a.text == "xx"


def test_multibyte_character_split_across_tokens() -> None:
    word = "café".encode()
    a = TextAssembler()
    assert feed_all(a, [word[:4], word[4:]]) == "café"


def test_generation_ending_mid_prefix_flushes_the_held_text() -> None:
    a = TextAssembler(stop=["STOP"])
    assert a.feed(b"ST") == ""
    assert a.finish() == "ST"
    assert a.text == "ST"
