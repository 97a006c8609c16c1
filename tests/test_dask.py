"""The dask backend gives exactly the loky results: through
``backend_context`` and through ``carsim psa --backend dask --scheduler``."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from conftest import BASELINE

from carsim.experiment.parallel import backend_context
from carsim.experiment.psa.run import run_psa
from carsim.scenario import load_scenario

distributed = pytest.importorskip("dask.distributed")

DRAWS, PATIENTS, SEED = 4, 80, 12


@pytest.fixture(scope="module")
def cluster():
    # tcp, not inproc: the CLI test connects from another process
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                                  dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def loky_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("loky") / "psa"
    with backend_context("loky", n_jobs=2):
        return run_psa(load_scenario(BASELINE), DRAWS, out, n_patients=PATIENTS, seed=SEED, n_jobs=2,
                       progress=False)


def test_dask_backend_context_matches_loky(cluster, loky_run, tmp_path):
    with backend_context("dask", scheduler=cluster.scheduler_address, n_jobs=2):
        result = run_psa(load_scenario(BASELINE), DRAWS, tmp_path / "psa", n_patients=PATIENTS, seed=SEED,
                         n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(result.draws, loky_run.draws)
    assert (tmp_path / "psa" / "psa_summary.csv").read_bytes() == (loky_run.out / "psa_summary.csv").read_bytes()


def test_cli_with_a_dask_scheduler_matches_loky(cluster, loky_run, tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([sys.executable, "-m", "carsim", "psa", str(BASELINE), "--draws", str(DRAWS),
                             "--patients", str(PATIENTS), "--seed", str(SEED), "--n-jobs", "2", "--backend", "dask",
                             "--scheduler", cluster.scheduler_address, "--out", str(out), "--quiet"],
                            check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    for name in ("psa_draws.csv", "psa_parameters.csv", "psa_summary.csv", "psa_probability_best.csv"):
        assert (out / name).read_bytes() == (loky_run.out / name).read_bytes(), name


TRIAL = BASELINE.parent / "trial_surveillance_hsct.yaml"


@pytest.mark.parametrize("command, arguments", [
    ("gsa", [BASELINE, "--method", "morris", "--samples", "2", "--patients", "40"]),
    ("dsa", [BASELINE, "--patients", "40"]),
    ("trial", [TRIAL, "--trials", "4"]),
])
def test_every_study_on_a_dask_cluster_matches_loky(cluster, tmp_path, command, arguments):
    """gsa once hung on dask (joblib put its frozen, unhashable task function in a set)."""
    tables = {"gsa": "gsa_indices.csv", "dsa": "tornado.csv", "trial": "power.csv"}[command]
    outputs = {}
    for backend in ("loky", "dask"):
        out = tmp_path / backend
        scheduler = ["--scheduler", cluster.scheduler_address] if backend == "dask" else []
        result = subprocess.run([sys.executable, "-m", "carsim", command, *map(str, arguments), "--n-jobs", "2",
                                 "--backend", backend, *scheduler, "--out", str(out), "--quiet"],
                                check=False, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        outputs[backend] = (out / tables).read_bytes()
    assert outputs["dask"] == outputs["loky"]
