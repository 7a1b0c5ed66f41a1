"""Just enough PromQL reading to find which series an expression selects and with which label matchers."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
  | (?P<range>\[[^\]]*\])
  | (?P<matchers>\{[^}]*\})
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<other>[^\sA-Za-z_:(){}\["']+)
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)
_MATCHER = re.compile(r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')\s*,?""")
# Words followed by a parenthesised list of label names, not by an expression.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# Aggregations may put `by (...)` before their parenthesised argument: `sum by (le) (rate(...))`.
_AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"}
)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2"}) | _LABEL_LISTS | _AGGREGATIONS


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)


def selectors(expr: str) -> list[Selector]:
    """The series selectors of `expr`: metric names with their label matchers (functions and keywords skipped)."""
    tokens = [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "space"]
    found: list[Selector] = []
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and text in _LABEL_LISTS and following[0] == "open":
            i = _after_closing(tokens, i + 1)
            continue
        if kind == "ident" and following[0] != "open" and text not in _KEYWORDS:
            matchers: tuple[tuple[str, str, str], ...] = ()
            if following[0] == "matchers":
                matchers = _matchers(following[1])
                i += 1
            found.append(Selector(text, matchers))
        elif kind == "matchers":
            raise ValueError(f"selector without a metric name in {expr!r}: {text}")
        i += 1
    return found


def _after_closing(tokens: list[tuple[str, str]], open_index: int) -> int:
    depth = 0
    for j in range(open_index, len(tokens)):
        depth += {"open": 1, "close": -1}.get(tokens[j][0], 0)
        if depth == 0:
            return j + 1
    raise ValueError("unbalanced parentheses")


def _matchers(block: str) -> tuple[tuple[str, str, str], ...]:
    body = block[1:-1]
    parsed = []
    position = 0
    while position < len(body) and body[position:].strip():
        match = _MATCHER.match(body, position)
        if match is None:
            raise ValueError(f"cannot read label matchers {block!r}")
        parsed.append((match.group(1), match.group(2), match.group(3)[1:-1]))
        position = match.end()
    return tuple(parsed)
