"""One-line messages for validation errors, shared by every file the tools
read (scenarios, calibration files, trial files): the key path inside the
file and what was expected, with a "did you mean" for typos."""

from __future__ import annotations

import difflib
import re
import types
import typing

from pydantic import BaseModel


def key_path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(annotation, part):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg, part)
            if found is not None:
                return found
        return None
    if origin in (list, tuple):
        return typing.get_args(annotation)[0] if isinstance(part, int) else None
    if origin is dict:
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            if part in (name, field.alias):
                return field.annotation
    return None


def model_at(root, loc: tuple):
    """The pydantic model class reached by following ``loc`` from ``root``."""
    annotation = root
    for part in loc:
        annotation = _unwrap(annotation, part)
        if annotation is None:
            return None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # Optional[Model]
        annotation = next((a for a in typing.get_args(annotation)
                           if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def allowed_keys(model) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def clean_loc(loc: tuple, data) -> tuple:
    """Pydantic's error location without its internal segments (union members, validator names)."""
    clean, node = [], data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and part < len(node)):
            node = node[part]
            clean.append(part)
        elif isinstance(part, str) and ("[" in part or "-" in part):
            continue
        else:
            clean.append(part)
            node = None
    return tuple(clean)


# A model-level check may name the key it is about by starting its message
# with "key: " or "key.sub: " (relative to the model); that goes into the key path.
_KEY_PREFIX = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*): (.+)$", re.DOTALL)


def _split_key_prefix(root, message: str, loc: tuple) -> tuple[tuple, str]:
    match = _KEY_PREFIX.match(message)
    if match:
        sub = tuple(match.group(1).split("."))
        model = model_at(root, loc)
        if model is not None and sub[0] in allowed_keys(model):
            return loc + sub, match.group(2)
    return loc, message


def describe_error(error: dict, data, root) -> tuple[tuple, str]:
    """``(key path, what was expected)`` for one pydantic error of model ``root``."""
    loc = clean_loc(tuple(error["loc"]), data)
    kind, msg = error["type"], " ".join(error["msg"].split())
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    if kind == "extra_forbidden":
        model = model_at(root, loc[:-1])
        allowed = allowed_keys(model) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        text = f"unknown key {loc[-1]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        return loc, text + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return loc, "missing required key"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return _split_key_prefix(root, msg[len(prefix):], loc)
    if kind == "literal_error":
        choices = [a or b for a, b in re.findall(r"'([^']*)'|\b(\d+)\b",
                                                 str((error.get("ctx") or {}).get("expected", "")))]
        what = "key" if error["loc"] and error["loc"][-1] == "[key]" else "value"
        hint = difflib.get_close_matches(str(got), choices, n=1)
        return loc, (f"unknown {what} {got!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                     + f"; expected one of: {', '.join(choices)}")
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return loc, f"expected a mapping of keys (key: value){shown}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return loc, msg.replace("Input should be ", "expected a number ") + shown
    if kind in ("too_short", "too_long"):
        ctx = error.get("ctx") or {}
        bound = f"at least {ctx.get('min_length')}" if kind == "too_short" else f"at most {ctx.get('max_length')}"
        return loc, f"expected {bound} entries, got {ctx.get('actual_length')}"
    if kind.endswith("_parsing") or kind == "int_from_float":
        msg = msg.split(",")[0]  # "Input should be a valid integer, unable to parse ..." -> the first part
    if msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be "):]
    return loc, f"{msg[0].lower()}{msg[1:]}{shown}"
