"""Errors a user can act on.

A :class:`ScenarioError` names the file, the key path inside it and what was
expected; the CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


def display_path(path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except (ValueError, OSError):
        return str(path)


class CarsimError(Exception):
    """Base class for errors reported to the user without a traceback."""


class ScenarioError(CarsimError):
    def __init__(self, file, key_path: str, expected: str):
        self.file = display_path(file) if file is not None else "<scenario>"
        self.key_path = key_path or "(top level)"
        self.expected = expected
        super().__init__(f"{self.file}: {self.key_path}: {expected}")
