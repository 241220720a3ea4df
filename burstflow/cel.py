"""The one place Burstflow evaluates CEL: compile once, evaluate many times, on either of two engines.

The request-path engine is Google's C++ runtime (`cel-expr-python`): ~2-5 us per evaluation with one activation
per request (see ../shared/measured.md). `cel-python` (pure Python, ~100x slower) is the fallback where no native
wheel exists. Both are wrapped behind `compile()` / `Program.evaluate()` so callers never see engine types, and
the CEL test table runs on both so they agree.

Engine selection: `BURSTFLOW_CEL_ENGINE=native|python` forces one; otherwise native when importable.

Cost bound: expressions come from whoever may create a policy or a CronWorkflow, and CEL's only loops are the
comprehension macros (`all`, `exists`, `exists_one`, `map`, `filter`). Both engines stop an evaluation once it has
run `ITERATION_BUDGET` comprehension iterations (nested ones included) and raise the same short `CelError`
(`BUDGET_MESSAGE`); nothing else in CEL grows with the input faster than the expression's own length.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

NATIVE = "native"
PYTHON = "python"
# The native runtime's built-in comprehension budget (cel-cpp `comprehension_max_iterations`, not settable from
# cel-expr-python): an evaluation may run at most 9,999 iterations. The cel-python fallback counts the same way, so
# an expression behaves identically on both (a 10,000-element `all()` fails on both; 9,999 passes on both).
ITERATION_BUDGET = 10_000
BUDGET_MESSAGE = f"iteration budget exceeded (at most {ITERATION_BUDGET - 1} comprehension iterations)"
# Engine messages can quote the input (values, parts of the expression); callers print them next to a field path.
MAX_MESSAGE_CHARS = 240


class CelError(ValueError):
    """A CEL expression that does not compile, or an evaluation that failed (missing key, wrong type, ...)."""


def available_engines() -> list[str]:
    engines = []
    try:
        import cel_expr_python  # noqa: F401

        engines.append(NATIVE)
    except ImportError:
        pass
    try:
        import celpy  # noqa: F401

        engines.append(PYTHON)
    except ImportError:
        pass
    return engines


def default_engine() -> str:
    forced = os.environ.get("BURSTFLOW_CEL_ENGINE", "").strip().lower()
    engines = available_engines()
    if forced:
        if forced not in (NATIVE, PYTHON):
            raise CelError(f"BURSTFLOW_CEL_ENGINE must be {NATIVE!r} or {PYTHON!r}, not {forced!r}")
        if forced not in engines:
            raise CelError(f"CEL engine {forced!r} is not installed")
        return forced
    if not engines:
        raise CelError("no CEL engine installed: install cel-expr-python or cel-python")
    return engines[0]


class Environment:
    """A set of declared variables (all dynamically typed) bound to one engine; compile expressions against it.

    `activation(data)` converts the variables' values once (for a pod, the expensive part); every program compiled
    in this environment can then evaluate against that activation.
    """

    def __init__(self, variables: Iterable[str] | Mapping[str, str], *, engine: str | None = None) -> None:
        # `variables`: names (all `dyn`) or a mapping name -> CEL type ("dyn", "timestamp", "duration", "int", ...).
        # The native engine cannot take a datetime nested inside a `dyn` map: declare it as its own (dotted)
        # variable with type "timestamp", e.g. {"cronworkflow": "dyn", "cronworkflow.lastScheduledTime": "timestamp"}.
        types = dict(variables) if isinstance(variables, Mapping) else {name: "dyn" for name in variables}
        self.variables = tuple(types)
        self.types = types
        self.engine = engine or default_engine()
        if self.engine == NATIVE:
            from cel_expr_python import cel

            self._cel = cel
            self._env = cel.NewEnv(variables={name: cel.Type(kind) for name, kind in types.items()})
        elif self.engine == PYTHON:
            import celpy

            self._celpy = celpy
            self._env = celpy.Environment(runner_class=_bounded_runner_class())
        else:
            raise CelError(f"unknown CEL engine {self.engine!r}")

    def compile(self, expression: str) -> Program:
        """Parse and check `expression`; raises CelError with the engine's message (position included)."""
        if not isinstance(expression, str) or not expression.strip():
            raise CelError("expression is empty")
        if self.engine == NATIVE:
            try:
                compiled = self._env.compile(expression)
            except RuntimeError as exc:
                # The first line says where and what was expected ("1:8: Syntax error: mismatched input ')'
                # expecting {...}"); the following lines re-print the expression with a caret.
                raise CelError(_clean_native_message(str(exc)).splitlines()[0].strip()) from None
            return Program(self, expression, compiled)
        try:
            ast = self._env.compile(expression)
            program = self._env.program(ast)
        except Exception as exc:  # celpy raises several parser/compile error types
            raise CelError(_celpy_compile_message(exc, expression)) from None
        undeclared = _undeclared_python_names(ast, self.variables)
        if undeclared:
            raise CelError(f"undeclared reference to {undeclared!r}")
        return Program(self, expression, program)

    def activation(self, data: Mapping[str, Any]) -> Any:
        """Convert variable values once; pass the result to `Program.evaluate` as many times as needed."""
        missing = [name for name in self.variables if name not in data]
        if missing:
            raise CelError(f"activation lacks variables {missing}")
        if self.engine == NATIVE:
            return self._env.Activation(dict(data))
        return {name: _to_celpy(self._celpy, value) for name, value in data.items()}


