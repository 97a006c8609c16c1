"""Random numbers: one seed reaches every stream.

``SeedSequence(seed, spawn_key=(replication, stream_id))`` gives one stream
per (replication, event kind).  Each stream is read as a matrix with one row
per patient and a fixed number of slots per row, so patient ``i`` always
draws row ``i`` of each kind: the same numbers whatever the policy (common
random numbers), the cohort size, the chunking of patients or the number of
workers.  Every variate is produced by inversion from a uniform.
"""

from __future__ import annotations

import zlib

import numpy as np


def stream_id(kind: str) -> int:
    """A stable integer for a stream name (Python's ``hash`` is salted)."""
    return zlib.crc32(kind.encode("utf-8"))


class RandomStreams:
    """Uniform numbers for one replication, ``uniform(kind, patient, slot)``.

    ``slots`` maps each kind to the number of uniforms a patient may need of it.
    Blocks are drawn lazily for all patients up to ``n_patients`` in one call.
    """

    def __init__(self, seed: int, replication: int, n_patients: int, slots: dict[str, int]):
        self.seed = int(seed)
        self.replication = int(replication)
        self.n_patients = int(n_patients)
        self.slots = dict(slots)
        self._blocks: dict[str, np.ndarray] = {}
        self._lists: dict[str, list] = {}

    def block(self, kind: str) -> np.ndarray:
        """The (n_patients, slots) matrix of uniforms of ``kind``."""
        try:
            return self._blocks[kind]
        except KeyError:
            pass
        if kind not in self.slots:
            raise KeyError(f"unknown random stream {kind!r}")
        seq = np.random.SeedSequence(self.seed, spawn_key=(self.replication, stream_id(kind)))
        matrix = np.random.Generator(np.random.PCG64(seq)).random((self.n_patients, self.slots[kind]))
        self._blocks[kind] = matrix
        return matrix

    def row(self, kind: str, patient: int) -> list:
        """Patient's uniforms of ``kind`` as a list (fast scalar access)."""
        rows = self._lists.get(kind)
        if rows is None:
            # Python lists make scalar reads in the event loop several times faster.
            rows = self._lists[kind] = self.block(kind).tolist()
        return rows[patient]

    def uniform(self, kind: str, patient: int, slot: int = 0) -> float:
        return self.row(kind, patient)[slot]
