"""Published figures weighed together (carsim.calibration.synthesis).

Analytic truth: figures that read a parameter directly make the synthesis a
precision-weighted mean on the log scale (inverse-variance pooling, as in a
fixed-effect meta-analysis), with standard error 1 / sqrt(sum of weights);
a probability and its odds ratio fixed by two figures are solved exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from carsim.calibration.fit import Calibrator
from carsim.calibration.spec import load_calibration
from carsim.calibration.synthesis import Z95, log_standard_error, synthesize
from carsim.cli import main
from carsim.scenario import load_scenario

MODEL = Path(__file__).resolve().parents[1] / "scenarios" / "model.yaml"
TRM = "pathway.hsct.transplant_related_death.value"
SECOND = "pathway.hsct.transplant_related_death.odds_ratios.second_hsct.value"
FIGURES = [
    {"id": "trm_a", "what": "transplant mortality, study A", "value": 0.08, "ci": [0.02, 0.15], "kind": "input",
     "source": "test"},
    {"id": "trm_b", "what": "transplant mortality, study B", "value": 0.04, "ci": [0.03, 0.055], "kind": "input",
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


def _trm(bounds=(0.005, 0.5)) -> dict:
    return {"path": TRM, "bounds": list(bounds), "scale": "log"}


def _run(path: Path):
    spec, targets = load_calibration(path)
    published = {f["id"]: f for f in FIGURES}
    calibrator = Calibrator(spec, targets, path, n_jobs=1)
    values: dict = {}
    return synthesize(calibrator, values, spec.synthesis[0], published, log=lambda *_: None), values


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
    path = _calibration(tmp_path, {
        "id": "transplant_mortality", "max_evaluations": 300,
        "parameters": [_trm(), {"path": SECOND, "bounds": [1.0, 30.0], "scale": "log"}],
        "evidence": [{"id": "trm_a", "parameter": TRM}, {"id": "second", "parameter": TRM, "odds_ratio": SECOND}]})
    result, values = _run(path)
    assert values[TRM] == pytest.approx(0.08, rel=0.02)
    odds = lambda p: p / (1 - p)
    assert values[SECOND] == pytest.approx(odds(0.188) / odds(0.08), rel=0.03)
    assert result.objective_after < 1e-3


def test_the_fitted_file_carries_the_interval_into_psa_and_the_report_shows_each_figure(tmp_path):
    path = _calibration(tmp_path, {"id": "trm", "parameters": [_trm()], "note": "Two studies of one mortality.",
                                   "evidence": [{"id": "trm_a", "parameter": TRM}, {"id": "trm_b", "parameter": TRM}]})
    out = tmp_path / "out"
    assert main(["calibrate", str(path), "--out", str(out), "--quiet"]) == 0
    fitted = yaml.safe_load((out / "fitted.yaml").read_text())
    holder = fitted["pathway"]["hsct"]["transplant_related_death"]
    assert holder["distribution"]["family"] == "beta"  # a probability keeps its family
    low, high = holder["distribution"]["ci"]
    assert low < holder["value"] < high
    scenario = load_scenario(out / "fitted.yaml")
    assert scenario.pathway.hsct.transplant_related_death.value == pytest.approx(holder["value"])
    report = (out / "report.md").read_text()
    assert "## Published figures weighed together: trm" in report
    assert "| `trm_a` | value of pathway.hsct.transplant_related_death.value | 0.08 (0.02-0.15) |" in report
    assert "Two studies of one mortality." in report


@pytest.mark.parametrize("synthesis, key, expected", [
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "no_ci", "parameter": TRM}]},
     "synthesis[0].evidence[0].id", "needs a positive value and a 95% CI"),
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "nothing", "parameter": TRM}]},
     "synthesis[0].evidence[0].id", "unknown target id 'nothing'"),
    ({"id": "s", "parameters": [_trm(), {"path": SECOND, "bounds": [1, 30]}], "evidence": [{"id": "trm_a", "parameter": TRM}]},
     "synthesis[0].evidence", "1 figure(s) cannot fix 2 parameters"),
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "trm_a", "parameter": SECOND}]},
     "synthesis[0]", "is not one of the synthesis's parameters"),
    ({"id": "s", "parameters": [_trm()], "evidence": [{"id": "trm_a", "odds_ratio": TRM}]},
     "synthesis[0].evidence[0]", "expected exactly one of 'analysis'"),
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
