"""The `when` language of deck.toml [[alerts]]: a small, safe expression over one subject.

    when = "endpoint.state == 'down'"
    when = "gpu.temperature_c > 85 and not gpu.name == 'T4'"
    when = "job.seconds_since_step > 300 or job.non_finite"

Grammar (a hand-written recursive-descent parser; nothing is ever handed to Python's eval):
    expr    := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | compare
    compare := operand (('==' | '!=' | '<' | '<=' | '>' | '>=') operand)?
    operand := NUMBER | STRING | true | false | null | PATH | '(' expr ')'
    PATH    := subject '.' field ('.' field)*      e.g. endpoint.slo.joint
Every path of one rule names the same subject kind (gpu, endpoint, job, host, rollout): the rule
fires once per matching GPU, endpoint or job. A value the source does not know is null: an
ordering comparison with null, or between a number and a string, is false (an unknown
temperature never fires `> 85`), and `== null` asks for exactly that. A bare path is true when
its value is true or a non-zero number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 500
MAX_DEPTH = 32
KEYWORDS = {"and", "or", "not", "true", "false", "null"}
CONSTANTS = {"true": True, "false": False, "null": None}
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda left, right: left == right, "!=": lambda left, right: left != right,
    "<": lambda left, right: left < right, "<=": lambda left, right: left <= right,
    ">": lambda left, right: left > right, ">=": lambda left, right: left >= right,
}
_TOKEN = re.compile(r"""\s*(?:
    (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|-)
)""", re.VERBOSE)


class ExpressionError(ValueError):
    """A `when` that does not parse or names a field its subject lacks; the message says which."""


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]  # the fields after the subject: ("slo", "joint")

    def evaluate(self, subject: Callable[[tuple[str, ...]], Any]) -> Any:
        return subject(self.parts)


@dataclass(frozen=True)
class Literal:
    value: Any

    def evaluate(self, subject: Callable[[tuple[str, ...]], Any]) -> Any:
        return self.value


@dataclass(frozen=True)
class Compare:
    operator: str
    left: Any
    right: Any

    def evaluate(self, subject: Callable[[tuple[str, ...]], Any]) -> bool:
        left, right = self.left.evaluate(subject), self.right.evaluate(subject)
        if self.operator in ("==", "!="):
            return COMPARISONS[self.operator](left, right)
        if not _ordered(left, right):
            return False
        return COMPARISONS[self.operator](left, right)


@dataclass(frozen=True)
class Logic:
    operator: str  # and | or
    parts: tuple[Any, ...]

    def evaluate(self, subject: Callable[[tuple[str, ...]], Any]) -> bool:
        values = (truthy(part.evaluate(subject)) for part in self.parts)
        return all(values) if self.operator == "and" else any(values)


@dataclass(frozen=True)
class Not:
    part: Any

    def evaluate(self, subject: Callable[[tuple[str, ...]], Any]) -> bool:
        return not truthy(self.part.evaluate(subject))


@dataclass(frozen=True)
class Expression:
    """A parsed `when`: its subject kind, the field paths it reads (for the alert's message)
    and the tree to evaluate."""

    text: str
    subject: str
    paths: tuple[tuple[str, ...], ...]
    tree: Any

    def holds(self, lookup: Callable[[tuple[str, ...]], Any]) -> bool:
        return truthy(self.tree.evaluate(lookup))


def truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0 and not math.isnan(value)
    return bool(value) if isinstance(value, str) else False


def _ordered(left: Any, right: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right))
    return numbers or (isinstance(left, str) and isinstance(right, str))


def parse(text: str, fields: dict[str, frozenset[str]]) -> Expression:
    """Parse `text`; `fields` maps each subject kind to the first-level field names it has
    (nested paths such as `slo.joint` are checked on their first part)."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"is longer than {MAX_LENGTH} characters")
    parser = _Parser(_tokens(text), fields)
    tree = parser.expression(0)
    if parser.position < len(parser.tokens):
        raise ExpressionError(f"unexpected {parser.tokens[parser.position][1]!r}")
    if parser.subject is None:
        raise ExpressionError("names no field (write e.g. gpu.temperature_c > 85)")
    return Expression(text, parser.subject, tuple(parser.paths), tree)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(text):
        if not text[position:].strip():
            break
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ExpressionError(f"unexpected character {text[position:].lstrip()[:1]!r}")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], fields: dict[str, frozenset[str]]) -> None:
        self.tokens, self.fields, self.position = tokens, fields, 0
        self.subject: str | None = None
        self.paths: list[tuple[str, ...]] = []

    def peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise ExpressionError("ends too early")
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expression(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"nests deeper than {MAX_DEPTH}")
        return self._chain("or", lambda: self._chain("and", lambda: self.negation(depth), depth),
                           depth)

    def _chain(self, keyword: str, part: Callable[[], Any], depth: int) -> Any:
        parts = [part()]
        while self.peek() == keyword:
            self.take()
            parts.append(part())
        return parts[0] if len(parts) == 1 else Logic(keyword, tuple(parts))

    def negation(self, depth: int) -> Any:
        if self.peek() == "not":
            self.take()
            if depth > MAX_DEPTH:
                raise ExpressionError(f"nests deeper than {MAX_DEPTH}")
            return Not(self.negation(depth + 1))
        left = self.operand(depth)
        if self.peek() in COMPARISONS:
            operator = self.take()[1]
            return Compare(operator, left, self.operand(depth))
        return left

    def operand(self, depth: int) -> Any:
        kind, value = self.take()
        if value == "(":
            inner = self.expression(depth + 1)
            if self.position >= len(self.tokens) or self.take()[1] != ")":
                raise ExpressionError("has a '(' without its ')'")
            return inner
        if value == "-" and self.peek() is not None and self.tokens[self.position][0] == "number":
            return Literal(-_number(self.take()[1]))
        if kind == "number":
            return Literal(_number(value))
        if kind == "string":
            return Literal(value[1:-1])
        if kind == "name" and value in CONSTANTS:
            return Literal(CONSTANTS[value])
        if kind == "name" and value not in KEYWORDS:
            return self.path(value)
        raise ExpressionError(f"expected a value, found {value!r}")

    def path(self, dotted: str) -> Path:
        subject, *parts = dotted.split(".")
        if subject not in self.fields:
            raise ExpressionError(f"unknown subject {subject!r} (use one of "
                                  f"{', '.join(sorted(self.fields))})")
        if self.subject is not None and subject != self.subject:
            raise ExpressionError(f"mixes subjects {self.subject} and {subject} "
                                  "(one rule watches one kind)")
        if not parts:
            raise ExpressionError(f"{subject!r} needs a field (e.g. {subject}.{min(self.fields[subject])})")
        if parts[0] not in self.fields[subject]:
            raise ExpressionError(f"{subject} has no field {parts[0]!r}")
        self.subject = subject
        self.paths.append(tuple(parts))
        return Path(tuple(parts))


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
