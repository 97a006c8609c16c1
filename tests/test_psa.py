"""Probabilistic sensitivity analysis: tables, reproducibility, parameter
sampling, probability of being best, and the CLI's one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import BASELINE
from scipy import stats

from carsim.experiment.evaluate import evaluate_policies
from carsim.experiment.metrics import metric_origins
from carsim.experiment.outcomes import resolve_outcome
from carsim.experiment.psa.run import run_psa
from carsim.experiment.psa.sampling import draw_values, parameter_table, parameter_uniforms
from carsim.experiment.psa.statistics import DIRECTIONS, probability_best
from carsim.experiment.tables import to_latex, to_markdown, write_table
from carsim.scenario import load_scenario
from carsim.scenario.parameters import apply_values, uncertain_parameters
from carsim.scenario.schema import Scenario

DRAWS, PATIENTS, SEED = 6, 150, 4242
PHENOTYPES = load_scenario(BASELINE).relapse_phenotypes
TABLE_STEMS = ("psa_summary", "psa_probability_best", "psa_incremental", "psa_parameter_summary")


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(BASELINE)


@pytest.fixture(scope="module")
def psa(scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("psa") / "run"
    return run_psa(scenario, DRAWS, out, n_patients=PATIENTS, seed=SEED, n_jobs=2, progress=False)


@pytest.fixture(scope="module")
def psa_one_job(scenario, tmp_path_factory):
    """The same PSA on one worker, with other chunks."""
    out = tmp_path_factory.mktemp("psa1") / "run"
    return run_psa(scenario, DRAWS, out, n_patients=PATIENTS, seed=SEED, n_jobs=1, chunk_size=4, progress=False)


def test_tables_exist_with_expected_columns(psa, scenario):
    out = psa.out
    for stem in TABLE_STEMS:
        for ext in ("csv", "md", "tex"):
            assert (out / f"{stem}.{ext}").stat().st_size > 0, f"{stem}.{ext}"
    for name in ("psa_draws.csv", "psa_parameters.csv", "psa_scatter.png", "manifest.json", "run.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "psa_scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    draws = pd.read_csv(out / "psa_draws.csv")
    assert list(draws.columns) == ["draw", "policy", "metric", "origin", "time_months", "value", "n"]
    assert sorted(draws["draw"].unique()) == list(range(DRAWS))
    assert list(draws["policy"].unique()) == scenario.policy_names
    parameters = pd.read_csv(out / "psa_parameters.csv")
    assert list(parameters.columns) == ["draw", *[p.path for p in uncertain_parameters(scenario)]]
    assert len(parameters) == DRAWS

    summary = pd.read_csv(out / "psa_summary.csv")
    assert list(summary.columns) == ["policy", "metric", "origin", "time_months", "mean", "sd", "q2_5", "q50",
                                     "q97_5", "n_draws"]
    assert set(summary["metric"]) == set(DIRECTIONS)
    ordered = summary.dropna(subset=["q2_5"])
    assert (ordered["q2_5"] <= ordered["q50"]).all() and (ordered["q50"] <= ordered["q97_5"]).all()
    # the summary is computed from the draws table
    os24 = draws[(draws.metric == "os") & (draws.origin == "infusion") & (draws.time_months == 24)]
    row = summary[(summary.policy == "observe") & (summary.metric == "os") & (summary.origin == "infusion")
                  & (summary.time_months == 24)]
    assert row["mean"].item() == pytest.approx(os24[os24.policy == "observe"]["value"].mean())

    best = pd.read_csv(out / "psa_probability_best.csv")
    assert list(best.columns) == ["metric", "origin", "time_months", "better", "policy", "probability", "n_draws"]
    incremental = pd.read_csv(out / "psa_incremental.csv")
    assert set(incremental["policy"]) == set(scenario.policy_names[1:])
    assert (incremental["reference"] == scenario.policy_names[0]).all()
    markdown = (out / "psa_summary.md").read_text()
    # one table per metric: a heading, a blank line, header and rule, its rows; a blank line between tables
    metrics = summary["metric"].nunique()
    assert markdown.count("### metric = ") == metrics
    assert markdown.count("\n") == len(summary) + 4 * metrics + (metrics - 1)
    assert "\\toprule" in (out / "psa_summary.tex").read_text()


def test_incremental_is_the_paired_difference(psa):
    draws = psa.draws
    os24 = resolve_outcome("os", 24, "infusion", phenotypes=PHENOTYPES).by_policy(draws)
    difference = os24["reinfuse"] - os24["observe"]
    row = psa.incremental[(psa.incremental.policy == "reinfuse") & (psa.incremental.metric == "os")
                          & (psa.incremental.origin == "infusion") & (psa.incremental.time_months == 24)]
    assert row["mean"].item() == pytest.approx(difference.mean())
    assert row["prob_better"].item() == pytest.approx((difference > 0).mean())
    cir = psa.incremental[(psa.incremental.metric == "cir")]
    assert cir["prob_better"].between(0, 1).all()


def test_same_seed_and_any_jobs_or_chunks_give_identical_results(psa, psa_one_job):
    assert (psa.out / "psa_draws.csv").read_bytes() == (psa_one_job.out / "psa_draws.csv").read_bytes()
    assert (psa.out / "psa_parameters.csv").read_bytes() == (psa_one_job.out / "psa_parameters.csv").read_bytes()
    assert (psa.out / "psa_summary.csv").read_bytes() == (psa_one_job.out / "psa_summary.csv").read_bytes()
    assert len(list((psa.out / "chunks").glob("chunk_*.parquet"))) == DRAWS
    assert len(list((psa_one_job.out / "chunks").glob("chunk_*.parquet"))) == 2


def test_draws_differ_and_have_their_own_patients(psa):
    os24 = resolve_outcome("os", 24, "infusion", phenotypes=PHENOTYPES).by_policy(psa.draws)
    assert os24["observe"].nunique() > 1
    parameters = psa.parameters.drop(columns="draw")
    assert (parameters.std() > 0).all()


def test_a_draw_is_evaluate_policies_on_its_values(psa, scenario):
    draw = 3
    values = draw_values(psa.parameters, draw)
    expected = evaluate_policies(apply_values(scenario, values), draw, SEED, PATIENTS)
    got = psa.draws[psa.draws.draw == draw]
    assert len(got) == len(expected)
    expected_values = np.array([row[4] for row in expected], dtype=float)
    np.testing.assert_array_equal(got["value"].to_numpy(), expected_values)
    assert list(got["metric"]) == [row[1] for row in expected]


def test_probability_best_sums_to_one_per_outcome(psa):
    best = psa.best
    totals = best.groupby(["metric", "origin", "time_months"], dropna=False)["probability"].sum()
    assert len(totals) > 20
    np.testing.assert_allclose(totals.to_numpy(), 1.0, atol=1e-12)
    assert best["probability"].between(0, 1).all()
    assert (best.loc[best.metric == "cir", "better"] == "lower").all()
    assert (best.loc[best.metric == "os", "better"] == "higher").all()


def test_probability_best_direction_and_ties():
    draws = pd.DataFrame({
        "draw": [0, 0, 1, 1, 2, 2],
        "policy": ["a", "b"] * 3,
        "metric": ["cir"] * 6,
        "origin": ["infusion"] * 6,
        "time_months": [24.0] * 6,
        "value": [0.2, 0.3, 0.4, 0.1, 0.5, 0.5],  # a lower, b lower, tie
        "n": [10] * 6,
    })
    best = probability_best(draws, ["a", "b"]).set_index("policy")["probability"]
    assert best["a"] == pytest.approx(0.5) and best["b"] == pytest.approx(0.5)
    draws.loc[5, "value"] = 0.9  # a better in draw 2
    best = probability_best(draws, ["a", "b"]).set_index("policy")["probability"]
    assert best["a"] == pytest.approx(2 / 3)


def test_parameter_draws_follow_their_distributions(scenario):
    """Stated distributions: independent streams, each value following its
    law.  Calibrated parameters share one stream (one joint row per draw)."""
    everything = uncertain_parameters(scenario)
    uniforms = parameter_uniforms(everything, seed=11, draws=2000)
    assert uniforms.shape == (2000, len(everything))
    calibrated = [j for j, p in enumerate(everything) if p.stream is not None]
    assert calibrated and (uniforms[:, calibrated] == uniforms[:, [calibrated[0]]]).all()
    parameters = [p for p in everything if p.stream is None]
    uniforms = uniforms[:, [j for j, p in enumerate(everything) if p.stream is None]]
    assert np.abs(np.corrcoef(uniforms, rowvar=False) - np.eye(len(parameters))).max() < 0.1
    for j, p in enumerate(parameters):
        values = p.ppf(uniforms[:, j])
        frozen = p.frozen
        assert abs(values.mean() - frozen.mean()) < 4 * frozen.std() / np.sqrt(2000), p.path
        assert stats.kstest(values, frozen.cdf).pvalue > 1e-3, p.path
    sensitivity = next(p for p in parameters if p.path == "surveillance.mrd.sensitivity.value")
    values = sensitivity.ppf(uniforms[:, parameters.index(sensitivity)])
    point = scenario.surveillance.mrd.sensitivity.value
    assert values.mean() == pytest.approx(point, abs=0.004)  # the beta is centred on the point value
    assert (values > 0).all() and (values < 1).all()


def test_parameter_draws_are_stable_prefixes_and_depend_on_the_seed(scenario):
    long = parameter_table(scenario, seed=5, draws=10)
    short = parameter_table(scenario, seed=5, draws=4)
    pd.testing.assert_frame_equal(long.iloc[:4], short)
    other = parameter_table(scenario, seed=6, draws=4)
    assert not np.allclose(other.drop(columns="draw").to_numpy(), short.drop(columns="draw").to_numpy())


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "distribution"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def test_without_distributions_there_is_no_parameter_spread(scenario, tmp_path):
    data = _strip(scenario.model_dump(by_alias=True, exclude_none=True))
    data.pop("calibration_uncertainty", None)
    data["run"]["policies"] = ["observe", "hsct_all"]
    fixed = Scenario.model_validate(data)
    assert uncertain_parameters(fixed) == []
    result = run_psa(fixed, 2, tmp_path / "fixed", n_patients=60, seed=3, n_jobs=1, progress=False)
    assert list(result.parameters.columns) == ["draw"]
    assert pd.read_csv(tmp_path / "fixed" / "psa_parameter_summary.csv").empty
    for draw in range(2):  # every draw is the point-value scenario on its own patients
        expected = [row[4] for row in evaluate_policies(fixed, draw, 3, 60)]
        np.testing.assert_array_equal(result.draws[result.draws.draw == draw]["value"].to_numpy(),
                                      np.array(expected, dtype=float))


def test_keep_patients_writes_patient_tables_without_changing_results(scenario, tmp_path):
    data = scenario.model_dump(by_alias=True, exclude_none=True)
    data["run"]["policies"] = ["observe", "hsct_all"]
    small = Scenario.model_validate(data)
    kept = run_psa(small, 2, tmp_path / "kept", n_patients=50, seed=9, n_jobs=1, keep_patients=True,
                   progress=False)
    plain = run_psa(small, 2, tmp_path / "plain", n_patients=50, seed=9, n_jobs=1, progress=False)
    pd.testing.assert_frame_equal(kept.draws, plain.draws)
    files = sorted((tmp_path / "kept" / "patients").glob("chunk_*.parquet"))
    assert files and not (tmp_path / "plain" / "patients").exists()
    patients = pd.concat(pd.read_parquet(f) for f in files)
    assert len(patients) == 2 * 2 * 50
    assert {"draw", "policy", "patient", "infused"} <= set(patients.columns)
    assert sorted(patients["draw"].unique()) == [0, 1]


def test_metric_table_matches_the_metrics_computed(psa):
    pairs = set(map(tuple, psa.draws[["metric", "origin"]].drop_duplicates().to_numpy()))
    origins_of = metric_origins(PHENOTYPES, priced=True)  # the baseline is priced
    assert pairs == {(m, o) for m, origins in origins_of.items() for o in origins}


def test_outcome_errors():
    from carsim.errors import CarsimError

    with pytest.raises(CarsimError, match="unknown outcome"):
        resolve_outcome("survival", phenotypes=PHENOTYPES)
    with pytest.raises(CarsimError, match="expected months after the time origin"):
        resolve_outcome("os", -3, phenotypes=PHENOTYPES)
    with pytest.raises(CarsimError, match="defined from enrollment"):
        resolve_outcome("infused", None, "infusion", phenotypes=PHENOTYPES)
    assert resolve_outcome("hsct_death", 7, phenotypes=PHENOTYPES).time_months is None
    assert resolve_outcome("rmst_os", 24, "enrollment", phenotypes=PHENOTYPES).origin == "enrollment"


def test_write_table_formats(tmp_path):
    frame = pd.DataFrame({"name": ["a_b", "c|d"], "value": [0.123456, np.nan], "n": [3, 4]})
    paths = write_table(frame, tmp_path, "t")
    assert [p.name for p in paths] == ["t.csv", "t.md", "t.tex"]
    pd.testing.assert_frame_equal(pd.read_csv(paths[0]), frame)
    markdown = to_markdown(frame)
    assert markdown.splitlines()[1] == "| --- | ---: | ---: |"
    assert "| c\\|d |  | 4 |" in markdown and "0.1235" in markdown
    latex = to_latex(frame)
    assert "a\\_b & 0.1235 & 3 \\\\" in latex and "\\begin{tabular}{lrr}" in latex
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize("args, message", [
    (["--patients", "20"], "--draws N is required"),
    (["--draws", "2", "--outcome", "survival"], "unknown outcome"),
    (["--draws", "2", "--time", "61"], "beyond the follow-up of 60 months"),
    (["--draws", "2", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --backend dask"),
])
def test_cli_errors_are_one_line(args, message, tmp_path, capsys):
    from carsim.cli import main

    assert main(["psa", str(BASELINE), "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("carsim: error: ") and message in err, err
    assert not (tmp_path / "x" / "run.json").exists()
