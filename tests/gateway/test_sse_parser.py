"""`SSEParser` on Anthropic's recorded streams, however the bytes are cut into chunks, and on the rest of the SSE
syntax (CRLF, multi-line data, comments, fields it ignores)."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from claude_gateway.upstream.sse import MAX_SSE_EVENT_BYTES, SSEEvent, SSEEventTooLarge, SSEParser

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sse"


def parse(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    parser = SSEParser()
    return [(event.event, event.data) for chunk in chunks for event in parser.feed(chunk)]


def cut(raw: bytes, rng: random.Random) -> list[bytes]:
    points = sorted(rng.sample(range(1, len(raw)), k=min(len(raw) - 1, rng.randint(1, 40))))
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@pytest.mark.parametrize("fixture", sorted(path.name for path in FIXTURES.glob("*.txt")))
def test_a_recorded_stream_parses_the_same_however_it_is_cut(fixture: str) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    whole = parse([raw])
    assert whole, "no events"
    for name, data in whole:
        assert orjson.loads(data)["type"] == name  # Anthropic names each event after its data's type
    rng = random.Random(fixture)
    for _ in range(50):
        assert parse(cut(raw, rng)) == whole
    assert parse([bytes([byte]) for byte in raw]) == whole


def test_the_rest_of_the_syntax() -> None:
    stream = (
        b": a comment\r\n\r\n"
        b"event: a\r\ndata: 1\r\n\r\n"
        b"data: first\ndata: second\n\n"
        b"id: 7\nevent:b\ndata:{}\nretry: 10\n\n"
        b"event: no-data\n\n"
        b"event: unfinished\ndata: x"
    )
    assert parse([stream]) == [("a", b"1"), ("message", b"first\nsecond"), ("b", b"{}")]


def test_an_event_decodes_its_json() -> None:
    assert SSEEvent("message_delta", b'{"usage": {"output_tokens": 5}}').json() == {"usage": {"output_tokens": 5}}


def test_an_event_just_under_the_bound_in_small_pieces_parses_in_linear_time() -> None:
    """8 MiB in 1 KiB pieces: a parser that rebuilt its buffer on every piece would copy 32 GiB here (and not
    finish within the test's timeout); this one joins the pieces once."""
    payload = b"a" * (MAX_SSE_EVENT_BYTES - 64)
    raw = b"event: big\ndata: " + payload + b"\n\nevent: next\ndata: {}\n\n"
    parser = SSEParser()
    events = []
    for start in range(0, len(raw), 1024):
        events.extend(parser.feed(raw[start : start + 1024]))
    assert [(event.event, len(event.data)) for event in events] == [("big", len(payload)), ("next", 2)]


def test_a_crlf_split_across_pieces_still_ends_an_event() -> None:
    parser = SSEParser()
    pieces = [b"event: a\r", b"\ndata: 1\r\n\r", b"\n", b"data: 2\r\n", b"\r\n"]
    events = [event for piece in pieces for event in parser.feed(piece)]
    assert [(event.event, event.data) for event in events] == [("a", b"1"), ("message", b"2")]


def parse_with(parser: SSEParser, pieces: list[bytes]) -> None:
    for piece in pieces:
        parser.feed(piece)


def test_an_event_past_the_bound_is_refused_however_it_is_cut() -> None:
    for piece in (1024 * 1024, 64 * 1024):
        parser = SSEParser()
        raw = b"event: huge\ndata: " + b"a" * (2 * MAX_SSE_EVENT_BYTES)
        pieces = [raw[start : start + piece] for start in range(0, len(raw), piece)]
        with pytest.raises(SSEEventTooLarge):
            parse_with(parser, pieces)


def test_it_tells_whether_an_event_is_unfinished() -> None:
    parser = SSEParser()
    parser.feed(b"event: a\ndata: 1\n\nevent: b\nda")
    assert parser.unfinished
    parser.feed(b"ta: 2\n\n")
    assert not parser.unfinished
