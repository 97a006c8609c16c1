"""Scenario files: schema, loading (``extends``), and the condition language."""

from .loader import load_scenario
from .schema import Scenario

__all__ = ["Scenario", "load_scenario"]
