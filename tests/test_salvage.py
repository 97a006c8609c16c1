"""Transplant mortality on every transplant (higher for a second one) and
survival after a salvage HSCT, measured on simulated cohorts (array engine)
against the probabilities and law given as input."""

from __future__ import annotations

import numpy as np
from scipy import stats

from carsim.model.definition import ModelDefinition
from carsim.model.simulation import simulate_policies

A = "test"
BASE_TRM, SECOND_OR = 0.10, 3.0
SALVAGE_MEDIAN_MONTHS = 12.0


def salvage_cohort(derived_scenario):
    """Observation only: every relapse is salvaged into re-remission and
    transplanted; half the patients had an HSCT before CAR."""
    scenario = derived_scenario({
        "cohort": {"covariates": {"prior_hsct": {"bernoulli": 0.5, "assumption": A}}},
        "pathway": {
            "post_relapse": {
                "reremission": {"value": 0.999, "assumption": A},
                "time_to_reremission": {"family": "fixed", "value": 10, "assumption": A},
                "survival_after_salvage_hsct": {"family": "exponential", "median": SALVAGE_MEDIAN_MONTHS,
                                                "unit": "months", "assumption": A}},
            "hsct": {
                "donor_search": {"family": "fixed", "value": 5, "assumption": A},
                # transplant deaths on the next day: no other death competes with them
                "time_to_transplant_death": {"family": "fixed", "value": 1, "assumption": A},
                # distribution: none (the inherited interval describes the calibrated value, not this one)
                "transplant_related_death": {"value": BASE_TRM, "assumption": A, "distribution": None, "odds_ratios": [
                    {"label": "second_hsct", "if": "prior_hsct or hsct_after_car >= 1", "value": SECOND_OR,
                     "assumption": A}]}}},
        "run": {"horizon_years": 10}})
    model = ModelDefinition(scenario)
    result = simulate_policies(model, ["observe"], 0, 6000, 11, record_events=False)[0]
    return result.outcomes, result.covariates


def test_salvage_transplants_carry_transplant_mortality_higher_after_a_prior_hsct(derived_scenario):
    o, covariates = salvage_cohort(derived_scenario)
    salvage = (o["hsct_count"] >= 1) & ~o["consolidative_hsct"]
    assert salvage.sum() > 800
    died = o["death_cause"] == "transplant"
    second_odds = BASE_TRM / (1 - BASE_TRM) * SECOND_OR
    for prior, expected in ((False, BASE_TRM), (True, second_odds / (1 + second_odds))):
        group = salvage & (covariates["prior_hsct"] == prior)
        low, high = stats.binomtest(int(died[group].sum()), int(group.sum())).proportion_ci(0.999)
        assert low < expected < high, (prior, died[group].mean(), expected)


def test_survival_after_a_salvage_hsct_follows_its_law(derived_scenario):
    """Time from the salvage HSCT to a death other than transplant death,
    censored at the end of follow-up (and at transplant death): the
    exponential MLE (deaths / time at risk) matches the input rate."""
    o, _ = salvage_cohort(derived_scenario)
    salvage = (o["hsct_count"] >= 1) & ~o["consolidative_hsct"]
    start = o["first_hsct_day"][salvage]
    time = o["end_day"][salvage] - start
    event = (o["death_cause"][salvage] == "post_relapse")
    assert event.sum() > 500
    rate = event.sum() / time.sum()  # per day
    expected = np.log(2) / (SALVAGE_MEDIAN_MONTHS * 365.25 / 12)
    se = rate / np.sqrt(event.sum())
    assert abs(rate - expected) < 3.3 * se, (rate, expected)
