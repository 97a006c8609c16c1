"""Shared helpers: scenarios derived from the bundled baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from carsim.errors import ScenarioError
from carsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "scenarios" / "baseline.yaml"


def write_scenario(directory: Path, overrides: dict, name: str = "derived.yaml", extends=BASELINE) -> Path:
    """Write a scenario that extends ``extends`` with ``overrides`` (nested dict)."""
    path = Path(directory) / name
    data = {"extends": str(extends), **overrides}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def scenario_error(directory: Path, overrides: dict, extends=BASELINE) -> str:
    """The message of the error that loading a scenario extending ``extends``
    with ``overrides`` raises; checked to be one line."""
    with pytest.raises(ScenarioError) as error:
        load_scenario(write_scenario(directory, overrides, "bad.yaml", extends))
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory):
    """``carsim run`` of the baseline (400 patients, also reported at 18
    months): (exit status, printed text, results folder), shared by the tests
    that read a results folder."""
    import contextlib
    import io

    from carsim.cli import main

    folder = tmp_path_factory.mktemp("run") / "results"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["run", str(BASELINE), "--patients", "400", "--time", "18", "--out", str(folder)])
    return status, printed.getvalue(), folder


@pytest.fixture
def derived_scenario(tmp_path):
    """``derived_scenario({...})`` -> validated Scenario extending the baseline."""

    def make(overrides: dict, name: str = "derived.yaml"):
        return load_scenario(write_scenario(tmp_path, overrides, name))

    return make
