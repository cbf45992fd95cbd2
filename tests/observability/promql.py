"""A small PromQL lexer: enough to list the series a query selects and the label matchers it uses.

It does not validate syntax (promtool does that); it only has to tell metric names from functions,
keywords, label names in `by (...)`/`on (...)` lists, strings, numbers and durations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<duration>\d+(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*\b)
    | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){},@])
    """,
    re.VERBOSE,
)
# Keywords whose parenthesised list holds label names, not expressions.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST_KEYWORDS | {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk"}
    | {"quantile", "limitk", "limit_ratio"}
)


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...] = field(default=())  # (label, operator, value)


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot lex {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            tokens.append((kind, match.group()))
        pos = match.end()
    return tokens


def _unquote(literal: str) -> str:
    body = literal[1:-1]
    return body if literal[0] == "`" else re.sub(r"\\(.)", r"\1", body)


def selectors(expr: str) -> list[Selector]:
    """Every series selector of `expr`, in order, with its label matchers."""
    tokens = _tokens(expr)
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind == "ident" and text in _LABEL_LIST_KEYWORDS and following == "(":
            i = _after_closing(tokens, i + 1, ")")
            continue
        if kind == "ident" and (following == "(" or text in _AGGREGATIONS or text.lower() in _KEYWORDS):
            i += 1
            continue
        if kind == "ident" or (kind == "op" and text == "{"):
            metric = text if kind == "ident" else ""
            start = i + 1 if kind == "ident" else i
            matchers: list[tuple[str, str, str]] = []
            if start < len(tokens) and tokens[start][1] == "{":
                end = _after_closing(tokens, start, "}")
                body = [t for t in tokens[start + 1 : end - 1] if t[1] != ","]
                for j in range(0, len(body) - 2, 3):
                    (_, label), (_, op), (_, value) = body[j : j + 3]
                    matchers.append((label, op, _unquote(value)))
                start = end
            names = [v for label, op, v in matchers if label == "__name__" and op == "="]
            found.append(Selector(metric or (names[0] if names else ""), tuple(matchers)))
            i = start
            continue
        i += 1
    return found


def _after_closing(tokens: list[tuple[str, str]], opening: int, closer: str) -> int:
    for j in range(opening, len(tokens)):
        if tokens[j][1] == closer:
            return j + 1
    raise ValueError(f"unclosed {tokens[opening][1]!r}")


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in selectors(expr)}
