"""Costs, QALYs and the incremental analysis, against closed forms and
hand-worked frontiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import BASELINE as BASELINE_PATH
from conftest import scenario_error

from carsim.analysis.economics import economics_tables, incremental_analysis
from carsim.experiment.runner import run_experiment
from carsim.model.economics import account
from carsim.scenario.schema import Economics

YEAR = 365.25


def one_state_economics(cost_per_month: float, utility: float, rate: float, event_cost: float = 0.0) -> Economics:
    return Economics.model_validate({
        "currency": "USD", "price_year": 2020, "perspective": "test",
        "discount": {"costs": {"value": rate, "assumption": "test"}, "outcomes": {"value": rate, "assumption": "test"}},
        "willingness_to_pay": [100000],
        "event_costs": {"death": {"value": event_cost, "assumption": "test"}},
        "states": {"alive": {"entered_by": ["enrolled"], "utility": {"value": utility, "assumption": "test"},
                             "cost_per_month": {"value": cost_per_month, "assumption": "test"}}},
    })


def records(death_days: np.ndarray):
    n = len(death_days)
    patients = np.arange(n)
    events = {"patient": np.repeat(patients, 2), "time_days": np.column_stack([np.zeros(n), death_days]).ravel(),
              "event": np.tile(np.array(["enrolled", "death"], dtype=object), n),
              "detail": np.full(2 * n, "", dtype=object)}
    return events, {"patient": patients, "end_day": death_days}


def test_one_state_costs_and_qalys_have_the_closed_form_per_patient():
    # cost rate c per year, utility u, death at T years, continuous discounting at ln(1 + r):
    # cost = c (1 - exp(-d T)) / d, QALY = u (1 - exp(-d T)) / d, plus the death cost C exp(-d T).
    c, u, r, big_c = 12_000.0, 0.8, 0.035, 5_000.0
    death_years = np.array([0.5, 1.0, 7.25, 30.0])
    out = account(one_state_economics(c / 12, u, r, big_c), *records(death_years * YEAR))
    d = math.log1p(r)
    np.testing.assert_allclose(out["cost"], c * (1 - np.exp(-d * death_years)) / d + big_c * np.exp(-d * death_years),
                               rtol=1e-9)
    np.testing.assert_allclose(out["qaly"], u * (1 - np.exp(-d * death_years)) / d, rtol=1e-9)
    np.testing.assert_allclose(out["life_years"], (1 - np.exp(-d * death_years)) / d, rtol=1e-9)
    np.testing.assert_allclose(out["cost_undiscounted"], c * death_years + big_c, rtol=1e-9)
    np.testing.assert_allclose(out["qaly_undiscounted"], u * death_years, rtol=1e-9)


def test_exponential_survival_gives_the_expected_discounted_cost():
    # E[c (1 - exp(-d T)) / d] = c / (lambda + d) for T ~ exponential(lambda)
    c, r, lam = 10_000.0, 0.03, 0.2
    rng = np.random.default_rng(7)
    death_years = rng.exponential(1 / lam, 200_000)
    out = account(one_state_economics(c / 12, 1.0, r), *records(death_years * YEAR))
    expected = c / (lam + math.log1p(r))
    se = out["cost"].std() / math.sqrt(len(death_years))
    assert abs(out["cost"].mean() - expected) < 4 * se
    assert out["qaly"].mean() == pytest.approx(expected / c, rel=4 * se / expected)


def test_undiscounted_at_a_zero_rate():
    out = account(one_state_economics(100.0, 0.5, 0.0), *records(np.array([YEAR])))
    assert out["cost"][0] == pytest.approx(1200.0)
    assert out["qaly"][0] == pytest.approx(0.5)


def test_a_hand_built_frontier_with_strict_and_extended_dominance():
    # A (0, 0) -> B (10, 1): ICER 10; D (50, 2.5) vs B: 40 / 1.5 = 26.67.
    # C (40, 1.5) lies between B and D with B->C 60 > C->D 10: extendedly dominated.
    # E (60, 2.0) costs more than D and gives less: dominated.
    frame = incremental_analysis(["E", "C", "A", "D", "B"], [60, 40, 0, 50, 10], [2.0, 1.5, 0.0, 2.5, 1.0])
    status = dict(zip(frame["strategy"], frame["status"]))
    assert status == {"A": "reference", "B": "frontier", "C": "extendedly dominated", "D": "frontier",
                      "E": "dominated"}
    icer = dict(zip(frame["strategy"], frame["icer"]))
    assert icer["B"] == pytest.approx(10.0)
    assert icer["D"] == pytest.approx(40 / 1.5)
    assert math.isnan(icer["A"]) and math.isnan(icer["C"]) and math.isnan(icer["E"])
    assert dict(zip(frame["strategy"], frame["compared_with"]))["D"] == "B"


def test_extended_dominance_is_removed_one_strategy_at_a_time():
    # After C goes (ICER 30 vs B, then 10 to D), B's ICER (20) exceeds B->D... recomputed each time.
    frame = incremental_analysis(["A", "B", "C", "D"], [0, 20, 50, 60], [0, 1, 2, 3])
    status = dict(zip(frame["strategy"], frame["status"]))
    # A->B 20, B->C 30, C->D 10: C extendedly dominated; then A->B 20, B->D 20: both kept
    assert status == {"A": "reference", "B": "frontier", "C": "extendedly dominated", "D": "frontier"}
    assert dict(zip(frame["strategy"], frame["icer"]))["D"] == pytest.approx(20.0)


def test_baseline_economics_pairs_policies_and_agrees_between_engines(derived_scenario):
    scenario = derived_scenario({"cohort": {"size": 300}})
    results = {engine: run_experiment(scenario, n_jobs=1, engine=engine) for engine in ("vectorised", "simpy")}
    for policy in scenario.policy_names:
        a, b = (results[e].group(policy, 0) for e in results)
        for column in ("cost", "qaly", "life_years", "cost_immunoglobulin"):
            np.testing.assert_allclose(a[column], b[column], rtol=1e-9, atol=1e-6)
    table = economics_tables(results["vectorised"])["economics"]
    assert set(table["status"]) <= {"reference", "frontier", "dominated", "extendedly dominated"}
    assert (table["status"] == "reference").sum() == 1
    observe = table.set_index("policy").loc["observe"]
    assert observe["incremental_cost"] == 0
    hsct = table.set_index("policy").loc["hsct_all"]
    # paired difference = difference of means (same patients under both policies)
    assert hsct["incremental_cost"] == pytest.approx(hsct["cost"] - observe["cost"])
    assert hsct["incremental_cost_lower"] < hsct["incremental_cost"] < hsct["incremental_cost_upper"]


def test_economics_leaves_the_clinical_results_alone(derived_scenario):
    priced = derived_scenario({"cohort": {"size": 200}})
    unpriced = priced.model_copy(update={"economics": None})
    a, b = (run_experiment(s, n_jobs=1).group("risk_triggered", 0) for s in (priced, unpriced))
    for column in b:
        np.testing.assert_array_equal(a[column], b[column])


def test_the_accounting_is_the_same_without_an_event_table(derived_scenario):
    """A run that keeps no event table records, after infusion, only the
    events the accounting reads: every cost, QALY and life-year is the same
    to the last bit as when every event is recorded (bed queue included)."""
    from carsim.model.economics import ECONOMIC_FIELDS, accounted_events, cost_column

    scenario = derived_scenario({"cohort": {"size": 600},
                                 "resources": {"hsct_beds": {"capacity": 2, "assumption": "test"}}})
    assert {"mrd_test", "decision", "death"}.isdisjoint(accounted_events(scenario.economics))  # some are left out
    kept, dropped = (run_experiment(scenario.model_copy(update={"run": scenario.run.model_copy(
        update={"write_events": write})}), n_jobs=1) for write in (True, False))
    assert any(part.warnings for part in kept.parts)  # the bed queue was used
    assert len(dropped.parts[0].events["patient"]) == 0 < len(kept.parts[0].events["patient"])
    for policy in scenario.policy_names:
        a, b = kept.group(policy, 0), dropped.group(policy, 0)
        columns = [*ECONOMIC_FIELDS, *(c for c in a if c.startswith(cost_column("")))]
        for column in columns:
            np.testing.assert_array_equal(a[column], b[column], err_msg=f"{policy} {column}")


def test_an_unknown_event_kind_is_refused_in_one_line(tmp_path):
    message = scenario_error(tmp_path, {"economics": {"event_costs": {"transplant": {"value": 1, "assumption": "x"}}}})
    assert "economics.event_costs.transplant" in message and "did you mean 'hsct'" not in message
    assert "unknown event kind 'transplant'" in message
    message = scenario_error(tmp_path, {"economics": {"states": {"remission": {"entered_by": ["reremision"]}}}})
    assert "did you mean 'reremission'" in message


def test_remaining_life_under_a_constant_hazard_is_one_over_hazard_plus_discount():
    from carsim.model.economics import remaining_life

    hazards = np.full(101, 0.05)
    ages = np.array([0.0, 12.3, 64.5, 99.9, 120.0])
    np.testing.assert_allclose(remaining_life(hazards, ages, 0.03), 1 / 0.08, rtol=1e-9)
    np.testing.assert_allclose(remaining_life(hazards, ages, 0.0), 1 / 0.05, rtol=1e-9)


def test_life_expectancy_at_birth_matches_the_published_us_2019_tables():
    # NVSR 70(19): e0 76.3 (males), 81.4 (females); e10 66.9 and 71.9
    from carsim.model.economics import life_table, remaining_life

    hazards = life_table("us_2019")
    assert remaining_life(hazards["male"], np.array([0.0]), 0.0)[0] == pytest.approx(76.3, abs=0.1)
    assert remaining_life(hazards["female"], np.array([0.0]), 0.0)[0] == pytest.approx(81.4, abs=0.1)
    assert remaining_life(hazards["male"], np.array([10.0]), 0.0)[0] == pytest.approx(66.9, abs=0.1)
    assert remaining_life(hazards["female"], np.array([10.0]), 0.0)[0] == pytest.approx(71.9, abs=0.1)


def test_a_lifetime_horizon_extrapolates_the_survivors(derived_scenario):
    lifetime = derived_scenario({"cohort": {"size": 300}, "run": {"horizon_years": "lifetime"}})
    assert lifetime.run.lifetime and lifetime.run.horizon_years == 10
    ten_years = lifetime.model_copy(update={"run": lifetime.run.model_copy(update={"lifetime": False})})
    a, b = (run_experiment(s, n_jobs=1).group("observe", 0) for s in (lifetime, ten_years))
    alive = np.isnan(a["death_day"])
    assert alive.any()
    assert np.all(a["life_years"][alive] > b["life_years"][alive] + 1)  # decades more for survivors
    np.testing.assert_array_equal(a["life_years"][~alive], b["life_years"][~alive])
    assert np.all(a["life_years_undiscounted"][alive] < 100)


def test_a_lifetime_horizon_needs_an_extrapolation(tmp_path):
    message = scenario_error(tmp_path, {"run": {"horizon_years": "lifetime"}, "economics": {"extrapolation": None}})
    assert "lifetime" in message and "economics.extrapolation" in message


# --- PSA: acceptability, EVPI and EVPPI as functions of the draws ------------------------------

def _tables(cost_rows, qaly_rows, policies=("a", "b")):
    import pandas as pd

    index = pd.Index(range(len(cost_rows)), name="draw")
    return (pd.DataFrame(cost_rows, columns=list(policies), index=index),
            pd.DataFrame(qaly_rows, columns=list(policies), index=index))


def test_evpi_by_hand():
    from carsim.experiment.psa.economics import evpi

    # at w = 1, NMB = qaly - cost: a = [1, 3], b = [2, 1]; E max = 2.5, max E = 2 -> EVPI 0.5
    cost, qaly = _tables([[0, 0], [0, 0]], [[1, 2], [3, 1]])
    table = evpi(cost, qaly, np.array([1.0]), population=1000)
    assert table["evpi_per_patient"][0] == pytest.approx(0.5)
    assert table["evpi_population"][0] == pytest.approx(500)


def test_evpi_is_zero_when_one_policy_is_best_in_every_draw():
    from carsim.experiment.psa.economics import acceptability, evpi

    rng = np.random.default_rng(3)
    qaly_a = rng.normal(5, 1, 300)
    cost, qaly = _tables(np.column_stack([np.full(300, 100.0), np.full(300, 200.0)]),
                         np.column_stack([qaly_a, qaly_a - 0.5]))
    wtp = np.array([0.0, 1e3, 1e5])
    assert np.all(evpi(cost, qaly, wtp, None)["evpi_per_patient"] == 0)
    ceac = acceptability(cost, qaly, wtp)
    assert np.all(ceac[ceac["policy"] == "a"]["probability_cost_effective"] == 1)
    assert ceac.groupby("wtp")["probability_cost_effective"].sum().eq(1).all()


def test_evppi_of_the_only_uncertain_parameter_is_the_evpi():
    import pandas as pd

    from carsim.experiment.psa.economics import evpi, evppi

    # NMB depends on x alone (a smooth function): EVPPI(x) = EVPI; an irrelevant y has EVPPI ~ 0
    rng = np.random.default_rng(11)
    x, y = rng.uniform(0, 1, 2000), rng.uniform(0, 1, 2000)
    cost, qaly = _tables(np.zeros((2000, 2)), np.column_stack([np.sin(3 * x), np.full(2000, 0.5)]))
    parameters = pd.DataFrame({"x": x, "y": y}, index=cost.index)
    wtp = np.array([1.0])
    total = evpi(cost, qaly, wtp, None)["evpi_per_patient"][0]
    partial = evppi(cost, qaly, parameters, {"x": ["x"], "y": ["y"]}, wtp).set_index("parameter")
    assert partial.loc["x", "evppi_per_patient"] == pytest.approx(total, rel=0.02)
    assert partial.loc["y", "evppi_per_patient"] < 0.05 * total


def test_psa_of_a_priced_scenario_writes_the_cost_effectiveness_files(tmp_path):
    import pandas as pd

    from carsim.cli import main

    out = tmp_path / "psa"
    assert main(["psa", str(BASELINE_PATH), "--draws", "12", "--patients", "150", "--out", str(out),
                 "--outcome", "nmb", "--quiet"]) == 0
    ceac = pd.read_csv(out / "ceac.csv")
    assert list(ceac.columns) == ["wtp", "policy", "probability_cost_effective", "on_frontier"]
    assert ceac.groupby("wtp")["probability_cost_effective"].sum().round(9).eq(1).all()
    assert (ceac.groupby("wtp")["on_frontier"].sum() == 1).all()
    assert {"wtp", "evpi_per_patient"} <= set(pd.read_csv(out / "evpi.csv").columns)
    assert {"parameter", "wtp", "evppi_per_patient"} <= set(pd.read_csv(out / "evppi.csv").columns)
    for png in ("ce_plane.png", "ceac.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    draws = pd.read_csv(out / "psa_draws.csv")
    assert {"cost", "qaly", "life_years", "nmb"} <= set(draws["metric"])


def test_qaly_is_an_outcome_only_of_a_priced_scenario():
    from carsim.experiment.outcomes import OutcomeError, resolve_outcome

    assert resolve_outcome("qaly", phenotypes=(), priced=True).origin == "enrollment"
    with pytest.raises(OutcomeError, match="need an economics block"):
        resolve_outcome("qaly", phenotypes=())


def test_without_its_reference_policy_a_run_compares_with_the_first_policy_run(tmp_path):
    from conftest import write_scenario

    from carsim.scenario import load_scenario

    scenario = load_scenario(write_scenario(tmp_path, {"run": {"policies": ["hsct_all", "reinfuse"]}}))
    assert scenario.economics.reference == "observe" and scenario.economic_comparator == "hsct_all"
    result = run_experiment(scenario.model_copy(update={"cohort": scenario.cohort.model_copy(update={"size": 300})}))
    table = economics_tables(result)["economics"]
    increments = dict(zip(table["policy"], table["incremental_cost"], strict=True))
    assert increments["hsct_all"] == 0 and increments["reinfuse"] != 0  # increments against hsct_all
