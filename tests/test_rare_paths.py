"""Calls the main suites do not make: internal entry points with odd arguments, one-sided derivatives.

Each test states the behaviour of a path that user code reaches rarely (or only on hardware CI
does not have), so that it stays right when nobody is looking.
"""

from __future__ import annotations

import numpy as np
import pytest
from support import BACKENDS

import multiconv
from multiconv import _api, _cost
from multiconv.testing import assert_matches_reference, reference_conv

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 4, 12))
W = RNG.standard_normal((3, 6, 4, 3))
needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves torch out")
needs_jax = pytest.mark.skipif("jax" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves jax out")


def test_plan_rejects_unknown_keywords() -> None:
    with pytest.raises(TypeError, match=r"^unexpected keyword argument\(s\): paddding, strides$"):
        _api.plan(X, W, paddding="same", strides=2)


def test_no_separate_tangent_engine_off_jax_or_on_an_accelerator() -> None:
    spec = _api.plan(X, W, backend="numpy").spec
    assert _cost.choose_tangent("numpy", spec) is None
    assert _cost.choose_tangent("torch", spec) is None
    assert _cost.choose_tangent("jax", spec, accelerator=True) is None  # a GPU differentiates the forward engine


@needs_jax
def test_jax_from_numpy_without_a_model_array_keeps_the_dtype() -> None:
    import jax

    from multiconv.backends import jax as backend

    for dtype in (np.float32, np.float64, np.complex64):
        a = backend.from_numpy(np.arange(6, dtype=dtype).reshape(2, 3))
        assert isinstance(a, jax.Array)
        assert a.dtype == dtype
        np.testing.assert_array_equal(np.asarray(a), np.arange(6, dtype=dtype).reshape(2, 3))


@needs_jax
@pytest.mark.parametrize("method", ["auto", "vmap", "shift", "fft"])
def test_jax_forward_derivative_in_the_weight_only(method: str) -> None:
    # x is a constant: its tangent is a symbolic zero, and the derivative is conv(x, dw) alone.
    import jax
    import jax.numpy as jnp

    dw = RNG.standard_normal(W.shape)
    x = jnp.asarray(X)

    def f(w: jax.Array) -> jax.Array:
        return multiconv.batch_conv(x, w, padding="same", method=method)

    y, dy = jax.jvp(f, (jnp.asarray(W),), (jnp.asarray(dw),))
    assert_matches_reference(y, x, jnp.asarray(W), padding="same")
    np.testing.assert_allclose(np.asarray(dy), reference_conv(X, dw, padding="same"), rtol=1e-10, atol=1e-10)


@needs_torch
def test_torch_meta_tensors_cannot_be_computed_elsewhere() -> None:
    import torch

    x, w = torch.empty(3, 4, 12, device="meta"), torch.empty(3, 6, 4, 3, device="meta")
    with pytest.raises(ValueError, match=r"^x is on the meta device, which holds no data; the chosen backend needs real values$"):
        multiconv.batch_conv(x, w, backend="numpy")


@needs_torch
@pytest.mark.parametrize("value", [np.int64(2), 1j, object()])
def test_torch_graph_arguments_must_be_plain_literals(value: object) -> None:
    from multiconv.backends import torch as backend

    with pytest.raises(TypeError, match=r"the arguments of batch_conv must be ints, strings, bools, None or tuples; got "):
        backend._encode(("same", (1, value)), [])


@needs_torch
def test_torch_graph_arguments_round_trip() -> None:
    from multiconv._spec import ARGUMENT_DEFAULTS
    from multiconv.backends import torch as backend

    arguments = {**ARGUMENT_DEFAULTS, "stride": (2,), "padding": ((1, 0),), "flip": True, "padding_mode": "circular"}
    ints: list[int] = []
    literal = backend._encode((1, *arguments.values()), ints)
    assert ints == [1, 2, 1, 0, 1, 1]  # spatial_dims, stride, padding (lo, hi), dilation, groups
    assert backend._decode(literal, ints) == (1, arguments)
    numpy_arguments = (1, *{**arguments, "backend": "numpy"}.values())
    with pytest.raises(ValueError, match=r"^backend='numpy': under torch.compile/torch.export batch_conv computes with PyTorch"):
        backend._decode(backend._encode(numpy_arguments, ints := []), ints)
