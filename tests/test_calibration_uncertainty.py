"""Calibration uncertainty: the ABC Markov chains recover a known
posterior, and PSA draws the calibrated parameters as whole joint rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import scenario_error, write_scenario

from carsim.experiment.psa.sampling import parameter_table
from carsim.scenario.loader import load_scenario
from carsim.scenario.parameters import calibration_opt_outs, uncertain_parameters, value_at

A = "test"
MODEL = Path(__file__).resolve().parents[1] / "scenarios" / "model.yaml"  # no calibration draws of its own
CR = "pathway.response.complete_remission.value"
SEARCH = "pathway.referral.delay.mean"
ROWS = [[0.80, 5.0], [0.85, 10.0], [0.90, 20.0], [0.95, 40.0]]  # the second column is a function of the first


def joint(rows=ROWS, parameters=(CR, SEARCH), fitted=None):
    """A calibration block over the model file's own values (as fitted)."""
    if fitted is None:
        data = load_scenario(MODEL).model_dump(by_alias=True, exclude_none=True)
        fitted = [value_at(data, path) for path in parameters]
    return {"calibration_uncertainty": {"method": "test", "parameters": list(parameters), "fitted": fitted,
                                        "draws": rows}}


@pytest.fixture
def model_scenario(tmp_path):
    """``model_scenario({...})``: a scenario extending the (unfitted) model file."""
    return lambda overrides: load_scenario(write_scenario(tmp_path, overrides, extends=MODEL))


def test_psa_draws_whole_rows_of_the_calibration_draws(model_scenario):
    scenario = model_scenario(joint())
    calibrated = [p for p in uncertain_parameters(scenario) if p.kind == "calibrated"]
    assert [p.path for p in calibrated] == [CR, SEARCH]
    assert all(p.family == "calibration draws" for p in calibrated)
    table = parameter_table(scenario, seed=3, draws=400)
    pairs = {tuple(row) for row in table[[CR, SEARCH]].itertuples(index=False)}
    assert pairs <= {tuple(row) for row in ROWS}  # never a mix of two rows
    assert len(pairs) == len(ROWS)  # and every row is drawn (400 draws of 4 rows)
    shares = table[CR].value_counts(normalize=True)
    assert shares.min() > 0.15  # about a quarter each


def test_one_way_intervals_of_calibrated_parameters_are_the_draws_quantiles(model_scenario):
    point = value_at(load_scenario(MODEL).model_dump(by_alias=True, exclude_none=True), SEARCH)
    column = point * (0.5 + np.arange(101) / 100)  # around the fitted value
    scenario = model_scenario(joint([[0.70 + 0.002 * i, float(v)] for i, v in enumerate(column)]))
    low, high = {p.path: p for p in uncertain_parameters(scenario)}[SEARCH].interval()
    assert (low, high) == pytest.approx(np.quantile(column, [0.025, 0.975]))
    # a best fit at the edge of the draws: the range is stretched to include it
    above = point * (1.2 + np.arange(101) / 100)
    scenario = model_scenario(joint([[0.70 + 0.002 * i, float(v)] for i, v in enumerate(above)]))
    low, high = {p.path: p for p in uncertain_parameters(scenario)}[SEARCH].interval()
    assert (low, high) == pytest.approx((point, np.quantile(above, 0.975)))


@pytest.mark.parametrize("override, key, expected", [
    (joint([[0.8, 5.0], [0.9]]), "calibration_uncertainty", "expected 2 values, one per parameter"),
    (joint(fitted=[0.8]), "calibration_uncertainty", "fitted: expected 2 values"),
    (joint([[0.8, float("nan")], [0.9, 1.0]]), "calibration_uncertainty.draws[0][1]", "expected a finite number"),
])
def test_bad_calibration_draws_are_refused_in_one_line(tmp_path, override, key, expected):
    message = scenario_error(tmp_path, override, extends=MODEL)
    assert key in message and expected in message


