"""The README's examples are executed, so the documentation cannot rot."""

from __future__ import annotations

import re

import numpy as np
import pytest
import yaml
from conftest import BASELINE, ROOT, write_scenario

from carsim.cli import main
from carsim.model.definition import ModelDefinition
from carsim.model.simulation import simulate_cohort
from carsim.scenario import load_scenario

README = (ROOT / "README.md").read_text()


def yaml_examples() -> dict[str, dict]:
    """Fenced YAML blocks whose first line is '# example: <title>'."""
    blocks = re.findall(r"```yaml\n(# example: (.*?)\n.*?)```", README, flags=re.DOTALL)
    return {title: yaml.safe_load(body) for body, title in blocks}


def test_readme_has_examples():
    assert len(yaml_examples()) >= 2


@pytest.mark.parametrize("title", list(yaml_examples()))
def test_yaml_examples_load(tmp_path, title):
    scenario = load_scenario(write_scenario(tmp_path, yaml_examples()[title]))
    assert scenario.cohort.size >= 1


def test_subgroup_example_pins_the_covariates(tmp_path):
    (example,) = [v for k, v in yaml_examples().items() if "subgroup" in k]
    scenario = load_scenario(write_scenario(tmp_path, example))
    result = simulate_cohort(ModelDefinition(scenario), "observe", 0, 40, seed=3)
    assert np.all(result.covariates["marrow_blasts_infusion"] == 30)
    assert set(result.covariates["blinatumomab"]) == {"exposed_no_cr"}


def test_fifth_policy_example_runs_and_acts(tmp_path):
    (example,) = [v for k, v in yaml_examples().items() if "policy" in k or "reinfusion first" in k]
    (name,) = example["policies"]
    scenario = load_scenario(write_scenario(tmp_path, {**example, "run": {"policies": [name]}}))
    result = simulate_cohort(ModelDefinition(scenario), name, 0, 400, seed=5)
    details = set(result.events["detail"][result.events["event"] == "decision"])
    assert any(d.endswith("-> reinfuse") for d in details)
    assert result.outcomes["reinfusions"].sum() > 0


def test_error_example_is_what_the_cli_prints(tmp_path, monkeypatch, capsys):
    (shown,) = re.findall(r"^carsim: error: .*$", README, flags=re.MULTILINE)
    (tmp_path / "scenarios").mkdir()
    write_scenario(tmp_path / "scenarios", {"pathway": {"relapse": {"cd19pos": {"law": {
        "family": "weibull", "median": 12, "unit": "months", "assumption": "example"}}}}}, name="my.yaml",
        extends=BASELINE)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "scenarios/my.yaml"]) == 2
    assert capsys.readouterr().err.strip() == shown


def test_bundled_scenarios_in_the_readme_exist_and_load():
    listed = set(re.findall(r"`(\w+\.yaml)`", README.split("## Bundled scenarios")[1].split("##")[0]))
    assert {"baseline.yaml", "real_world.yaml", "hsct_capacity.yaml"} <= listed
    for name in listed:
        assert load_scenario(ROOT / "scenarios" / name).name == name.removesuffix(".yaml")


def test_first_command_runs_the_baseline():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.DOTALL).group(1)
    assert "carsim run scenarios/baseline.yaml" in first_block
    ci = (ROOT / ".ci" / "run").read_text()
    assert "test-command" in ci and "pytest" in README.split("<!-- test-command -->")[1].split("```")[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml")
                                        if not p.name.startswith("trial_")))
def test_every_shipped_scenario_runs(name):
    """Each bundled scenario simulates (a small cohort) under all its policies."""
    from carsim.analysis.summary import summarise
    from carsim.experiment.runner import run_experiment

    scenario = load_scenario(ROOT / "scenarios" / name, {"cohort.size": 150, "run.n_jobs": 1})
    result = run_experiment(scenario)
    summary, comparison = summarise(result, n_boot=20)
    assert set(summary.policy) == set(scenario.policy_names)
    assert set(comparison.policy) == set(scenario.policy_names[1:])
    infused = summary[(summary.metric == "infused")].estimate
    assert ((infused > 0.3) & (infused <= 1)).all()
