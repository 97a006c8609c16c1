"""Hostile input across the commands: non-finite numbers, results folders
that cannot be one, names that cannot name a folder, and a manifest's
resolved scenario run again.  Each bad case ends with exit status 2 and one
line on stderr, before any simulation; valid ones run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import BASELINE, ROOT, write_scenario

from carsim.cli import main

NAN, INF = math.nan, math.inf

# (where, value) pairs: a NaN or an infinity anywhere in a scenario is refused at its key path.
NON_FINITE = [
    ({"pathway": {"relapse": {"cd19pos": {"law": {"growth": NAN}}}}}, "pathway.relapse.cd19pos.law.growth"),
    ({"pathway": {"relapse": {"cd19pos": {"law": {"rate": INF}}}}}, "pathway.relapse.cd19pos.law.rate"),
    ({"pathway": {"referral": {"delay": {"mean": NAN}}}}, "pathway.referral.delay.mean"),
    ({"pathway": {"referral": {"delay": {"mean": INF}}}}, "pathway.referral.delay.mean"),
    ({"pathway": {"manufacturing": {"duration": {"median": NAN}}}}, "pathway.manufacturing.duration.median"),
    ({"pathway": {"toxicity": {"severe_crs": {"value": NAN}}}}, "pathway.toxicity.severe_crs.value"),
    ({"pathway": {"hsct": {"transplant_related_death": {"value": INF}}}},
     "pathway.hsct.transplant_related_death.value"),
    ({"pathway": {"post_relapse": {"survival": {"cd19neg": {"median": NAN}}}}},
     "pathway.post_relapse.survival.cd19neg.median"),
    ({"pathway": {"non_relapse_mortality": {"death": {"law": {"rate": INF}}}}},
     "pathway.non_relapse_mortality.death.law.rate"),
    ({"cohort": {"covariates": {"kmt2a": {"bernoulli": NAN}}}}, "cohort.covariates.kmt2a.bernoulli"),
    ({"cohort": {"covariates": {"prior_crs": {"categorical": {1: NAN, 2: 0.5, 3: 0.5}}}}},
     "cohort.covariates.prior_crs.categorical[1]"),
    ({"cohort": {"covariates": {"marrow_blasts_referral": {"a": INF}}}}, "cohort.covariates.marrow_blasts_referral.a"),
    ({"cohort": {"fixed": {"marrow_blasts_infusion": NAN}}}, "cohort.fixed.marrow_blasts_infusion"),
    ({"cohort": {"arrivals": {"rate_per_day": INF}}}, "cohort.arrivals.rate_per_day"),
    ({"run": {"horizon_years": INF}}, "run.horizon_years"),
    ({"run": {"horizon_years": NAN}}, "run.horizon_years"),
    ({"surveillance": {"mrd": {"sensitivity": {"value": NAN}}}}, "surveillance.mrd.sensitivity.value"),
    ({"economics": {"discount": {"costs": {"value": NAN}}}}, "economics.discount.costs.value"),
    ({"economics": {"event_costs": {"hsct": {"value": INF}}}}, "economics.event_costs.hsct.value"),
    ({"economics": {"willingness_to_pay": [100000, INF]}}, "economics.willingness_to_pay[1]"),
    ({"economics": {"extrapolation": {"excess_mortality_ratio": {"value": NAN}}}},
     "economics.extrapolation.excess_mortality_ratio.value"),
]

COMMANDS = {  # command -> extra arguments (small, so a case that slipped through would still finish)
    "run": ["--patients", "30"],
    "psa": ["--draws", "2", "--patients", "30"],
    "dsa": ["--patients", "30"],
    "gsa": ["--method", "morris", "--samples", "2", "--patients", "30"],
}


def cli(capsys, argv):
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured.out, captured.err


def one_line_error(status, out, err, *fragments):
    assert status == 2, (status, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("override, key", NON_FINITE, ids=[key for _, key in NON_FINITE])
def test_a_non_finite_number_is_refused_at_its_key_path(tmp_path, capsys, command, override, key):
    scenario = write_scenario(tmp_path, override)
    out = tmp_path / "out"
    status, stdout, stderr = cli(capsys, [command, scenario, *COMMANDS[command], "--out", out])
    line = one_line_error(status, stdout, stderr, f"{scenario.resolve()}: {key}: ", "expected a finite number")
    assert line.startswith("carsim: error: ")
    assert not out.exists()  # refused before any simulation


def _folders(tmp_path: Path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {
        "a file": (a_file, "expected a folder for the results, but it is a file"),
        "under a file": (a_file / "sub", "which is a file"),
        "not creatable": (Path("/proc/carsim_cannot_be_here"), "cannot create the results folder"),
    }


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", ["a file", "under a file", "not creatable"])
def test_a_results_folder_that_cannot_be_one_is_refused_before_simulating(tmp_path, capsys, command, case):
    out, expected = _folders(tmp_path)[case]
    status, stdout, stderr = cli(capsys, [command, BASELINE, *COMMANDS[command], "--out", out])
    one_line_error(status, stdout, stderr, f"--out {out}", expected)


@pytest.mark.parametrize("case", ["a file", "under a file", "not creatable"])
def test_a_trial_results_folder_that_cannot_be_one_is_refused(tmp_path, capsys, case):
    out, expected = _folders(tmp_path)[case]
    trial = ROOT / "scenarios" / "trial_surveillance_hsct.yaml"
    status, stdout, stderr = cli(capsys, ["trial", trial, "--trials", "2", "--out", out])
    one_line_error(status, stdout, stderr, f"--out {out}", expected)


@pytest.mark.parametrize("name", ["a\x00b", "a/b", "..", " ", "tab\there"])
def test_a_name_that_cannot_name_a_folder_is_refused(tmp_path, capsys, name):
    scenario = write_scenario(tmp_path, {"name": name})
    status, stdout, stderr = cli(capsys, ["run", scenario, "--patients", "30", "--out", tmp_path / "out"])
    one_line_error(status, stdout, stderr, f"{scenario.resolve()}: name: ", "results folder")


@pytest.mark.parametrize("levels", [{"1": 0.45, "2": 0.40, "3": 0.15}, {1: 0.45, "2": 0.40, 3: 0.15}])
def test_quoted_numeric_levels_are_the_numbers(tmp_path, capsys, levels):
    """``prior_crs >= 2`` compares numbers: levels written "1", "2" are 1, 2."""
    scenario = write_scenario(tmp_path, {"cohort": {"covariates": {"prior_crs": {
        "categorical": levels, "assumption": "quoted levels"}}}})
    status, _out, stderr = cli(capsys, ["run", scenario, "--patients", "60", "--out", tmp_path / "out", "--quiet"])
    assert status == 0, stderr


def test_a_manifests_resolved_scenario_runs_again_to_the_same_summary(tmp_path, capsys):
    first = tmp_path / "first"
    assert cli(capsys, ["run", BASELINE, "--patients", "200", "--out", first, "--quiet"])[0] == 0
    resolved = json.loads((first / "manifest.json").read_text())["resolved_scenario"]
    again = tmp_path / "resolved.yaml"
    again.write_text(yaml.safe_dump(resolved, sort_keys=False))
    second = tmp_path / "second"
    assert cli(capsys, ["run", again, "--patients", "200", "--out", second, "--quiet"])[0] == 0
    pd.testing.assert_frame_equal(pd.read_csv(first / "summary.csv"), pd.read_csv(second / "summary.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(first / "economics.csv"), pd.read_csv(second / "economics.csv"))


# --- documents that are small on disk and enormous, deep or long once read -----------------------------

def _laughs(mapping: bool) -> str:
    """A 'billion laughs' document: ten references to the previous level, nine levels deep."""
    if mapping:
        levels = ["a: &a {k: v, w: v}"] + [
            f"{chr(98 + i)}: &{chr(98 + i)} {{" + ", ".join(f"k{j}: *{chr(97 + i)}" for j in range(10)) + "}"
            for i in range(9)]
    else:
        levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
            f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join(f"*{chr(97 + i)}" for _ in range(10)) + "]"
            for i in range(9)]
    return f"extends: {BASELINE}\n" + "\n".join(levels) + "\n"


@pytest.mark.parametrize("mapping", [False, True], ids=["lists", "mappings"])
def test_an_alias_bomb_is_refused_quickly(tmp_path, capsys, mapping):
    path = tmp_path / "laughs.yaml"
    path.write_text(_laughs(mapping))
    status, out, err = cli(capsys, ["run", path, "--patients", "30", "--out", tmp_path / "out"])
    one_line_error(status, out, err, f"{path.resolve()}: ", "expands to more than 1,000,000 values")


def test_a_document_nested_too_deep_is_refused(tmp_path, capsys):
    path = tmp_path / "deep.yaml"
    path.write_text(f"extends: {BASELINE}\nx: " + "{a: " * 950 + "1" + "}" * 950 + "\n")
    status, out, err = cli(capsys, ["run", path, "--patients", "30", "--out", tmp_path / "out"])
    one_line_error(status, out, err, f"{path.resolve()}: line 2", "nested more than 60 levels deep")


def test_a_long_extends_chain_is_refused(tmp_path, capsys):
    parent = BASELINE
    for i in range(200):
        child = tmp_path / f"chain_{i}.yaml"
        child.write_text(f"extends: {parent}\n")
        parent = child
    status, out, err = cli(capsys, ["run", parent, "--patients", "30", "--out", tmp_path / "out"])
    one_line_error(status, out, err, "extends: an 'extends' chain of more than 32 files")


def test_a_schedule_of_billions_of_tests_is_refused(tmp_path, capsys):
    scenario = write_scenario(tmp_path, {"surveillance": {"mrd": {"schedule": {
        "repeat": [{"every_months": 1e-9, "from_months": 3, "until_months": 24}]}}}})
    status, out, err = cli(capsys, ["run", scenario, "--patients", "30", "--out", tmp_path / "out"])
    one_line_error(status, out, err, "surveillance.mrd.schedule.repeat[0]", "expected at most 10,000")


@pytest.mark.parametrize("command", ["run", "psa", "dsa", "gsa", "calibrate"])
def test_patients_beyond_any_study_are_refused_by_the_option(tmp_path, capsys, command):
    target = ROOT / "calibration" / "eliana.yaml" if command == "calibrate" else BASELINE
    status, out, err = cli(capsys, [command, target, "--patients", "1000000000000", "--out", tmp_path / "out"])
    one_line_error(status, out, err, "--patients", "expected at most 100,000,000")


def test_a_cohort_that_cannot_fit_in_memory_is_refused_before_it_starts(tmp_path, capsys):
    from carsim._limits import BYTES_PER_TRAJECTORY, physical_memory_bytes

    memory = physical_memory_bytes()
    if memory is None:
        pytest.skip("this platform does not report its physical memory")
    size = min(100_000_000, memory // (BYTES_PER_TRAJECTORY * 4) * 2)
    scenario = write_scenario(tmp_path, {"cohort": {"size": int(size)}})
    status, out, err = cli(capsys, ["run", scenario, "--out", tmp_path / "out"])
    one_line_error(status, out, err, "cohort.size", "would need about", "more than this machine's")
    assert not (tmp_path / "out").exists()
    scenario = write_scenario(tmp_path, {"cohort": {"size": 10 ** 12}}, name="huge.yaml")
    status, out, err = cli(capsys, ["run", scenario, "--out", tmp_path / "out"])
    one_line_error(status, out, err, "cohort.size", "less than or equal to 100000000")


def test_a_later_run_removes_the_leftovers_of_a_killed_one(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [out / ".summary.csv.x1y2.part", out / ".survival.png.abc.part"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    assert cli(capsys, ["run", BASELINE, "--patients", "40", "--out", out, "--quiet"])[0] == 0
    assert not any(path.exists() for path in leftovers)
    assert not list(out.glob(".*.part")) and (out / "manifest.json").exists()


# --- calibration files and their published targets ------------------------------------------------------

def _calibration_with_targets(tmp_path: Path, targets_text: str | None = None, **changes) -> Path:
    spec = yaml.safe_load((ROOT / "calibration" / "eliana.yaml").read_text())
    spec["scenario"] = str(ROOT / "scenarios" / "model.yaml")
    spec["targets_file"] = "targets.yaml" if targets_text is not None else str(ROOT / "calibration" / "targets.yaml")
    spec.update(changes)
    if targets_text is not None:
        (tmp_path / "targets.yaml").write_text(targets_text)
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


GOOD = (ROOT / "calibration" / "targets.yaml").read_text()
BAD_TARGETS = [
    ("malformed", "eliana: [ {id: x, value: 1\n", "malformed YAML"),
    ("empty", "", "the file is empty"),
    ("a list", "- {id: x, value: 1}\n", "expected a mapping of keys at the top level"),
    ("a group that is no list", "eliana: {id: x}\n", "expected a list of published figures"),
    ("no id", GOOD.replace("{id: eliana_infused, ", "{"), "missing 'id'"),
    ("no value", GOOD.replace("value: 79, n: 97,", "n: 97,"), "missing 'value'"),
    ("value not a number", GOOD.replace("value: 79, n: 97,", "value: [79], n: 97,"), "expected a number"),
    ("one-number ci", GOOD.replace("value: 0.82, ci: [0.72, 0.90]", "value: 0.82, ci: [0.72]"),
     "expected [lower, upper]"),
    ("reversed ci", GOOD.replace("value: 0.82, ci: [0.72, 0.90]", "value: 0.82, ci: [0.90, 0.72]"),
     "expected [lower, upper] with lower < upper"),
    ("ci without its value", GOOD.replace("value: 0.82, ci: [0.72, 0.90]", "value: 0.82, ci: [0.10, 0.20]"),
     "does not contain the value"),
    ("n of zero", GOOD.replace("value: 79, n: 97,", "value: 79, n: 0,"), "expected a whole number of patients"),
    ("NaN value", GOOD.replace("value: 0.82, ci: [0.72, 0.90]", "value: .nan, ci: [0.72, 0.90]"),
     "expected a finite number"),
    ("duplicate id", GOOD + "\nextra:\n  - {id: eliana_infused, value: 1, kind: target, source: x}\n", "given twice"),
]


@pytest.mark.parametrize("case, text, expected", BAD_TARGETS, ids=[c for c, _, _ in BAD_TARGETS])
def test_a_bad_targets_file_is_refused_in_one_line(tmp_path, capsys, case, text, expected):
    path = _calibration_with_targets(tmp_path, text)
    status, out, err = cli(capsys, ["calibrate", path, "--out", tmp_path / "out"])
    one_line_error(status, out, err, str((tmp_path / "targets.yaml").resolve()), expected)


@pytest.mark.parametrize("bounds, expected", [([0, INF], "expected a finite number"),
                                               ([5, 1], "lower < upper"), ([NAN, 1], "expected a finite number")])
def test_bad_search_bounds_are_refused_in_one_line(tmp_path, capsys, bounds, expected):
    spec = yaml.safe_load((ROOT / "calibration" / "eliana.yaml").read_text())
    spec["stages"][0]["parameters"][0]["bounds"] = bounds
    path = _calibration_with_targets(tmp_path, None, stages=spec["stages"])
    status, out, err = cli(capsys, ["calibrate", path, "--out", tmp_path / "out"])
    one_line_error(status, out, err, "stages[0].parameters[0].bounds", expected)


# --- conditions checked for types and size before any simulation ------------------------------------------

BAD_CONDITIONS = [
    ("1 / 0 > 0", "division by zero"),
    ("relapse_phenotype > 5", "text ordered with"),
    ("cr in 5", "'in' needs a list of values"),
    ("mrd_positive_tests + 'a' == 'b'", "arithmetic on text"),
    ("bridging == 'hihg'", "'bridging' has no level 'hihg'"),
    ("relapse_phenotype == 'cd19negative'", "'relapse_phenotype' has no level 'cd19negative'"),
    ("prior_crs == 'two'", "text compared with a number"),
    ("'x' * 100000000000 == 'y'", "arithmetic on text"),
    ("not " * 100_000 + "cr", "expected at most 1,000"),
    ("1 + " * 100_000 + "1 > 0", "expected at most 1,000"),
    ("(" * 40 + "cr" + ")" * 40, ""),  # parentheses alone add no depth: valid
    ("-" * 200 + "1 < 0", "nests more than 30 operators"),
]


@pytest.mark.parametrize("text, expected", BAD_CONDITIONS, ids=[t[:30] for t, _ in BAD_CONDITIONS])
@pytest.mark.parametrize("place", ["policy", "multiplier"])
def test_a_condition_is_checked_before_any_simulation(tmp_path, capsys, text, expected, place):
    if place == "policy":
        override = {"policies": {"observe": {"rules": [{"when": "relapse", "if": text, "then": "observe"}]}}}
        key = "policies.observe.rules[0].if"
    else:
        override = {"pathway": {"relapse": {"lineage_switch": {"multipliers": {"replace": [
            {"if": text, "value": 2.0, "assumption": "test"}]}}}}}
        key = "pathway.relapse.lineage_switch.multipliers[0].if"
    scenario = write_scenario(tmp_path, override)
    status, out, err = cli(capsys, ["run", scenario, "--patients", "30", "--out", tmp_path / "out", "--quiet"])
    if not expected:
        assert status == 0, err
        return
    one_line_error(status, out, err, f"{key}: ", expected)


def test_good_conditions_of_every_kind_still_pass(tmp_path, capsys):
    rules = [{"when": "relapse", "if": text, "then": "observe"} for text in (
        "relapse_phenotype == 'cd19neg'", "bridging in ('low', 'high') and prior_crs >= 2",
        "prior_crs in (2, 3)", "months_since_infusion / 2 < 3", "not cr or -1 < 0")]
    scenario = write_scenario(tmp_path, {"policies": {"observe": {"rules": rules}}})
    assert cli(capsys, ["run", scenario, "--patients", "40", "--out", tmp_path / "out", "--quiet"])[0] == 0


SILENTLY_ACCEPTED_BEFORE = [
    ({"cohort": {"fixed": {"marrow_blasts_infusion": "high"}}}, "cohort.fixed.marrow_blasts_infusion",
     "expected a number"),
    ({"cohort": {"fixed": {"prior_hsct": "maybe"}}}, "cohort.fixed.prior_hsct", "expected true or false"),
    ({"cohort": {"fixed": {"marrow_blasts_infusion": 250}}}, "cohort.fixed.marrow_blasts_infusion",
     "between 0 and 100"),
    ({"cohort": {"fixed": {"kmt2a": 1}}}, "cohort.fixed.kmt2a", "expected true or false"),
    ({"pathway": {"toxicity": {"early_death": {"value": 0.5, "source": "x",
                                               "distribution": {"family": "beta", "ci": [0.01, 0.05]}}}}},
     "pathway.toxicity.early_death.value", "outside its own distribution's interval"),
]


@pytest.mark.parametrize("override, key, expected", SILENTLY_ACCEPTED_BEFORE,
                         ids=[key for _, key, _ in SILENTLY_ACCEPTED_BEFORE])
def test_values_that_were_accepted_silently_are_refused(tmp_path, capsys, override, key, expected):
    scenario = write_scenario(tmp_path, override)
    status, out, err = cli(capsys, ["run", scenario, "--patients", "30", "--out", tmp_path / "out"])
    one_line_error(status, out, err, f"{key}: ", expected)
