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


def parse_condition(text, known_names=None) -> Condition:
    """Parse and compile ``text``.  ``known_names``: the variables allowed;
    an unknown one raises :class:`ConditionSyntaxError` naming it."""
    if isinstance(text, bool):
        text = "true" if text else "false"
    if not isinstance(text, str) or not text.strip():
        raise ConditionSyntaxError("expected a condition such as 'months_since_infusion < 6'")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConditionSyntaxError(f"cannot parse condition {text!r}: {exc.msg}") from None
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
    tree = ast.parse(condition.source, mode="eval")
    tree = _RewriteNames().visit(tree)
    tree = ast.fix_missing_locations(_Vectorise().visit(tree))
    lam = ast.Expression(body=ast.Lambda(
        args=ast.arguments(posonlyargs=[], args=[ast.arg(arg="s")], kwonlyargs=[], kw_defaults=[], defaults=[]),
        body=tree.body))
    return eval(compile(ast.fix_missing_locations(lam), f"<vector condition {condition.source}>", "eval"),
                dict(_VECTOR_GLOBALS))
