"""Top-level fields that appear twice in a JSON body: the gateway and Anthropic must never act on different values.

JSON allows a name twice in one object and parsers disagree on which value wins (orjson and Python's json take the
last, others the first, some refuse), so a body with `"max_tokens"` twice could be reserved and policed at one value
and run by Anthropic at the other. A relay route names the fields it acts on (`DuplicateFields`) and refuses a body in
which one of them appears twice at the top level.

The check costs one regular-expression pass over the raw bytes on the hot path: only when a watched name's quoted
form (`"model"`) appears a second time anywhere, or when the body spells a printable ASCII character as a `\\u00XX`
escape (the only way to write a name that the byte search misses, `"\\u006dodel"`; no serialiser does that for
letters), is the body decoded again with every object's pairs kept, to see the top-level names exactly. Claude
Code's bodies take that second step (its Agent tool has a `model` parameter): one more decode, no more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any


class DuplicateFields:
    """The check for one set of watched top-level field names."""

    __slots__ = ("_names", "_suspects")

    def __init__(self, names: Iterable[str]) -> None:
        self._names = frozenset(names)
        alternatives = b"|".join(re.escape(name.encode()) for name in sorted(self._names, key=len, reverse=True))
        # Group 1: a watched name in quotes; no group: an escaped printable ASCII character (0x20 to 0x7f).
        self._suspects = re.compile(b'"(' + alternatives + rb')"|\\u00[2-7][0-9a-fA-F]')

    def find(self, body: bytes) -> str | None:
        """The first watched name that appears more than once at the top level of `body` (a JSON object), or None."""
        # One C-speed pass; an escape matches as an empty name.
        suspects = self._suspects.findall(body)
        if b"" in suspects or len(set(suspects)) < len(suspects):
            return self._exact(body)
        return None

    def _exact(self, body: bytes) -> str | None:
        names = _top_level_names(body)
        found: set[str] = set()
        for name in names:
            if name in self._names:
                if name in found:
                    return name
                found.add(name)
        return None


def _top_level_names(body: bytes) -> list[str]:
    """Every name of the body's top-level object, in order, repeats included (none when it does not decode)."""
    top: list[tuple[str, Any]] = []

    def keep_pairs(pairs: list[tuple[str, Any]]) -> None:
        # Called for each object, innermost first: the top-level object comes last. Nested values are not needed.
        nonlocal top
        top = pairs

    try:
        json.loads(body, object_pairs_hook=keep_pairs)
    except (ValueError, RecursionError):
        return []
    return [name for name, _ in top]
