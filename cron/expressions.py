"""`when` and `stopStrategy` expressions: Argo's expr-lang subset translated to CEL, compiled once, evaluated on either engine.

Accepted input (Argo renders `when` as a template, then evaluates the result; we compile the same into one CEL program):
- `when`: any mix of `{{= <expr> }}` segments (Argo's expr-lang), simple `{{cronworkflow.*}}` tags inside string
  literals (`"'{{cronworkflow.namespace}}' == 'prod'"`; Argo substitutes their text, so only string-valued tags are
  allowed, and only inside quotes) and the surrounding expression; or plain CEL. `stopStrategy.expression`: a bare
  expression;
  `stopStrategy.condition` (pre-release Argo): a bare expression whose bare names `failed`, `succeeded`, `name`,
  `namespace`, `labels`, `annotations`, `lastScheduledTime` mean the `cronworkflow.` fields.
- The expr-lang subset users write (comparisons, `&&`, `||`, `!`, `and`/`or`/`not`, `nil`, `now()`,
  `cronworkflow.lastScheduledTime`, `<duration>.Seconds()` / `.Minutes()` / `.Hours()`, `cronworkflow.failed`,
  `.succeeded`, `.name`, `.namespace`, `.labels`, `.annotations`) and plain CEL over the same variables (`now` is
  also a timestamp variable; `has(cronworkflow.lastScheduledTime)` works).

Translation is token by token (string literals are never touched). The native CEL engine cannot hold a timestamp
inside a `dyn` map nor a null in a `timestamp` variable, so `cronworkflow.lastScheduledTime` becomes its own
timestamp variable and nil checks on it become a boolean variable; both engines see the same translated text.

Where expr-lang and CEL disagree the translation converts explicitly or refuses: `/` divides as a fraction in Argo
(`7/2` is 3.5) and as integers in CEL (3), so integer literals around `/` become doubles (`7.0/2.0`), a side that is
already a double (`double(x)`, `.Seconds()`) makes the other literal a double, and any other `/` is a compile error
asking for explicit doubles. Evaluation errors are short: the field path and the engine's reason, never the text.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping

from burstflow.cel import CelError, Environment, Program, default_engine

LAST_VAR = "cronworkflow_lastScheduledTime"
HAS_LAST_VAR = "cronworkflow_hasLastScheduledTime"
LABELS_JSON_VAR = "cronworkflow_labelsJson"
ANNOTATIONS_JSON_VAR = "cronworkflow_annotationsJson"
VARIABLES = {"cronworkflow": "dyn", LAST_VAR: "timestamp", HAS_LAST_VAR: "bool", "now": "timestamp",
             LABELS_JSON_VAR: "string", ANNOTATIONS_JSON_VAR: "string"}
# Argo's simple tags render as text, so only string-valued variables work there ("failed to resolve
# {{cronworkflow.failed}} to string"); these are the ones it knows besides labels.<key> and annotations.<key>.
_STRING_TAGS = {"cronworkflow.name": "cronworkflow.name", "cronworkflow.namespace": "cronworkflow.namespace",
                "cronworkflow.labels.json": LABELS_JSON_VAR, "cronworkflow.annotations.json": ANNOTATIONS_JSON_VAR}
_NON_STRING_TAGS = ("cronworkflow.failed", "cronworkflow.succeeded", "cronworkflow.lastScheduledTime",
                    "cronworkflow.labels", "cronworkflow.annotations")
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
        if kind == "op" and value == "/":
            i = _division(tokens, i, out, text)
            continue
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


def _is_int_literal(token: tuple[str, str]) -> bool:
    return token[0] == "num" and not any(c in token[1] for c in ".eEuU")


def _is_double_literal(token: tuple[str, str]) -> bool:
    return token[0] == "num" and any(c in token[1] for c in ".eE")


def _left_is_double(out: list[tuple[str, str]]) -> bool:
    """The operand ending `out` is a double: a double literal, a translated `.Seconds()`, or `double(...)`."""
    index = len(out) - 1
    while index >= 0 and out[index][0] == "ws":
        index -= 1
    if index < 0:
        return False
    if _is_double_literal(out[index]) or out[index][0] == "expr":
        return True
    if out[index][1] != ")":
        return False
    depth = 0
    while index >= 0:
        depth += {")": 1, "(": -1}.get(out[index][1], 0)
        if depth == 0:
            break
        index -= 1
    before = index - 1
    while before >= 0 and out[before][0] == "ws":
        before -= 1
    return before >= 0 and out[before][1] == "double" and (before == 0 or out[before - 1][1] != ".")


def _division(tokens: list[tuple[str, str]], i: int, out: list[tuple[str, str]], text: str) -> int:
    """Translate the `/` at tokens[i] (see the module docstring); returns the index after what it consumed."""
    left_index = len(out) - 1
    while left_index >= 0 and out[left_index][0] == "ws":
        left_index -= 1
    right = _significant(tokens, i, 1)
    left_int = left_index >= 0 and _is_int_literal(out[left_index])
    right_int = right < len(tokens) and _is_int_literal(tokens[right])
    left_double = left_index >= 0 and _left_is_double(out)
    right_double = right < len(tokens) and (_is_double_literal(tokens[right]) or tokens[right][1] == "double")
    if (left_int or left_double) and (right_int or right_double):
        literal = right_int or _is_double_literal(tokens[right])
        if out[left_index][0] == "expr" and out[left_index][1].endswith(")") and literal:
            # Keep `.Seconds() / 60` inside the dyn() of the translated duration, so it still compares with ints.
            number = tokens[right][1] + (".0" if right_int else "")
            out[left_index] = ("expr", f"{out[left_index][1][:-1]} / {number})")
            del out[left_index + 1:]
            return right + 1
        if left_int:
            out[left_index] = ("num", out[left_index][1] + ".0")
        out.append(("op", "/"))
        out.extend(tokens[i + 1:right])
        if right_int:
            out.append(("num", tokens[right][1] + ".0"))
            return right + 1
        return right
    offset = sum(len(value) for _, value in tokens[:i])
    raise ExpressionError(
        f"'/' at offset {offset} (near {text[max(0, offset - 12):offset + 12]!r}): Argo divides as a fraction "
        f"(7/2 is 3.5) and CEL divides integers (7/2 is 3); write both sides as doubles, e.g. "
        f"double(cronworkflow.failed) / 2.0")


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


_TEMPLATE_PART = re.compile(r"""(?P<str>[rR]?(?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))
      | (?P<expr>\{\{=(?P<body>.*?)\}\})
      | (?P<tag>\{\{\s*(?P<name>[^{}]*?)\s*\}\})
      | (?P<open>\{\{)
    """, re.VERBOSE | re.DOTALL)


def render_template(text: str) -> str:
    """Argo's template stage as expression text: `{{= expr }}` -> `(expr)`, and a simple tag inside a string
    literal -> the variable, concatenated with the rest of the literal (`'{{cronworkflow.namespace}}'` ->
    `cronworkflow.namespace`). Text without tags is returned as is (plain CEL or expr-lang)."""
    if "{{" not in text:
        return text.strip()
    out: list[str] = []
    position = 0
    for match in _TEMPLATE_PART.finditer(text):
        out.append(text[position:match.start()])
        position = match.end()
        if match.lastgroup == "str":
            out.append(_render_string(match.group(), match.start()))
        elif match.lastgroup == "expr":
            body = match.group("body").strip()
            if not body:
                raise ExpressionError(f"empty {{{{= }}}} at offset {match.start()}: expected an expression inside")
            out.append(f"({body})")
        elif match.lastgroup == "tag":
            name = match.group("name")
            _tag_variable(name, match.start())  # unknown or non-string tags get their own message
            raise ExpressionError(
                f"{{{{{name}}}}} at offset {match.start()} is outside a string literal: Argo substitutes its text, "
                f"so write '{{{{{name}}}}}' (quoted) or {{{{= {name} }}}}")
        else:
            raise ExpressionError(f"unclosed '{{{{' at offset {match.start()}: expected {{{{= <expression> }}}} "
                                  "or {{cronworkflow.<name>}}")
    out.append(text[position:])
    return "".join(out).strip()


def _render_string(literal: str, offset: int) -> str:
    """A string literal that may hold simple tags -> a CEL concatenation (the literal itself when it holds none)."""
    if "{{" not in literal:
        return literal
    if literal[0] in "rR":
        raise ExpressionError(f"raw string at offset {offset} cannot hold {{{{...}}}} tags")
    quote = literal[0]
    body = literal[1:-1]
    parts: list[str] = []
    position = 0
    for match in re.finditer(r"\{\{(=?)(.*?)\}\}", body):
        if match.start() > position:
            parts.append(quote + body[position:match.start()] + quote)
        inner = match.group(2).strip()
        if match.group(1):
            parts.append(f"string({inner})")
        else:
            parts.append(_tag_variable(inner, offset + 1 + match.start()))
        position = match.end()
    if position < len(body):
        parts.append(quote + body[position:] + quote)
    if "{{" in "".join(p for p in parts if p.startswith(quote)):
        raise ExpressionError(f"unclosed '{{{{' in the string literal at offset {offset}")
    return "(" + " + ".join(parts) + ")"


def _tag_variable(name: str, offset: int) -> str:
    """The CEL for one simple tag `{{name}}` (a string-valued CronWorkflow variable), or an ExpressionError."""
    if name in _STRING_TAGS:
        return _STRING_TAGS[name]
    for prefix in ("cronworkflow.labels.", "cronworkflow.annotations."):
        if name.startswith(prefix) and len(name) > len(prefix):
            key = name[len(prefix):].replace("\\", "\\\\").replace("'", "\\'")
            return f"{prefix[:-1]}['{key}']"
    if name in _NON_STRING_TAGS:
        return _raise(f"{{{{{name}}}}} at offset {offset} is not a string, and Argo substitutes simple tags as text "
                      f"(\"failed to resolve {{{{{name}}}}} to string\"); use {{{{= {name} }}}} instead")
    return _raise(f"unknown variable {{{{{name}}}}} at offset {offset}: expected cronworkflow.name, .namespace, "
                  ".labels.<key>, .annotations.<key>, .labels.json or .annotations.json")


def _raise(message: str) -> str:
    raise ExpressionError(message)


@lru_cache(maxsize=8)
def _environment(engine: str) -> Environment:
    return Environment(VARIABLES, engine=engine)


@dataclass(frozen=True)
class CompiledExpression:
    """A compiled boolean expression over the CronWorkflow variables. `source` is what the user wrote."""

    source: str
    cel: str
    program: Program
    path: str = "spec.when"

    def evaluate(self, variables: Mapping[str, Any]) -> bool:
        """Evaluate against `variables(...)`; raises ExpressionError unless the result is a boolean.

        Messages are `<field path>: <engine's reason>` (at most a few hundred characters): the expression itself
        is the user's and can be kilobytes long, so it is never repeated (the CEL cost bound's failure included).
        """
        try:
            result = self.program.evaluate(variables)
        except CelError as error:
            raise ExpressionError(f"{self.path}: {error}") from None
        if not isinstance(result, bool):
            shown = repr(result)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ExpressionError(f"{self.path}: expected a boolean, got {type(result).__name__} {shown}")
        return result


@dataclass(frozen=True)
class WhenExpression(CompiledExpression):
    """`spec.when`: checked before each run; false skips the run."""


@dataclass(frozen=True)
class StopExpression(CompiledExpression):
    """`spec.stopStrategy`: true stops scheduling. `field` is `expression` or `condition` (pre-release form)."""

    field: str = "expression"
    path: str = "spec.stopStrategy.expression"


def _compile(source: str, cel_text: str, engine: str | None) -> Program:
    try:
        return _environment(engine or default_engine()).compile(cel_text)
    except CelError as error:
        detail = str(error)
        if cel_text != source.strip():
            shown = cel_text if len(cel_text) <= 160 else cel_text[:157] + "..."
            detail += f" (position in the CEL translation {shown!r})"
        raise ExpressionError(detail) from None


@lru_cache(maxsize=1024)
def compile_when(text: str, engine: str | None = None) -> WhenExpression:
    """Compile `spec.when`. Raises ExpressionError naming the problem (the caller adds the field path)."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expression is empty")
    cel_text = translate(render_template(text))
    return WhenExpression(source=text, cel=cel_text, program=_compile(text, cel_text, engine), path="spec.when")


