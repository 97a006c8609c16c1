"""Checkpoint and resume: a PSA killed mid-run and resumed gives exactly the
tables of an uninterrupted run, without redoing finished chunks; resuming a
different run is a one-line error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import BASELINE, write_scenario

from carsim.cli import main
from carsim.errors import CarsimError
from carsim.experiment.checkpoint import Checkpoint, default_chunk_size
from carsim.experiment.psa.run import run_psa
from carsim.scenario import load_scenario

DRAWS, PATIENTS, CHUNK, SEED = 16, 150, 2, 31
SETTINGS = ["--draws", DRAWS, "--patients", PATIENTS, "--chunk-size", CHUNK, "--seed", SEED]
FINAL_FILES = ["psa_draws.csv", "psa_parameters.csv"] + [
    f"{stem}.{ext}" for stem in ("psa_summary", "psa_probability_best", "psa_incremental", "psa_parameter_summary")
    for ext in ("csv", "md", "tex")]


def _command(*args):
    return [sys.executable, "-m", "carsim", "psa", *map(str, args)]


def _carsim(*args):
    return subprocess.run(_command(*args), check=False, capture_output=True, text=True, timeout=300)


def _chunks(folder):
    return sorted((folder / "chunks").glob("chunk_*.parquet")) if (folder / "chunks").exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The same PSA in one go (in this process, on one worker)."""
    out = tmp_path_factory.mktemp("full") / "psa"
    run_psa(load_scenario(BASELINE), DRAWS, out, n_patients=PATIENTS, seed=SEED, chunk_size=CHUNK, n_jobs=1,
            progress=False)
    return out


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A run killed (SIGKILL, with its workers) once a chunk is on disk."""
    out = tmp_path_factory.mktemp("killed") / "psa"
    process = subprocess.Popen(_command(BASELINE, *SETTINGS, "--n-jobs", 1, "--out", out, "--quiet"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while not _chunks(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    return out


def test_killed_run_is_unfinished_and_its_chunks_are_complete(killed):
    chunks = _chunks(killed)
    assert 1 <= len(chunks) < DRAWS // CHUNK
    assert not (killed / "manifest.json").exists()
    assert not (killed / "psa_summary.csv").exists()
    for path in chunks:  # a chunk file that exists is complete
        frame = pd.read_parquet(path)
        assert frame["draw"].nunique() == CHUNK


def test_resume_finishes_identically_without_redoing_chunks(killed, uninterrupted):
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _chunks(killed)}
    result = _carsim(BASELINE, "--resume", killed, "--n-jobs", 1)  # settings come from the run file
    assert result.returncode == 0, result.stderr
    assert f"({len(before) * CHUNK} resumed from checkpoints)" in result.stdout
    assert f"PSA: {DRAWS} draws | OS at 24 months from infusion" in result.stdout
    assert f"results: {killed}" in result.stdout
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _chunks(killed)}
    assert len(after) == DRAWS // CHUNK
    assert {name: after[name] for name in before} == before  # finished chunks untouched
    assert not list(killed.rglob(".*.part"))
    for name in FINAL_FILES:
        assert (killed / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    manifest = json.loads((killed / "manifest.json").read_text())
    assert (manifest["draws"], manifest["patients"], manifest["seed"]) == (DRAWS, PATIENTS, SEED)
    assert manifest["timings"]["draws_resumed"] == len(before) * CHUNK


def _error(capsys, *args):
    assert main(["psa", *map(str, args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("carsim: error: "), err
    return err


def test_resume_with_another_seed_is_a_one_line_error(uninterrupted, capsys):
    err = _error(capsys, BASELINE, "--resume", uninterrupted, "--seed", SEED + 1)
    assert "cannot resume" in err and f"seed was {SEED}, now {SEED + 1}" in err


def test_resume_with_another_scenario_is_a_one_line_error(uninterrupted, tmp_path, capsys):
    other = write_scenario(tmp_path, {"pathway": {"hsct": {"transplant_related_death": {"value": 0.09}}}})
    assert "scenario_sha256 was" in _error(capsys, other, "--resume", uninterrupted)


def test_resume_with_another_engine_is_a_one_line_error(uninterrupted, capsys):
    assert 'engine was "auto", now "simpy"' in _error(capsys, BASELINE, "--resume", uninterrupted, "--engine", "simpy")


def test_a_new_run_refuses_a_folder_that_holds_one(uninterrupted, capsys):
    assert "already holds a run" in _error(capsys, BASELINE, *SETTINGS, "--out", uninterrupted)


def test_resume_needs_a_run_folder(tmp_path, capsys):
    assert "nothing to resume" in _error(capsys, BASELINE, "--resume", tmp_path / "nothing")


def _fingerprint(**changes):
    return {"analysis": "test", "seed": 1, "items": 5, "chunk_size": 2, **changes}


def test_checkpoint_chunks_partial_files_and_damage(tmp_path):
    checkpoint = Checkpoint.open(tmp_path, _fingerprint(), resume=False)
    assert checkpoint.n_chunks == 3 and list(checkpoint.chunk_items(2)) == [4]
    add = checkpoint.collector([0, 1, 2, 3, 4])
    add(1, pd.DataFrame({"draw": [1], "value": [1.0]}))
    assert checkpoint.done_chunks() == []  # half a chunk is not written
    add(0, pd.DataFrame({"draw": [0], "value": [0.0]}))
    assert checkpoint.done_chunks() == [0]
    (tmp_path / "chunks" / ".chunk_00001.parquet.abc.part").write_bytes(b"half")
    resumed = Checkpoint.open(tmp_path, _fingerprint(), resume=True)
    assert resumed.pending_items() == [2, 3, 4]
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(CarsimError, match="items was 5, now 6"):
        Checkpoint.open(tmp_path, _fingerprint(items=6), resume=True)
    (tmp_path / "chunks" / "chunk_00002.parquet").write_bytes(b"not parquet")
    notices = []
    resumed.notice = notices.append
    assert resumed.done_chunks() == [0]  # a damaged chunk is recomputed, not read
    assert len(notices) == 1 and "damaged checkpoint" in notices[0]
    assert not (tmp_path / "chunks" / "chunk_00002.parquet").exists()
    info = yaml.safe_load((tmp_path / "run.json").read_text())
    assert info["fingerprint"] == _fingerprint()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.csv").write_text("x\n")
    with pytest.raises(CarsimError, match="is not empty"):
        Checkpoint.open(tmp_path / "other", _fingerprint(), resume=False)
    assert not (tmp_path / "other" / "run.json").exists()


def test_default_chunk_size():
    assert default_chunk_size(1) == 1
    assert default_chunk_size(200) == 10
    assert default_chunk_size(10_000) == 25


def test_a_killed_worker_is_a_one_line_error_that_says_how_to_resume(tmp_path):
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "psa"
    process = subprocess.Popen(_command(BASELINE, "--draws", 40, "--patients", PATIENTS, "--chunk-size", 2, "--seed",
                                        SEED, "--n-jobs", 2, "--out", out, "--quiet"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not _chunks(out) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        workers = [child for child in psutil.Process(process.pid).children()
                   if "LokyProcess" in " ".join(child.cmdline())]
        assert workers, "no worker process found"
        workers[0].kill()
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "a worker process was lost" in stderr and f"--resume {out}" in stderr
    assert _chunks(out) and not (out / "manifest.json").exists()


def test_no_flipped_byte_of_a_chunk_is_used_or_crashes(tmp_path):
    """A byte flipped anywhere in a chunk file (hundreds of positions, every
    one a different damage) makes that chunk pending again, with a notice;
    the digest written with the chunk is what catches it."""
    checkpoint = Checkpoint.open(tmp_path, _fingerprint(), resume=False)
    frame = pd.DataFrame({"draw": [0, 0, 1, 1], "policy": ["observe", "hsct_all"] * 2,
                          "value": [0.51, 0.62, 0.49, 0.6]})
    checkpoint.write_chunk(0, frame)
    path = checkpoint.chunk_path(0)
    clean = path.read_bytes()
    notices = []
    checkpoint.notice = notices.append
    positions = sorted(set(np.linspace(0, len(clean) - 1, 300).round().astype(int)))
    assert len(positions) >= 250
    for position in positions:
        checkpoint.write_chunk(0, frame)
        damaged = bytearray(clean)
        damaged[position] ^= 0xFF
        path.write_bytes(bytes(damaged))
        assert 0 in checkpoint.chunk_items(0) and 0 in checkpoint.pending_items(), position
        assert not path.exists()
    assert len(notices) == len(positions)
    checkpoint.write_chunk(0, frame)  # intact again: done, and read back as written
    assert 0 not in checkpoint.pending_items()
    pd.testing.assert_frame_equal(checkpoint.read_chunk(0), frame)


def test_a_resumed_psa_recomputes_a_damaged_chunk_to_the_same_results(uninterrupted, tmp_path, capsys):
    damaged = tmp_path / "psa"
    shutil.copytree(uninterrupted, damaged)
    (damaged / "manifest.json").unlink()
    chunk = damaged / "chunks" / "chunk_00003.parquet"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    status = main(["psa", str(BASELINE), *map(str, SETTINGS), "--n-jobs", "1", "--resume", str(damaged), "--quiet"])
    assert status == 0
    err = capsys.readouterr().err
    assert "chunk_00003.parquet: damaged checkpoint" in err
    pd.testing.assert_frame_equal(pd.read_csv(damaged / "psa_draws.csv"), pd.read_csv(uninterrupted / "psa_draws.csv"))
