"""`when` and `stopStrategy` expressions: Argo's expr-lang subset translated to CEL, compiled once, evaluated on either engine.

Accepted input:
- `when`: `{{= <expr> }}` (Argo) or a bare expression; `stopStrategy.expression`: a bare expression;
  `stopStrategy.condition` (pre-release Argo): a bare expression whose bare names `failed`, `succeeded`, `name`,
  `namespace`, `labels`, `annotations`, `lastScheduledTime` mean the `cronworkflow.` fields.
- The expr-lang subset users write (comparisons, `&&`, `||`, `!`, `and`/`or`/`not`, `nil`, `now()`,
  `cronworkflow.lastScheduledTime`, `<duration>.Seconds()` / `.Minutes()` / `.Hours()`, `cronworkflow.failed`,
  `.succeeded`, `.name`, `.namespace`, `.labels`, `.annotations`) and plain CEL over the same variables (`now` is
  also a timestamp variable; `has(cronworkflow.lastScheduledTime)` works).

Translation is token by token (string literals are never touched). The native CEL engine cannot hold a timestamp
inside a `dyn` map nor a null in a `timestamp` variable, so `cronworkflow.lastScheduledTime` becomes its own
timestamp variable and nil checks on it become a boolean variable; both engines see the same translated text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping

from burstflow.cel import CelError, Environment, Program, default_engine

LAST_VAR = "cronworkflow_lastScheduledTime"
HAS_LAST_VAR = "cronworkflow_hasLastScheduledTime"
VARIABLES = {"cronworkflow": "dyn", LAST_VAR: "timestamp", HAS_LAST_VAR: "bool", "now": "timestamp"}
# Stands in for a nil lastScheduledTime in the timestamp variable; only reachable by an unguarded expression.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
STOP_CONDITION_NAMES = frozenset({"failed", "succeeded", "name", "namespace", "labels", "annotations",
                                  "lastScheduledTime"})
_DURATION_METHODS = {"Seconds": "1.0", "Minutes": "60.0", "Hours": "3600.0"}


class ExpressionError(ValueError):
    """An expression that cannot be translated or compiled, or whose evaluation failed or was not a boolean."""


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<str>[rR]?(?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))
      | (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%<>!?:.,()\[\]{}])
    """,
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ExpressionError(f"unexpected character {text[position]!r} at offset {position}")
        tokens.append((match.lastgroup or "", match.group()))
        position = match.end()
    return tokens


def _significant(tokens: list[tuple[str, str]], index: int, step: int) -> int:
    index += step
    while 0 <= index < len(tokens) and tokens[index][0] == "ws":
        index += step
    return index


def translate(text: str, *, bare_names: bool = False) -> str:
    """The CEL text for an Argo expr-lang subset (or CEL) expression; `bare_names` for the stop `condition` form."""
    tokens = _tokenize(text)
    out: list[tuple[str, str]] = []
    i = 0
    n = len(tokens)
    while i < n:
        kind, value = tokens[i]
        prev = _significant(tokens, i, -1)
        prev_value = tokens[prev][1] if prev >= 0 else ""
        if kind == "ident" and prev_value != ".":
            if value in ("nil",):
                out.append(("ident", "null"))
                i += 1
                continue
            if value in ("and", "or"):
                out.append(("op", "&&" if value == "and" else "||"))
                i += 1
                continue
            if value == "not":
                out.append(("op", "!"))
                i += 1
                continue
            if value == "now":
                j = _significant(tokens, i, 1)
                k = _significant(tokens, j, 1)
                if j < n and tokens[j][1] == "(" and k < n and tokens[k][1] == ")":
                    out.append(("ident", "now"))
                    i = k + 1
                    continue
            if value == "has":
                j = _significant(tokens, i, 1)
                end = _match_paren(tokens, j) if j < n and tokens[j][1] == "(" else -1
                inner = "".join(v for _, v in tokens[j + 1:end]).replace(" ", "") if end > 0 else ""
                if inner in ("cronworkflow.lastScheduledTime", "lastScheduledTime" if bare_names else "-"):
                    out.append(("ident", HAS_LAST_VAR))
                    i = end + 1
                    continue
            if bare_names and value in STOP_CONDITION_NAMES:
                out.extend([("ident", "cronworkflow"), ("op", "."), ("ident", value)])
                i += 1
                continue
        if kind == "op" and value == "." and i + 1 < n and tokens[i + 1][1] in _DURATION_METHODS:
            j = _significant(tokens, i + 1, 1)
            k = _significant(tokens, j, 1)
            if j < n and tokens[j][1] == "(" and k < n and tokens[k][1] == ")":
                start = _receiver_start(out)
                receiver = "".join(v for _, v in out[start:]).strip()
                del out[start:]
                scale = _DURATION_METHODS[tokens[i + 1][1]]
                # getMilliseconds() is the sub-second component on the native engine and the total on cel-python;
                # `% 1000` makes both the component.
                # dyn(): Go's float seconds compare with integer literals; CEL only compares mixed numbers at run time.
                out.append(("expr", f"dyn((double(({receiver}).getSeconds()) + "
                                    f"double(({receiver}).getMilliseconds() % 1000) / 1000.0) / {scale})"))
                i = k + 1
                continue
        out.append((kind, value))
        i += 1
    joined = _rewrite_last_scheduled("".join(v for _, v in out))
    return joined


def _match_paren(tokens: list[tuple[str, str]], open_index: int) -> int:
    depth = 0
    for index in range(open_index, len(tokens)):
        if tokens[index][1] == "(":
            depth += 1
        elif tokens[index][1] == ")":
            depth -= 1
            if depth == 0:
                return index
    return -1


