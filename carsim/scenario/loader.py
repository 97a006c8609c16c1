"""Read a scenario file: YAML, ``extends:`` chains with deep override, schema
validation, then the checks the schema cannot do alone (conditions name known
variables, the covariates the pathway needs exist).  Every problem becomes a
:class:`~carsim.errors.ScenarioError` naming the file, the key path and what
was expected.
"""

from __future__ import annotations

import copy
import difflib
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ScenarioError
from ..model.state import REQUIRED_COVARIATES, STATE_VARIABLES
from .conditions import ConditionSyntaxError, parse_condition
from .schema import Multiplier, Scenario


def read_yaml(path: Path) -> dict:
    """Parse one YAML file into a mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(path, "", "file not found" if not path.exists() else "expected a file, got a folder")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown position)"
        raise ScenarioError(path, where, f"malformed YAML: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScenarioError(path, "", f"malformed YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(path, "", f"expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


# A mapping that names its kind (a law's family, a covariate's distribution)
# replaces the inherited one whole: parameters of two families never mix.
_REPLACING_KEYS = frozenset({"family", "bernoulli", "categorical"})


def deep_merge(base: dict, override: dict) -> dict:
    """``override`` wins; mappings merge key by key, anything else replaces.
    A mapping with ``family``/``bernoulli``/``categorical`` replaces whole."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not (_REPLACING_KEYS & set(value)):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _record_origin(data, file: Path, prefix: tuple, origin: dict):
    origin[prefix] = file
    if isinstance(data, dict):
        for k, v in data.items():
            _record_origin(v, file, prefix + (k,), origin)


def resolve_extends(path: Path, _chain: tuple = ()) -> tuple[dict, dict]:
    """Return the merged mapping and, for every key path, the file that set it."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in _chain + (path,))
        raise ScenarioError(_chain[-1], "extends", f"circular 'extends' chain: {cycle}")
    data = read_yaml(path)
    parent_name = data.pop("extends", None)
    origin: dict = {}
    if parent_name is not None:
        if not isinstance(parent_name, str) or not parent_name.strip():
            raise ScenarioError(path, "extends", "expected the path of another scenario file")
        parent = (path.parent / parent_name).resolve()
        if not parent.is_file():
            raise ScenarioError(path, "extends", f"expected an existing scenario file, '{parent_name}' not found")
        base, origin = resolve_extends(parent, _chain + (path,))
        data = deep_merge(base, data)
        _record_origin(read_yaml(path), path, (), origin)
        origin.pop(("extends",), None)
    else:
        _record_origin(data, path, (), origin)
    return data, origin


def _file_for(loc: tuple, origin: dict, default: Path) -> Path:
    for i in range(len(loc), -1, -1):
        if loc[:i] in origin:
            return origin[loc[:i]]
    return default


def _model_at(loc: tuple):
    """The pydantic model class reached by following ``loc`` from Scenario."""
    annotation = Scenario
    for part in loc:
        annotation = _unwrap(annotation, part)
        if annotation is None:
            return None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _unwrap(annotation, part):
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
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


def _allowed_keys(model) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _key_path(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _clean_loc(loc: tuple, data) -> tuple:
    """Drop pydantic's internal segments (union members, validator names)."""
    clean, node = [], data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            clean.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            clean.append(part)
        elif isinstance(part, str) and ("[" in part or "-" in part):
            continue
        else:
            clean.append(part)
            node = None
    return tuple(clean)


def _describe(error: dict, loc: tuple) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = _allowed_keys(model) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        text = f"unknown key {loc[-1]!r}"
        if hint:
            text += f" (did you mean {hint[0]!r}?)"
        return text + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "missing required key"
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if msg.startswith("Assertion failed, "):
        return msg[len("Assertion failed, "):]
    got = error.get("input")
    if kind.startswith("literal_error"):
        return f"{msg[0].lower()}{msg[1:]} (got {got!r})"
    return f"{msg[0].lower()}{msg[1:]} (got {got!r})" if not isinstance(got, (dict, list)) else msg


