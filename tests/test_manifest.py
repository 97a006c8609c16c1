"""One manifest protocol: every study's ``manifest.json`` has the same
common keys (see carsim.experiment.manifest), written last, listing files
that exist."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BASELINE, ROOT

import carsim
from carsim.calibration.run import run_calibration
from carsim.cli import main
from carsim.experiment.dsa import run_dsa, write_dsa
from carsim.experiment.manifest import COMMON_KEYS, STUDIES, Manifest, scenario_hash
from carsim.experiment.outcomes import resolve_outcome
from carsim.experiment.psa.run import run_psa
from carsim.scenario import load_scenario
from carsim.scenario.schema import Scenario

MODEL = ROOT / "scenarios" / "model.yaml"


def _quiet_main(*argv) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main([str(a) for a in argv])


def _small(policies=("observe", "hsct_all")) -> Scenario:
    data = load_scenario(BASELINE).model_dump(by_alias=True, exclude_none=True)
    data["run"]["policies"] = list(policies)
    return Scenario.model_validate(data)


def _study_run(tmp_path: Path) -> Path:
    out = tmp_path / "run"
    assert _quiet_main("run", BASELINE, "--patients", 120, "--no-events", "--quiet", "--out", out) == 0
    return out


def _study_psa(tmp_path: Path) -> Path:
    out = tmp_path / "psa"
    run_psa(_small(), 2, out, n_patients=60, seed=3, n_jobs=1, progress=False, command=["carsim", "psa"])
    return out


def _study_dsa(tmp_path: Path) -> Path:
    scenario = _small()
    outcome = resolve_outcome("os", 24, "infusion", phenotypes=scenario.relapse_phenotypes)
    result = run_dsa(scenario, outcome, ("hsct_all", "observe"), n_patients=40, seed=3, n_jobs=1, progress=False)
    return write_dsa(tmp_path / "dsa", result, scenario, command=["carsim", "dsa"])


def _study_gsa(tmp_path: Path) -> Path:
    out = tmp_path / "gsa"
    assert _quiet_main("gsa", BASELINE, "--method", "morris", "--samples", 2, "--patients", 40, "--parameters",
                       "pathway.hsct.transplant_related_death.value", "--n-jobs", 1, "--quiet", "--out", out) == 0
    return out


def _study_trial(tmp_path: Path) -> Path:
    trial = tmp_path / "trial.yaml"
    trial.write_text(yaml.safe_dump({
        "scenario": str(BASELINE), "arms": ["observe", "risk_triggered"], "accrual": {"per_month": 20},
        "sample_sizes": [12], "follow_up_months": 6, "endpoint": {"name": "efs", "origin": "enrollment"},
        "trials": 2, "seed": 7}))
    out = tmp_path / "trial"
    assert _quiet_main("trial", trial, "--n-jobs", 1, "--quiet", "--out", out) == 0
    return out


def _study_calibrate(tmp_path: Path) -> Path:
    (tmp_path / "targets.yaml").write_text(yaml.safe_dump({"synthetic": [
        {"id": "cr", "what": "synthetic CR", "value": 0.8, "ci": [0.78, 0.82], "kind": "target", "source": "test"}]}))
    path = tmp_path / "calibration.yaml"
    path.write_text(yaml.safe_dump({
        "name": "synthetic", "scenario": str(MODEL), "writes": "fitted.yaml", "report": "report",
        "patients": 100, "seed": 5, "n_jobs": 1, "targets": [{"id": "cr", "output": "cr"}],
        "stages": [{"name": "one", "max_evaluations": 3, "targets": ["cr"], "parameters": [
            {"path": "pathway.response.complete_remission.value", "bounds": [0.5, 0.999]}]}]}, sort_keys=False))
    run_calibration(path, log=lambda *_: None, command=["carsim", "calibrate"])
    return tmp_path / "report"


STUDY_RUNNERS = {"run": _study_run, "psa": _study_psa, "dsa": _study_dsa, "gsa": _study_gsa,
                 "trial": _study_trial, "calibrate": _study_calibrate}


def test_every_study_has_a_runner_here():
    assert set(STUDY_RUNNERS) == set(STUDIES)


@pytest.mark.parametrize("study", list(STUDY_RUNNERS))
def test_every_study_writes_the_common_keys(study, tmp_path):
    folder = STUDY_RUNNERS[study](tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    missing = [key for key in COMMON_KEYS if key not in manifest]
    assert not missing, f"{study}: manifest lacks {missing}"
    assert manifest["study"] == study
    assert manifest["carsim_version"] == carsim.__version__
    assert isinstance(manifest["seed"], int)
    assert isinstance(manifest["settings"], dict) and manifest["settings"]
    assert isinstance(manifest["warnings"], list)
    assert isinstance(manifest["timings"], dict) and manifest["timings"]
    assert {"python", "numpy", "scipy", "pandas"} <= set(manifest["versions"])
    if (ROOT / ".git").exists():  # run from a checkout: the commit it ran from
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert manifest["carsim_commit"]["commit"] == head
        assert isinstance(manifest["carsim_commit"]["modified"], bool)
    resolved = manifest["resolved_scenario"]
    assert manifest["scenario"] == resolved["name"]
    assert manifest["scenario_sha256"] == scenario_hash(Scenario.model_validate(resolved))
    # Every file listed exists, and the manifest is the last of them, after the report.
    assert manifest["files"][-2:] == ["report.html", "manifest.json"]
    for name in manifest["files"]:
        assert (folder / name.rstrip("/")).exists(), f"{study}: {name} listed but not written"
    if study == "run":  # and every file written is listed (the economics tables too)
        assert {p.name for p in folder.iterdir()} <= set(manifest["files"])
        assert "economics.csv" in manifest["files"]
    _check_report(study, folder, manifest)


# The table every study's report.html shows (its section id)
KEY_SECTIONS = {"run": "comparison", "psa": "psa_summary", "dsa": "tornado", "gsa": "gsa_indices",
                "trial": "power", "calibrate": "report"}


def _check_report(study: str, folder: Path, manifest: dict) -> None:
    """report.html: self-contained, with the settings, the study's key table,
    every figure inline and the provenance; ``carsim report`` rebuilds it the same."""
    page = (folder / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert f"<td>{manifest['seed']}</td>" in page
    key_section = f'<section id="{KEY_SECTIONS[study]}">'
    assert key_section in page and "<tbody><tr>" in page.split(key_section)[1].split("</section>")[0]
    figures = [f for f in manifest["files"] if f.endswith(".png")]
    assert figures and page.count('src="data:image/png;base64,') == len(figures)
    provenance = page.split('<section id="provenance">')[1]
    assert manifest["scenario_sha256"] in provenance and manifest["versions"]["numpy"] in provenance
    written = page
    (folder / "report.html").unlink()
    assert _quiet_main("report", folder) == 0
    assert (folder / "report.html").read_text() == written


def test_warnings_are_recorded_once_and_study_keys_cannot_replace_common_ones(tmp_path):
    scenario = _small()
    manifest = Manifest("run", scenario, 1, settings={"patients": 1}, timings={"simulate_seconds": 0.1})
    manifest.warn("transplant beds queue without bound: the queue is not stable")
    manifest.warn("transplant beds queue without bound: the queue is not stable")
    written = json.loads(manifest.write(tmp_path).read_text())
    assert written["warnings"] == ["transplant beds queue without bound: the queue is not stable"]
    assert list(written) == list(COMMON_KEYS)  # no study keys: the common ones, in order
    with pytest.raises(ValueError, match="common manifest keys"):
        Manifest("run", scenario, 1, extra={"seed": 2}).to_dict()
    with pytest.raises(ValueError, match="unknown study"):
        Manifest("sweep", scenario, 1)


def test_psa_without_distributions_says_so_in_its_warnings(tmp_path):
    data = _small(("observe",)).model_dump(by_alias=True, exclude_none=True)
    plain = Scenario.model_validate(yaml.safe_load(yaml.safe_dump(_without_distributions(data))))
    run_psa(plain, 1, tmp_path / "psa", n_patients=30, seed=1, n_jobs=1, progress=False)
    manifest = json.loads((tmp_path / "psa" / "manifest.json").read_text())
    assert any("distribution" in w for w in manifest["warnings"])


def _without_distributions(node):
    if isinstance(node, dict):
        return {k: _without_distributions(v) for k, v in node.items()
                if k not in ("distribution", "calibration_uncertainty")}
    if isinstance(node, list):
        return [_without_distributions(v) for v in node]
    return node


def test_the_command_names_the_program_not_its_path():
    """A manifest records `carsim ...`, not the path of one machine's script;
    another program's __main__.py keeps its name."""
    from carsim.experiment.manifest import command_line

    assert command_line(["/opt/env/lib/carsim/__main__.py", "run", "a.yaml"]) == ["carsim", "run", "a.yaml"]
    assert command_line(["/opt/env/bin/carsim", "psa"]) == ["carsim", "psa"]
    assert command_line(["/opt/tool/__main__.py", "run"]) == ["/opt/tool/__main__.py", "run"]
    assert command_line([]) == []
