"""The vectorised engine against the SimPy reference.

With the same random numbers both engines must give the same patients (up
to floating-point rounding: NumPy's array and scalar maths may differ in the
last bit), wherever no transplant bed queue forms; with independent random
numbers they must agree in distribution on the shipped baseline."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BASELINE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from carsim.analysis.endpoints import endpoint_arrays
from carsim.model import simulation, vectorised
from carsim.model.definition import ModelDefinition
from carsim.model.simulation import simulate_policies, simulate_replications
from carsim.scenario import load_scenario

POLICIES = ["observe", "hsct_all", "risk_triggered", "reinfuse"]


def assert_same_patients(a, b):
    assert a.policy == b.policy
    for name, reference in b.outcomes.items():
        got = np.asarray(a.outcomes[name])
        reference = np.asarray(reference)
        if reference.dtype.kind == "f":
            np.testing.assert_allclose(got, reference, rtol=1e-9, atol=1e-9, equal_nan=True,
                                       err_msg=f"{a.policy}: {name}")
        else:
            np.testing.assert_array_equal(got, reference, err_msg=f"{a.policy}: {name}")
    assert len(a.events["event"]) == len(b.events["event"])
    for column in ("patient", "event", "detail"):
        np.testing.assert_array_equal(np.sort(a.events[column].astype(str)), np.sort(b.events[column].astype(str)))


def test_same_random_numbers_same_patients_every_policy():
    scenario = load_scenario(BASELINE, {"resources.hsct_beds.capacity": None})
    model = ModelDefinition(scenario)
    fast = simulate_policies(model, POLICIES, 0, 500, 17, engine="vectorised")
    reference = simulate_policies(model, POLICIES, 0, 500, 17, engine="simpy")
    for a, b in zip(fast, reference, strict=True):
        assert a.engine == "vectorised" and b.engine == "simpy"
        assert_same_patients(a, b)
        assert a.outcomes["hsct_count"].sum() > 0 or a.policy in ("observe", "reinfuse")


def test_same_patients_when_the_access_pathway_queues():
    """Scarce apheresis and manufacturing slots: the access queue is exact."""
    scenario = load_scenario(BASELINE, {"resources.hsct_beds.capacity": None, "resources.apheresis.capacity": 1,
                                        "resources.manufacturing.capacity": 3})
    model = ModelDefinition(scenario)
    fast = simulate_policies(model, ["observe", "reinfuse"], 2, 300, 4, engine="vectorised")
    reference = simulate_policies(model, ["observe", "reinfuse"], 2, 300, 4, engine="simpy")
    assert np.mean(reference[0].outcomes["wait_manufacturing_days"] > 1) > 0.2  # the queue is real
    for a, b in zip(fast, reference, strict=True):
        assert_same_patients(a, b)
        for resource in ("apheresis", "manufacturing"):
            assert a.resource_use[resource]["busy_days"] == pytest.approx(b.resource_use[resource]["busy_days"])


capacities = st.one_of(st.none(), st.integers(1, 4))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), policy=st.sampled_from(POLICIES), apheresis=capacities,
       manufacturing=capacities, horizon=st.sampled_from([0.2, 1.0, 5.0]), failure=st.sampled_from([0.0, 0.3, 0.9]))
def test_engines_agree_on_random_scenarios(derived_scenario, seed, policy, apheresis, manufacturing, horizon,
                                           failure):
    scenario = derived_scenario({
        "resources": {"apheresis": {"capacity": apheresis}, "manufacturing": {"capacity": manufacturing},
                      "hsct_beds": {"capacity": None}},
        "pathway": {"manufacturing": {"failure_probability": {"value": failure}}},
        "run": {"horizon_years": horizon}})
    model = ModelDefinition(scenario)
    (a,) = simulate_policies(model, [policy], 0, 60, seed, engine="vectorised")
    (b,) = simulate_policies(model, [policy], 0, 60, seed, engine="simpy")
    assert_same_patients(a, b)


def test_queued_transplant_beds_fall_back_to_simpy():
    scenario = load_scenario(BASELINE, {"resources.hsct_beds.capacity": 2})
    model = ModelDefinition(scenario)
    results = simulate_policies(model, ["hsct_all", "reinfuse"], 0, 400, 1, engine="auto")
    engines = {r.policy: r.engine for r in results}
    assert engines["hsct_all"] == "simpy"  # beds would have queued
    assert results[0].outcomes["hsct_bed_wait_days"].max() > 0


def assert_identical(a, b):
    assert (a.replication, a.policy, a.engine) == (b.replication, b.policy, b.engine)
    for table in ("outcomes", "covariates", "events"):
        for name, reference in getattr(b, table).items():
            np.testing.assert_array_equal(getattr(a, table)[name], reference, err_msg=f"{a.policy}: {name}")
    assert repr(a.resource_use) == repr(b.resource_use)  # repr: exact for floats, and nan equals nan


@pytest.mark.parametrize("batch", [100_000, 2500])  # all replications in one batch; two cohorts per batch
def test_replications_simulated_together_are_the_same_as_alone(monkeypatch, batch):
    monkeypatch.setattr(simulation, "BATCH_TRAJECTORIES", batch)
    model = ModelDefinition(load_scenario(BASELINE))
    together = simulate_replications(model, POLICIES, [0, 3, 4, 9, 12], 300, 5, engine="vectorised")
    alone = [part for r in (0, 3, 4, 9, 12) for part in simulate_policies(model, POLICIES, r, 300, 5,
                                                                          engine="vectorised")]
    assert len(together) == len(alone) == 20
    for a, b in zip(together, alone, strict=True):
        assert_identical(a, b)


@pytest.mark.parametrize("beds", [None, 12])
def test_a_cohort_advanced_in_slabs_is_the_same_as_whole(monkeypatch, beds):
    """A large cohort is advanced after infusion in slabs of patients; the
    transplant-bed check still sees the whole cohort's stays."""
    model = ModelDefinition(load_scenario(BASELINE, {"resources.hsct_beds.capacity": beds}))
    whole = simulate_replications(model, POLICIES, [0, 1], 700, 2, engine="auto")
    monkeypatch.setattr(vectorised, "SLAB_ROWS", 900)  # 2 x 700 patients x 4 policies in 7 slabs
    slabs = simulate_replications(model, POLICIES, [0, 1], 700, 2, engine="auto")
    if beds is not None:  # beds queue in some (cohort, policy) only: judged on the whole cohort
        assert {p.engine for p in whole} == {"vectorised", "simpy"}
    for a, b in zip(slabs, whole, strict=True):
        assert_identical(a, b)


