"""The small condition language used by policy rules and hazard multipliers.

A condition is a Python-like boolean expression over named patient variables,
e.g. ``months_since_infusion < 6 and not mrd_positive`` or
``blinatumomab == 'exposed_no_cr'``.  It is parsed once with :mod:`ast`, only
a whitelist of node types is accepted (no calls, no attribute access), every
name is checked against the variable registry, and the expression is compiled
to a plain Python function of one argument (the patient state object).
YAML spellings ``true``/``false`` are accepted for the booleans.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
    ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Name, ast.Load, ast.Constant,
    ast.Tuple, ast.List,
)
_CONSTANT_NAMES = {"true": True, "false": False, "True": True, "False": False}


class ConditionSyntaxError(ValueError):
    """The text is not a valid condition; the message says why."""


@dataclass(frozen=True)
class Condition:
    """A compiled condition.  ``names`` are the variables it reads."""

    source: str
    names: frozenset = field(compare=False)
    evaluate: Callable = field(compare=False, repr=False)

    def __call__(self, state) -> bool:
        return bool(self.evaluate(state))


class _RewriteNames(ast.NodeTransformer):
    """``x`` -> ``s.x`` (attribute access on the state), ``true`` -> True."""

    def __init__(self):
        self.names: set[str] = set()

    def visit_Name(self, node: ast.Name):
        if node.id in _CONSTANT_NAMES:
            return ast.copy_location(ast.Constant(_CONSTANT_NAMES[node.id]), node)
        self.names.add(node.id)
        return ast.copy_location(
            ast.Attribute(value=ast.Name(id="s", ctx=ast.Load()), attr=node.id, ctx=ast.Load()), node
        )


MAX_CONDITION_LENGTH = 1000  # characters: a condition is a line, not a program
MAX_CONDITION_DEPTH = 30  # nested operators


def parse_condition(text, known_names=None) -> Condition:
    """Parse and compile ``text``.  ``known_names``: the variables allowed;
    an unknown one raises :class:`ConditionSyntaxError` naming it."""
    if isinstance(text, bool):
        text = "true" if text else "false"
    if not isinstance(text, str) or not text.strip():
        raise ConditionSyntaxError("expected a condition such as 'months_since_infusion < 6'")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionSyntaxError(f"a condition of {len(text):,} characters; expected at most "
                                   f"{MAX_CONDITION_LENGTH:,}")
    return _parsed(text, None if known_names is None else frozenset(known_names))


# By text (and allowed names), as _vectorised below: a model is rebuilt for
# every PSA draw, trial grid point or calibration step from the same few
# conditions, and parsing them was about a fifth of a 300-patient draw.  A
# Condition is immutable; a text that fails raises again (errors are not cached).
@functools.lru_cache(maxsize=4096)
def _parsed(text: str, known_names: frozenset | None) -> Condition:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise ConditionSyntaxError(f"cannot parse condition {text[:60]!r}: "
                                   f"{getattr(exc, 'msg', 'nested too deep')}") from None
    if _depth(tree.body) > MAX_CONDITION_DEPTH:
        raise ConditionSyntaxError(f"condition {text[:60]!r} nests more than {MAX_CONDITION_DEPTH} operators")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise ConditionSyntaxError(
                f"condition {text!r} uses {type(node).__name__}; only comparisons, and/or/not, "
                "arithmetic, numbers, strings and variable names are allowed"
            )
    rewriter = _RewriteNames()
    tree = ast.fix_missing_locations(rewriter.visit(tree))
    if known_names is not None:
        unknown = sorted(rewriter.names - set(known_names))
        if unknown:
            raise ConditionSyntaxError(
                f"condition {text!r} uses unknown variable {unknown[0]!r}; known variables: "
                + ", ".join(sorted(known_names))
            )
    lam = ast.Expression(
        body=ast.Lambda(
            args=ast.arguments(posonlyargs=[], args=[ast.arg(arg="s")], kwonlyargs=[], kw_defaults=[],
                               defaults=[]),
            body=tree.body,
        )
    )
    code = compile(ast.fix_missing_locations(lam), f"<condition {text}>", "eval")
    return Condition(source=text.strip(), names=frozenset(rewriter.names), evaluate=eval(code, {}))


def _depth(node, limit: int = MAX_CONDITION_DEPTH + 1) -> int:
    """Nesting depth of an expression, counted without recursing past ``limit``."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= limit:
            stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


# ------------------------------------------------------------------ static types
# A variable's type for the check below: ("number" | "bool" | "text", its levels or None).
NUMBER, BOOL, TEXT = "number", "bool", "text"