@lru_cache(maxsize=1024)
def compile_stop(text: str, field: str = "expression", engine: str | None = None) -> StopExpression:
    """Compile `spec.stopStrategy.expression` or (`field="condition"`) the pre-release bare-name form."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expression is empty")
    cel_text = translate(render_template(text), bare_names=field == "condition")
    return StopExpression(source=text, cel=cel_text, program=_compile(text, cel_text, engine), field=field,
                          path=f"spec.stopStrategy.{field}")


def variables(*, name: str, namespace: str, labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None,
              failed: int, succeeded: int, last_scheduled_time: datetime | None, now: datetime) -> dict[str, Any]:
    """The activation for `CompiledExpression.evaluate`.

    `cronworkflow.annotations` are the real annotations (Argo binds the labels there by mistake; docs/concepts/cronworkflow.md, "Migrating from Argo CronWorkflows").
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
        LABELS_JSON_VAR: _go_json(labels),
        ANNOTATIONS_JSON_VAR: _go_json(annotations),
        HAS_LAST_VAR: last_scheduled_time is not None,
        "now": now,
    }


def _go_json(values: Mapping[str, str] | None) -> str:
    """Go's `json.Marshal` of a map[string]string, as Argo renders `{{cronworkflow.labels.json}}`: sorted keys, no
    spaces, UTF-8 kept, and `<`, `>`, `&` escaped as Go does."""
    text = json.dumps(dict(values or {}), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
