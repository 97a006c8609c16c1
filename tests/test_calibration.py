"""Calibration: mappings resolve, typos are clear errors, a synthetic problem
with known parameters is recovered, and the same seed gives the same fit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from carsim.calibration.fit import Calibrator, fit
from carsim.calibration.outputs import compute_output
from carsim.calibration.run import fitted_overrides, run_calibration
from carsim.calibration.spec import load_calibration
from carsim.cli import main
from carsim.errors import ScenarioError
from carsim.model.definition import ModelDefinition
from carsim.model.simulation import simulate_cohort
from carsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "scenarios" / "model.yaml"
TRUE_CR = 0.90
TRUE_CD19NEG_RATE = 0.004  # per month


@pytest.mark.parametrize("name", ["eliana.yaml", "real_world.yaml", "cd28.yaml"])
def test_every_shipped_mapping_resolves(name):
    path = ROOT / "calibration" / name
    spec, targets = load_calibration(path)
    calibrator = Calibrator(spec, targets, path, patients=100, n_jobs=1)  # checks every parameter path
    assert len(targets) >= 10
    assert sum(t.mapping.fit for t in targets.values()) >= 4
    for target in targets.values():
        assert target.lower <= target.value <= target.upper
    # every output is computable on a small simulated cohort
    patients = calibrator.simulate(calibrator.prior_values([p for s in spec.stages for p in s.parameters]))
    outputs = calibrator.outputs(patients, list(targets))
    assert set(outputs) == set(targets)


def _write(tmp_path: Path, spec: dict, targets: dict | None = None) -> Path:
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump(targets or {"synthetic": [
        {"id": "cr", "what": "synthetic CR", "value": 0.8, "ci": [0.78, 0.82], "kind": "target", "source": "test"},
    ]}))
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _spec(scenario: Path, **changes) -> dict:
    spec = {
        "name": "synthetic", "scenario": str(scenario), "writes": "fitted.yaml", "report": "report",
        "patients": 200, "seed": 5, "n_jobs": 1,
        "targets": [{"id": "cr", "output": "cr"}],
        "stages": [{"name": "one", "max_evaluations": 5, "targets": ["cr"],
                    "parameters": [{"path": "pathway.response.complete_remission.value", "bounds": [0.5, 0.999]}]}],
    }
    spec.update(changes)
    return spec


@pytest.mark.parametrize("change, key, expected", [
    ({"targets": [{"id": "no_such_target", "output": "cr"}]}, "targets[0].id", "unknown target id"),
    ({"targets": [{"id": "cr", "output": "complete_response"}]}, "targets[0].output", "unknown model output"),
    ({"targets": [{"id": "cr", "output": "efs"}]}, "targets[0].time_months", "needs a time point"),
    ({"targets": [{"id": "cr", "output": "cr", "subgroup": "infants"}]}, "targets[0].subgroup", "unknown subgroup"),
    ({"stages": [{"name": "one", "targets": ["crr"], "parameters": []}]}, "stages[0].targets[0]",
     "is not one of the mapped targets"),
    ({"stages": [{"name": "one", "targets": ["cr"], "parameters": [
        {"path": "pathway.response.complete_remision.value", "bounds": [0.5, 0.99]}]}]},
     "stages[0].parameters[0].path", "does not name a number"),
    ({"stages": [{"name": "one", "targets": ["cr"], "parameters": [
        {"path": "pathway.response.complete_remission.value", "bounds": [0.1, 0.2]}]}]},
     "stages[0].parameters[0].bounds", "outside"),
    ({"subgroups": {"infants": {"fixed": {"age": 0.5}}}}, "subgroups.infants.fixed.age", "unknown covariate"),
    ({"recover": [{"id": "cr", "analysis": "burden_os", "subgroup": "infants"}]}, "recover[0].subgroup",
     "unknown subgroup 'infants'"),
    ({"targets_of": []}, "targets_of", "unknown key 'targets_of' (did you mean 'targets'?)"),
    ({"targets": [{"id": "cr", "output": "cr", "among": "marrow_blast >= 5"}]}, "targets[0].among",
     "unknown variable 'marrow_blast'"),
    ({"recover": [{"id": "cr", "analysis": "burden_os", "high_burden": "blasts >= 5"}]}, "recover[0].high_burden",
     "unknown variable 'blasts'"),
    ({"recover": [{"id": "cr", "analysis": "fludarabine_relapse", "high_burden": "extramedullary"}]},
     "recover[0].high_burden", "only the burden analyses"),
])
def test_mapping_typos_are_one_line_errors(tmp_path, capsys, change, key, expected):
    path = _write(tmp_path, _spec(MODEL, **change))
    assert main(["calibrate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "calibration.yaml" in err and key in err and expected in err


def _synthetic_targets(tmp_path: Path) -> tuple[Path, Path]:
    """A scenario with known CR and CD19-negative relapse rate, and targets
    measured on a large cohort simulated from it with another seed."""
    truth = tmp_path / "truth.yaml"
    quick = {"run": {"horizon_years": 1.1},
             "resources": {"apheresis": {"capacity": None}, "manufacturing": {"capacity": None},
                           "hsct_beds": {"capacity": None}}}
    truth.write_text(yaml.safe_dump({
        "extends": str(MODEL), **quick,
        "pathway": {"response": {"complete_remission": {"value": TRUE_CR}},
                    "relapse": {"cd19neg": {"law": {"rate": TRUE_CD19NEG_RATE}}}},
    }))
    scenario = load_scenario(truth)
    p = simulate_cohort(ModelDefinition(scenario), "observe", 0, 6000, seed=999, record_events=False)
    p = {**p.outcomes, **{k: v for k, v in p.covariates.items() if k not in p.outcomes}}
    cr = compute_output(p, "cr", phenotypes=scenario.relapse_phenotypes)
    cir = compute_output(p, "cir_cd19neg", "infusion", 12, phenotypes=scenario.relapse_phenotypes)
    targets = {"synthetic": [
        {"id": "cr", "value": round(cr, 4), "ci": [cr - 0.02, cr + 0.02], "kind": "target", "source": "simulated"},
        {"id": "cir_neg", "value": round(cir, 4), "ci": [cir - 0.02, cir + 0.02], "time": 12, "kind": "target",
         "source": "simulated"},
    ]}
    start = tmp_path / "start.yaml"
    start.write_text(yaml.safe_dump({
        "extends": str(MODEL), **quick,
        "pathway": {"response": {"complete_remission": {"value": 0.75}},
                    "relapse": {"cd19neg": {"law": {"rate": 0.0012}}}},
    }))
    spec = _spec(start, patients=1500, seed=3, targets=[
        {"id": "cr", "output": "cr"}, {"id": "cir_neg", "output": "cir_cd19neg"}],
        stages=[{"name": "both", "max_evaluations": 45, "targets": ["cr", "cir_neg"], "parameters": [
            {"path": "pathway.response.complete_remission.value", "bounds": [0.5, 0.999]},
            {"path": "pathway.relapse.cd19neg.law.rate", "bounds": [0.0002, 0.05], "scale": "log"}]}])
    return _write(tmp_path, spec, targets), start


def test_synthetic_problem_recovers_known_parameters(tmp_path):
    path, _ = _synthetic_targets(tmp_path)
    result = run_calibration(path, log=lambda *_: None)
    values = result["values"]
    # Targets carry Monte Carlo noise (6000 patients) and the fit uses 1500:
    # CR within 0.03, the relapse rate within 30% (about 3 standard errors).
    assert abs(values["pathway.response.complete_remission.value"] - TRUE_CR) < 0.03
    assert abs(np.log(values["pathway.relapse.cd19neg.law.rate"] / TRUE_CD19NEG_RATE)) < np.log(1.3)
    assert result["stages"][0].objective_after < result["stages"][0].objective_before
    # The fitted file extends the starting scenario and reproduces the fitted values.
    fitted = load_scenario(tmp_path / "fitted.yaml")
    assert fitted.pathway.response.complete_remission.value == pytest.approx(
        values["pathway.response.complete_remission.value"], rel=1e-5)
    assert "fitted" in fitted.pathway.relapse["cd19neg"].law.assumption
    report = (tmp_path / "report" / "report.md").read_text()
    assert "cir_neg" in report and (tmp_path / "report" / "report.png").stat().st_size > 1000


def test_same_seed_same_fit(tmp_path):
    path, _ = _synthetic_targets(tmp_path)
    spec, targets = load_calibration(path)
    spec = spec.model_copy(update={"patients": 300, "stages": [
        s.model_copy(update={"max_evaluations": 8}) for s in spec.stages]})
    fits = []
    for _ in range(2):
        with Calibrator(spec, targets, path, n_jobs=1) as calibrator:
            fits.append(fit(calibrator, log=lambda *_: None)[0])
    assert fits[0] == fits[1]


def test_fitted_overrides_bring_a_labelled_entry_or_a_whole_unlabelled_list_and_notes():
    raw = {"pathway": {"response": {"complete_remission": {
        "value": 0.9, "assumption": "pending", "odds_ratios": [
            {"label": "x", "if": "x", "value": 0.2, "assumption": "a"},
            {"label": "y", "if": "y", "value": 0.3, "source": "b"}]}},
        "toxicity": {"severe_crs": {"value": 0.1, "source": "c", "odds_ratios": [
            {"if": "x", "value": 2.0, "source": "d"}, {"if": "y", "value": 3.0, "source": "e"}]}}}}
    out = fitted_overrides(raw, {"pathway.response.complete_remission.odds_ratios.y.value": 0.123456789,
                                 "pathway.toxicity.severe_crs.odds_ratios.1.value": 4.0},
                           note="fitted")
    # a labelled entry alone (extends merges it by label), its source replaced by the note
    assert out["pathway"]["response"]["complete_remission"]["odds_ratios"] == [
        {"label": "y", "if": "y", "value": 0.123457, "assumption": "fitted"}]
    # an unlabelled list whole (extends replaces it)
    assert out["pathway"]["toxicity"]["severe_crs"]["odds_ratios"] == [
        {"if": "x", "value": 2.0, "source": "d"}, {"if": "y", "value": 4.0, "assumption": "fitted"}]
    assert raw["pathway"]["response"]["complete_remission"]["odds_ratios"][1]["value"] == 0.3  # not mutated


def test_scenario_error_type_for_unknown_output(tmp_path):
    path = _write(tmp_path, _spec(MODEL, targets=[{"id": "cr", "output": "nope"}]))
    with pytest.raises(ScenarioError):
        load_calibration(path)


def test_a_fitted_parameter_at_a_bound_is_reported_as_a_failure():
    """An ELIANA fit with non-relapse mortality at the foot of its range
    (0.000215 in [0.0002, 0.1], log scale: 1% of the range) is flagged;
    values in the middle are not."""
    from types import SimpleNamespace

    from carsim.calibration.report import parameters_at_bounds
    from carsim.calibration.spec import load_calibration

    spec, _targets = load_calibration(ROOT / "calibration" / "eliana.yaml")
    nrm = 0.000215
    stages = [SimpleNamespace(values={p.path: (nrm if p.path.startswith("pathway.non_relapse_mortality")
                                                else math.sqrt(p.bounds[0] * p.bounds[1]) if p.scale == "log"
                                                else sum(p.bounds) / 2) for p in stage.parameters})
              for stage in spec.stages]
    found = parameters_at_bounds(spec, stages)
    assert [path for path, _value, _bound in found] == ["pathway.non_relapse_mortality.death.law.rate"]
    assert found[0][2] == 0.0002


def test_the_fludarabine_effect_is_recovered_on_a_cohort_where_it_is_the_only_one(derived_scenario):
    """Relapse x2 with suboptimal fludarabine and nothing else acting on it:
    the recovery analysis (Cox on relapse from infusion, responders) finds 2."""
    from carsim.calibration.recovery import recover

    only_flu = [{"if": "fludarabine_suboptimal", "value": 2.0, "assumption": "test"}]
    relapse = {name: {"law": {"family": "exponential", "rate": rate, "unit": "years", "assumption": "test"},
                      "multipliers": {"replace": only_flu}}
               for name, rate in (("cd19pos", 0.4), ("cd19neg", 0.2), ("lineage_switch", 0.02))}
    scenario = derived_scenario({"pathway": {"relapse": relapse}})
    (result,) = simulate_policies_observe(scenario, 4000, 9)
    found = recover(result, "fludarabine_relapse")
    assert found["lower"] < 2.0 < found["upper"], found


@pytest.mark.parametrize("analysis, condition, phenotype", [
    ("burden_cd19neg_relapse", "marrow_blasts_infusion >= 5", "cd19neg"),
    ("prior_crs_cd19pos_relapse", "prior_crs >= 2", "cd19pos"),
    ("burden_relapse", "marrow_blasts_infusion >= 5", None),
])
def test_a_covariate_effect_on_relapse_is_recovered_where_it_is_the_only_one(derived_scenario, analysis, condition,
                                                                           phenotype):
    """Relapse x2.5 where ``condition`` holds (on one phenotype, or on all),
    nothing else acting on relapse: the cause-specific Cox of the recovery
    analysis finds 2.5 inside its 95% CI."""
    from carsim.calibration.recovery import recover

    relapse = {}
    for name, rate in (("cd19pos", 0.4), ("cd19neg", 0.3), ("lineage_switch", 0.02)):
        acts = phenotype in (None, name)
        relapse[name] = {"law": {"family": "exponential", "rate": rate, "unit": "years", "assumption": "test"},
                         "multipliers": {"replace": [{"if": condition, "value": 2.5, "assumption": "test"}] if acts else []}}
    scenario = derived_scenario({"pathway": {"relapse": relapse}})
    (result,) = simulate_policies_observe(scenario, 8000, 4)
    found = recover(result, analysis)
    assert found["events"] > 300
    assert found["lower"] < 2.5 < found["upper"], found


def simulate_policies_observe(scenario, n, seed):
    from carsim.model.simulation import simulate_policies

    (r,) = simulate_policies(ModelDefinition(scenario), ["observe"], 0, n, seed, record_events=False)
    return ({**r.outcomes, **{k: v for k, v in r.covariates.items() if k not in r.outcomes}},)


def test_bca_retained_is_the_kaplan_meier_of_seen_b_cell_recovery_among_responders():
    # responders: recovery seen at 2 and 4 months; one relapses at 3 months (censored there), one
    # followed to 12 months without recovery; a non-responder is ignored.  KM at 5 months:
    # (1 - 1/4) at 2 months, censoring at 3, then (1 - 1/2) at 4: 0.375
    month = 365.25 / 12
    nan = math.nan
    p = {"cr": np.array([True, True, True, True, False]),
         "infusion_day": np.zeros(5),
         "bca_loss_detected_day": np.array([2, 4, nan, nan, 1]) * month,
         "relapse_day": np.array([nan, nan, 3, nan, nan]) * month,
         "first_hsct_day": np.full(5, nan),
         "end_day": np.array([12, 12, 12, 12, 12]) * month}
    assert compute_output(p, "bca_retained", "infusion", 5, phenotypes=()) == pytest.approx(0.375)
    assert compute_output(p, "bca_retained", "infusion", 1, phenotypes=()) == pytest.approx(1.0)


def test_medians_are_the_kaplan_meier_medians_of_lifelines():
    """median_os_months and median_remission_months against lifelines'
    KaplanMeierFitter.median_survival_time_ on the same durations."""
    from lifelines import KaplanMeierFitter

    month = 365.25 / 12
    rng = np.random.default_rng(4)
    n = 400
    death = rng.exponential(20 * month, n)
    follow = rng.uniform(6, 60, n) * month
    response = np.full(n, 28.0)
    relapse = np.where(rng.random(n) < 0.6, response + rng.exponential(10 * month, n), np.nan)
    p = {"infused": np.ones(n, bool), "cr": np.ones(n, bool), "infusion_day": np.zeros(n), "response_day": response,
         "death_day": np.where(death <= follow, death, np.nan), "end_day": np.minimum(death, follow),
         "relapse_day": np.where(relapse <= np.minimum(death, follow), relapse, np.nan),
         "first_hsct_day": np.full(n, np.nan), "pathway_exit_day": np.full(n, np.nan)}
    os_median = KaplanMeierFitter().fit(p["end_day"], ~np.isnan(p["death_day"])).median_survival_time_
    assert compute_output(p, "median_os_months", "infusion", phenotypes=()) == pytest.approx(os_median / month,
                                                                                              rel=0.01)
    event_day = np.fmin(p["relapse_day"], p["death_day"])
    stop = np.where(np.isnan(event_day), p["end_day"], event_day) - response
    dor = KaplanMeierFitter().fit(stop, ~np.isnan(event_day)).median_survival_time_
    assert compute_output(p, "median_remission_months", phenotypes=()) == pytest.approx(dor / month, rel=0.01)


def test_os_after_relapse_is_the_kaplan_meier_of_lifelines_from_relapse():
    """os_after_relapse (and per phenotype) against lifelines' Kaplan-Meier of
    survival from the relapse, among the patients who relapsed (with that
    phenotype); patients without a relapse are not in it."""
    from lifelines import KaplanMeierFitter

    month = 365.25 / 12
    rng = np.random.default_rng(11)
    n = 600
    relapsed = rng.random(n) < 0.5
    relapse = np.where(relapsed, rng.uniform(1, 12, n) * month, np.nan)
    phenotype = np.where(relapsed, np.where(rng.random(n) < 0.6, "cd19pos", "cd19neg"), "none").astype(object)
    after = np.where(phenotype == "cd19pos", rng.exponential(19 * month, n), rng.exponential(8 * month, n))
    follow = rng.uniform(12, 48, n) * month
    death = np.where(relapsed, relapse + after, rng.exponential(200 * month, n))
    p = {"relapse_day": relapse, "relapse_phenotype": phenotype, "death_day": np.where(death <= follow, death, np.nan),
         "end_day": np.minimum(death, follow)}
    for name, keep in (("os_after_relapse", relapsed), ("os_after_relapse_cd19pos", phenotype == "cd19pos"),
                       ("os_after_relapse_cd19neg", phenotype == "cd19neg")):
        km = KaplanMeierFitter().fit((p["end_day"] - relapse)[keep], ~np.isnan(p["death_day"][keep]))
        expected = float(km.survival_function_at_times(12 * month).iloc[0])
        got = compute_output(p, name, "infusion", 12, phenotypes=("cd19pos", "cd19neg"))
        assert got == pytest.approx(expected, abs=1e-9)
    # The phenotypes differ as drawn: about exp(-12/19 ln 2) against exp(-12/8 ln 2).
    assert (compute_output(p, "os_after_relapse_cd19pos", "infusion", 12, phenotypes=("cd19pos", "cd19neg"))
            > compute_output(p, "os_after_relapse_cd19neg", "infusion", 12, phenotypes=("cd19pos", "cd19neg")) + 0.2)


def test_a_median_with_its_n_is_not_read_as_a_count(tmp_path):
    path = _write(tmp_path, _spec(MODEL, targets=[{"id": "cr", "output": "cr"},
                                                  {"id": "m", "output": "median_os_months", "tolerance": 3}]),
                  {"synthetic": [{"id": "cr", "what": "CR", "value": 0.8, "ci": [0.78, 0.82], "source": "t"},
                                 {"id": "m", "what": "median OS", "value": 28.6, "n": 12, "source": "t"},
                                 {"id": "k", "what": "infused", "value": 55, "n": 71, "source": "t"}]})
    targets = load_calibration(path)[1]
    assert targets["m"].value == 28.6 and (targets["m"].lower, targets["m"].upper) == (25.6, 31.6)


def test_an_interval_derived_where_none_is_published_is_labelled_so(tmp_path):
    from carsim.calibration.report import recovery_rows
    from carsim.calibration.spec import Recovery, load_targets_file

    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"inputs": [
        {"id": "hr", "value": 5.1, "ci": [2.75, 9.45], "ci_derived": "from deaths by group", "source": "t"},
        {"id": "hr2", "value": 2.0, "ci": [1.2, 3.2], "source": "t"}]}))
    published = load_targets_file(path)
    rows = recovery_rows(None, published, [
        (Recovery(id="hr", analysis="burden_os"), {"hr": 3.0, "lower": 2.5, "upper": 3.5, "events": 10, "method": "m"}),
        (Recovery(id="hr2", analysis="burden_os"), {"hr": 3.3, "lower": 3.0, "upper": 3.6, "events": 10, "method": "m"})])
    assert list(rows["interval"]) == ["derived 95% CI (none published; see targets.yaml)", "published 95% CI"]
    assert list(rows["inside"]) == [True, False]
    path.write_text(yaml.safe_dump({"inputs": [{"id": "hr", "value": 5.1, "ci_derived": "how", "source": "t"}]}))
    with pytest.raises(ScenarioError, match=r"inputs\[0\]\.ci_derived: expected a sentence"):
        load_targets_file(path)


def test_high_burden_share_is_among_infused():
    p = {"marrow_blasts_infusion": np.array([2.0, 50.0, 5.0, 80.0]), "infused": np.array([True, True, True, False])}
    assert compute_output(p, "high_burden_share", phenotypes=()) == pytest.approx(2 / 3)


def test_a_target_among_part_of_the_cohort_is_read_off_those_patients_only(tmp_path):
    """``among:`` selects the rows a published figure was reported among: the
    CR among >= 5% blasts is the share of those patients alone, computed by
    hand on the same simulated table."""
    path = _write(tmp_path, _spec(MODEL, targets=[
        {"id": "cr", "output": "cr"}, {"id": "cr_high", "output": "cr", "among": "marrow_blasts_infusion >= 5"}]),
        {"synthetic": [{"id": "cr", "what": "CR", "value": 0.8, "ci": [0.78, 0.82], "source": "t"},
                       {"id": "cr_high", "what": "CR, high burden", "value": 0.7, "ci": [0.6, 0.8], "source": "t"}]})
    spec, targets = load_calibration(path)
    calibrator = Calibrator(spec, targets, path, patients=600, n_jobs=1)
    patients = calibrator.simulate({})
    outputs = calibrator.outputs(patients, ["cr", "cr_high"])
    p = patients["cohort"] if "cohort" in patients else next(iter(patients.values()))
    high = p["infused"] & (p["marrow_blasts_infusion"] >= 5)
    assert 0 < high.sum() < p["infused"].sum()
    assert outputs["cr_high"] == pytest.approx(p["cr"][high].mean())
    assert outputs["cr"] == pytest.approx(p["cr"][p["infused"]].mean())
    assert outputs["cr_high"] != pytest.approx(outputs["cr"])


def test_a_target_among_non_responders_is_their_kaplan_meier_os(tmp_path):
    """``among: "not cr"`` (a published figure for CAR non-responders): OS at
    12 months is lifelines' Kaplan-Meier of the infused non-responders alone."""
    from lifelines import KaplanMeierFitter

    from carsim.experiment.metrics import endpoint_arrays

    path = _write(tmp_path, _spec(MODEL, targets=[
        {"id": "cr", "output": "cr"}, {"id": "os_nr", "output": "os", "time_months": 12, "among": "not cr"}]),
        {"synthetic": [{"id": "cr", "what": "CR", "value": 0.8, "ci": [0.78, 0.82], "source": "t"},
                       {"id": "os_nr", "what": "OS 12 mo, non-responders", "value": 0.19, "ci": [0.07, 0.5],
                        "source": "t"}]})
    spec, targets = load_calibration(path)
    calibrator = Calibrator(spec, targets, path, patients=1500, n_jobs=1)
    patients = calibrator.simulate({})
    p = next(iter(patients.values()))
    outputs = calibrator.outputs(patients, ["os_nr"])
    mask, durations, events = endpoint_arrays(p, "os", "infusion")
    non_responders = ~np.asarray(p["cr"], dtype=bool)[mask]
    assert 20 < non_responders.sum() < mask.sum() / 2
    fitter = KaplanMeierFitter().fit(durations[non_responders], events[non_responders])
    assert outputs["os_nr"] == pytest.approx(float(fitter.predict(12 * 365.25 / 12)), abs=1e-9)