def _receiver_start(out: list[tuple[str, str]]) -> int:
    """Index in `out` where the primary expression ending at its last token starts (`(...)`, `a.b`, `f(x)`)."""
    index = len(out) - 1
    while index >= 0 and out[index][0] == "ws":
        index -= 1
    if index < 0:
        raise ExpressionError(".Seconds() needs a duration before it")
    while True:
        value = out[index][1]
        if value == ")":
            depth = 0
            while index >= 0:
                if out[index][1] == ")":
                    depth += 1
                elif out[index][1] == "(":
                    depth -= 1
                    if depth == 0:
                        break
                index -= 1
            if index < 0:
                raise ExpressionError("unbalanced parentheses before .Seconds()")
            if index > 0 and out[index - 1][0] in ("ident", "expr"):
                index -= 1
        elif out[index][0] not in ("ident", "expr"):
            raise ExpressionError(f"unexpected {value!r} before .Seconds()")
        if index >= 2 and out[index - 1][1] == ".":
            index -= 2
            continue
        return index


_LAST = r"cronworkflow\.lastScheduledTime"
_NULL_CHECKS = (
    (re.compile(_LAST + r"\s*==\s*null\b"), f"!{HAS_LAST_VAR}"),
    (re.compile(_LAST + r"\s*!=\s*null\b"), HAS_LAST_VAR),
    (re.compile(r"\bnull\s*==\s*" + _LAST + r"\b"), f"!{HAS_LAST_VAR}"),
    (re.compile(r"\bnull\s*!=\s*" + _LAST + r"\b"), HAS_LAST_VAR),
)


def _rewrite_last_scheduled(text: str) -> str:
    parts = _split_strings(text)
    for index in range(0, len(parts), 2):
        segment = parts[index]
        for pattern, replacement in _NULL_CHECKS:
            segment = pattern.sub(f"({replacement})", segment)
        parts[index] = re.sub(_LAST + r"\b", LAST_VAR, segment)
    return "".join(parts)


def _split_strings(text: str) -> list[str]:
    """Alternating [code, string literal, code, ...] so rewrites never touch quoted text."""
    parts: list[str] = []
    last = 0
    for match in re.finditer(r"""[rR]?(?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*")""", text):
        parts.extend([text[last:match.start()], match.group()])
        last = match.end()
    parts.append(text[last:])
    return parts


def unwrap_template(text: str) -> str:
    """`{{= expr }}` -> `expr`; a bare expression is returned as is. Other template tags are an ExpressionError."""
    stripped = text.strip()
    if stripped.startswith("{{=") and stripped.endswith("}}") and stripped.count("{{") == 1:
        return stripped[3:-2].strip()
    if "{{" in stripped:
        raise ExpressionError("only one {{= <expression> }} (or a bare expression) is supported")
    return stripped


@lru_cache(maxsize=8)
def _environment(engine: str) -> Environment:
    return Environment(VARIABLES, engine=engine)


@dataclass(frozen=True)
class CompiledExpression:
    """A compiled boolean expression over the CronWorkflow variables. `source` is what the user wrote."""

    source: str
    cel: str
    program: Program

    def evaluate(self, variables: Mapping[str, Any]) -> bool:
        """Evaluate against `variables(...)`; raises ExpressionError unless the result is a boolean."""
        try:
            result = self.program.evaluate(variables)
        except CelError as error:
            raise ExpressionError(f"evaluating {self.source!r}: {error}") from None
        if not isinstance(result, bool):
            raise ExpressionError(f"expected a boolean from {self.source!r}, got {type(result).__name__} {result!r}")
        return result


@dataclass(frozen=True)
class WhenExpression(CompiledExpression):
    """`spec.when`: checked before each run; false skips the run."""


@dataclass(frozen=True)
class StopExpression(CompiledExpression):
    """`spec.stopStrategy`: true stops scheduling. `field` is `expression` or `condition` (pre-release form)."""

    field: str = "expression"


def _compile(source: str, cel_text: str, engine: str | None) -> Program:
    try:
        return _environment(engine or default_engine()).compile(cel_text)
    except CelError as error:
        detail = str(error)
        if cel_text != source:
            detail += f" (in the CEL translation {cel_text!r})"
        raise ExpressionError(detail) from None


@lru_cache(maxsize=1024)
def compile_when(text: str, engine: str | None = None) -> WhenExpression:
    """Compile `spec.when`. Raises ExpressionError naming the problem (the caller adds the field path)."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expression is empty")
    cel_text = translate(unwrap_template(text))
    return WhenExpression(source=text, cel=cel_text, program=_compile(text, cel_text, engine))


@lru_cache(maxsize=1024)
def compile_stop(text: str, field: str = "expression", engine: str | None = None) -> StopExpression:
    """Compile `spec.stopStrategy.expression` or (`field="condition"`) the pre-release bare-name form."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expression is empty")
    cel_text = translate(unwrap_template(text), bare_names=field == "condition")
    return StopExpression(source=text, cel=cel_text, program=_compile(text, cel_text, engine), field=field)


def variables(*, name: str, namespace: str, labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None,
              failed: int, succeeded: int, last_scheduled_time: datetime | None, now: datetime) -> dict[str, Any]:
    """The activation for `CompiledExpression.evaluate`.

    `cronworkflow.annotations` are the real annotations (Argo binds the labels there by mistake; README.md, "Migrating from Argo CronWorkflows").
    """
    return {
        "cronworkflow": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels or {}),
            "annotations": dict(annotations or {}),
            "failed": int(failed),
            "succeeded": int(succeeded),
        },
        LAST_VAR: last_scheduled_time if last_scheduled_time is not None else EPOCH,
        HAS_LAST_VAR: last_scheduled_time is not None,
        "now": now,
    }
