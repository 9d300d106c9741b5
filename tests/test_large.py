"""Large problems: no framework call indexes past 2**31 elements, and a NumPy output larger than that is right.

The slow test allocates about 11 GiB (a float32 output of 2.4e9 elements and its
input); it runs in its own nox session, ``nox -s slow``, never in ``tests``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import multiconv
from multiconv._algorithms import INDEX_LIMIT, batch_chunk, sample_elements
from multiconv._spec import ArrayInfo, ConvSpec, make_spec

ENGINES = ("einsum", "grouped", "vmap", "loop", "shift", "matmul", "fft")


def _spec(batch: int, c_in: int, c_out: int, size: int, kernel: int, *, limit: int) -> ConvSpec:
    return make_spec(
        ArrayInfo((batch, c_in, size), "float32"),
        ArrayInfo((batch, c_out, c_in, kernel), "float32"),
        None,
        stride=1,
        padding="same",
        dilation=1,
        groups=1,
        padding_mode="zeros",
        layout="channels_first",
        flip=False,
        method="auto",
        framework="numpy",
        methods=ENGINES,
        workspace_limit=limit,
    )


@given(
    shape=st.tuples(st.integers(1, 4096), st.integers(1, 512), st.integers(1, 512), st.integers(1, 2**24), st.integers(1, 9)),
    method=st.sampled_from(ENGINES),
)
def test_a_chunk_never_holds_more_than_the_index_limit(shape: tuple[int, int, int, int, int], method: str) -> None:
    batch, c_in, c_out, size, kernel = shape
    spec = _spec(batch, c_in, c_out, size, kernel, limit=2**62)
    chunk = batch_chunk(spec, method, 4)
    assert 1 <= chunk <= batch
    per_sample = sample_elements(spec, method)
    assert per_sample >= max(c_in * (size + kernel - 1), c_out * size, c_out * c_in * kernel)
    if per_sample <= INDEX_LIMIT:
        assert chunk * per_sample <= INDEX_LIMIT
    else:  # a single sample is past the limit and cannot be cut along the batch
        assert chunk == 1


def test_the_index_limit_cuts_a_batch_the_workspace_limit_lets_through() -> None:
    spec = _spec(64, 64, 64, 2**20, 3, limit=2**62)
    assert spec.workspace_limit // (4 * sample_elements(spec, "grouped")) >= 64
    chunk = batch_chunk(spec, "grouped", 4)
    per_sample = sample_elements(spec, "grouped")
    assert per_sample >= 64 * (2**20 + 2)
    assert chunk * per_sample <= INDEX_LIMIT < (chunk + 1) * per_sample


@pytest.mark.slow
def test_numpy_output_past_two_to_the_31_elements() -> None:
    """A float32 result of 8 * 9 * 2**25 = 2.4e9 elements, every element checked exactly.

    Inputs are small integers, so every sum is exact in float32 whatever the engine's
    summation order, and the result must equal the direct formula bit for bit.
    """
    batch, c_out, size, kernel = 8, 9, 2**25, 3
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (batch, 1, size)).astype(np.float32)
    w = rng.integers(-3, 4, (batch, c_out, 1, kernel)).astype(np.float32)
    y = multiconv.batch_conv1d(x, w)
    out = size - kernel + 1
    assert y.shape == (batch, c_out, out)
    assert y.dtype == np.float32
    assert y.size > 2**31
    assert math.prod(y.shape[1:]) < 2**31  # one sample fits: the library may chunk along the batch
    for b in range(batch):
        for o in range(c_out):
            expected = w[b, o, 0, 0] * x[b, 0, :out]
            for k in range(1, kernel):
                expected += w[b, o, 0, k] * x[b, 0, k : k + out]
            assert np.array_equal(y[b, o], expected), (b, o)
    flat = y.reshape(-1)
    last = flat.size - 1  # an element whose flat index needs more than 31 bits
    b, rest = divmod(last, c_out * out)
    o, i = divmod(rest, out)
    assert flat[last] == sum(w[b, o, 0, k] * x[b, 0, i + k] for k in range(kernel))
