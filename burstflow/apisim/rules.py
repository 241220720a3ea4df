"""CRD validation rules (`x-kubernetes-validations`) as kube-apiserver 1.24 applies them: each rule is type-checked
against its schema when a CRD is written, and evaluated (with burstflow.cel) on every write of a custom resource.

The type check follows apiextensions' `SchemaDeclType`: an object with properties is a message type that has only
its declared fields (so `self.undeclared` and `size(self)` do not compile), an object with additionalProperties is
a map, an array a list, int-or-string is dyn. Only the mistakes the server reports at CRD creation are looked for
(syntax, an undeclared field, `size()` on a value without a size, a rule that is not a bool); everything else is
left to run time, as dyn values are.

Of the 1.24 cost estimator, one verdict is reproduced, the one the Burstflow CRDs ran into: an equality (`==`,
`!=`) between two computed values (`has()`, comparisons, logic, arithmetic, function calls, map values) has no size
estimate on either side and is priced over budget, e.g. `has(self.a) != has(self.b)`; a field or a literal on
either side is fine (`has(self.a) == true`). Measured on a real 1.24 server, rule by rule.
"""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from celpy.celparser import CELParser
from lark import Token, Tree

from burstflow import crdschema

UNCHECKED_RULES = ("some validation rules were not checked because the object was invalid; correct the existing "
                   "errors to complete validation")
# Schema errors that stop the server from evaluating rules (customresource strategy `hasBlockingErr`).
BLOCKING_REASONS = ("FieldValueRequired", "FieldValueTooLong", "FieldValueTooMany", "FieldValueTypeInvalid")
_SIZED = ("string", "bytes", "list", "map", "dyn")
_OVER_BUDGET = ("exceeds budget by factor of more than 100x (try simplifying the rule, or adding maxItems, "
                "maxProperties, and maxLength where arrays, maps, and strings are declared)")


class CelType:
    """A schema node as the CEL type checker sees it: kind, message type name, element type, and (for a message
    type) its declared fields, computed on first use: a rule reads a few fields of a schema that can be megabytes."""

    def __init__(self, kind: str, *, name: str = "", elem: CelType | None = None,
                 schema: Mapping[str, Any] | None = None) -> None:
        self.kind = kind  # object | map | list | string | bytes | int | double | bool | timestamp | duration | dyn
        self.name = name
        self.elem = elem
        self._schema = schema or {}

    @functools.cached_property
    def fields(self) -> dict[str, CelType]:
        fields = {}
        for prop, sub in (self._schema.get("properties") or {}).items():
            typed = decl_type(sub, f"{self.name}.{prop}")
            if typed is not None:
                fields[prop] = typed
        return fields

    def describe(self) -> str:
        if self.kind == "object":
            return self.name
        if self.kind == "list":
            return f"list({self.elem.describe() if self.elem else 'dyn'})"
        if self.kind == "map":
            return f"map(string, {self.elem.describe() if self.elem else 'dyn'})"
        return self.kind