def test_a_replication_whose_beds_queue_falls_back_alone():
    """Scarce beds: each (replication, policy) is checked on its own, and
    only those whose beds would queue run on the SimPy engine."""
    model = ModelDefinition(load_scenario(BASELINE, {"resources.hsct_beds.capacity": 4}))
    together = simulate_replications(model, ["observe", "hsct_all"], [0, 1, 2], 150, 8, engine="auto")
    alone = [part for r in (0, 1, 2) for part in simulate_policies(model, ["observe", "hsct_all"], r, 150, 8)]
    observe = [p.engine for p in together if p.policy == "observe"]
    assert observe[0] == "vectorised" and "simpy" in observe  # replications differ, and are judged apart
    for a, b in zip(together, alone, strict=True):
        assert_identical(a, b)


def _survival_sample(result, endpoint):
    _, durations, events = endpoint_arrays(result.outcomes, endpoint, "infusion")
    return durations, events


def test_engines_agree_in_distribution_on_the_baseline():
    """Independent random numbers (different seeds): KS on overall survival
    times and log-rank on EFS (lifelines) find no difference; shares agree."""
    from lifelines.statistics import logrank_test

    model = ModelDefinition(load_scenario(BASELINE))
    fast = simulate_policies(model, POLICIES, 0, 3000, 101, record_events=False, engine="vectorised")
    reference = simulate_policies(model, POLICIES, 0, 3000, 202, record_events=False, engine="simpy")
    for a, b in zip(fast, reference, strict=True):
        for endpoint in ("os", "efs"):
            da, ea = _survival_sample(a, endpoint)
            db, eb = _survival_sample(b, endpoint)
            assert logrank_test(da, db, ea, eb).p_value > 0.001, (a.policy, endpoint)
        dead_a = a.outcomes["death_day"][~np.isnan(a.outcomes["death_day"])]
        dead_b = b.outcomes["death_day"][~np.isnan(b.outcomes["death_day"])]
        assert stats.ks_2samp(dead_a, dead_b).pvalue > 0.001, a.policy
        for flag in ("infused", "cr", "consolidative_hsct"):
            pa, pb = a.outcomes[flag].mean(), b.outcomes[flag].mean()
            se = np.sqrt(pa * (1 - pa) / 3000 + pb * (1 - pb) / 3000) + 1e-9
            assert abs(pa - pb) < 4 * se, (a.policy, flag)
