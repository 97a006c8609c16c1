"""Flat result records: one outcome row per patient, one tuple per event.

Outcome columns are arrays from the start (one row per patient, filled in as
the pathway runs); events are tuples turned into columns once, at the end.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

NAN = math.nan

# column -> default (times are days since the patient's enrolment)
OUTCOME_FIELDS: dict[str, object] = {
    "arrival_day": NAN,
    "apheresis_day": NAN,
    "manufacturing_attempts": 0,
    "manufacturing_failure": False,
    "wait_manufacturing_days": 0.0,
    "withdrawn": False,
    "pathway_exit_day": NAN,
    "infused": False,
    "infusion_day": NAN,
    "vein_to_vein_days": NAN,
    "severe_crs": False,
    "severe_icans": False,
    "early_toxic_death": False,
    "cr": False,
    "response_day": NAN,
    "mrd_informative": False,
    "mrd_day28_positive": NAN,
    "mrd_month3_positive": NAN,
    "mrd_emergence_day": NAN,
    "first_mrd_positive_day": NAN,
    "bca_loss_day": NAN,
    "bca_loss_detected_day": NAN,
    "reinfusions": 0,
    "bca_regained": False,
    "hsct_count": 0,
    "consolidative_hsct": False,
    "first_hsct_day": NAN,
    "hsct_bed_wait_days": 0.0,
    "hsct_death": False,
    "relapse_day": NAN,
    "relapse_phenotype": "none",
    "reremission_day": NAN,
    "death_day": NAN,
    "death_cause": "none",
    "end_day": NAN,
}


def column_dtype(default) -> type:
    """The array dtype of a column whose default (or initial) value is ``default``."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return np.int64
    if isinstance(default, float):
        return float
    return object


def event_columns(events: list[tuple]) -> dict[str, np.ndarray]:
    """(patient, time_days, event, detail) tuples -> columns, in time order per patient."""
    if not events:
        return {"patient": np.zeros(0, np.int64), "time_days": np.zeros(0), "event": np.zeros(0, object),
                "detail": np.zeros(0, object)}
    table = np.array(events, dtype=object)  # (n, 4), in one pass in C over the tuples
    patient = table[:, 0].astype(np.int64)
    order = np.argsort(patient, kind="stable")  # events were appended in time order
    return {
        "patient": patient[order],
        "time_days": table[:, 1].astype(float)[order],
        "event": table[:, 2][order],
        "detail": table[:, 3][order],
    }


def text_codes(values) -> tuple[np.ndarray, np.ndarray]:
    """(codes, categories) of a text column: ``categories[codes]`` equals the
    column (a value that is not a string as its str()), categories in order
    of first appearance, as ``pandas.factorize`` gives them.

    Columns the engines write repeat a few string objects millions of times,
    so the objects are told apart by their addresses (integers, hashed
    without touching the strings) and only the distinct objects are compared
    as text."""
    import pandas as pd

    values = np.ascontiguousarray(values, dtype=object)
    if values.size == 0:
        return np.zeros(0, np.intp), np.zeros(0, object)
    # The array's data are its elements' addresses: read them as integers.
    addresses = np.ctypeslib.as_array((ctypes.c_size_t * values.size).from_address(values.ctypes.data))
    codes, distinct = pd.factorize(addresses)
    first = np.empty(len(distinct), np.intp)
    first[codes] = np.arange(values.size)  # some position of each distinct object
    # The objects are numbered in order of first appearance, so their texts are too.
    objects = np.array([v if type(v) is str else str(v) for v in values[first]], dtype=object)
    remap, categories = pd.factorize(objects)
    return remap[codes], np.asarray(categories, dtype=object)


# Event texts (names and details) as integer codes, one vocabulary for the
# process: the engines' event tables can then be sorted, split and joined
# as integers, and turned into text (or read by the accounting) only at the
# end.  Codes are never stored or sent: a table of codes is read with
# ``vocabulary()`` of the same process.
_CODES: dict[str, int] = {}
_TEXTS: list[str] = []


def code_of(text: str) -> int:
    """The code of an event text (a new text gets the next code)."""
    code = _CODES.get(text)
    if code is None:
        code = _CODES[text] = len(_TEXTS)
        _TEXTS.append(text)
    return code


def vocabulary() -> np.ndarray:
    """Every coded text, at its code (an object array)."""
    return np.array(_TEXTS, dtype=object)


def codes_of(values) -> np.ndarray:
    """Codes of a text column (a value that is not a string as its str())."""
    codes, texts = text_codes(values)
    return np.array([code_of(t) for t in texts], dtype=np.int64)[codes] if len(codes) else np.zeros(0, np.int64)
