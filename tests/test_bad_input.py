"""Bad input reaches the user as one line, through the real command line.

Every mistake in a scenario file (or its ``extends:`` chain) must end the run
with exit status 2 and exactly one line on stderr,
``carsim: error: <file>: <key.path>: <what was expected>``, naming the file
that holds the mistake -- and no traceback.  Errors are raised while the
scenario loads, before any simulation: the results folder is never created.

Most cases call ``carsim.cli.main`` in-process (fast); a few run
``python -m carsim`` in a subprocess to show that nothing else reaches a real
terminal.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BASELINE, write_scenario

from carsim.cli import main
from carsim.scenario import load_scenario

PREFIX = "carsim: error: "
# 'arrivals' indented one space deeper than 'size': YAML sees 'size: 300 arrivals: 4'.
MALFORMED_INDENT = f"extends: {BASELINE}\ncohort:\n  size: 300\n   arrivals: 4\n"


def run_in_process(capsys, scenario, *options, out: Path):
    """``carsim run SCENARIO --patients 50 --out OUT [options]``; returns (status, stdout, stderr)."""
    argv = ["run", str(scenario), "--patients", "50", "--out", str(out), *options]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse errors exit from parse_args
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_subprocess(scenario, *options, out: Path):
    completed = subprocess.run(
        [sys.executable, "-m", "carsim", "run", str(scenario), "--patients", "50", "--out", str(out),
         *options],
        capture_output=True, text=True, timeout=120, check=False,
    )
    return completed.returncode, completed.stdout, completed.stderr


def assert_one_line_error(status, stdout, stderr, file: Path, key_path: str, *expected: str) -> str:
    """Exit status 2 and one stderr line naming ``file``, ``key_path`` and each ``expected`` fragment."""
    assert "Traceback" not in stdout + stderr
    assert status == 2, (status, stderr)
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    head = f"{PREFIX}{Path(file).resolve()}: {key_path}: "
    assert line.startswith(head), f"\nexpected start: {head}\ngot:            {line}"
    message = line[len(head):]
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture
def cli(tmp_path, capsys):
    """``cli(scenario, file, key_path, *expected, options=())``: run in-process, check the one-line
    error names ``file`` (default: ``scenario``), ``key_path`` and each expected fragment, and that no
    results were written; return the message after the key path."""
    out = tmp_path / "results"

    def run(scenario, file=None, key_path="", *expected, options=()):
        status, stdout, stderr = run_in_process(capsys, scenario, *options, out=out)
        message = assert_one_line_error(status, stdout, stderr, file or scenario, key_path, *expected)
        assert not out.exists(), "the error must come before the simulation writes results"
        return message

    return run


def write_text(directory: Path, name: str, text: str) -> Path:
    path = Path(directory) / name
    path.write_text(text)
    return path


def policy_rule(when, then, condition=None):
    rule = {"when": when, "then": then}
    if condition is not None:
        rule["if"] = condition
    return {"policies": {"typo_policy": {"rules": [rule]}}}


# ------------------------------------------------------------ the control case


def test_valid_scenario_runs(tmp_path, capsys):
    """The harness itself: a derived scenario without mistakes loads, runs and exits 0."""
    path = write_scenario(tmp_path, {"run": {"seed": 7}})
    out = tmp_path / "results"
    status, stdout, stderr = run_in_process(capsys, path, "--n-jobs", "1", "--no-events", "--quiet", out=out)
    assert status == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert (out / "summary.csv").is_file()


# ------------------------------------------------------------ YAML and files


def test_malformed_yaml_indentation_gives_line_and_column(tmp_path, cli):
    path = write_text(tmp_path, "bad.yaml", MALFORMED_INDENT)
    cli(path, path, "line 4, column 12", "malformed YAML", "mapping values are not allowed")


def test_malformed_yaml_unclosed_bracket_points_at_the_bracket(tmp_path, cli):
    text = (f"extends: {BASELINE}\nsurveillance:\n  mrd:\n    schedule:\n      at_days: [28, 56\n"
            "run:\n  seed: 3\n")
    path = write_text(tmp_path, "bad.yaml", text)
    cli(path, path, "line 6, column 4", "malformed YAML", "expected ',' or ']'",
        "flow sequence that starts on line 5, column 16")


def test_duplicate_key_is_not_silently_dropped(tmp_path, cli):
    path = write_text(tmp_path, "dup.yaml", f"extends: {BASELINE}\nrun:\n  seed: 1\nrun:\n  seed: 2\n")
    cli(path, path, "line 4, column 1", "duplicate key 'run'", "line 2")


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    """Refusing duplicate keys must not refuse '<<: *anchor' overrides."""
    text = (f"extends: {BASELINE}\nresources:\n  apheresis: &slots {{capacity: 2, assumption: shared}}\n"
            "  manufacturing:\n    <<: *slots\n    capacity: 5\n")
    scenario = load_scenario(write_text(tmp_path, "anchors.yaml", text))
    assert scenario.resources.apheresis.capacity == 2
    assert scenario.resources.manufacturing.capacity == 5
    assert scenario.resources.manufacturing.assumption == "shared"


def test_missing_scenario_file(tmp_path, cli):
    cli(tmp_path / "nowhere.yaml", None, "(top level)", "file not found")


def test_empty_file(tmp_path, cli):
    path = write_text(tmp_path, "empty.yaml", "# only a comment\n")
    cli(path, path, "(top level)", "the file is empty", "extends")


def test_top_level_list(tmp_path, cli):
    path = write_text(tmp_path, "list.yaml", "- cohort\n- pathway\n")
    cli(path, path, "(top level)", "expected a mapping of keys at the top level", "list")


def test_missing_extends_target(tmp_path, cli):
    path = write_text(tmp_path, "child.yaml", "extends: no_such_parent.yaml\n")
    cli(path, path, "extends", "expected an existing scenario file", "'no_such_parent.yaml' not found",
        str(tmp_path.resolve() / "no_such_parent.yaml"))


def test_circular_extends(tmp_path, cli):
    a = write_text(tmp_path, "a.yaml", "extends: b.yaml\n")
    b = write_text(tmp_path, "b.yaml", "extends: a.yaml\n")
    # b.yaml holds the 'extends' that closes the loop.
    cli(a, b, "extends", "circular 'extends' chain", "a.yaml -> b.yaml -> a.yaml")


# ------------------------------------------------------------ schema: keys, types, ranges


def test_unknown_key_suggests_the_close_match(tmp_path, cli):
    path = write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"law": {"shap": 0.7}}}}})
    message = cli(path, path, "pathway.relapse.cd19pos.law.shap", "unknown key 'shap'",
                  "did you mean 'shape'?")
    assert "expected one of:" in message and "growth" in message


def test_unknown_top_level_key(tmp_path, cli):
    path = write_scenario(tmp_path, {"cohortt": {"size": 10}})
    cli(path, path, "cohortt", "unknown key 'cohortt'", "did you mean 'cohort'?")


def test_unknown_key_in_an_optional_block_lists_its_keys(tmp_path, cli):
    uncertainty = {"familly": "beta", "ci": [0.005, 0.06]}
    toxicity = {"early_death": {"distribution": uncertainty}}
    path = write_scenario(tmp_path, {"pathway": {"toxicity": toxicity}})
    cli(path, path, "pathway.toxicity.early_death.distribution.familly", "unknown key 'familly'",
        "did you mean 'family'?", "expected one of: family, ci")


def test_wrong_type(tmp_path, cli):
    # --patients 50 overrides cohort.size, but the file itself must still be valid.
    path = write_scenario(tmp_path, {"cohort": {"size": "many"}})
    cli(path, path, "cohort.size", "expected a valid integer", "(got 'many')")


def test_mapping_where_a_value_was_expected(tmp_path, cli):
    path = write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"law": "weibull"}}}})
    cli(path, path, "pathway.relapse.cd19pos.law", "expected a mapping of keys", "(got 'weibull')")


def test_probability_above_one(tmp_path, cli):
    path = write_scenario(tmp_path, {"pathway": {"manufacturing": {"failure_probability": {"value": 1.5}}}})
    cli(path, path, "pathway.manufacturing.failure_probability.value",
        "expected a probability between 0 and 1", "1.5")


def test_negative_duration(tmp_path, cli):
    path = write_scenario(tmp_path, {"pathway": {"post_relapse": {"survival": {"cd19pos": {"median": -3}}}}})
    cli(path, path, "pathway.post_relapse.survival.cd19pos.median", "expected a number greater than 0", "-3")


@pytest.mark.parametrize("capacity", [0, -2])
def test_capacity_below_one(tmp_path, cli, capacity):
    path = write_scenario(tmp_path, {"resources": {"manufacturing": {"capacity": capacity}}})
    cli(path, path, "resources.manufacturing.capacity", "expected a number greater than or equal to 1",
        f"(got {capacity})")


def test_unknown_distribution_family(tmp_path, cli):
    law = {"family": "weibul", "shape": 0.7, "median": 24, "unit": "months", "assumption": "typo test"}
    path = write_scenario(tmp_path, {"pathway": {"bca": {"loss": {"law": law}}}})
    cli(path, path, "pathway.bca.loss.law.family", "unknown value 'weibul'", "did you mean 'weibull'?",
        "expected one of: fixed, exponential, weibull")


def test_law_missing_its_parameters(tmp_path, cli):
    law = {"family": "weibull", "shape": 0.7, "assumption": "no scale"}
    path = write_scenario(tmp_path, {"pathway": {"bca": {"loss": {"law": law}}}})
    cli(path, path, "pathway.bca.loss.law", "weibull needs exactly one of 'scale', 'median'")


def test_empty_cohort(tmp_path, cli):
    path = write_scenario(tmp_path, {"cohort": {"size": 0}})
    cli(path, path, "cohort.size", "expected a number greater than or equal to 1", "(got 0)")


def test_horizon_not_positive(tmp_path, cli):
    path = write_scenario(tmp_path, {"run": {"horizon_years": 0}})
    cli(path, path, "run.horizon_years", "expected a number greater than 0", "(got 0)")


def test_value_without_source_or_assumption(tmp_path, cli):
    multipliers = [{"if": "kmt2a", "value": 2.0}]
    path = write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": {"replace": multipliers}}}}})
    cli(path, path, "pathway.relapse.cd19pos.multipliers[0]", "needs a 'source:'", "'assumption:'")


def test_categorical_probabilities_not_summing_to_one(tmp_path, cli):
    bridging = {"categorical": {"none": 0.5, "low": 0.3, "high": 0.3}, "assumption": "typo test"}
    path = write_scenario(tmp_path, {"cohort": {"covariates": {"bridging": bridging}}})
    cli(path, path, "cohort.covariates.bridging.categorical", "sum to 1", "sum is 1.1")


def test_run_policies_names_an_unknown_policy(tmp_path, cli):
    path = write_scenario(tmp_path, {"run": {"policies": ["observe", "hsct_everyone"]}})
    cli(path, path, "run.policies", "unknown policy 'hsct_everyone'", "observe, hsct_all")


# ------------------------------------------------------------ policies and conditions


def test_unknown_policy_event(tmp_path, cli):
    path = write_scenario(tmp_path, policy_rule("bca_gone", "hsct"))
    cli(path, path, "policies.typo_policy.rules[0].when", "unknown value 'bca_gone'",
        "did you mean 'bca_loss'?", "expected one of: response, mrd_result, bca_loss")


def test_unknown_policy_action(tmp_path, cli):
    path = write_scenario(tmp_path, policy_rule("bca_loss", "transplant"))
    cli(path, path, "policies.typo_policy.rules[0].then", "unknown value 'transplant'",
        "expected one of: observe, hsct, reinfuse, salvage")


def test_action_not_allowed_after_event(tmp_path, cli):
    path = write_scenario(tmp_path, policy_rule("relapse", "hsct"))
    cli(path, path, "policies.typo_policy.rules[0].then", "action 'hsct' cannot follow event 'relapse'",
        "expected one of: observe, salvage")


def test_condition_on_unknown_variable_lists_known_names(tmp_path, cli):
    path = write_scenario(tmp_path, policy_rule("bca_loss", "hsct", "months_since_infusoin < 6"))
    message = cli(path, path, "policies.typo_policy.rules[0].if", "unknown variable 'months_since_infusoin'",
                  "did you mean 'months_since_infusion'?", "known variables:")
    known = message.split("known variables:")[1]
    assert "mrd_positive" in known and "prior_hsct" in known
    assert "bca_lost" not in known, "a policy's list must not offer hidden biology"


def test_multiplier_condition_on_unknown_variable(tmp_path, cli):
    multipliers = [{"if": "bca_lots", "value": 5.0, "assumption": "typo test"}]
    path = write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"multipliers": {"replace": multipliers}}}}})
    cli(path, path, "pathway.relapse.cd19pos.multipliers[0].if", "unknown variable 'bca_lots'",
        "did you mean 'bca_lost'?")


def test_policy_condition_cannot_read_hidden_biology(tmp_path, cli):
    path = write_scenario(tmp_path, policy_rule("bca_loss", "hsct", "bca_lost"))
    cli(path, path, "policies.typo_policy.rules[0].if", "'bca_lost' is hidden biology", "bca_loss_detected")


def test_condition_that_does_not_parse(tmp_path, cli):
    path = write_scenario(tmp_path, policy_rule("bca_loss", "hsct", "months_since_infusion <"))
    cli(path, path, "policies.typo_policy.rules[0].if", "cannot parse condition 'months_since_infusion <'")


# ------------------------------------------------------------ which file is named


def test_mistake_in_a_parent_names_the_parent(tmp_path, cli):
    parent = write_scenario(tmp_path, {"run": {"horizon_years": 0}}, name="parent.yaml")
    child = write_scenario(tmp_path, {"run": {"seed": 3}}, name="child.yaml", extends=parent)
    cli(child, parent, "run.horizon_years", "expected a number greater than 0")


def test_unknown_key_in_a_parent_names_the_parent(tmp_path, cli):
    parent = write_scenario(tmp_path, {"resources": {"hsct_bed": {"capacity": 3}}}, name="parent.yaml")
    child = write_scenario(tmp_path, {"cohort": {"size": 100}}, name="child.yaml", extends=parent)
    cli(child, parent, "resources.hsct_bed", "unknown key 'hsct_bed'", "did you mean 'hsct_beds'?")


def test_malformed_parent_names_the_parent(tmp_path, cli):
    parent = write_text(tmp_path, "parent.yaml", f"extends: {BASELINE}\nrun: {{seed: 3\n")
    child = write_scenario(tmp_path, {"run": {"seed": 4}}, name="child.yaml", extends=parent)
    cli(child, parent, "line 3, column 1", "malformed YAML", "flow mapping that starts on line 2")


def test_missing_grandparent_names_the_parent(tmp_path, cli):
    parent = write_text(tmp_path, "parent.yaml", "extends: gone.yaml\n")
    child = write_scenario(tmp_path, {}, name="child.yaml", extends=parent)
    cli(child, parent, "extends", "'gone.yaml' not found")


def test_child_overriding_a_good_parent_names_the_child(tmp_path, cli):
    parent = write_scenario(tmp_path, {"run": {"seed": 3}}, name="parent.yaml")
    child = write_scenario(tmp_path, {"run": {"horizon_years": -1}}, name="child.yaml", extends=parent)
    cli(child, child, "run.horizon_years", "expected a number greater than 0")


# ------------------------------------------------------------ command-line options


def test_bad_command_line_option(tmp_path, capsys):
    path = write_scenario(tmp_path, {})
    out = tmp_path / "results"
    status, stdout, stderr = run_in_process(capsys, path, "--patients", "0", out=out)
    assert status == 2
    assert "Traceback" not in stdout + stderr
    # One line naming the option and what was expected, like a scenario error.
    assert stderr.splitlines() == [
        "carsim run: error: argument --patients: expected a number >= 1, got 0 (see 'carsim run --help')"
    ]
    assert not out.exists()


# ------------------------------------------------------------ a real terminal


@pytest.mark.parametrize("case", ["malformed", "unknown_key"])
def test_subprocess_prints_one_line_and_no_traceback(tmp_path, case):
    if case == "malformed":
        path = write_text(tmp_path, "bad.yaml", MALFORMED_INDENT)
        key_path, expected = "line 4, column 12", "malformed YAML"
    else:
        path = write_scenario(tmp_path, {"pathway": {"relapse": {"cd19pos": {"law": {"shap": 0.7}}}}})
        key_path, expected = "pathway.relapse.cd19pos.law.shap", "did you mean 'shape'?"
    out = tmp_path / "results"
    status, stdout, stderr = run_subprocess(path, out=out)
    assert_one_line_error(status, stdout, stderr, path, key_path, expected)
    assert not out.exists()
