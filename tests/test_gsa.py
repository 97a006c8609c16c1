"""Global sensitivity analysis (``carsim gsa``) through ``run_gsa``'s code path.

The Ishigami function f = sin x1 + a sin^2 x2 + b x3^4 sin x1, x_i uniform on
[-pi, pi] (Ishigami & Homma 1990), has closed-form Sobol' indices (Sobol' &
Levitan 1999; Saltelli et al., Global Sensitivity Analysis: The Primer,
2008, sec. 4.9): with a = 7, b = 0.1,

    V   = a^2/8 + b pi^4/5 + b^2 pi^8/18 + 1/2
    V1  = (1 + b pi^4/5)^2 / 2,  V2 = a^2/8,  V3 = 0,  V13 = b^2 pi^8 (1/18 - 1/50)
    S1  = (0.3139, 0.4424, 0),   ST = (0.5576, 0.4424, 0.2437).

The inputs are parameters whose ``ppf`` maps probabilities [0, 1] to
[-pi, pi], so SALib samples uniforms and the same quantile mapping as for the
model's parameters is used.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import BASELINE

from carsim.cli import main
from carsim.experiment.gsa import GsaError, UniformParameter, run_gsa
from carsim.scenario import load_scenario
from carsim.scenario.parameters import uncertain_parameters

A, B = 7.0, 0.1


def ishigami(values: dict) -> float:
    x1, x2, x3 = values["x1"], values["x2"], values["x3"]
    return math.sin(x1) + A * math.sin(x2) ** 2 + B * x3**4 * math.sin(x1)


def analytic_indices():
    pi = math.pi
    v1 = 0.5 * (1 + B * pi**4 / 5) ** 2
    v2 = A**2 / 8
    v13 = B**2 * pi**8 * (1 / 18 - 1 / 50)
    v = A**2 / 8 + B * pi**4 / 5 + B**2 * pi**8 / 18 + 0.5
    return np.array([v1, v2, 0.0]) / v, np.array([v1 + v13, v2, v13]) / v


PARAMETERS = [UniformParameter(f"x{i}", -math.pi, math.pi) for i in (1, 2, 3)]


def test_analytic_values_are_the_published_ones():
    s1, st = analytic_indices()
    np.testing.assert_allclose(s1, [0.3139, 0.4424, 0.0], atol=1e-4)
    np.testing.assert_allclose(st, [0.5576, 0.4424, 0.2437], atol=1e-4)


def test_sobol_recovers_ishigami_indices():
    result = run_gsa(PARAMETERS, ishigami, "sobol", samples=4096, seed=3)
    s1, st = analytic_indices()
    t = result.indices
    assert list(t.parameter) == ["x1", "x2", "x3"]
    np.testing.assert_allclose(t.S1, s1, atol=0.03)
    np.testing.assert_allclose(t.ST, st, atol=0.03)
    assert (t.S1_lower < t.S1).all() and (t.S1 < t.S1_upper).all() and (t.ST_upper - t.ST_lower < 0.15).all()
    # SALib sampled probabilities; the values are their quantiles on [-pi, pi]
    assert result.uniforms.shape == (4096 * (3 + 2), 3)
    assert 0 < result.uniforms.min() and result.uniforms.max() < 1
    np.testing.assert_allclose(result.values, -math.pi + 2 * math.pi * result.uniforms)
    assert result.outputs[0] == pytest.approx(ishigami(dict(zip(["x1", "x2", "x3"], result.values[0]))))


def test_morris_ranks_x1_and_x2_above_x3():
    result = run_gsa(PARAMETERS, ishigami, "morris", samples=400, seed=3)
    mu_star = result.indices.set_index("parameter").mu_star
    assert min(mu_star["x1"], mu_star["x2"]) > mu_star["x3"]
    assert list(result.indices.columns) == ["parameter", "mu_star", "mu_star_lower", "mu_star_upper", "sigma", "mu"]
    assert len(result.outputs) == 400 * (3 + 1)


def test_same_seed_same_indices_and_bad_requests():
    first = run_gsa(PARAMETERS, ishigami, "sobol", samples=256, seed=9).indices
    again = run_gsa(PARAMETERS, ishigami, "sobol", samples=256, seed=9).indices
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(GsaError, match="power of two"):
        run_gsa(PARAMETERS, ishigami, "sobol", samples=100)
    with pytest.raises(GsaError, match="unknown method"):
        run_gsa(PARAMETERS, ishigami, "fast", samples=64)


def test_real_model_gsa_writes_the_index_table(tmp_path, capsys):
    paths = ["surveillance.mrd.sensitivity.value", "pathway.relapse.cd19pos.multipliers.mrd_present.value"]
    out = tmp_path / "gsa"
    status = main(["gsa", str(BASELINE), "--method", "sobol", "--samples", "4", "--patients", "60",
                   "--parameters", ",".join(paths), "--compare", "risk_triggered:observe", "--outcome", "os",
                   "--time", "24", "--n-jobs", "1", "--out", str(out)])
    assert status == 0
    assert f"results: {out}" in capsys.readouterr().out
    for name in ("gsa_indices.csv", "gsa_indices.md", "gsa_indices.tex", "gsa_samples.csv", "gsa.png",
                 "manifest.json"):
        assert (out / name).is_file(), name
    indices = pd.read_csv(out / "gsa_indices.csv")
    assert list(indices.columns) == ["parameter", "S1", "S1_lower", "S1_upper", "ST", "ST_lower", "ST_upper"]
    assert list(indices.parameter) == paths
    samples = pd.read_csv(out / "gsa_samples.csv")
    assert len(samples) == 4 * (2 + 2)
    # each value is its parameter's quantile of the sampled probability
    scenario = load_scenario(BASELINE)
    by_path = {p.path: p for p in uncertain_parameters(scenario)}
    for path in paths:
        np.testing.assert_allclose(samples[path], by_path[path].ppf(samples[f"u:{path}"]))
    assert samples.output.std() > 0  # the parameters move the outcome
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outcome"]["compare"] == ["risk_triggered", "observe"] and manifest["evaluations"] == 16


def test_gsa_bad_parameter_is_one_line(tmp_path, capsys):
    status = main(["gsa", str(BASELINE), "--parameters", "pathway.no.such.value", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 2 and len(err.splitlines()) == 1
    assert "not an uncertain parameter" in err and "pathway.hsct.transplant_related_death.value" in err
    assert not (tmp_path / "o").exists()
