"""`DuplicateFields`: a watched name twice at the top level of a JSON body, however it is spelled, and nothing else."""

from __future__ import annotations

import pytest

from claude_gateway.duplicate_fields import DuplicateFields

WATCHED = DuplicateFields(("model", "max_tokens", "stream", "tools", "metadata"))


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"model":"a","max_tokens":1}', None),
        (b'{"model":"a","model":"b"}', "model"),
        (b'{"model" : "a" , "max_tokens":1, "model"\n:"b"}', "model"),
        (b'{"max_tokens":1,"stream":true,"max_tokens":2}', "max_tokens"),
        # Escaped spellings decode to the same name.
        (b'{"model":"a","\\u006dodel":"b"}', "model"),
        (b'{"\\u006Dodel":"a","model":"b"}', "model"),
        (b'{"model":"a","mode\\u006c":"b"}', "model"),
        (b'{"stream":true,"\\u0073\\u0074\\u0072\\u0065\\u0061\\u006d":false}', "stream"),
        # Nested objects may repeat any name; a name inside a string is text.
        (b'{"model":"a","tools":[{"input_schema":{"model":{},"stream":{}}}],"metadata":{"model":1}}', None),
        (b'{"model":"a","messages":[{"content":"say \\"model\\" or \\"model\\""}]}', None),
        (b'{"model":"a","messages":[{"content":"model"},{"content":"model"}]}', None),
        (b'{"model":"a","x":{"model":"b","model":"c"}}', None),
        # An unwatched name twice is not this check's business.
        (b'{"model":"a","temperature":1,"temperature":0}', None),
        # A backslash in text before `u006d` is not an escape of a letter.
        (b'{"model":"a","messages":[{"content":"C:\\\\u006dodel"}]}', None),
        # Control characters escaped (Claude Code's tool output) leave the fast path alone.
        (b'{"model":"a","messages":[{"content":"\\u001b[31mred"}]}', None),
    ],
)
def test_finds_a_watched_name_twice_at_the_top_level(body: bytes, found: str | None) -> None:
    assert WATCHED.find(body) == found
