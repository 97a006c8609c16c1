"""Random numbers: one seed reaches every stream, and streams have names.

Each named stream (an event kind and, where an event can recur, its
occurrence: ``relapse.cd19pos``, ``hsct.1.donor_search``, ``mrd.test.4``) is
its own generator, ``SeedSequence(seed, spawn_key=(replication,
crc32(name)))``, read as one uniform per patient.  Patient ``i`` always reads
element ``i`` of each stream, so it draws the same numbers for the same
event whatever the policy (common random numbers), the cohort size, the
chunking of patients or the number of workers; and adding an event kind
(a new name) leaves every other stream, and so every other draw, unchanged.
Every variate is produced by inversion from a uniform.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream_id(kind: str) -> int:
    """A stable integer for a stream name (Python's ``hash`` is salted)."""
    return zlib.crc32(kind.encode("utf-8"))


class RandomStreams:
    """Uniform numbers for one replication: ``uniforms(name)`` is the vector
    of the patients ``0 .. n_patients - 1``, drawn lazily, once."""

    def __init__(self, seed: int, replication: int, n_patients: int):
        self.seed = int(seed)
        self.replication = int(replication)
        self.n_patients = int(n_patients)
        self._vectors: dict[str, np.ndarray] = {}

    def uniforms(self, name: str) -> np.ndarray:
        try:
            return self._vectors[name]
        except KeyError:
            pass
        vector = self._vectors[name] = self._draw(name)
        return vector

    def _draw(self, name: str) -> np.ndarray:
        seq = np.random.SeedSequence(self.seed, spawn_key=(self.replication, stream_id(name)))
        return np.random.Generator(np.random.PCG64(seq)).random(self.n_patients)
