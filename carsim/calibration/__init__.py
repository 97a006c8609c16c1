"""Calibration to published targets: mapping (spec), outputs, fitting,
input recovery and the report."""