def load_scenario(path, overrides: dict | None = None) -> Scenario:
    """Load, merge, override and validate a scenario file.

    ``overrides`` maps dotted key paths to values (``{"cohort.size": 2000}``),
    applied after ``extends`` so command-line options win.
    """
    path = Path(path)
    data, origin = resolve_extends(path)
    for dotted, value in (overrides or {}).items():
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    data.setdefault("name", path.stem)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = _clean_loc(tuple(error["loc"]), data)
        raise ScenarioError(_file_for(loc, origin, path), _key_path(loc), _describe(error, loc)) from None
    check_semantics(scenario, lambda loc: _file_for(loc, origin, path))
    return scenario


def covariate_names(scenario: Scenario) -> set[str]:
    return set(scenario.cohort.covariates)


def check_semantics(scenario: Scenario, file_for) -> None:
    """Checks across blocks: conditions, required covariates, bridging levels."""

    def fail(loc: tuple, expected: str):
        raise ScenarioError(file_for(loc), _key_path(loc), expected)

    covs = scenario.cohort.covariates
    for name, kind in REQUIRED_COVARIATES.items():
        if name not in covs:
            fail(("cohort", "covariates"), f"missing covariate {name!r} (the pathway needs it; {kind})")
        if getattr(covs[name], kind) is None:
            fail(("cohort", "covariates", name), f"expected a {kind} covariate")
    all_names = set(covs) | set(STATE_VARIABLES)
    observable = set(covs) | {n for n, (_, seen) in STATE_VARIABLES.items() if seen}

    for key, value in scenario.cohort.fixed.items():
        if key not in covs and key != "marrow_blasts_infusion":
            fail(("cohort", "fixed", key), "unknown covariate; expected one of: "
                 + ", ".join(sorted(set(covs) | {"marrow_blasts_infusion"})))
        spec = covs.get(key)
        if spec is not None and spec.categorical is not None and value not in spec.categorical:
            fail(("cohort", "fixed", key), f"expected one of the levels {list(spec.categorical)}, got {value!r}")

    levels = set(covs["bridging"].categorical)
    given = set(scenario.pathway.bridging.blast_multiplier)
    if levels != given:
        fail(("pathway", "bridging", "blast_multiplier"),
             f"expected one multiplier per bridging level {sorted(levels)}, got {sorted(given)}")

    def check_condition(text, loc, names):
        try:
            return parse_condition(text, names)
        except ConditionSyntaxError as exc:
            fail(loc, str(exc))

    for loc, multiplier in iter_multipliers(scenario):
        if multiplier.when_true is not None:
            check_condition(multiplier.when_true, loc + ("if",), all_names)
        elif multiplier.per not in all_names:
            fail(loc + ("per",), f"unknown variable {multiplier.per!r}")
        elif multiplier.per in covs and covs[multiplier.per].family is None \
                and covs[multiplier.per].categorical is not None \
                and not all(isinstance(k, (int, float)) for k in covs[multiplier.per].categorical):
            fail(loc + ("per",), f"expected a numeric variable, {multiplier.per!r} has text levels")

    for pname, policy in scenario.policies.items():
        for i, rule in enumerate(policy.rules):
            loc = ("policies", pname, "rules", i, "if")
            cond = check_condition(rule.condition, loc, all_names)
            hidden = sorted(cond.names - observable)
            if hidden:
                fail(loc, f"a policy can only use what clinicians observe; {hidden[0]!r} is hidden biology "
                          f"(use the test results, e.g. 'bca_loss_detected' or 'mrd_positive')")


def iter_multipliers(scenario: Scenario):
    """Every (key path, Multiplier) in the pathway: hazard multipliers and odds ratios."""

    def walk(node, loc):
        if isinstance(node, Multiplier):
            yield loc, node
        elif isinstance(node, BaseModel):
            for name in type(node).model_fields:
                yield from walk(getattr(node, name), loc + (name,))
        elif isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, loc + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, loc + (i,))

    yield from walk(scenario.pathway, ("pathway",))