class Program:
    """A compiled expression. `evaluate` returns plain Python values (bool, int, float, str, list, dict, datetime)."""

    def __init__(self, env: Environment, expression: str, compiled: Any) -> None:
        self.env = env
        self.expression = expression
        self._compiled = compiled

    def evaluate(self, activation: Any) -> Any:
        """Evaluate against an activation from `Environment.activation` (or a plain mapping, converted here)."""
        if isinstance(activation, Mapping) and self.env.engine == NATIVE:
            activation = self.env.activation(activation)
        elif isinstance(activation, Mapping) and not _is_converted(activation):
            activation = self.env.activation(activation)
        if self.env.engine == NATIVE:
            try:
                result = self._compiled.eval(activation)
            except RuntimeError as exc:
                raise CelError(_clean_native_message(str(exc))) from None
            if str(result.type()) == "ERROR":
                raise CelError(_short(_clean_native_message(str(result.value()))))
            return result.plain_value()
        celpy = self.env._celpy
        try:
            result = self._compiled.evaluate(activation)
        except _BudgetExceeded:
            raise CelError(BUDGET_MESSAGE) from None
        except Exception as exc:
            raise CelError(_short(_celpy_error_message(exc))) from None
        if isinstance(result, celpy.CELEvalError):
            raise CelError(_short(_celpy_error_message(result)))
        return _from_celpy(result)


def compile(expression: str, *, variables: Iterable[str] | Mapping[str, str], engine: str | None = None) -> Program:
    """Shorthand: compile one expression in a fresh environment."""
    return Environment(variables, engine=engine).compile(expression)


