"""Named random streams: the compiled generator of short streams gives
numpy's bits (``Generator(PCG64(SeedSequence(seed, spawn_key=...))).random``,
the reference implementation), so a stream is the same whatever its length
and whether numba is installed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carsim.model import random as streams_module
from carsim.model.compiled import ENABLED
from carsim.model.random import RandomStreams, stream_id


def numpy_stream(seed: int, replication: int, name: str, n: int) -> np.ndarray:
    seq = np.random.SeedSequence(seed, spawn_key=(replication, stream_id(name)))
    return np.random.Generator(np.random.PCG64(seq)).random(n)


needs_numba = pytest.mark.skipif(not ENABLED, reason="numba is not installed or CARSIM_NO_JIT is set")


@needs_numba
@settings(max_examples=300, deadline=None)
@given(seed=st.one_of(st.integers(0, 2**32 + 5), st.integers(0, 2**200)),
       replication=st.integers(0, 2**40), name=st.text(max_size=12), n=st.integers(0, 70))
def test_compiled_stream_equals_numpy(seed, replication, name, n):
    drawn = RandomStreams(seed, replication, n).uniforms(name)
    expected = numpy_stream(seed, replication, name, n)
    assert drawn.dtype == expected.dtype and drawn.shape == expected.shape
    assert np.array_equal(drawn, expected)


@needs_numba
def test_long_and_short_streams_agree_where_they_overlap():
    # A stream longer than the compiled limit is numpy's; the first values of
    # a shorter one (compiled) are the same numbers.
    n = streams_module.COMPILED_UP_TO + 10
    long = RandomStreams(20261124, 3, n).uniforms("relapse.cd19pos")
    short = RandomStreams(20261124, 3, 500).uniforms("relapse.cd19pos")
    assert np.array_equal(long, numpy_stream(20261124, 3, "relapse.cd19pos", n))
    assert np.array_equal(short, long[:500])


def test_streams_are_drawn_once_and_differ_by_name():
    streams = RandomStreams(7, 0, 50)
    first = streams.uniforms("a")
    assert streams.uniforms("a") is first
    assert not np.array_equal(first, streams.uniforms("b"))
    assert ((first >= 0) & (first < 1)).all()