def test_a_burden_recovery_takes_the_papers_high_burden_definition(derived_scenario):
    """Relapse x2.5 with extramedullary disease only (marrow blasts act on no
    relapse hazard): with high burden defined as extramedullary disease the
    relapse hazard ratio comes back as 2.5; by marrow blasts alone as 1."""
    from carsim.calibration.recovery import recover

    relapse = {name: {"law": {"family": "exponential", "rate": rate, "unit": "years", "assumption": "test"},
                      "multipliers": {"replace": [{"if": "extramedullary", "value": 2.5, "assumption": "test"}]}}
               for name, rate in (("cd19pos", 0.4), ("cd19neg", 0.3), ("lineage_switch", 0.02))}
    scenario = derived_scenario({"pathway": {"relapse": relapse}})
    (result,) = simulate_policies_observe(scenario, 8000, 4)
    by_emd = recover(result, "burden_relapse", "extramedullary")
    by_marrow = recover(result, "burden_relapse")
    assert by_emd["lower"] < 2.5 < by_emd["upper"], by_emd
    assert "high burden (extramedullary) vs not" in by_emd["method"]
    assert by_marrow["lower"] < 1.0 < by_marrow["upper"], by_marrow


def test_calibrate_writes_tracked_files_only_with_write(tmp_path, capsys):
    """Without --write the fitted file and report go to a results folder and the
    files the calibration names are not touched; with --write they are written."""
    path, _ = _synthetic_targets(tmp_path)
    quick = ["--max-evaluations", "2", "--patients", "300"]
    out = tmp_path / "look"
    assert main(["calibrate", str(path), *quick, "--out", str(out)]) == 0
    assert not (tmp_path / "fitted.yaml").exists() and not (tmp_path / "report").exists()
    assert {"fitted.yaml", "report.md", "report.csv", "report.png", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert load_scenario(out / "fitted.yaml").name  # its extends: path resolves from the results folder
    assert main(["calibrate", str(path), *quick, "--write"]) == 0
    assert (tmp_path / "fitted.yaml").exists() and (tmp_path / "report" / "report.md").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["calibrate", str(path), "--write", "--out", str(out)])
    assert "not allowed with argument" in capsys.readouterr().err
