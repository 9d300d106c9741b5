"""Edge cases of :mod:`multiconv.testing`: odd arguments to the reference and the comparison helper.

``tests/test_testing.py`` checks the oracle's values and the helper's checks; these tests give
them the arguments a user gets wrong and check the message.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
from support import BACKENDS

from multiconv import testing
from multiconv.testing import assert_conv_close, reference_conv, reference_conv_vjp

X = np.arange(2 * 3 * 8, dtype=np.float64).reshape(2, 3, 8)
W = np.ones((2, 4, 3, 3))


def test_a_stride_that_is_not_a_sequence() -> None:
    with pytest.raises(ValueError, match=r"stride=<object object at .*> must be a positive int or a tuple of 1 positive ints"):
        reference_conv(X, W, stride=object())  # type: ignore[arg-type]


@pytest.mark.parametrize("padding", [[(1, 2, 3)], [None], [(1,)]])
def test_a_padding_entry_that_is_not_a_pair(padding: Any) -> None:
    with pytest.raises(ValueError, match=re.escape(f"padding={padding!r} must be a non-negative int, a tuple of 1 ints")):
        reference_conv(X, W, padding=padding)


@pytest.mark.parametrize("shape", [(8,), (3, 8), (1, 1, 2, 2, 2, 2)])
def test_the_vjp_needs_one_to_three_spatial_dims(shape: tuple[int, ...]) -> None:
    x = np.ones(shape)
    with pytest.raises(ValueError, match=re.escape(f"x.shape={shape} must have 3 to 5 dims (B, C, 1 to 3 spatial dims)")):
        reference_conv_vjp(x, W, grad_y=np.ones(shape))


def test_an_unknown_dtype_name_is_compared_as_given() -> None:
    with pytest.raises(AssertionError, match=r"dtype mismatch: expected posit16, received float64"):
        assert_conv_close(np.zeros(2), np.zeros(2), bound=0.0, dtype="posit16")


def test_an_actual_without_a_dtype() -> None:
    with pytest.raises(AssertionError, match=r"dtype mismatch: expected float64, received no dtype \(list\)"):
        assert_conv_close([0.0, 0.0], np.zeros(2), bound=0.0, dtype="float64")


@pytest.mark.skipif("torch" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves torch out")
@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental:UserWarning")
def test_torch_complex32_becomes_complex64_exactly() -> None:
    import torch

    values = torch.tensor([1.5 - 2j, 0.25 + 1j], dtype=torch.complex64)
    host = testing._to_numpy(values.to(torch.complex32))
    assert host.dtype == np.complex64
    np.testing.assert_array_equal(host, np.array([1.5 - 2j, 0.25 + 1j], dtype=np.complex64))


@pytest.mark.skipif("jax" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves jax out")
def test_a_jax_tracer_has_no_concrete_device() -> None:
    import jax

    seen: list[str] = []

    @jax.jit
    def probe(a: jax.Array) -> jax.Array:
        seen.append(testing._device(a, "jax"))
        return a

    probe(jax.numpy.ones(2))
    assert seen == ["unknown"]
    assert testing._device(jax.numpy.ones(2), "jax") == str(jax.devices()[0])
