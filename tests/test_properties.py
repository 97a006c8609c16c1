"""Property tests of one simulated cohort: whatever the seed, the policy and
the parameters, every patient's story is well formed.

Hypothesis draws a seed, one of the four baseline policies and a few
parameters (capacities, manufacturing failure, relapse rates, horizon),
applied through a scenario that extends the baseline; the invariants are
checked on the outcome table and the event log of either engine.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
from conftest import BASELINE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carsim.model.definition import ModelDefinition

RELAPSE_PHENOTYPES = ("cd19pos", "cd19neg", "lineage_switch")  # the baseline's
from carsim.model.simulation import simulate_policies
from carsim.scenario import load_scenario

POLICIES = ("observe", "hsct_all", "risk_triggered", "reinfuse")
_RELAPSE = load_scenario(BASELINE).pathway.relapse
RELAPSE_LAWS = {name: _RELAPSE[name].law.model_dump(mode="json", exclude_none=True)
                for name in RELAPSE_PHENOTYPES}
TERMINAL = ("death", "censored")
EPS = 1e-6

SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

capacity = st.one_of(st.none(), st.integers(1, 5))
bed_capacity = st.one_of(st.none(), st.integers(1, 3))
multiplier = st.sampled_from([0.25, 1.0, 3.0, 10.0])

parameters = st.fixed_dictionaries({
    "seed": st.integers(0, 2**32 - 1),
    "replication": st.integers(0, 3),
    "policy": st.sampled_from(POLICIES),
    "n_patients": st.integers(30, 80),
    "manufacturing": capacity,
    "apheresis": st.one_of(st.none(), st.integers(1, 4)),
    "hsct_beds": bed_capacity,
    "failure": st.sampled_from([0.0, 0.1, 0.4, 0.8]),
    "recollection": st.sampled_from([0.0, 0.3, 1.0]),
    "relapse": st.fixed_dictionaries({name: multiplier for name in RELAPSE_PHENOTYPES}),
    "horizon_years": st.sampled_from([0.1, 0.5, 2.0, 5.0]),
    "engine": st.sampled_from(["vectorised", "simpy"]),  # every property holds on both engines
})


def overrides_for(p: dict) -> dict:
    relapse = {name: {"law": {**RELAPSE_LAWS[name], "rate": RELAPSE_LAWS[name]["rate"] * p["relapse"][name]}}
               for name in RELAPSE_PHENOTYPES}
    return {
        "resources": {"manufacturing": {"capacity": p["manufacturing"]},
                      "apheresis": {"capacity": p["apheresis"]},
                      "hsct_beds": {"capacity": p["hsct_beds"]}},
        "pathway": {"manufacturing": {"failure_probability": {"value": p["failure"]},
                                      "recollection_probability": {"value": p["recollection"]}},
                    "relapse": relapse},
        "run": {"horizon_years": p["horizon_years"]},
    }


def simulate(derived_scenario, p: dict):
    model = ModelDefinition(derived_scenario(overrides_for(p)))
    (result,) = simulate_policies(model, [p["policy"]], p["replication"], p["n_patients"], p["seed"],
                                  engine=p["engine"])
    return model, result


def stories(result) -> dict[int, list[tuple[float, str, str]]]:
    """patient -> [(time, event, detail), ...] in recorded order."""
    out = defaultdict(list)
    ev = result.events
    for patient, time, event, detail in zip(ev["patient"], ev["time_days"], ev["event"], ev["detail"]):
        out[int(patient)].append((float(time), str(event), str(detail)))
    return out


def outcome_rows(result) -> list[dict]:
    names = list(result.outcomes)
    return [{k: result.outcomes[k][i] for k in names} for i in range(len(result.outcomes["patient"]))]


@SETTINGS
@given(p=parameters)
def test_nothing_happens_after_death_or_censoring(derived_scenario, p):
    _, result = simulate(derived_scenario, p)
    story = stories(result)
    assert sorted(story) == list(range(p["n_patients"]))
    for patient, events in story.items():
        names = [e for _, e, _ in events]
        terminal = [i for i, e in enumerate(names) if e in TERMINAL]
        assert len(terminal) == 1, (patient, events)
        assert terminal[0] == len(events) - 1, f"patient {patient}: events after {names[terminal[0]]}: {events}"


@SETTINGS
@given(p=parameters)
def test_event_times_ordered_and_within_follow_up(derived_scenario, p):
    model, result = simulate(derived_scenario, p)
    horizon = model.horizon_days
    story = stories(result)
    for row in outcome_rows(result):
        events = story[int(row["patient"])]
        times = [t for t, _, _ in events]
        assert times[0] == 0.0 and events[0][1] == "enrolled"
        assert all(b >= a for a, b in itertools.pairwise(times)), events
        infused = bool(row["infused"])
        end_of_follow_up = (row["infusion_day"] if infused else 0.0) + horizon
        assert all(0.0 <= t <= end_of_follow_up + EPS for t in times), (row["patient"], end_of_follow_up, events)
        if infused:
            infusion_times = [t for t, e, _ in events if e == "infusion"]
            assert infusion_times == [row["infusion_day"]]
            assert row["infusion_day"] <= horizon + EPS  # infused within the enrolment follow-up
        if events[-1][1] == "censored":
            assert math.isclose(events[-1][0], end_of_follow_up, rel_tol=1e-9, abs_tol=EPS), events[-1]


@SETTINGS
@given(p=parameters)
def test_one_terminal_state_per_patient_and_outcomes_agree(derived_scenario, p):
    _, result = simulate(derived_scenario, p)
    story = stories(result)
    for row in outcome_rows(result):
        events = story[int(row["patient"])]
        deaths = [(t, d) for t, e, d in events if e == "death"]
        censored = [t for t, e, _ in events if e == "censored"]
        assert len(deaths) + len(censored) == 1, events
        end_time = deaths[0][0] if deaths else censored[0]
        assert row["end_day"] == end_time
        dead = bool(deaths)
        assert math.isnan(row["death_day"]) == (not dead)
        assert (row["death_cause"] == "none") == (not dead)
        if dead:
            assert row["death_day"] == row["end_day"]
            assert row["death_cause"] == deaths[0][1]


@SETTINGS
@given(p=parameters)
def test_enrolled_patients_are_conserved(derived_scenario, p):
    """Each enrolled patient leaves the pre-infusion pathway in exactly one way:
    infused, final manufacturing failure, withdrawal, death while waiting, or
    still waiting when follow-up ends (censored before infusion)."""
    model, result = simulate(derived_scenario, p)
    o = result.outcomes
    n = p["n_patients"]
    infused = o["infused"]
    failed = o["manufacturing_failure"]
    withdrawn = o["withdrawn"]
    died_waiting = o["death_cause"] == "pre_infusion"
    exited = ~np.isnan(o["pathway_exit_day"])
    censored_waiting = ~infused & ~exited & np.isnan(o["death_day"])
    ways = np.vstack([infused, failed, withdrawn, died_waiting, censored_waiting]).astype(int)
    assert (ways.sum(axis=0) == 1).all(), np.flatnonzero(ways.sum(axis=0) != 1)
    assert int(infused.sum() + failed.sum() + withdrawn.sum() + died_waiting.sum() + censored_waiting.sum()) == n
    # leaving the pathway (and only that) sets the exit day; pre-infusion deaths never were infused
    assert (exited == (failed | withdrawn)).all()
    assert not (died_waiting & infused).any()
    # no post-infusion history without infusion
    for name in ("cr", "severe_crs", "severe_icans", "hsct_death", "consolidative_hsct"):
        assert not (o[name] & ~infused).any(), name
    assert (o["hsct_count"][~infused] == 0).all() and (o["reinfusions"][~infused] == 0).all()
    assert np.isnan(o["relapse_day"][~infused]).all()
    # a final manufacturing failure comes after 1 .. max_attempts attempts
    attempts = o["manufacturing_attempts"][failed]
    assert ((attempts >= 1) & (attempts <= model.max_manufacturing_attempts)).all()


def _preceded_by_decision(events, index, action) -> bool:
    return any(e == "decision" and d.endswith(f"-> {action}") for _, e, d in events[:index])


@SETTINGS
@given(p=parameters)
def test_treatments_follow_policy_decisions(derived_scenario, p):
    _, result = simulate(derived_scenario, p)
    story = stories(result)
    for patient, events in story.items():
        hsct_decisions = reinfuse_decisions = 0
        for i, (_, event, detail) in enumerate(events):
            if event == "decision":
                hsct_decisions += detail.endswith("-> hsct")
                reinfuse_decisions += detail.endswith("-> reinfuse")
                rule_event = detail.split(":")[0]
                assert rule_event in ("response", "mrd_result", "bca_loss", "relapse", "reremission",
                                      "reinfusion_result"), detail
            if event in ("hsct", "hsct_planned"):
                assert _preceded_by_decision(events, i, "hsct"), (patient, events)
            if event in ("reinfusion", "reinfusion_planned"):
                assert _preceded_by_decision(events, i, "reinfuse"), (patient, events)
            if p["policy"] == "observe" and event in ("hsct", "hsct_planned"):
                assert detail != "consolidative", (patient, events)
        names = [e for _, e, _ in events]
        # every planned treatment comes from its own decision
        assert names.count("hsct_planned") <= hsct_decisions
        assert names.count("reinfusion_planned") <= reinfuse_decisions
        assert names.count("hsct") <= names.count("hsct_planned")
        assert names.count("reinfusion") <= names.count("reinfusion_planned")
    o = result.outcomes
    if p["policy"] == "observe":
        assert not o["consolidative_hsct"].any()
    if p["policy"] != "reinfuse":
        assert (o["reinfusions"] == 0).all()


@SETTINGS
@given(p=parameters)
def test_relapse_only_after_response(derived_scenario, p):
    _, result = simulate(derived_scenario, p)
    story = stories(result)
    o = result.outcomes
    for row in outcome_rows(result):
        events = story[int(row["patient"])]
        relapses = [(i, t, d) for i, (t, e, d) in enumerate(events) if e == "relapse"]
        assert len(relapses) <= 1
        if not relapses:
            assert math.isnan(row["relapse_day"]) and row["relapse_phenotype"] == "none"
            continue
        index, time, phenotype = relapses[0]
        assert phenotype in {"cd19pos", "cd19neg", "lineage_switch"}
        assert row["relapse_phenotype"] == phenotype and row["relapse_day"] == time
        responses = [(t, d) for t, e, d in events[:index] if e == "response"]
        assert responses == [(row["response_day"], "CR")], events
        assert row["cr"] and row["infused"]
        assert time >= row["response_day"] >= row["infusion_day"]
    relapsed = ~np.isnan(o["relapse_day"])
    assert set(o["relapse_phenotype"][relapsed]) <= set(RELAPSE_PHENOTYPES)
