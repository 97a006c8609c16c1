"""carsim: discrete-event simulation of CD19 CAR T-cell therapy for r/r B-ALL."""

__version__ = "0.1.0"
