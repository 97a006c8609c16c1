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

Short streams (small cohorts: trials, calibration) are drawn by
:func:`_pcg64_uniforms`, numpy's ``SeedSequence``, ``PCG64`` and
``Generator.random`` written out and compiled: the same bits (tested), without
the two objects numpy builds per stream (about 25 µs, most of a short
stream's cost).
"""

from __future__ import annotations

import zlib

import numpy as np

from .compiled import ENABLED, compiled

# Streams up to this length are drawn by the compiled generator; longer ones
# by numpy, whose per-value loop is faster (the bits are the same either way).
COMPILED_UP_TO = 8192


def stream_id(kind: str) -> int:
    """A stable integer for a stream name (Python's ``hash`` is salted)."""
    return zlib.crc32(kind.encode("utf-8"))


def _words(value: int) -> list[int]:
    """``value`` as numpy's SeedSequence reads an integer: little-endian
    32-bit words, at least one."""
    words = []
    while True:
        words.append(value & 0xFFFFFFFF)
        value >>= 32
        if not value:
            return words


class RandomStreams:
    """Uniform numbers for one replication: ``uniforms(name)`` is the vector
    of the patients ``0 .. n_patients - 1``, drawn lazily, once."""

    def __init__(self, seed: int, replication: int, n_patients: int):
        self.seed = int(seed)
        self.replication = int(replication)
        self.n_patients = int(n_patients)
        self._vectors: dict[str, np.ndarray] = {}
        # The entropy words of every stream but the name's (None: numpy draws
        # the streams).  SeedSequence pads the run entropy to its pool size
        # (4 words) when there is a spawn key.
        self._entropy = None
        if ENABLED and self.n_patients <= COMPILED_UP_TO:
            run = _words(self.seed)
            self._entropy = run + [0] * (4 - len(run)) + _words(self.replication)

    def uniforms(self, name: str) -> np.ndarray:
        try:
            return self._vectors[name]
        except KeyError:
            pass
        vector = self._vectors[name] = self._draw(name)
        return vector

    def _draw(self, name: str) -> np.ndarray:
        if self._entropy is not None:
            entropy = np.array(self._entropy + _words(stream_id(name)), dtype=np.uint64)
            return _pcg64_uniforms(entropy, self.n_patients)
        seq = np.random.SeedSequence(self.seed, spawn_key=(self.replication, stream_id(name)))
        return np.random.Generator(np.random.PCG64(seq)).random(self.n_patients)


# numpy's SeedSequence constants (numpy/random/bit_generator.pyx) and PCG64's
# multiplier (pcg64.h), as unsigned 64-bit numbers: numba would turn a mix of
# signed and unsigned integers into floats.
_MASK32 = np.uint64(0xFFFFFFFF)
_INIT_A, _MULT_A = np.uint64(0x43B0D7E5), np.uint64(0x931E8875)
_INIT_B, _MULT_B = np.uint64(0x8B51F9DD), np.uint64(0x58F38DED)
_MIX_MULT_L, _MIX_MULT_R = np.uint64(0xCA01F9DD), np.uint64(0x4973F715)
_PCG_MULT_HIGH, _PCG_MULT_LOW = np.uint64(2549297995355413924), np.uint64(4865540595714422341)
_U16, _U32, _U58, _U63, _U64_ONE = np.uint64(16), np.uint64(32), np.uint64(58), np.uint64(63), np.uint64(1)
_U11 = np.uint64(11)


@compiled(inline=True)
def _hashmix(value, hash_const):
    """SeedSequence's hashmix: (mixed value, next hash constant), 32-bit."""
    value = (value ^ hash_const) & _MASK32
    hash_const = (hash_const * _MULT_A) & _MASK32
    value = (value * hash_const) & _MASK32
    return value ^ (value >> _U16), hash_const


@compiled(inline=True)
def _mix(x, y):
    result = (_MIX_MULT_L * x - _MIX_MULT_R * y) & _MASK32
    return result ^ (result >> _U16)


@compiled(inline=True)
def _multiply_high(a, b):
    """The high 64 bits of the 128-bit product of two 64-bit numbers."""
    a_low, a_high = a & _MASK32, a >> _U32
    b_low, b_high = b & _MASK32, b >> _U32
    low_low = a_low * b_low
    middle = a_high * b_low + (low_low >> _U32)
    middle2 = a_low * b_high + (middle & _MASK32)
    return a_high * b_high + (middle >> _U32) + (middle2 >> _U32)


@compiled(inline=True)
def _pcg_step(high, low, inc_high, inc_low):
    """One step of PCG64's 128-bit LCG: state * multiplier + increment."""
    new_high = _multiply_high(low, _PCG_MULT_LOW) + low * _PCG_MULT_HIGH + high * _PCG_MULT_LOW
    new_low = low * _PCG_MULT_LOW
    out_low = new_low + inc_low
    carry = _U64_ONE if out_low < new_low else np.uint64(0)
    return new_high + inc_high + carry, out_low


@compiled
def _pcg64_uniforms(entropy, n):
    """``Generator(PCG64(SeedSequence(...))).random(n)`` for the assembled
    entropy words (run entropy padded to four words, then the spawn key)."""
    # SeedSequence: mix the entropy into a pool of four 32-bit words.
    pool = np.zeros(4, np.uint64)
    hash_const = _INIT_A
    for i in range(4):
        pool[i], hash_const = _hashmix(entropy[i] if i < len(entropy) else np.uint64(0), hash_const)
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                mixed, hash_const = _hashmix(pool[i_src], hash_const)
                pool[i_dst] = _mix(pool[i_dst], mixed)
    for i_src in range(4, len(entropy)):
        for i_dst in range(4):
            mixed, hash_const = _hashmix(entropy[i_src], hash_const)
            pool[i_dst] = _mix(pool[i_dst], mixed)
    # generate_state(4, uint64): eight 32-bit words, paired little-endian.
    state = np.zeros(4, np.uint64)
    hash_const = _INIT_B
    for i in range(8):
        value = (pool[i % 4] ^ hash_const) & _MASK32
        hash_const = (hash_const * _MULT_B) & _MASK32
        value = (value * hash_const) & _MASK32
        value ^= value >> _U16
        state[i // 2] |= value << (_U32 * np.uint64(i % 2))
    # PCG64's seeding: words 0-1 are the initial state (high, low), 2-3 the
    # sequence; increment = sequence * 2 + 1; step, add the state, step.
    inc_high = (state[2] << _U64_ONE) | (state[3] >> _U63)
    inc_low = (state[3] << _U64_ONE) | _U64_ONE
    high, low = _pcg_step(np.uint64(0), np.uint64(0), inc_high, inc_low)
    low_sum = low + state[1]
    high = high + state[0] + (_U64_ONE if low_sum < low else np.uint64(0))
    low = low_sum
    high, low = _pcg_step(high, low, inc_high, inc_low)
    out = np.empty(n)
    for j in range(n):
        # Step, then the XSL-RR output; a double from its top 53 bits.
        high, low = _pcg_step(high, low, inc_high, inc_low)
        x = high ^ low
        rotation = high >> _U58
        x = (x >> rotation) | (x << ((np.uint64(64) - rotation) & _U63))
        out[j] = np.float64(x >> _U11) * (1.0 / 9007199254740992.0)
    return out
