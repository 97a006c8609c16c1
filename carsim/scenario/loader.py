"""Read a scenario file: YAML, ``extends:`` chains with deep override, schema
validation, then the checks the schema cannot do alone (conditions name known
variables, the covariates the pathway needs exist).  Every problem becomes a
:class:`~carsim.errors.ScenarioError` naming the file, the key path and what
was expected.
"""

from __future__ import annotations

import copy
import difflib
import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .._limits import BYTES_PER_TRAJECTORY, physical_memory_bytes
from ..errors import ScenarioError
from .conditions import BOOL, NUMBER, TEXT, ConditionSyntaxError, check_types, parse_condition
from .paths import label_of, locate, parent_of
from .schema import Multiplier, Scenario
from .validation import describe_error, key_path
from .vocabulary import INITIAL_STATE, REQUIRED_COVARIATES, STATE_VARIABLES

# libyaml's parser when PyYAML was built with it: about ten times faster.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML
    would silently keep the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *anchor' merges, and may be overridden, by design
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # unhashable key: the base class reports it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _UniqueKeyLoader.construct_mapping)


# A document's values counted with every alias expanded (a "billion laughs"
# document is small on disk and enormous once merged and validated), and its
# nesting depth: far beyond any scenario, well within Python's recursion limit.
MAX_VALUES = 1_000_000
MAX_DEPTH = 60
MAX_EXTENDS = 32


