"""``manifest.json``: what a results folder holds and how it was made.

Every study (``carsim run``, ``psa``, ``dsa``, ``gsa``, ``trial``,
``calibrate``) writes one with the same keys:

==================== ==========================================================
``study``            which command made the folder
``created``          when (local time, ISO 8601)
``carsim_version``   the package version
``carsim_commit``    the git commit of the checkout it ran from, and whether files were modified (or null)
``command``          the command line
``scenario``         the scenario's name
``scenario_sha256``  hash of the resolved scenario (see :func:`scenario_hash`)
``seed``             the master seed
``settings``         the study's settings (patients, replications, draws, ...)
``files``            the files written (``manifest.json`` last)
``warnings``         what the reader should know about the run (may be empty)
``timings``          seconds per stage
``versions``         Python and the libraries the results depend on
``platform``         ``sys.platform``
``resolved_scenario`` the scenario as simulated, every default filled in
==================== ==========================================================

Keys of a study's own (e.g. ``outcome`` for sensitivity analyses, ``design``
for trials) follow ``settings``.  The manifest is written last: a folder
without one is unfinished.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from .._io import write_json

MANIFEST = "manifest.json"
REPORT = "report.html"  # the folder's page (html_report), written just before the manifest
STUDIES = ("run", "psa", "dsa", "gsa", "trial", "calibrate")
COMMON_KEYS = ("study", "created", "carsim_version", "carsim_commit", "command", "scenario", "scenario_sha256",
               "seed", "settings", "files", "warnings", "timings", "versions", "platform", "resolved_scenario")
# Libraries whose versions are recorded: distribution name -> module name.  A
# module already imported gives its __version__; the others are read from
# their installed metadata (nothing is imported for this).
LIBRARIES = {"numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "pyarrow": "pyarrow", "simpy": "simpy",
             "joblib": "joblib", "pydantic": "pydantic", "PyYAML": "yaml", "matplotlib": "matplotlib",
             "lifelines": "lifelines", "SALib": "SALib", "tqdm": "tqdm", "dask": "dask",
             "distributed": "distributed", "numba": "numba"}
_RUN_SETTINGS_NOT_HASHED = ("n_jobs", "write_events", "replications", "seed", "engine", "report_times")


def scenario_hash(scenario) -> str:
    """SHA-256 of the resolved scenario, leaving out the run settings that
    cannot change results (workers, event log, replications, the times
    results are read at) or that are recorded on their own (seed, engine)."""
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["run"] = {k: v for k, v in data.get("run", {}).items() if k not in _RUN_SETTINGS_NOT_HASHED}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf-8")).hexdigest()


def command_line(command) -> list[str]:
    """The command as typed: the program as ``carsim``, not the path of the
    script that ran it (which names a folder of one machine)."""
    command = [str(part) for part in command]
    program = Path(command[0]) if command else None
    if program is not None and (program.name in ("carsim", "carsim.exe")
                                or (program.name == "__main__.py" and program.parent.name == "carsim")):
        command[0] = "carsim"
    return command


def source_commit() -> dict | None:
    """The git commit of the carsim checkout the package runs from, and
    whether its files differ from it (None when not run from a checkout)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        changed = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "modified": bool(changed)}


def library_versions() -> dict:
    """Python and the installed version of each of :data:`LIBRARIES` (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name, module_name in LIBRARIES.items():
        version = getattr(sys.modules.get(module_name), "__version__", None)
        if not isinstance(version, str):
            from importlib import metadata

            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        versions[name] = version
    return versions


@dataclass
class Manifest:
    """The manifest of one study: create it when the study starts, add
    ``timings``, ``warnings`` and ``files`` as it runs, :meth:`write` it last."""

    study: str
    scenario: object = None  # the Scenario simulated (None: the study has none)
    seed: int | None = None
    settings: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    command: list | None = None
    extra: dict = field(default_factory=dict)  # the study's own keys

    def __post_init__(self):
        if self.study not in STUDIES:
            raise ValueError(f"unknown study {self.study!r}; expected one of: {', '.join(STUDIES)}")

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def to_dict(self) -> dict:
        scenario = self.scenario
        info = {
            "study": self.study,
            "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "carsim_version": __version__,
            "carsim_commit": source_commit(),
            "command": command_line(self.command) if self.command is not None else None,
            "scenario": scenario.name if scenario is not None else None,
            "scenario_sha256": scenario_hash(scenario) if scenario is not None else None,
            "seed": None if self.seed is None else int(self.seed),
            "settings": dict(self.settings),
        }
        clash = set(info) & set(self.extra) | set(COMMON_KEYS) & set(self.extra)
        if clash:
            raise ValueError(f"study keys {sorted(clash)} would replace common manifest keys")
        info.update(self.extra)
        files = list(dict.fromkeys([*self.files, REPORT, MANIFEST]))
        files.append(files.pop(files.index(MANIFEST)))  # written last
        info.update({
            "files": files,
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
            "versions": library_versions(),
            "platform": sys.platform,
            "resolved_scenario": (scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
                                  if scenario is not None else None),
        })
        return info

    def write(self, folder) -> Path:
        """Write ``folder/report.html`` (the page of the folder) and then
        ``folder/manifest.json`` (the folder's mark of completion)."""
        from .html_report import write_report

        info = self.to_dict()
        write_report(folder, info)
        path = Path(folder) / MANIFEST
        write_json(path, info)
        return path


def read(folder) -> dict:
    """The manifest of a finished results folder; a one-line error otherwise."""
    from ..errors import CarsimError

    folder = Path(folder)
    if not folder.is_dir():
        raise CarsimError(f"{folder}: expected a results folder, but there is no such folder")
    path = folder / MANIFEST
    if not path.is_file():
        raise CarsimError(f"{folder}: not a finished results folder (no {MANIFEST}; a study writes it last)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CarsimError(f"{path}: expected a carsim manifest (JSON), could not read it ({exc})") from None
    if not isinstance(info, dict) or info.get("study") not in STUDIES:
        raise CarsimError(f"{path}: expected a carsim manifest, with 'study' one of {', '.join(STUDIES)}")
    return info


def rebuild_report(folder) -> Path:
    """``carsim report DIR``: build ``report.html`` again from a finished folder's files and manifest."""
    from .html_report import write_report

    return write_report(folder, read(folder))


def clear(folder) -> None:
    """Remove an old manifest (until the new one is written the folder is
    unfinished) and the leftovers of writes an earlier, killed run left
    (``.NAME.*.part``: never a finished file)."""
    folder = Path(folder)
    (folder / MANIFEST).unlink(missing_ok=True)
    if folder.is_dir():
        for leftover in folder.glob(".*.part"):
            leftover.unlink(missing_ok=True)
