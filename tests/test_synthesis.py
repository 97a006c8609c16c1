"""Published figures weighed together (carsim.calibration.synthesis).

Analytic truth: figures that read a parameter directly make the synthesis a
precision-weighted mean on the log scale (inverse-variance pooling, as in a
fixed-effect meta-analysis), with standard error 1 / sqrt(sum of weights);
a probability and its odds ratio fixed by two figures are solved exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from carsim.calibration.fit import Calibrator
from carsim.calibration.spec import load_calibration
from carsim.calibration.synthesis import Z95, standardised_gap, synthesize
from carsim.cli import main
from carsim.scenario import load_scenario
from carsim.scenario.parameters import uncertain_parameters

MODEL = Path(__file__).resolve().parents[1] / "scenarios" / "model.yaml"
TRM = "pathway.hsct.transplant_related_death.value"
SECOND = "pathway.hsct.transplant_related_death.odds_ratios.second_hsct.value"
FIGURES = [
    # CIs symmetric on the log scale (value = geometric mean of the ends), so that pooling is analytic
    {"id": "trm_a", "what": "transplant mortality, study A", "value": 0.08, "ci": [0.04, 0.16], "kind": "input",
     "source": "test"},
    {"id": "trm_b", "what": "transplant mortality, study B", "value": 0.04, "ci": [0.03, 0.04 ** 2 / 0.03],
     "kind": "input", "source": "test"},
    {"id": "trm_c", "what": "transplant mortality, study C", "value": 0.08, "ci": [0.02, 0.15], "kind": "input",
     "source": "test"},
    {"id": "second", "what": "mortality of a second transplant", "value": 0.188, "ci": [0.119, 0.257],
     "kind": "input", "source": "test"},
    {"id": "no_ci", "what": "a figure without a CI", "value": 0.1, "kind": "input", "source": "test"},
]


def _calibration(tmp_path: Path, synthesis: dict) -> Path:
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump({"inputs": FIGURES}))
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump({
        "name": "synthesis", "scenario": str(MODEL), "writes": "fitted.yaml", "report": "report", "patients": 200,
        "seed": 5, "n_jobs": 1, "targets": [], "stages": [], "synthesis": [synthesis]}, sort_keys=False))
    return path


def log_standard_error(ci) -> float:
    """Of a CI symmetric on the log scale."""
    return (math.log(ci[1]) - math.log(ci[0])) / (2 * Z95)


def _trm(bounds=(0.005, 0.5)) -> dict:
    return {"path": TRM, "bounds": list(bounds), "scale": "log"}


def _run(path: Path):
    spec, targets = load_calibration(path)
    published = {f["id"]: f for f in FIGURES}
    calibrator = Calibrator(spec, targets, path, n_jobs=1)
    values: dict = {}
    return synthesize(calibrator, values, spec.synthesis[0], published, log=lambda *_: None), values


def test_a_figure_is_weighted_by_its_ci_on_the_side_of_the_gap():
    """8% (2-15%): a model value above it is measured against the upper half
    of the CI, one below against the lower half (a split normal on the log
    scale); a symmetric CI gives the usual standard error either side."""
    assert standardised_gap(0.15, 0.08, (0.02, 0.15)) == pytest.approx(Z95)
    assert standardised_gap(0.02, 0.08, (0.02, 0.15)) == pytest.approx(-Z95)
    hr = (0.10, 0.16 ** 2 / 0.10)
    assert standardised_gap(0.16 * 1.5, 0.16, hr) == pytest.approx(math.log(1.5) / log_standard_error(hr))
    assert standardised_gap(0.0, 0.16, hr) == math.inf and standardised_gap(math.nan, 0.16, hr) == math.inf


def test_two_figures_on_one_parameter_give_the_inverse_variance_pooled_estimate(tmp_path):
    path = _calibration(tmp_path, {"id": "trm", "parameters": [_trm()], "max_evaluations": 200,
                                   "evidence": [{"id": "trm_a", "parameter": TRM}, {"id": "trm_b", "parameter": TRM}]})
    result, values = _run(path)
    weights = [1 / log_standard_error(f["ci"]) ** 2 for f in FIGURES[:2]]
    pooled = sum(w * math.log(f["value"]) for w, f in zip(weights, FIGURES[:2])) / sum(weights)
    assert math.log(values[TRM]) == pytest.approx(pooled, abs=0.01)
    half = Z95 / math.sqrt(sum(weights))
    low, high = result.intervals[TRM]
    assert math.log(low) == pytest.approx(pooled - half, abs=0.1 * half)
    assert math.log(high) == pytest.approx(pooled + half, abs=0.1 * half)
    # The residual objective is the heterogeneity (Cochran's Q) of the two figures.
    q = sum(w * (math.log(f["value"]) - pooled) ** 2 for w, f in zip(weights, FIGURES[:2]))
    assert result.objective_after == pytest.approx(q, rel=0.02)
    assert [row["inside"] for row in result.evidence] == [True, True]


def test_a_probability_and_its_odds_ratio_are_solved_exactly_by_two_figures(tmp_path):
    """Exactly identified: the fit reproduces both figures, and the joint draws
    reproduce the second figure's own CI through the correlation of the two
    parameters (drawn independently, its spread would be several times wider)."""
    path = _calibration(tmp_path, {
        "id": "transplant_mortality", "max_evaluations": 300,
        "parameters": [_trm(), {"path": SECOND, "bounds": [1.0, 60.0], "scale": "log"}],
        "evidence": [{"id": "trm_a", "parameter": TRM}, {"id": "second", "parameter": TRM, "odds_ratio": SECOND}]})
    result, values = _run(path)
    assert values[TRM] == pytest.approx(0.08, rel=0.02)
    odds = lambda p: p / (1 - p)
    assert values[SECOND] == pytest.approx(odds(0.188) / odds(0.08), rel=0.03)
    assert result.objective_after < 1e-3
    trm, ratio = result.draws[:, 0], result.draws[:, 1]
    second = odds(trm) * ratio / (1 + odds(trm) * ratio)
    assert np.median(second) == pytest.approx(0.188, rel=0.08)  # 200 draws: about 2.5 Monte Carlo SE
    # The Laplace curvature of a split normal at its centre averages the two
    # sides: variance 2 / (1 / se_low^2 + 1 / se_high^2) on the log scale.
    se_low, se_high = (math.log(0.188 / 0.119) / Z95, math.log(0.257 / 0.188) / Z95)
    expected = math.sqrt(2 / (se_low ** -2 + se_high ** -2))
    assert np.std(np.log(second)) == pytest.approx(expected, rel=0.15)
    assert np.corrcoef(np.log(trm), np.log(ratio))[0, 1] < -0.5


def test_the_fitted_file_carries_the_interval_into_psa_and_the_report_shows_each_figure(tmp_path):
    path = _calibration(tmp_path, {"id": "trm", "parameters": [_trm()], "note": "Two studies of one mortality.",
                                   "evidence": [{"id": "trm_a", "parameter": TRM}, {"id": "trm_b", "parameter": TRM}]})
    out = tmp_path / "out"
    assert main(["calibrate", str(path), "--out", str(out), "--quiet"]) == 0
    fitted = yaml.safe_load((out / "fitted.yaml").read_text())
    holder = fitted["pathway"]["hsct"]["transplant_related_death"]
    assert holder["distribution"] is None  # the model's published distribution gives way to the synthesis's draws
    draws = fitted["calibration_uncertainty"]
    column = np.array(draws["draws"])[:, draws["parameters"].index(TRM)]
    assert len(column) == 200 and column.min() < holder["value"] < column.max()
    scenario = load_scenario(out / "fitted.yaml")
    assert scenario.pathway.hsct.transplant_related_death.value == pytest.approx(holder["value"])
    psa = {p.path: p for p in uncertain_parameters(scenario)}
    assert psa[TRM].kind == "calibrated"
    report = (out / "report.md").read_text()
    assert "## Published figures weighed together: trm" in report
    assert "| `trm_a` | value of pathway.hsct.transplant_related_death.value | 0.08 (0.04-0.16) |" in report
    assert "Two studies of one mortality." in report


@pytest.mark.parametrize("synthesis, key, expected", [
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "no_ci", "parameter": TRM}]},
     "synthesis[0].evidence[0].id", "needs a numeric value and a 95% CI"),
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "nothing", "parameter": TRM}]},
     "synthesis[0].evidence[0].id", "unknown target id 'nothing'"),
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "trm_a", "parameter": TRM},
                                                      {"id": "trm_a", "parameter": TRM}]},
     "synthesis[0].evidence[1].id", "listed twice"),
    ({"id": "s", "parameters": [_trm(), {"path": SECOND, "bounds": [1, 30]}], "evidence": [{"id": "trm_a", "parameter": TRM}]},
     "synthesis[0].evidence", "1 figure(s) cannot fix 2 parameters"),
    ({"id": "s", "parameters": [_trm(), {"path": SECOND, "bounds": [1, 30]}],
      "evidence": [{"id": "trm_a", "parameter": TRM}, {"id": "trm_b", "parameter": TRM}]},
     "synthesis[0].parameters[1]", "no figure constrains"),
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "trm_a", "parameter": SECOND}]},
     "synthesis[0].evidence[0].parameter", "is not one of the synthesis's parameters"),
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "trm_a", "odds_ratio": TRM}]},
     "synthesis[0].evidence[0]", "expected exactly one of 'analysis'"),
    ({"id": "s", "parameters": [{"path": TRM, "bounds": [0.0, 0.5]}], "evidence": [{"id": "trm_a", "parameter": TRM}]},
     "synthesis[0].parameters[0].bounds", "expected a positive lower bound"),
    ({"id": "s", "parameters": [{"path": "pathway.hsct.transplant_related_deth.value", "bounds": [0.01, 0.5]}],
      "evidence": [{"id": "trm_a", "parameter": "pathway.hsct.transplant_related_deth.value"}]},
     "synthesis[0].parameters[0].path", "does not name a number"),
])
def test_synthesis_mistakes_are_one_line_errors(tmp_path, capsys, synthesis, key, expected):
    path = _calibration(tmp_path, synthesis)
    assert main(["calibrate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "calibration.yaml" in err and key in err and expected in err, err


def test_a_synthesis_id_twice_or_a_value_fitted_twice_is_refused(tmp_path, capsys):
    one = {"id": "s", "parameters": [_trm()], "evidence": [{"id": "trm_a", "parameter": TRM}]}
    path = _calibration(tmp_path, one)
    spec = yaml.safe_load(path.read_text())
    spec["synthesis"] = [one, one]
    path.write_text(yaml.safe_dump(spec))
    assert main(["calibrate", str(path)]) == 2
    assert "synthesis[1].id: 's' is used twice" in capsys.readouterr().err
    spec["synthesis"] = [one]
    spec["stages"] = [{"name": "one", "targets": [], "parameters": [{"path": TRM, "bounds": [0.01, 0.5]}]}]
    path.write_text(yaml.safe_dump(spec))
    assert main(["calibrate", str(path)]) == 2
    assert "synthesis[0].parameters[0].path" in (err := capsys.readouterr().err) and "also fitted by stage 'one'" in err


def test_a_figure_whose_value_lies_outside_its_ci_is_refused(tmp_path, capsys):
    path = _calibration(tmp_path, {"id": "s", "parameters": [_trm()], "evidence": [{"id": "trm_a", "parameter": TRM}]})
    targets = yaml.safe_load((tmp_path / "targets.yaml").read_text())
    targets["inputs"][0]["ci"] = [0.09, 0.2]
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump(targets))
    assert main(["calibrate", str(path)]) == 2
    assert "expected 0 < lower < value < upper, got value 0.08 and CI 0.09-0.2" in capsys.readouterr().err