def check_nesting(text: str, path) -> None:
    """Refuse a document nested deeper than MAX_DEPTH, from its parse events
    (no recursion: PyYAML's constructor would exhaust Python's stack)."""
    depth = 0
    for event in yaml.parse(text, Loader=_SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise ScenarioError(path, f"line {mark.line + 1}, column {mark.column + 1}",
                                    f"nested more than {MAX_DEPTH} levels deep; expected a scenario")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def check_size(data, path) -> None:
    """Refuse a document that expands to too many values or nests too deep."""
    count = 0
    stack = [(data, 0, ())]
    while stack:
        node, depth, loc = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ScenarioError(path, "", f"the document expands to more than {MAX_VALUES:,} values (YAML "
                                          "aliases repeated inside aliases?); expected a scenario")
        if depth > MAX_DEPTH:
            raise ScenarioError(path, ".".join(str(k) for k in loc[:5]) + " ...",
                                f"nested more than {MAX_DEPTH} levels deep; expected a scenario")
        if isinstance(node, dict):
            stack.extend((v, depth + 1, loc + (k,)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, depth + 1, loc + (i,)) for i, v in enumerate(node))


def read_yaml(path: Path) -> dict:
    """Parse one YAML file into a mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(path, "", "file not found" if not path.exists() else "expected a file, got a folder")
    try:
        text = path.read_text(encoding="utf-8")
        check_nesting(text, path)  # before construction, which recurses once per level
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(unknown position)"
        problem = " ".join(str(exc.problem).split())  # one line, even for multi-line problems
        if exc.context and exc.context_mark and exc.context_mark.line != getattr(mark, "line", None):
            start = exc.context_mark
            context = " ".join(str(exc.context).split())
            problem += f" ({context} that starts on line {start.line + 1}, column {start.column + 1})"
        raise ScenarioError(path, where, f"malformed YAML: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(path, "", f"expected a UTF-8 text file, byte {exc.object[exc.start]:#04x} "
                                      f"at position {exc.start} is not UTF-8") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(path, "", "malformed YAML: " + " ".join(str(exc).split())) from None
    check_size(data, path)
    if data is None:
        raise ScenarioError(path, "", "the file is empty; expected a mapping of scenario keys "
                                      "(cohort, pathway, ...) or 'extends: <parent file>'")
    if not isinstance(data, dict):
        raise ScenarioError(path, "", "expected a mapping of keys at the top level, "
                                      f"got a YAML {type(data).__name__}")
    return data


# A mapping that names its kind (a law's family, a covariate's distribution)
# replaces the inherited one whole: parameters of two families never mix.
_REPLACING_KEYS = frozenset({"family", "bernoulli", "categorical"})


_NOTES = ("source", "assumption")


class _MergeError(ValueError):
    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc


def deep_merge(base: dict, override: dict, loc: tuple = ()) -> dict:
    """``override`` wins; mappings merge key by key, lists of labelled entries
    merge by label, anything else replaces.  A mapping with
    ``family``/``bernoulli``/``categorical`` replaces whole, and a mapping that
    states its own ``source``/``assumption`` drops the inherited note (the
    note belongs to the value it now describes).  ``[]`` or ``{replace: [...]}``
    replaces an inherited list whole."""
    out = copy.deepcopy(base)
    if any(note in override for note in _NOTES):
        for note in _NOTES:
            out.pop(note, None)
    for key, value in override.items():
        current = out.get(key)
        if isinstance(value, dict) and set(value) == {"replace"} and isinstance(value["replace"], list):
            out[key] = copy.deepcopy(value["replace"])
        elif isinstance(value, dict) and isinstance(current, dict) and not (_REPLACING_KEYS & set(value)):
            out[key] = deep_merge(current, value, loc + (key,))
        elif value and isinstance(value, list) and isinstance(current, list) and any(map(label_of, current)):
            out[key] = _merge_by_label(current, value, loc + (key,))
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_by_label(base: list, override: list, loc: tuple) -> list:
    """An entry whose label is inherited changes that entry (key by key); a new label is appended."""
    out = copy.deepcopy(base)
    index = {label_of(item): i for i, item in enumerate(out) if label_of(item)}
    for i, item in enumerate(override):
        label = label_of(item)
        if not isinstance(label, str):
            raise _MergeError(loc + (i,), "expected a 'label:' naming the inherited entry this changes (one of: "
                                          f"{', '.join(index)}) or a new one: the inherited list is merged by "
                                          "label ('{replace: [...]}' replaces it whole)")
        if label in index:
            out[index[label]] = deep_merge(out[index[label]], item, loc + (i,))
        else:
            index[label] = len(out)
            out.append(copy.deepcopy(item))
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
    if len(_chain) >= MAX_EXTENDS:
        raise ScenarioError(_chain[-1], "extends", f"an 'extends' chain of more than {MAX_EXTENDS} files; "
                                                   "expected a scenario built on a few others")
    data = read_yaml(path)
    parent_name = data.pop("extends", None)
    origin: dict = {}
    if parent_name is not None:
        if not isinstance(parent_name, str) or not parent_name.strip():
            raise ScenarioError(path, "extends", "expected the path of another scenario file")
        parent = (path.parent / parent_name).resolve()
        if not parent.is_file():
            what = "is a folder" if parent.exists() else "not found"
            raise ScenarioError(path, "extends", f"expected an existing scenario file, {parent_name!r} "
                                                 f"{what} (looked for {parent})")
        base, origin = resolve_extends(parent, _chain + (path,))
        try:
            data = deep_merge(base, data)
        except _MergeError as exc:
            raise ScenarioError(path, key_path(exc.loc), str(exc)) from None
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


def non_finite_number(node, loc: tuple = ()):
    """(key path, value) of the first NaN or infinite number in a YAML document, or None."""
    if isinstance(node, float) and not math.isfinite(node):
        return loc, node
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return None
    for key, value in items:
        found = non_finite_number(value, loc + (key,))
        if found is not None:
            return found
    return None


def check_finite(data, file_for) -> None:
    """NaN passes every comparison silently (a NaN growth switches a hazard
    off) and infinity is no rate, mean or size: no number in a scenario,
    calibration or targets file may be either.  ``file_for(key path)``: the
    file to name."""
    found = non_finite_number(data)
    if found is not None:
        where, value = found
        raise ScenarioError(file_for(where), key_path(where), f"expected a finite number, got {value!r}")


def _validate(data: dict, file_for) -> Scenario:
    check_finite(data, file_for)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        loc, expected = describe_error(exc.errors()[0], data, Scenario)
        raise ScenarioError(file_for(loc), key_path(loc), expected) from None


def load_scenario(path, overrides: dict | None = None) -> Scenario:
    """Load, merge, override and validate a scenario file.

    ``overrides`` maps dotted key paths to values (``{"cohort.size": 2000}``),
    applied after ``extends`` so command-line options win.
    """
    path = Path(path)
    data, origin = resolve_extends(path)
    data.setdefault("name", path.stem)

    def file_for(loc):
        return _file_for(loc, origin, path)

    # The file as written must be valid on its own, even where an option
    # overrides a value (a bad 'cohort.size' is an error with '--patients').
    scenario = _validate(data, file_for)
    if overrides:
        for dotted, value in overrides.items():
            keys = tuple(dotted.split("."))
            node = data
            for i, key in enumerate(keys[:-1]):
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    raise ScenarioError(file_for(keys[:i + 1]), key_path(keys[:i + 1]),
                                        f"expected a mapping of keys, so that '{dotted}' can be set")
            node[keys[-1]] = value
            origin[keys] = path
        scenario = _validate(data, file_for)
    check_semantics(scenario, file_for)
    return scenario


def check_semantics(scenario: Scenario, file_for) -> None:
    """Checks across blocks: conditions, required covariates, bridging levels."""

    def fail(loc: tuple, expected: str):
        raise ScenarioError(file_for(loc), key_path(loc), expected)

    per_patient = BYTES_PER_TRAJECTORY * len(scenario.policy_names) * scenario.run.replications
    memory = physical_memory_bytes()
    if memory is not None and scenario.cohort.size * per_patient > memory:
        fail(("cohort", "size"), f"{scenario.cohort.size:,} patients x {len(scenario.policy_names)} policies x "
                                 f"{scenario.run.replications} replication(s) would need about "
                                 f"{scenario.cohort.size * per_patient / 1e9:,.0f} GB, more than this machine's "
                                 f"{memory / 1e9:.0f} GB; expected at most about {memory // per_patient:,} patients")

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
        where = ("cohort", "fixed", key)
        if spec is not None and spec.categorical is not None and value not in spec.categorical:
            fail(where, f"expected one of the levels {list(spec.categorical)}, got {value!r}")
        if spec is not None and spec.bernoulli is not None and not isinstance(value, bool):
            fail(where, f"expected true or false (a yes/no covariate), got {value!r}")
        numeric = key == "marrow_blasts_infusion" or (spec is not None and spec.family is not None)
        if numeric and (isinstance(value, bool) or not isinstance(value, (int, float))):
            fail(where, f"expected a number, got {value!r}")
        if key in ("marrow_blasts_infusion", "marrow_blasts_referral", "cd19_antigen_load") \
                and not 0 <= value <= 100:
            fail(where, f"expected a percentage between 0 and 100, got {value!r}")

    access_reads = _access_reads(scenario)
    for name, policy in scenario.policies.items():
        for key, value in policy.assigns.items():
            where = ("policies", name, "assigns", key)
            spec = covs.get(key)
            if spec is None or spec.family is not None:
                fail(where, "expected a yes/no or categorical covariate of cohort.covariates; "
                            f"categorical and yes/no ones: {', '.join(sorted(k for k, c in covs.items() if c.family is None))}")
            if spec.categorical is not None and value not in spec.categorical:
                fail(where, f"expected one of the levels {list(spec.categorical)}, got {value!r}")
            if spec.bernoulli is not None and not isinstance(value, bool):
                fail(where, f"expected true or false (a yes/no covariate), got {value!r}")
            if key in access_reads:
                fail(where, f"{key!r} acts before infusion ({access_reads[key]}), where every policy shares one "
                            "pathway; expected a covariate that acts from infusion on")

    levels = set(covs["bridging"].categorical)
    given = set(scenario.pathway.bridging.blast_multiplier)
    if levels != given:
        fail(("pathway", "bridging", "blast_multiplier"),
             f"expected one multiplier per bridging level {sorted(levels)}, got {sorted(given)}")

    variable_types = condition_types(scenario)

    def check_condition(text, loc, names, usable=None):
        """``names``: every variable; ``usable``: those this condition may read (listed if unknown)."""
        try:
            cond = parse_condition(text)
        except ConditionSyntaxError as exc:
            fail(loc, str(exc))
        unknown = sorted(cond.names - names)
        if unknown:
            usable = sorted(usable if usable is not None else names)
            hint = difflib.get_close_matches(unknown[0], usable, n=1)
            fail(loc, f"condition {text!r} uses unknown variable {unknown[0]!r}"
                      + (f" (did you mean {hint[0]!r}?)" if hint else "")
                      + "; known variables: " + ", ".join(usable))
        problem = check_types(cond, variable_types)
        if problem:
            fail(loc, problem)
        return cond

    descriptive = {name for name, spec in covs.items() if spec.descriptive}
    for loc, multiplier in iter_multipliers(scenario):
        if multiplier.when_true is not None:
            cond = check_condition(multiplier.when_true, loc + ("if",), all_names)
            used = sorted(cond.names & descriptive)
            if used:
                fail(loc + ("if",), f"{used[0]!r} is marked 'descriptive: true' in cohort.covariates (no effect in "
                                    f"the model); give it a sourced effect by removing that mark, or drop this rule")
        elif multiplier.per in descriptive:
            fail(loc + ("per",), f"{multiplier.per!r} is marked 'descriptive: true' in cohort.covariates (no effect "
                                 f"in the model); give it a sourced effect by removing that mark, or drop this rule")
        elif multiplier.per not in all_names:
            fail(loc + ("per",), f"unknown variable {multiplier.per!r}")
        elif multiplier.per in covs and covs[multiplier.per].family is None \
                and covs[multiplier.per].categorical is not None \
                and not all(isinstance(k, (int, float)) for k in covs[multiplier.per].categorical):
            fail(loc + ("per",), f"expected a numeric variable, {multiplier.per!r} has text levels")

    check_shared_draws(scenario, fail)
    check_unique_labels(scenario, fail)
    if scenario.economics is not None:
        check_economics_events(scenario.economics, fail)

    for pname, policy in scenario.policies.items():
        for i, rule in enumerate(policy.rules):
            loc = ("policies", pname, "rules", i, "if")
            cond = check_condition(rule.condition, loc, all_names, observable)
            hidden = sorted(cond.names - observable)
            if hidden:
                fail(loc, f"a policy can only use what clinicians observe; {hidden[0]!r} is hidden biology "
                          f"(use the test results, e.g. 'bca_loss_detected' or 'mrd_positive')")


def condition_types(scenario: Scenario) -> dict:
    """Each variable's type (and levels) for the static check of conditions."""
    types = {}
    for name, spec in scenario.cohort.covariates.items():
        if spec.bernoulli is not None:
            types[name] = (BOOL, None)
        elif spec.categorical is not None:
            levels = frozenset(spec.categorical)
            text = all(isinstance(level, str) for level in levels)
            types[name] = (TEXT if text else NUMBER, levels)
        else:
            types[name] = (NUMBER, None)
    for name, initial in INITIAL_STATE.items():
        types.setdefault(name, (BOOL if isinstance(initial, bool) else TEXT if isinstance(initial, str)
                                else NUMBER, None))
    types["relapse_phenotype"] = (TEXT, frozenset(("none", *scenario.relapse_phenotypes)))
    return types


def check_economics_events(economics, fail) -> None:
    """Costs, QALY losses, states and periods name event kinds the pathway records."""
    from .vocabulary import EVENT_KINDS

    for key, loc in economics.event_keys():
        kind = key.split("/", 1)[0]
        if kind not in EVENT_KINDS:
            hint = difflib.get_close_matches(kind, EVENT_KINDS, n=1)
            fail(("economics", *loc), f"unknown event kind {kind!r}"
                 + (f" (did you mean {hint[0]!r}?)" if hint else "") + "; known event kinds: " + ", ".join(EVENT_KINDS))


def check_shared_draws(scenario: Scenario, fail) -> None:
    """Values that share one PSA draw (``distribution.shared``) must agree,
    and a stated value must lie inside its own distribution's 95% interval."""
    from .parameters import SharedParameterError, stated_parameters

    try:
        parameters = stated_parameters(scenario)
    except SharedParameterError as exc:
        fail(_loc_of(scenario, parent_of(exc.path)) + ("distribution", "shared"), str(exc))
    for parameter in parameters:
        ci = parameter.uncertainty.ci if parameter.uncertainty is not None else None
        if ci is not None and not ci[0] <= parameter.point <= ci[1]:
            fail(_loc_of(scenario, parameter.path),
                 f"{parameter.point:g} lies outside its own distribution's interval [{ci[0]:g}, {ci[1]:g}]; "
                 "expected the point estimate inside its 95% interval")


def _access_reads(scenario: Scenario) -> dict[str, str]:
    """Covariates read before infusion (the access pathway every policy shares), and where."""
    pre = scenario.pathway.pre_infusion
    out = {"bridging": "bridging intensity", "apheresis_deferred": "apheresis",
           "marrow_blasts_referral": "marrow blasts at infusion"}
    for where, hazard in (("pre-infusion death", pre.death), ("pre-infusion withdrawal", pre.withdrawal)):
        for multiplier in hazard.multipliers:
            if multiplier.per is not None:
                names = {multiplier.per}
            else:
                try:
                    names = parse_condition(multiplier.when_true).names
                except ConditionSyntaxError:
                    continue  # reported where the conditions are checked
            for name in names:
                out.setdefault(name, where)
    return out


def _loc_of(scenario: Scenario, path: str) -> tuple:
    return locate(scenario.model_dump(by_alias=True, exclude_none=True), path)


def check_unique_labels(scenario: Scenario, fail) -> None:
    """A label names one entry of its list (paths and ``extends`` address entries by it)."""
    seen: dict = {}
    for loc, multiplier in iter_multipliers(scenario):
        if multiplier.label is None:
            continue
        first = seen.setdefault((loc[:-1], multiplier.label), loc)
        if first != loc:
            fail(loc + ("label",), f"{multiplier.label!r} also labels entry {first[-1]} of this list; "
                                   "expected a label unique within its list")


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
