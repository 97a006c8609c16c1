"""The array engine against the SimPy reference.

Both engines schedule the same transitions, so with the same random numbers
they must give the same patients and the same events at the same times (to
1e-9 days), with or without queues (apheresis, manufacturing, transplant
beds); with independent random numbers they must agree in distribution on
the shipped baseline."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BASELINE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from carsim.experiment.metrics import endpoint_arrays
from carsim.model import array_engine, simulation
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
    # Event for event, in each patient's order, at the same times.
    for column in ("patient", "event", "detail"):
        np.testing.assert_array_equal(a.events[column].astype(str), b.events[column].astype(str),
                                      err_msg=f"{a.policy}: {column}")
    np.testing.assert_allclose(a.events["time_days"], b.events["time_days"], rtol=0, atol=1e-9,
                               err_msg=f"{a.policy}: time_days")
    for resource in ("apheresis", "manufacturing", "hsct_beds"):
        assert a.resource_use[resource]["busy_days"] == pytest.approx(b.resource_use[resource]["busy_days"],
                                                                      nan_ok=True)


def test_same_random_numbers_same_patients_every_policy():
    scenario = load_scenario(BASELINE, {"resources.hsct_beds.capacity": None})
    model = ModelDefinition(scenario)
    fast = simulate_policies(model, POLICIES, 0, 500, 17, engine="vectorised")
    reference = simulate_policies(model, POLICIES, 0, 500, 17, engine="simpy")
    for a, b in zip(fast, reference, strict=True):
        assert a.engine == "vectorised" and b.engine == "simpy"
        assert_same_patients(a, b)
        assert a.outcomes["hsct_count"].sum() > 0


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


@pytest.mark.parametrize("capacity, seed", [(1, 3), (3, 5), (6, 11)])
def test_same_patients_when_transplant_beds_queue(capacity, seed):
    """Scarce transplant beds: the array engine's bed queue grants the same
    beds at the same times as simpy.Resource, under every policy."""
    model = ModelDefinition(load_scenario(BASELINE, {"resources.hsct_beds.capacity": capacity}))
    fast = simulate_policies(model, POLICIES, 0, 300, seed, engine="vectorised")
    reference = simulate_policies(model, POLICIES, 0, 300, seed, engine="simpy")
    hsct_all = reference[POLICIES.index("hsct_all")].outcomes
    assert np.mean(hsct_all["hsct_bed_wait_days"] > 1) > 0.1  # the queue is real
    for a, b in zip(fast, reference, strict=True):
        assert_same_patients(a, b)


capacities = st.one_of(st.none(), st.integers(1, 4))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), policy=st.sampled_from(POLICIES), apheresis=capacities,
       manufacturing=capacities, beds=capacities, horizon=st.sampled_from([0.2, 1.0, 5.0]),
       failure=st.sampled_from([0.0, 0.3, 0.9]))
def test_engines_agree_on_random_scenarios(derived_scenario, seed, policy, apheresis, manufacturing, beds, horizon,
                                           failure):
    scenario = derived_scenario({
        "resources": {"apheresis": {"capacity": apheresis}, "manufacturing": {"capacity": manufacturing},
                      "hsct_beds": {"capacity": beds}},
        "pathway": {"manufacturing": {"failure_probability": {"value": failure}}},
        "run": {"horizon_years": horizon}})
    model = ModelDefinition(scenario)
    (a,) = simulate_policies(model, [policy], 0, 60, seed, engine="vectorised")
    (b,) = simulate_policies(model, [policy], 0, 60, seed, engine="simpy")
    assert_same_patients(a, b)


def test_queued_transplant_beds_stay_on_the_array_engine():
    scenario = load_scenario(BASELINE, {"resources.hsct_beds.capacity": 2})
    model = ModelDefinition(scenario)
    results = simulate_policies(model, ["hsct_all", "reinfuse"], 0, 400, 1, engine="auto")
    assert {r.engine for r in results} == {"vectorised"}
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
    transplant-bed check still sees the whole cohort's stays, and a cohort
    and policy whose beds queue is simulated whole with its queue."""
    model = ModelDefinition(load_scenario(BASELINE, {"resources.hsct_beds.capacity": beds}))
    whole = simulate_replications(model, POLICIES, [0, 1], 700, 2, engine="auto")
    monkeypatch.setattr(array_engine, "SLAB_ROWS", 900)  # 2 x 700 patients x 4 policies in 7 slabs
    slabs = simulate_replications(model, POLICIES, [0, 1], 700, 2, engine="auto")
    if beds is not None:
        assert max(p.outcomes["hsct_bed_wait_days"].max() for p in whole) > 0  # some beds queued
    for a, b in zip(slabs, whole, strict=True):
        assert_identical(a, b)


def test_replications_whose_beds_queue_are_the_same_as_alone():
    """Scarce beds: each (replication, policy) is queued on its own."""
    model = ModelDefinition(load_scenario(BASELINE, {"resources.hsct_beds.capacity": 4}))
    together = simulate_replications(model, ["observe", "hsct_all"], [0, 1, 2], 150, 8, engine="auto")
    alone = [part for r in (0, 1, 2) for part in simulate_policies(model, ["observe", "hsct_all"], r, 150, 8)]
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


def test_compiled_access_loop_is_its_plain_python():
    """The access pathway's event loop is compiled by numba; its plain Python
    (what runs without numba) gives the same patients, events and resource
    use, number for number, with queues at both resources."""
    from carsim.model.access import WAITED, AccessPathway
    from carsim.model.compiled import ENABLED, interpreted

    if not ENABLED:
        pytest.skip("numba is not installed (or CARSIM_NO_JIT is set): only the plain Python runs")
    scenario = load_scenario(BASELINE, {"resources.apheresis.capacity": 1, "resources.manufacturing.capacity": 3})
    model = ModelDefinition(scenario)
    streams, covariates, arrivals = simulation.draw_cohort(model, 3, 0, 400)
    runs = []
    for loop in (array_engine._run_queues, interpreted(array_engine._run_queues)):
        access = AccessPathway(model, streams, covariates, arrivals, 0, 400)
        order = np.lexsort((np.arange(access.n), access.arrival))
        use = loop(*access.arrays(), order, np.array([1, 3]))
        runs.append((access, use))
    (compiled_run, compiled_use), (python_run, python_use) = runs
    logged = compiled_run.logged[0]
    assert logged == python_run.logged[0] > 400 * 4
    for got, reference in zip((compiled_run.floats, compiled_run.integers, compiled_run.log[:logged],
                               compiled_run.log_days[:logged], *compiled_use),
                              (python_run.floats, python_run.integers, python_run.log[:logged],
                               python_run.log_days[:logged], *python_use), strict=True):
        np.testing.assert_array_equal(got, reference)
    assert np.mean(compiled_run.floats[:, WAITED] > 1) > 0.2  # the manufacturing queue is real
