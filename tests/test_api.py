"""The Python API: the command line's commands as functions returning their
results (the same parser and code), and results folders read back."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import BASELINE

import carsim
from carsim.cli import main
from carsim.errors import CarsimError


def test_load_takes_named_and_dotted_overrides():
    scenario = carsim.load(BASELINE, patients=123, seed=9, pathway__hsct__transplant_related_death__value=0.09)
    assert scenario.cohort.size == 123 and scenario.run.seed == 9
    assert scenario.pathway.hsct.transplant_related_death.value == 0.09
    with pytest.raises(CarsimError, match="cohort.size"):
        carsim.load(BASELINE, patients=0)


def test_run_writes_what_the_command_line_writes(tmp_path, capsys):
    results = carsim.run(str(BASELINE), patients=200, time=18, out=tmp_path / "api")
    assert main(["run", str(BASELINE), "--patients", "200", "--time", "18", "--quiet",
                 "--out", str(tmp_path / "cli")]) == 0
    for name in ("summary.csv", "comparison.csv", "summary.md"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert results.summary.equals(pd.read_csv(tmp_path / "cli" / "summary.csv"))
    assert 18.0 in set(results.summary.time_months)
    assert results.to_html() == (tmp_path / "api" / "report.html").read_text()
    assert capsys.readouterr().out.strip() == f"results: {tmp_path / 'cli'}"  # the API printed nothing


def test_run_a_loaded_scenario_with_two_policies(tmp_path):
    scenario = carsim.load(BASELINE, patients=150, policies=["observe", "hsct_all"])
    results = carsim.run(scenario, out=tmp_path / "two")
    assert sorted(set(results.summary.policy)) == ["hsct_all", "observe"]
    assert set(results.comparison.policy) == {"hsct_all"}
    assert len(results.patients) == 2 * 150
    assert results.manifest["scenario_sha256"] == carsim.read_results(tmp_path / "two").manifest["scenario_sha256"]


def test_read_results_of_a_run(baseline_run):
    _, _, folder = baseline_run
    results = carsim.read_results(folder)
    assert isinstance(results, carsim.Results) and results.study == "run"
    assert len(results.patients) == 4 * 400
    assert set(results.events.columns) >= {"replication", "policy", "patient", "time_days", "event", "detail"}
    figure = results.plot_survival()
    # The numbers at risk at month 0 are the infused patients of each policy.
    infused = results.patients[results.patients.infused.astype(bool)].groupby("policy").size()
    texts = {t.get_text() for ax in figure.axes for t in ax.texts}
    assert {f"{n:,}" for n in infused} <= texts
    assert all(ax.get_legend() is not None for ax in figure.axes[::2])  # every curve panel has its legend
    assert len(results.plot_relapse_incidence().axes) == 4


def test_gsa_returns_its_tables(tmp_path):
    result = carsim.gsa(BASELINE, method="morris", samples=2, patients=40, n_jobs=1, out=tmp_path / "gsa",
                        parameters="pathway.post_relapse.survival_after_salvage_hsct.median")
    assert result.study == "gsa" and list(result.gsa_indices.parameter) == [
        "pathway.post_relapse.survival_after_salvage_hsct.median"]
    assert (tmp_path / "gsa" / "report.html").exists() and result.figures == [tmp_path / "gsa" / "gsa.png"]


def test_calibrate_returns_its_report_and_leaves_tracked_files_alone(tmp_path):
    import yaml
    from conftest import ROOT

    (tmp_path / "targets.yaml").write_text(yaml.safe_dump({"synthetic": [
        {"id": "cr", "what": "CR", "value": 0.8, "ci": [0.7, 0.9], "kind": "target", "source": "test"}]}))
    spec = tmp_path / "calibration.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "synthetic", "scenario": str(ROOT / "scenarios" / "model.yaml"), "writes": "fitted.yaml",
        "report": "report", "patients": 200, "seed": 5, "n_jobs": 1, "targets": [{"id": "cr", "output": "cr"}],
        "stages": [{"name": "one", "max_evaluations": 4, "targets": ["cr"], "parameters": [
            {"path": "pathway.response.complete_remission.value", "bounds": [0.5, 0.999]}]}]}))
    result = carsim.calibrate(spec, out=tmp_path / "look")
    assert result.study == "calibrate" and result.folder == tmp_path / "look"
    assert list(result.report["id"]) == ["cr"]
    assert (tmp_path / "look" / "fitted.yaml").exists()
    assert not (tmp_path / "fitted.yaml").exists()  # nothing tracked written without write=True


@pytest.mark.parametrize("call, expected", [
    (lambda tmp: carsim.run(tmp / "missing.yaml", out=tmp / "r"), "missing.yaml"),
    (lambda tmp: carsim.run(BASELINE, time=999, out=tmp / "r"), "--time 999: beyond the follow-up of 60 months"),
    (lambda tmp: carsim.run(BASELINE, patients=0, out=tmp / "r"), "argument --patients: expected a number >= 1"),
    (lambda tmp: carsim.read_results(tmp), "not a finished results folder"),
])
def test_mistakes_raise_the_one_line_error(tmp_path, call, expected):
    with pytest.raises(CarsimError) as error:
        call(tmp_path)
    assert expected in str(error.value) and "\n" not in str(error.value)