def _clean_native_message(message: str) -> str:
    # "INVALID_ARGUMENT: ERROR: <input>:1:8: Syntax error: ... [INVALID_ARGUMENT]" -> "1:8: Syntax error: ..."
    if "Iteration budget exceeded" in message:
        return BUDGET_MESSAGE
    text = message
    for status in ("INVALID_ARGUMENT", "INTERNAL", "UNKNOWN"):
        text = text.replace(f" [{status}]", "")
    for prefix in ("INVALID_ARGUMENT: ", "INTERNAL: ", "UNKNOWN: ", "ERROR: ", "<input>:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text.strip()


def _celpy_compile_message(exc: Exception, expression: str) -> str:
    """`line:column: Syntax error: unexpected 'x' expecting {...}`, the native engine's shape, from cel-python's
    parse error (which only re-prints the expression with a caret) and lark's exception behind it."""
    line, column = getattr(exc, "line", None), getattr(exc, "column", None)
    if not line or not column:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lines = expression.splitlines() or [""]
    row = lines[line - 1] if 0 < line <= len(lines) else ""
    found = repr(row[column - 1]) if 0 < column <= len(row) else "<EOF>"
    cause = exc.__cause__ or exc.__context__
    expected = sorted(getattr(cause, "expected", None) or ())
    detail = f" expecting {{{', '.join(expected)}}}" if expected else ""
    return f"{line}:{column}: Syntax error: unexpected {found}{detail}"


def _short(message: str) -> str:
    """At most MAX_MESSAGE_CHARS of an engine's evaluation message (they can quote large values)."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS - 3] + "..."


class _BudgetExceeded(Exception):
    """Raised inside cel-python when an evaluation spends its ITERATION_BUDGET (turned into a CelError)."""


_RUNNER_CLASS: Any = None


def _bounded_runner_class() -> Any:
    """A cel-python Runner whose evaluator counts comprehension iterations like the native runtime does.

    cel-python evaluates each macro element through a sub-evaluator built by `Evaluator.sub_evaluator` and called
    once per element (`nested.evaluate({var: element})`); counting those calls, shared by all nested evaluators of
    one evaluation, is the iteration count. The counter raises `_BudgetExceeded`, which no cel-python handler
    turns into a value (they catch specific built-in errors), so the evaluation ends at once.
    """
    global _RUNNER_CLASS
    if _RUNNER_CLASS is not None:
        return _RUNNER_CLASS
    import celpy
    from celpy.evaluation import Evaluator

    class Budget:
        __slots__ = ("left",)

        def __init__(self) -> None:
            self.left = ITERATION_BUDGET - 1

        def spend(self) -> None:
            self.left -= 1
            if self.left < 0:
                raise _BudgetExceeded()

    class BoundedEvaluator(Evaluator):
        def __init__(self, ast: Any, activation: Any, budget: Budget, *, nested: bool = False) -> None:
            super().__init__(ast, activation=activation)
            self._budget = budget
            self._nested = nested

        def sub_evaluator(self, ast: Any) -> Any:
            return BoundedEvaluator(ast, self.activation, self._budget, nested=True)

        def evaluate(self, context: Any = None) -> Any:
            if self._nested:
                self._budget.spend()  # one element of a comprehension
            return super().evaluate(context)

    class BoundedRunner(celpy.InterpretedRunner):
        def evaluate(self, context: Any) -> Any:
            return BoundedEvaluator(self.ast, self.new_activation(), Budget()).evaluate(context)

    _RUNNER_CLASS = BoundedRunner
    return _RUNNER_CLASS


def _celpy_error_message(exc: Any) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str):
        detail = args[0]
        if len(args) > 2 and args[2]:
            detail += f": {', '.join(str(a) for a in args[2])}"
        return detail
    return str(exc)


_CONVERTED = "__burstflow_celpy__"


def _is_converted(activation: Mapping[str, Any]) -> bool:
    return any(type(v).__module__.startswith("celpy") for v in activation.values())


def _to_celpy(celpy: Any, value: Any) -> Any:
    if isinstance(value, datetime):
        return celpy.celtypes.TimestampType(value.astimezone(timezone.utc))
    if isinstance(value, timedelta):
        return celpy.celtypes.DurationType(seconds=value.total_seconds())
    if value is None:
        return None
    return celpy.json_to_cel(value)


def _from_celpy(value: Any) -> Any:
    from celpy import celtypes

    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType) or isinstance(value, celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.TimestampType):
        return datetime.fromtimestamp(value.timestamp(), tz=timezone.utc)
    if isinstance(value, celtypes.DurationType):
        return timedelta(seconds=value.total_seconds())
    if isinstance(value, celtypes.MapType):
        return {_from_celpy(k): _from_celpy(v) for k, v in value.items()}
    if isinstance(value, celtypes.ListType):
        return [_from_celpy(v) for v in value]
    return value


def _undeclared_python_names(ast: Any, declared: tuple[str, ...]) -> str | None:
    """cel-python only notices undeclared variables at evaluation; find top-level identifiers at compile time."""
    import lark

    builtins = {"true", "false", "null", "has", "size", "int", "uint", "double", "string", "bytes", "bool",
                "timestamp", "duration", "type", "dyn", "list", "map", "matches", "exists", "all", "exists_one",
                "filter"}
    bound: set[str] = set()
    # Macro loop variables (c in `list.exists(c, ...)`) are bound by the macro; collect them first.
    for tree in ast.iter_subtrees():
        if tree.data == "member_dot_arg" and len(tree.children) >= 3:
            exprlist = tree.children[2]
            first = next(iter(exprlist.children), None) if isinstance(exprlist, lark.Tree) else None
            for token in (first.scan_values(lambda t: isinstance(t, lark.Token)) if isinstance(first, lark.Tree) else []):
                if token.type == "IDENT":
                    bound.add(str(token))
                break
    for tree in ast.iter_subtrees():
        if tree.data == "ident":
            name = str(tree.children[0])
            if name not in declared and name not in builtins and name not in bound:
                return name
    return None