def _with_type_and_object_meta(schema: Mapping[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata.name and metadata.generateName are always readable at a resource root."""
    props = dict(schema.get("properties") or {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"type": "object", "properties": {"name": {"type": "string"},
                                                          "generateName": {"type": "string"}}}
    return {**schema, "type": "object", "properties": props}


def decl_type(schema: Any, name: str, *, root: bool = False) -> CelType | None:
    """The CEL type of a schema node (None: the node has no type CEL can declare, so its field is undeclared)."""
    if not isinstance(schema, Mapping):
        return None
    if schema.get("x-kubernetes-int-or-string"):
        return CelType("dyn")
    if root or schema.get("x-kubernetes-embedded-resource"):
        schema = _with_type_and_object_meta(schema)
    kind = schema.get("type")
    if kind == "array":
        items = decl_type(schema.get("items"), f"{name}.@idx", root=False)
        return CelType("list", elem=items) if items is not None else None
    if kind == "object":
        extra = schema.get("additionalProperties")
        if extra is not None and extra is not False:
            values = decl_type(extra, f"{name}.@elem") if isinstance(extra, Mapping) else None
            return CelType("map", elem=values) if values is not None else None
        return CelType("object", name=name, schema=schema)
    if kind == "string":
        fmt = schema.get("format")
        return CelType({"byte": "bytes", "duration": "duration", "date": "timestamp",
                        "date-time": "timestamp"}.get(fmt, "string"))
    return {"boolean": CelType("bool"), "number": CelType("double"), "integer": CelType("int")}.get(kind)


class _Problem(Exception):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


class _Checker:
    """Walks cel-python's parse tree, inferring types where the schema gives them (dyn elsewhere)."""

    MACROS_ITER = ("all", "exists", "exists_one", "map", "filter")

    def __init__(self, scope: dict[str, CelType]) -> None:
        self.scope = scope

    def check(self, tree: Any) -> CelType:
        return self.visit(tree, self.scope)

    def visit(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        if isinstance(tree, Token):
            return CelType("dyn")
        kind = tree.data
        kids = [c for c in tree.children if isinstance(c, Tree)]
        method = getattr(self, f"_{kind}", None)
        if method is not None:
            return method(tree, scope)
        types = [self.visit(c, scope) for c in kids]
        if kind in ("expr",) and len(kids) == 3:  # ternary: cond ? a : b
            return types[1] if types[1].kind == types[2].kind else CelType("dyn")
        if len(kids) == 1 and kind in ("expr", "conditionalor", "conditionaland", "relation", "addition",
                                       "multiplication", "unary", "member", "primary", "paren_expr"):
            return types[0]
        if kind.startswith("relation_") or kind in ("conditionalor", "conditionaland", "unary_not"):
            return CelType("bool")
        return CelType("dyn")

    def _literal(self, tree: Any, scope: dict[str, CelType] | None = None) -> CelType:
        token = tree.children[0]
        return CelType({"INT_LIT": "int", "UINT_LIT": "int", "FLOAT_LIT": "double", "STRING_LIT": "string",
                        "MLSTRING_LIT": "string", "BYTES_LIT": "bytes", "BOOL_LIT": "bool"}.get(token.type, "dyn"))

    def _relation(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        kids = tree.children
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        for kid in kids:
            self.visit(kid, scope)
        left = kids[0]
        operator = getattr(left, "data", "")
        if operator in ("relation_eq", "relation_ne") and not self._sized(left.children[0], scope) \
                and not self._sized(kids[1], scope):
            raise _CostProblem()
        return CelType("bool")

    def _sized(self, tree: Any, scope: dict[str, CelType]) -> bool:
        """Whether 1.24's estimator knows the size of this operand: a literal, a variable, a field of an object,
        an index, a list or map literal, or a string concatenation; not a computed value."""
        node = _unwrap(tree)
        if not isinstance(node, Tree):
            return True
        if node.data in ("literal", "ident", "list_lit", "map_lit", "member_index"):
            return True
        if node.data == "paren_expr":
            return self._sized(node.children[0], scope)
        if node.data == "member_dot":
            return self.visit(node.children[0], scope).kind not in ("map",)
        if node.data == "addition":
            return self.visit(node, scope).kind in ("string", "list", "bytes")
        return False

    def _addition(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        """`a + b` (and `a - b`): string, list and bytes concatenations keep their type; numbers stay numbers."""
        kids = [c for c in tree.children if isinstance(c, Tree)]
        if len(kids) == 1:
            return self.visit(kids[0], scope)
        operator = kids[0]
        left = self.visit(operator.children[0], scope) if operator.children else CelType("dyn")
        right = self.visit(kids[1], scope)
        if left.kind == right.kind and left.kind in ("string", "list", "bytes", "int", "double"):
            return left
        return CelType("dyn")

    def _ident(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        return scope.get(str(tree.children[0]), CelType("dyn"))

    def _member_dot(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        target, name = tree.children[0], tree.children[1]
        base = self.visit(target, scope)
        return self._select(base, str(name), name.start_pos - 1)

    def _select(self, base: CelType, name: str, offset: int) -> CelType:
        if base.kind == "object":
            if name not in base.fields:
                raise _Problem(f"undefined field '{name}'", offset)
            return base.fields[name]
        if base.kind == "map":
            return base.elem or CelType("dyn")
        if base.kind == "dyn":
            return CelType("dyn")
        raise _Problem(f"type '{base.describe()}' does not support field selection", offset)

    def _member_index(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        base = self.visit(tree.children[0], scope)
        self.visit(tree.children[1], scope)
        return (base.elem or CelType("dyn")) if base.kind in ("list", "map") else CelType("dyn")

    def _args(self, tree: Any) -> list[Any]:
        for child in tree.children:
            if isinstance(child, Tree) and child.data == "exprlist":
                return [c for c in child.children if isinstance(c, Tree)]
        return []

    def _ident_arg(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        function = str(tree.children[0])
        args = self._args(tree)
        if function == "has" and len(args) == 1:
            select = _single_member_dot(args[0])
            if select is None:
                raise _Problem("invalid argument to has() macro", tree.children[0].end_pos)
            base = self.visit(select.children[0], scope)
            try:
                self._select(base, str(select.children[1]), 0)
            except _Problem as problem:  # cel-go reports a bad has() at the macro's parenthesis
                raise _Problem(problem.message, tree.children[0].end_pos) from None
            return CelType("bool")
        types = [self.visit(a, scope) for a in args]
        if function == "size" and len(types) == 1:
            self._has_size(types[0], tree.children[0].end_pos)
            return CelType("int")
        return {"int": CelType("int"), "uint": CelType("int"), "double": CelType("double"),
                "string": CelType("string"), "bool": CelType("bool"), "bytes": CelType("bytes"),
                "timestamp": CelType("timestamp"), "duration": CelType("duration")}.get(function, CelType("dyn"))

    def _has_size(self, value: CelType, offset: int, *, receiver: bool = False) -> None:
        if value.kind not in _SIZED:
            shown = f"{value.describe()}.()" if receiver else f"({value.describe()})"
            raise _Problem(f"found no matching overload for 'size' applied to '{shown}'", offset)

    def _member_dot_arg(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        target, name = tree.children[0], tree.children[1]
        method = str(name)
        base = self.visit(target, scope)
        args = self._args(tree)
        if method in self.MACROS_ITER and len(args) in (2, 3):
            var = _plain_ident(args[0])
            if var is not None:
                elem = base.elem if base.kind == "list" else (CelType("string") if base.kind == "map" else None)
                inner = {**scope, var: elem or CelType("dyn")}
                body = [self.visit(a, inner) for a in args[1:]]
                if method == "map":
                    return CelType("list", elem=body[-1])
                if method == "filter":
                    return base
                return CelType("bool")
        types = [self.visit(a, scope) for a in args]
        if method == "size" and not types:
            self._has_size(base, name.end_pos, receiver=True)
            return CelType("int")
        if method in ("startsWith", "endsWith", "contains", "matches", "isSorted"):
            return CelType("bool")
        return CelType("dyn")

    def _member_object(self, tree: Any, scope: dict[str, CelType]) -> CelType:
        for child in tree.children[1:]:
            self.visit(child, scope)
        return CelType("dyn")


class _CostProblem(Exception):
    """`has(a) == has(b)`: kube-apiserver 1.24's estimator prices it over the per-expression limit."""


_WRAPPERS = ("expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary",
             "member", "primary")


def _unwrap(tree: Any) -> Any:
    """The first node below the single-child wrapper rules of the grammar (what the expression really is)."""
    while isinstance(tree, Tree) and tree.data in _WRAPPERS and len(tree.children) == 1 \
            and isinstance(tree.children[0], Tree):
        tree = tree.children[0]
    return tree


def _single_member_dot(tree: Any) -> Any:
    while isinstance(tree, Tree) and tree.data != "member_dot":
        kids = [c for c in tree.children if isinstance(c, Tree)]
        if len(kids) != 1:
            return None
        tree = kids[0]
    return tree


def _plain_ident(tree: Any) -> str | None:
    while isinstance(tree, Tree) and tree.data != "ident":
        kids = [c for c in tree.children if isinstance(c, Tree)]
        if len(kids) != 1:
            return None
        tree = kids[0]
    return str(tree.children[0]) if isinstance(tree, Tree) else None


def _caret(expression: str, offset: int) -> tuple[str, str]:
    """cel-go's issue location: `<input>:line:col: message` plus the source line and a caret under the column."""
    before = expression[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1)
    source = expression.split("\n")[line - 1]
    return f"<input>:{line}:{column + 1}", f"\n | {source}\n | {'.' * column}^"


@functools.lru_cache(maxsize=1)
def _parser() -> Any:
    return CELParser()


@functools.lru_cache(maxsize=4096)
def _parse(rule: str) -> Any:
    """The parse tree of a rule (the checker only reads it, so one tree serves every CRD that has the rule)."""
    return _parser().parse(rule)


def compile_error(rule: str, self_type: CelType) -> tuple[str, str] | None:
    """None when `rule` compiles for `self` of this type, else (kind, detail): kind "invalid" with the server's
    "compilation failed: ERROR: ..." detail, or "cost" for an estimated cost over the limit."""
    try:
        tree = _parse(rule)
    except Exception as exc:  # lark's syntax errors carry their position; cel-go's (ANTLR) wording is approximated
        token = getattr(exc, "token", None)
        offset = getattr(token, "start_pos", None)
        if offset is None:
            offset = getattr(exc, "pos_in_stream", None)
        at_end = offset is None or offset >= len(rule) or getattr(token, "type", "") == "$END"
        offset = len(rule) if at_end else offset
        found = "<EOF>" if at_end else rule[offset:offset + max(1, len(str(token or "")))]
        where, caret = _caret(rule, offset)
        return "invalid", f"compilation failed: ERROR: {where}: Syntax error: mismatched input '{found}'{caret}"
    scope = {"self": self_type, "oldSelf": self_type}
    try:
        result = _Checker(scope).check(tree)
    except _Problem as problem:
        where, caret = _caret(rule, problem.offset)
        return "invalid", f"compilation failed: ERROR: {where}: {problem.message}{caret}"
    except _CostProblem:
        return "cost", ""
    if result.kind not in ("bool", "dyn"):
        return "invalid", "cel expression must evaluate to a bool"
    return None


def _escape(key: str) -> str:
    return f"[{key}]"


def _schema_nodes(schema: Any, path: str, *, root: bool) -> Iterator[tuple[Mapping[str, Any], str, bool]]:
    """Every schema node with its field path as the apiextensions validation writes it (properties[x], items),
    children before their parent, the order the server reports them in."""
    if not isinstance(schema, Mapping):
        return
    for key, sub in (schema.get("properties") or {}).items():
        yield from _schema_nodes(sub, f"{path}.properties{_escape(key)}", root=False)
    if isinstance(schema.get("items"), Mapping):
        yield from _schema_nodes(schema["items"], f"{path}.items", root=bool(schema["items"].get(
            "x-kubernetes-embedded-resource")))
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from _schema_nodes(schema["additionalProperties"], f"{path}.additionalProperties", root=False)
    yield schema, path, root


def _go_rule(rule: Mapping[str, Any]) -> str:
    """How Go's %v prints the internal apiextensions.ValidationRule in a field error."""
    return (f"apiextensions.ValidationRule{{Rule:{json.dumps(rule.get('rule', ''))}, "
            f"Message:{json.dumps(rule.get('message', ''))}}}")


def _versioned_schemas(crd: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(path, schema) per distinct schema. The server converts a v1 CRD whose versions share one schema to the
    internal form with a single `spec.validation`, and names errors after that."""
    versions = [v for v in (crd.get("spec") or {}).get("versions") or [] if isinstance(v, Mapping)]
    schemas = [(v.get("schema") or {}).get("openAPIV3Schema") for v in versions]
    if schemas and all(s == schemas[0] for s in schemas):
        return [("spec.validation.openAPIV3Schema", schemas[0])]
    return [(f"spec.versions[{i}].schema.openAPIV3Schema", s) for i, s in enumerate(schemas)]


def crd_rule_causes(crd: Mapping[str, Any]) -> list[dict[str, str]]:
    """The 422 causes kube-apiserver gives for a CRD whose validation rules do not compile (or cost too much)."""
    causes: list[dict[str, str]] = []
    for base, schema in _versioned_schemas(crd):
        expensive: list[str] = []
        for node, path, root in _schema_nodes(schema, base, root=True):
            rules = node.get("x-kubernetes-validations") or []
            if not rules:
                continue
            self_type = decl_type(node, f"selfType{time.time_ns() % 1_000_000_000}", root=root)
            if self_type is None:
                preserve = str(bool(node.get("x-kubernetes-preserve-unknown-fields"))).lower()
                causes.append({"reason": "InternalError", "field": f"{path}.x-kubernetes-validations",
                               "message": "Internal error: rule declared on schema that does not support validation "
                                          f"rules type: '{node.get('type', '')}' x-kubernetes-preserve-unknown-"
                                          f"fields: '{preserve}'"})
                continue
            for i, rule in enumerate(rules):
                text = str((rule or {}).get("rule") or "")
                where = f"{path}.x-kubernetes-validations[{i}].rule"
                if not text.strip():
                    causes.append({"reason": "FieldValueRequired", "field": where,
                                   "message": "Required value: rule is not specified"})
                    continue
                problem = compile_error(text, self_type)
                if problem is None:
                    continue
                kind, detail = problem
                if kind == "cost":
                    expensive.append(where)
                    causes.append({"reason": "FieldValueForbidden", "field": where,
                                   "message": f"Forbidden: estimated rule cost {_OVER_BUDGET}"})
                else:
                    causes.append({"reason": "FieldValueInvalid", "field": where,
                                   "message": f"Invalid value: {_go_rule(rule)}: {detail}"})
        if expensive:  # each such rule also blows the whole schema's total (the four most expensive are named)
            causes += [{"reason": "FieldValueForbidden", "field": where,
                        "message": "Forbidden: contributed to estimated rule cost total exceeding cost limit for "
                                   "entire OpenAPIv3 schema"} for where in expensive[:4]]
            causes.append({"reason": "FieldValueForbidden", "field": base,
                           "message": "Forbidden: x-kubernetes-validations estimated rule cost total for entire "
                                      f"OpenAPIv3 schema {_OVER_BUDGET}"})
    return causes


# --- evaluation -------------------------------------------------------------------------------------------------


def _field(path: list[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<nil>"


def _type_name(schema: Mapping[str, Any]) -> str:
    return str(schema.get("type") or "")


def rule_causes(schema: Mapping[str, Any], obj: Mapping[str, Any], old: Mapping[str, Any] | None = None
                ) -> list[dict[str, str]]:
    """Evaluate every rule of `schema` on `obj` (transition rules only where `old` has a value at that place);
    the causes kube-apiserver reports: `Invalid value: "<schema type>": <message>` at the node's path."""
    causes: list[dict[str, str]] = []
    for failure in crdschema.rule_failures(schema, obj, old):
        kind = json.dumps(_type_name(failure.node))
        if failure.error is not None:
            message = (f"Invalid value: {kind}: {failure.error} evaluating rule: "
                       f"{failure.rule.get('message') or failure.rule.get('rule') or ''}")
        else:
            message = f"Invalid value: {kind}: {failure.message}"
        causes.append({"reason": "FieldValueInvalid", "field": _field(list(failure.path)), "message": message})
    return causes
