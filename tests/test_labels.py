"""Labelled list entries: a multiplier is addressed by its label, in parameter
paths and under ``extends`` (merged by label), so that changing one entry
never means copying its list, and reordering a list changes nothing."""

from __future__ import annotations

import pytest
from conftest import BASELINE, scenario_error, write_scenario

from carsim.scenario import load_scenario
from carsim.scenario.loader import iter_multipliers
from carsim.scenario.parameters import stated_parameters
from carsim.scenario.paths import PathError, locate, named, parse, set_value_at, value_at

CD19POS = "pathway.relapse.cd19pos.multipliers"


def _multipliers(scenario, phenotype="cd19pos"):
    return {m.label: m for m in scenario.pathway.relapse[phenotype].multipliers}


def test_every_shipped_multiplier_carries_a_unique_label():
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml")):
        if path.name.startswith("trial_"):
            continue
        unlabelled = [loc for loc, m in iter_multipliers(load_scenario(path)) if m.label is None]
        assert not unlabelled, f"{path.name}: {unlabelled}"


def test_one_entry_changed_by_label_keeps_the_rest_of_the_inherited_list(tmp_path):
    base = load_scenario(BASELINE)
    derived = load_scenario(write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": [
        {"label": "bca_lost", "distribution": {"family": "lognormal", "ci": [10, 40]}}]}}}}))
    before, after = _multipliers(base), _multipliers(derived)
    assert list(after) == list(before)  # same entries, same order
    assert after["bca_lost"].value == before["bca_lost"].value  # the calibrated value is kept
    assert after["bca_lost"].when_true == before["bca_lost"].when_true
    assert after["bca_lost"].distribution.ci == (10, 40)
    assert after["mrd_present"] == before["mrd_present"]
    assert f"{CD19POS}.bca_lost.value" in [p.path for p in stated_parameters(derived)]


def test_a_new_label_is_appended_and_a_stated_note_replaces_the_inherited_one(tmp_path):
    derived = load_scenario(write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": [
        {"label": "two_or_more_prior_crs", "value": 1.5, "source": "a paper"},
        {"label": "cns_involvement", "if": "cns_involvement", "value": 2.0, "assumption": "test"}]}}},
        "cohort": {"covariates": {"cns_involvement": {"descriptive": False}}}}))
    entries = _multipliers(derived)
    assert list(entries)[-1] == "cns_involvement"
    entry = entries["two_or_more_prior_crs"]
    assert (entry.value, entry.source, entry.assumption, entry.when_true) == (1.5, "a paper", None, "prior_crs >= 2")


def test_an_entry_without_a_label_is_refused_naming_the_inherited_labels(tmp_path):
    message = scenario_error(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": [
        {"if": "kmt2a", "value": 2.0, "assumption": "test"}]}}}})
    assert "pathway.relapse.cd19pos.multipliers[0]" in message
    assert "expected a 'label:'" in message and "bca_lost" in message and "replace" in message


@pytest.mark.parametrize("written", [[], {"replace": []}])
def test_an_empty_list_or_replace_clears_the_inherited_list(tmp_path, written):
    derived = load_scenario(write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": written}}}}))
    assert derived.pathway.relapse["cd19pos"].multipliers == []


def test_replace_gives_exactly_the_list_written(tmp_path):
    derived = load_scenario(write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": {
        "replace": [{"if": "kmt2a", "value": 2.0, "assumption": "test"}]}}}}}))
    [only] = derived.pathway.relapse["cd19pos"].multipliers
    assert (only.when_true, only.value, only.label) == ("kmt2a", 2.0, None)


def test_a_label_given_twice_in_one_list_is_refused(tmp_path):
    message = scenario_error(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": {"replace": [
        {"label": "a", "if": "kmt2a", "value": 2.0, "assumption": "test"},
        {"label": "a", "if": "extramedullary", "value": 2.0, "assumption": "test"}]}}}}})
    assert "multipliers[1].label" in message and "'a' also labels entry 0" in message


def test_a_label_must_be_a_lower_case_name(tmp_path):
    message = scenario_error(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": [
        {"label": "BCA lost", "if": "kmt2a", "value": 2.0, "assumption": "test"}]}}}})
    assert "label" in message


# ------------------------------------------------------------------ paths

DATA = {"a": {"items": [{"label": "x", "value": 1.0}, {"value": 2.0}, {"label": "y", "value": 3.0}]},
        "b": {"1": 5.0}}


def test_paths_name_labelled_entries_by_label_and_others_by_position():
    assert parse("a.items[x].value") == parse("a.items.x.value") == ["a", "items", "x", "value"]
    assert value_at(DATA, "a.items.y.value") == 3.0
    assert value_at(DATA, "a.items[y].value") == 3.0
    assert value_at(DATA, "a.items.1.value") == 2.0
    assert value_at(DATA, "b.1") == 5.0  # a numeric key written in quotes
    assert locate(DATA, "a.items.y.value") == ("a", "items", 2, "value")
    assert named(DATA, ("a", "items", 2, "value")) == "a.items.y.value"
    assert named(DATA, ("a", "items", 1, "value")) == "a.items.1.value"
    data = {"a": {"items": [dict(item) for item in DATA["a"]["items"]]}}
    set_value_at(data, "a.items.x.value", 9.0)
    assert data["a"]["items"][0]["value"] == 9.0


@pytest.mark.parametrize("path, words", [
    ("a.items.0.value", ["by its position", "use its label: a.items.x.value"]),
    ("a.items.z.value", ["no entry labelled 'z'", "x, y"]),
    ("a.items.7.value", ["3 entries"]),
    ("a.nope", ["no key 'nope'"]),
    ("a.items.x.value.deeper", ["is a value"]),
])
def test_a_path_that_names_nothing_says_why(path, words):
    with pytest.raises(PathError) as error:
        value_at(DATA, path)
    for word in words:
        assert word in str(error.value)