def test_abc_chains_recover_a_known_posterior(tmp_path):
    """One parameter, the CR probability, and one target, CR 0.80 with a
    published 95% CI 0.70-0.90.  The model's CR share is the parameter (up to
    Monte Carlo noise from 1,000 patients, SE 0.013), the prior is flat over
    0.5-0.99 and a set is admissible when the target is inside its interval,
    so the posterior is uniform on 0.70-0.90: median 0.80, 95% interval
    0.705-0.895 (tolerances: about three standard errors at the chains'
    effective sample size)."""
    from carsim.calibration.fit import Calibrator
    from carsim.calibration.spec import UncertaintySettings, load_calibration
    from carsim.calibration.uncertainty import sample_posterior

    scenario = write_scenario(tmp_path, {"pathway": {"response": {"complete_remission": {
        "value": 0.8, "assumption": A, "odds_ratios": []}}}}, extends=MODEL)
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump({"inputs": [
        {"id": "cr", "what": "CR", "value": 0.8, "ci": [0.7, 0.9], "kind": "target", "source": "test"}]}))
    spec_path = tmp_path / "calibration.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "sir", "scenario": str(scenario), "writes": "fitted.yaml", "report": "report", "patients": 1000,
        "seed": 5, "n_jobs": 1, "targets": [{"id": "cr", "output": "cr"}],
        "stages": [{"name": "response", "targets": ["cr"],
                    "parameters": [{"path": CR, "bounds": [0.5, 0.99]}]}]}))
    spec, targets = load_calibration(spec_path)
    calibrator = Calibrator(spec, targets, spec_path, n_jobs=1)
    posterior = sample_posterior(calibrator, {CR: 0.8}, UncertaintySettings(samples=600, keep=800, spread=0.5),
                                 log=lambda *_: None)
    draws = posterior.draws[:, 0]
    assert posterior.effective_sample_size > 40 and 0.2 < posterior.moves < 0.9
    assert draws.min() > 0.66 and draws.max() < 0.94  # nothing beyond the admissible region (3 Monte Carlo SE)
    assert np.median(draws) == pytest.approx(0.80, abs=0.03)
    low, high = np.quantile(draws, [0.025, 0.975])
    assert low == pytest.approx(0.705, abs=0.03) and high == pytest.approx(0.895, abs=0.03)


def test_effective_sample_size_of_independent_and_autocorrelated_chains():
    """Independent draws: ESS = n; an AR(1) chain with coefficient phi:
    n (1 - phi) / (1 + phi) (the integrated autocorrelation time)."""
    from carsim.calibration.uncertainty import effective_sample_size

    rng = np.random.default_rng(2)
    independent = rng.normal(size=(4, 5000, 1))
    assert effective_sample_size(independent) == pytest.approx(20000, rel=0.1)
    phi = 0.8
    ar = np.empty((4, 20000, 1))
    ar[:, 0] = rng.normal(size=(4, 1))
    for t in range(1, ar.shape[1]):
        ar[:, t] = phi * ar[:, t - 1] + rng.normal(size=(4, 1)) * np.sqrt(1 - phi ** 2)
    assert effective_sample_size(ar) == pytest.approx(80000 * (1 - phi) / (1 + phi), rel=0.15)


def test_a_scenario_that_changes_a_calibrated_value_opts_out_of_its_draws(model_scenario):
    """Its own value (an analyst's assumption) stays fixed in PSA, or is drawn
    from its own distribution; a removed value (another law) is skipped; the
    other calibrated values keep their draws.  Each opt-out says why."""
    block = joint(parameters=(CR, SEARCH, "pathway.bca.loss.law.median"), rows=[[0.8, 5.0, 9.0], [0.9, 6.0, 7.0]])
    scenario = model_scenario({**block, "pathway": {
        "response": {"complete_remission": {"value": 0.9, "source": A,
                                            "distribution": {"family": "beta", "ci": [0.8, 0.95]}}},
        "referral": {"delay": {"mean": 12.0}},
        "bca": {"loss": {"law": {"family": "exponential", "rate": 0.1, "unit": "years", "assumption": A}}}}})
    by_path = {p.path: p for p in uncertain_parameters(scenario)}
    assert by_path[CR].kind == "probability"
    assert SEARCH not in by_path and "pathway.bca.loss.law.median" not in by_path
    why = calibration_opt_outs(scenario)
    assert why[CR] == "the scenario states a distribution for it"
    assert why[SEARCH].startswith("the scenario sets it to 12")
    assert why["pathway.bca.loss.law.median"] == "the scenario no longer has this value"
    kept = model_scenario({**block, "pathway": {"referral": {"delay": {"mean": 12.0}}}})
    assert [p.path for p in uncertain_parameters(kept) if p.kind == "calibrated"] == [
        CR, "pathway.bca.loss.law.median"]