def check_types(condition: Condition, types: dict[str, tuple[str, frozenset | None]]) -> str | None:
    """What is wrong with the types in ``condition`` (None: nothing): text
    in arithmetic or ordered against numbers, a comparison with a level the
    variable does not have, division by zero, ``in`` without a list."""
    tree = ast.parse(condition.source, mode="eval")

    def kind(node) -> tuple[str, frozenset | None]:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                return BOOL, None
            if isinstance(node.value, (int, float)):
                return NUMBER, None
            return TEXT, None
        if isinstance(node, ast.Name):
            if node.id in _CONSTANT_NAMES:
                return BOOL, None
            return types.get(node.id, (NUMBER, None))
        if isinstance(node, ast.UnaryOp):
            inner = kind(node.operand)
            if isinstance(node.op, ast.Not):
                return BOOL, None
            if inner[0] == TEXT:
                raise TypeError("a sign in front of text")
            return NUMBER, None
        if isinstance(node, ast.BinOp):
            left, right = kind(node.left), kind(node.right)
            if TEXT in (left[0], right[0]):
                raise TypeError("arithmetic on text")
            if isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) and node.right.value == 0:
                raise TypeError("division by zero")
            return NUMBER, None
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                kind(value)
            return BOOL, None
        if isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                kind(element)
            return TEXT if all(kind(e)[0] == TEXT for e in node.elts) and node.elts else NUMBER, None
        if isinstance(node, ast.Compare):
            left = node.left
            for op, right in zip(node.ops, node.comparators, strict=True):
                _compare(left, op, right)
                left = right
            return BOOL, None
        return NUMBER, None

    def _compare(left, op, right):
        a = kind(left)
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.Tuple, ast.List)):
                raise TypeError("'in' needs a list of values, e.g. x in ('a', 'b')")
            for element in right.elts:
                _same(left, a, element, kind(element))
            return
        b = kind(right)
        if isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) and TEXT in (a[0], b[0]):
            raise TypeError("text ordered with <, >, <= or >=")
        _same(left, a, right, b)

    def _same(left, a, right, b):
        if (a[0] == TEXT) != (b[0] == TEXT):
            raise TypeError("text compared with a number")
        for variable, (_, levels), other in ((left, a, right), (right, b, left)):
            if levels is not None and isinstance(variable, ast.Name) and isinstance(other, ast.Constant) \
                    and other.value not in levels:
                raise TypeError(f"{variable.id!r} has no level {other.value!r} (its levels: "
                                f"{', '.join(repr(v) for v in sorted(levels, key=str))})")

    try:
        kind(tree.body)
    except TypeError as exc:
        return f"condition {condition.source!r}: {exc}"
    return None


class _Vectorise(ast.NodeTransformer):
    """Rewrite a condition to work element-wise on NumPy arrays:
    and/or/not become logical_and/or/not, chained comparisons are split, and
    ``x in (...)`` becomes ``isin``."""

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        fn = "_and" if isinstance(node.op, ast.And) else "_or"
        return ast.copy_location(ast.Call(ast.Name(fn, ast.Load()), node.values, []), node)

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            return ast.copy_location(ast.Call(ast.Name("_not", ast.Load()), [node.operand], []), node)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        parts, left = [], node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)):
                call = ast.Call(ast.Name("_isin", ast.Load()), [left, right], [])
                part = ast.Call(ast.Name("_not", ast.Load()), [call], []) if isinstance(op, ast.NotIn) else call
            else:
                part = ast.Compare(left, [op], [right])
            parts.append(part)
            left = right
        if len(parts) == 1:
            return ast.copy_location(parts[0], node)
        return ast.copy_location(ast.Call(ast.Name("_and", ast.Load()), parts, []), node)


def _and(*values):
    out = values[0]
    for v in values[1:]:
        out = np.logical_and(out, v)
    return out


def _or(*values):
    out = values[0]
    for v in values[1:]:
        out = np.logical_or(out, v)
    return out


def _isin(value, options):
    return np.isin(value, list(options))


_VECTOR_GLOBALS = {"_and": _and, "_or": _or, "_not": np.logical_not, "_isin": _isin}


def vectorise_condition(condition: Condition):
    """An element-wise version of ``condition``: a function of a state whose
    attributes are arrays, returning a boolean array (or a scalar for a
    condition on constants only)."""
    return _vectorised(condition.source)


# By condition text: a model is rebuilt for every PSA draw or calibration
# step, from the same few conditions.
@functools.lru_cache(maxsize=4096)
def _vectorised(source: str):
    tree = ast.parse(source, mode="eval")
    tree = _RewriteNames().visit(tree)
    tree = ast.fix_missing_locations(_Vectorise().visit(tree))
    lam = ast.Expression(body=ast.Lambda(
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg="s")], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=tree.body))
    return eval(compile(ast.fix_missing_locations(lam), f"<vector condition {source}>", "eval"),
                dict(_VECTOR_GLOBALS))
