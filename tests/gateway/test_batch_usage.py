"""`ResultsUsage`: a batch's usage summed per model from its JSON Lines, however the body is cut into chunks."""

from __future__ import annotations

import orjson
import pytest

from claude_gateway import batch_usage
from claude_gateway.batch_usage import ResultsUsage
from claude_gateway.usage import Usage


def succeeded(custom_id: str, model: str, **usage: int) -> bytes:
    message = {"id": "msg_1", "type": "message", "model": model, "content": [], "usage": usage}
    return orjson.dumps({"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}) + b"\n"


BODY = (
    succeeded("a", "claude-sonnet-4-6", input_tokens=10, output_tokens=5, cache_read_input_tokens=3)
    + orjson.dumps({"custom_id": "b", "result": {"type": "errored", "error": {"type": "error"}}})
    + b"\n"
    + succeeded("c", "claude-haiku-4-5", input_tokens=7, output_tokens=2)
    + orjson.dumps({"custom_id": "d", "result": {"type": "canceled"}})
    + b"\n"
    + succeeded("e", "claude-sonnet-4-6", input_tokens=1, output_tokens=4, cache_creation_input_tokens=6)
)
EXPECTED = {
    "claude-sonnet-4-6": Usage(input=11, output=9, cache_read=3, cache_write=6),
    "claude-haiku-4-5": Usage(input=7, output=2),
}


@pytest.mark.parametrize("piece", [1, 2, 7, 64, len(BODY)])
def test_sums_per_model_however_the_body_is_cut(piece: int) -> None:
    usage = ResultsUsage()
    for start in range(0, len(BODY), piece):
        usage.feed(BODY[start : start + piece])
    usage.finish()
    assert {model: (u.input, u.output, u.cache_read, u.cache_write) for model, u in usage.by_model.items()} == {
        model: (u.input, u.output, u.cache_read, u.cache_write) for model, u in EXPECTED.items()
    }
    assert usage.lines == 5
    assert usage.skipped == 0
    assert usage.total.output == 11


def test_a_last_line_without_its_newline_is_read() -> None:
    usage = ResultsUsage()
    usage.feed(succeeded("a", "claude-sonnet-4-6", output_tokens=3).rstrip(b"\n"))
    assert usage.by_model == {}
    usage.finish()
    assert usage.by_model["claude-sonnet-4-6"].output == 3


def test_an_oversized_line_is_skipped_not_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_usage, "MAX_RESULT_LINE_BYTES", 100)
    usage = ResultsUsage()
    huge = succeeded("a", "claude-sonnet-4-6", output_tokens=1000)[:-1] + b" " * 500 + b"\n"
    for start in range(0, len(huge), 30):
        usage.feed(huge[start : start + 30])
        assert len(usage._partial) <= 100
    usage.feed(succeeded("b", "claude-sonnet-4-6", output_tokens=2))
    usage.finish()
    assert usage.skipped == 1
    assert usage.by_model["claude-sonnet-4-6"].output == 2


def test_lines_that_are_not_results_are_skipped() -> None:
    usage = ResultsUsage()
    usage.feed(b"not json\n[1, 2]\n\n" + succeeded("a", "claude-sonnet-4-6", output_tokens=1))
    usage.finish()
    assert usage.skipped == 1
    assert usage.by_model["claude-sonnet-4-6"].output == 1
