"""The README's examples are executed, so the documentation cannot rot."""

from __future__ import annotations

import argparse
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


# ---------------------------------------------------------------- every block
# Each fenced block of the README is executed or checked by one of the tests
# below; test_every_block_is_executed_or_checked fails on a block none of them covers.

def code_blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return re.findall(r"```(\w*)\n(.*?)```", README, flags=re.DOTALL)


def _is_synopsis(body: str) -> bool:
    return body.startswith("carsim ") and "[--" in body


def _command_lines(body: str) -> list[str]:
    return [line for line in body.splitlines() if line.startswith("carsim ")]


def _kind(language: str, body: str) -> str | None:
    if language == "python":
        return "python"
    if language == "yaml":
        return "yaml example" if body.startswith("# example:") else "yaml"
    if _is_synopsis(body):
        return "synopsis"
    if body.startswith("carsim: error:"):
        return "error"
    if body.startswith("Cost-effectiveness ("):
        return "economics output"
    lines = [line for line in body.splitlines() if line.strip()]
    if lines and all(line.startswith("carsim ") for line in lines):
        return "commands"
    if lines and all(line.startswith("python -m pip install -e ") for line in lines):
        return "install"
    return None


def test_every_block_is_executed_or_checked():
    unchecked = [body.splitlines()[0] for language, body in code_blocks() if _kind(language, body) is None]
    assert not unchecked, f"README blocks no test executes or checks: {unchecked}"
    kinds = {_kind(language, body) for language, body in code_blocks()}
    assert {"python", "yaml", "yaml example", "synopsis", "commands", "install"} <= kinds


def _subparser(command: str):
    from carsim.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, commands.choices[command]


def test_synopses_name_only_options_the_commands_take():
    synopses = [chunk for lang, b in code_blocks() if _kind(lang, b) == "synopsis"
                for chunk in re.split(r"\n(?=carsim )", b)]  # one per command
    assert {chunk.split()[1] for chunk in synopses} == {"run", "psa", "dsa", "trial", "gsa"}
    for body in synopses:
        command = body.split()[1]
        _, sub = _subparser(command)
        options = set(re.findall(r"(--[a-z][a-z-]*)", body))
        unknown = options - set(sub._option_string_actions)
        assert not unknown, f"carsim {command}: the README shows options it does not take: {unknown}"


def test_command_examples_parse_and_name_files_that_exist():
    import shlex

    from carsim.cli import build_parser

    parser = build_parser()
    lines = [line for lang, body in code_blocks() if _kind(lang, body) == "commands"
             for line in _command_lines(body)]
    assert len(lines) >= 8
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        args = parser.parse_args(argv)  # an unknown option or a bad value exits here
        target = getattr(args, "scenario", None) or getattr(args, "trial", None) or getattr(args, "calibration", None)
        if target is not None:
            assert (ROOT / target).is_file(), line


def test_the_run_example_runs(tmp_path, capsys):
    import shlex

    (line,) = [line for lang, body in code_blocks() if _kind(lang, body) == "commands"
               for line in _command_lines(body) if line.startswith("carsim run ") and "--patients" in line]
    argv = shlex.split(line, comments=True)[1:]
    argv[1] = str(ROOT / argv[1])
    assert main([*argv, "--quiet", "--out", str(tmp_path / "r")]) == 0
    import pandas as pd

    summary = pd.read_csv(tmp_path / "r" / "summary.csv")
    assert (summary[summary.metric == "os"].time_months == 18.0).sum() == 4 * 2  # policies x origins
    assert (tmp_path / "r" / "report.html").is_file()


def test_python_examples_run(tmp_path, monkeypatch):
    """Each python block, executed as written, in a fresh folder that sees the bundled files."""
    for name in ("scenarios", "calibration"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    blocks = [body for lang, body in code_blocks() if lang == "python"]
    assert blocks
    for body in blocks:
        namespace: dict = {}
        exec(compile(body, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert len(list((tmp_path / "results" / "baseline").glob("*/report.html"))) == 1


def test_yaml_blocks_load():
    """Every YAML block parses; the scenario outline names exactly the scenario's blocks."""
    from carsim.scenario.schema import Scenario

    blocks = [body for lang, body in code_blocks() if lang == "yaml"]
    assert all(yaml.safe_load(body) for body in blocks)
    (outline,) = [yaml.safe_load(b) for b in blocks if b.startswith("extends:")]
    assert set(outline) - {"extends", "name"} == set(Scenario.model_fields) - {
        "name", "description", "calibration_uncertainty", "economics"}
    assert set(outline["run"]) <= set(Scenario.model_fields["run"].annotation.model_fields)


def test_trial_example_is_a_valid_trial(tmp_path):
    from carsim.experiment.trial.schema import load_trial

    (body,) = [b for lang, b in code_blocks() if lang == "yaml" and b.startswith("name: surveillance_hsct")]
    data = yaml.safe_load(body)
    data["scenario"] = str(ROOT / "scenarios" / data["scenario"])
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(data))
    loaded = load_trial(tmp_path / "trial.yaml")
    assert loaded.spec.arms == ["observe", "risk_triggered"] and len(loaded.spec.grid) == 2


def test_install_lines_name_the_package_extras_and_commands():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for body in (b for lang, b in code_blocks() if _kind(lang, b) == "install"):
        for line in body.splitlines():
            install, _, then = line.partition(" && ")
            extra = re.search(r'\[(\w+)\]', install)
            assert extra is None or extra.group(1) in extras, line
            assert then in ("python -m pytest -q", "python -m carsim run scenarios/baseline.yaml"), line


def test_economics_output_is_what_a_run_prints(baseline_run):
    _, printed, _ = baseline_run
    (body,) = [b for lang, b in code_blocks() if _kind(lang, b) == "economics output"]
    header, *rows = body.splitlines()
    assert header in printed.splitlines()
    for row in rows:
        if row.strip() != "...":
            policy = row.split()[0]
            assert any(line.startswith(f"  {policy} ") and " cost " in line and " QALY " in line
                       for line in printed.splitlines()), row
