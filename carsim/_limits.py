"""Sizes beyond which an input is a typo, not a study (checked before any work)."""

from __future__ import annotations

import os

MAX_PATIENTS = 100_000_000  # per cohort: about 0.5 TB of patient records for each policy
MAX_SCHEDULED = 10_000  # tests or checks per patient (e.g. every 1e-9 months)
# Memory a patient-policy trajectory takes, results and events included
# (1.8 GB for 100,000 patients x 4 policies, measured): to refuse a run that
# cannot fit before it starts rather than fail with a MemoryError after.
BYTES_PER_TRAJECTORY = 5_000


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
