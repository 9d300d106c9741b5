"""Engine geometry, batch chunking under ``workspace_limit``, and the cost model's choices."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import math
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import BACKENDS, as_backend, jaxprs, to_numpy

import multiconv
from multiconv import _algorithms, _api, _bench, _calibration, _cost, _engines, _spec
from multiconv.testing import assert_matches_reference

if TYPE_CHECKING:
    from collections.abc import Iterator


def engines(backend: str) -> list[str]:
    return list(importlib.import_module(f"multiconv.backends.{backend}").METHODS)


@given(st.integers(1, 5000))
def test_next_fast_len_is_the_smallest_5_smooth_number(n: int) -> None:
    fast = _algorithms.next_fast_len(n)
    assert fast >= n

    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    assert smooth(fast)
    assert not any(smooth(m) for m in range(n, fast))


def test_fft_blocks_are_sized_from_the_kernel_not_the_signal() -> None:
    x, w = np.ones((8, 8, 16384), np.float32), np.ones((8, 8, 8, 257), np.float32)
    spec = _api.plan(x, w, method="fft").spec
    blocks = _algorithms.fft_blocks(spec)
    (nfft,), (step,), (count,) = blocks.nfft, blocks.step, blocks.blocks
    assert 2 * 257 <= nfft <= 16 * 257 < 16384
    assert step == nfft - 256
    assert (count - 1) * step < blocks.full[0] <= count * step
    assert blocks.extent[0] >= spec.padded_size[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunked_batches_give_the_same_result(backend: str) -> None:
    rng = np.random.default_rng(5)
    x = as_backend(rng.standard_normal((5, 4, 40)), backend)
    w = as_backend(rng.standard_normal((5, 6, 2, 7)), backend)
    kwargs: dict[str, Any] = {"groups": 2, "padding": "same", "padding_mode": "reflect", "dilation": 2}
    for method in engines(backend):
        spec = _api.plan(x, w, method=method, workspace_limit=1, **kwargs).spec
        assert list(_algorithms.batch_slices(spec, method, 8)) == [slice(b, b + 1) for b in range(5)]
        y = multiconv.batch_conv(x, w, method=method, workspace_limit=1, **kwargs)
        assert_matches_reference(y, x, w, method=method, **kwargs)


#: Shapes of ``shift``'s paths: ``(x, w, keyword arguments)``.
SHIFT_PATHS: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]]] = {
    "dense-1d": ((5, 4, 30), (5, 6, 4, 3), {}),
    "grouped-padded": ((5, 4, 30), (5, 6, 2, 3), {"groups": 2, "padding": "same"}),
    "depthwise": ((5, 4, 30), (5, 4, 1, 5), {"groups": 4}),
    "shared-weight": ((5, 4, 30), (6, 4, 3), {}),
    "pointwise": ((5, 4, 30), (5, 6, 4, 1), {}),
    "2-d": ((5, 3, 9, 8), (5, 4, 3, 3, 2), {"stride": (2, 1)}),
}


#: im2col geometries: ``(x, w, keyword arguments)``: strided, dilated, grouped, 2-D and 3-D, pointwise.
COLUMN_CASES: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]]] = {
    "1-d-strided-dilated": ((2, 4, 23), (2, 6, 2, 3), {"groups": 2, "stride": 2, "dilation": 3}),
    "2-d": ((2, 3, 9, 8), (2, 4, 3, 3, 2), {"stride": (2, 1), "padding": "same"}),
    "3-d-depthwise": ((2, 4, 5, 6, 7), (2, 4, 1, 2, 3, 2), {"groups": 4, "dilation": (1, 2, 1)}),
    "pointwise": ((2, 4, 10), (2, 6, 4, 1), {}),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", COLUMN_CASES)
def test_tap_columns_are_the_im2col_buffer(case: str, backend: str) -> None:
    """One slice per tap, stacked: bitwise the windows' im2col buffer, same layout."""
    backend_module = importlib.import_module(f"multiconv.backends.{backend}")
    x_shape, w_shape, kwargs = COLUMN_CASES[case]
    rng = np.random.default_rng(9)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    spec = _api.plan(x, w, method="matmul", **kwargs).spec
    padded = np.pad(x, ((0, 0), (0, 0), *spec.padding))
    ops, arrays = backend_module.OPS, as_backend(padded, backend)
    stacked = _engines.tap_columns(ops, spec)(arrays)
    windows = _engines.im2col(ops, spec)(arrays)
    np.testing.assert_array_equal(to_numpy(stacked), to_numpy(windows))


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
def test_jax_matmul_stacks_slices_and_differentiates_through_the_gathered_windows() -> None:
    """The forward builds the im2col buffer from slices (no gather); a derivative, from the gathered windows, as before."""
    import jax
    import jax.numpy as jnp

    def primitives(jaxpr: Any) -> set[str]:
        return {eqn.primitive.name for inner in jaxprs(jaxpr) for eqn in inner.eqns}

    rng = np.random.default_rng(10)
    x, w = jnp.asarray(rng.standard_normal((3, 4, 20), np.float32)), jnp.asarray(rng.standard_normal((3, 5, 4, 3), np.float32))

    def conv(x: Any, w: Any) -> Any:
        return multiconv.batch_conv(x, w, method="matmul")

    assert "gather" not in primitives(jax.make_jaxpr(conv)(x, w).jaxpr)
    assert "gather" in primitives(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1)))(x, w).jaxpr)
    assert_matches_reference(conv(x, w), x, w, method="matmul")


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "gathers"),
    [
        ((1, 2, 35), (1, 16, 2, 32), {}, True),  # 32 taps, 512-byte buffer
        ((2, 4, 12, 11), (2, 6, 2, 4, 3), {"groups": 2, "stride": (2, 1), "dilation": (1, 2), "padding": "same"}, True),
        ((1, 2, 20), (1, 16, 2, 9), {}, False),  # 9 taps: stacked
        ((64, 16, 80), (64, 16, 16, 16), {}, False),  # 16 taps, 1.3 MiB buffer: stacked
    ],
)
def test_jax_matmul_gathers_small_buffers_of_many_taps(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], kwargs: dict[str, Any], gathers: bool
) -> None:
    """At least TAP_GATHER_MIN_TAPS taps and at most TAP_GATHER_MAX_BYTES: the forward gathers (one operation), and stays right."""
    import jax
    import jax.numpy as jnp

    from multiconv.testing import reference_conv_vjp

    rng = np.random.default_rng(12)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)

    def conv(x: Any, w: Any) -> Any:
        return multiconv.batch_conv(x, w, method="matmul", **kwargs)

    names = [eqn.primitive.name for inner in jaxprs(jax.make_jaxpr(conv)(x, w).jaxpr) for eqn in inner.eqns]
    assert ("gather" in names) is gathers
    assert ("stack" not in names) is gathers
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    assert_matches_reference(conv(xj, wj), xj, wj, method="matmul", **kwargs)
    y, pullback = jax.vjp(conv, xj, wj)
    g = rng.standard_normal(y.shape).astype(np.float32)
    for got, want in zip(pullback(jnp.asarray(g)), reference_conv_vjp(x, w, grad_y=g, **kwargs)[:2], strict=True):
        assert want is not None
        np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-4 * float(np.abs(want).max()))


def loop_pullback_checked(x: np.ndarray, w: np.ndarray, kwargs: dict[str, Any], rng: np.random.Generator) -> list[Any]:
    """``loop``'s JAX pullback equations at float64 ``x, w``, after checking its VJP and JVP against the reference (draws from ``rng``)."""
    import jax
    import jax.numpy as jnp

    from multiconv.testing import reference_conv, reference_conv_vjp

    def conv(x: Any, w: Any) -> Any:
        return multiconv.batch_conv(x, w, method="loop", **kwargs)

    with jax.enable_x64(True):  # noqa: FBT003
        y, pullback = jax.vjp(conv, jnp.asarray(x), jnp.asarray(w))
        eqns = [eqn for inner in jaxprs(jax.make_jaxpr(pullback)(y).jaxpr) for eqn in inner.eqns]
        g = rng.standard_normal(y.shape)
        for got, want in zip(pullback(jnp.asarray(g)), reference_conv_vjp(x, w, grad_y=g, **kwargs)[:2], strict=True):
            assert want is not None
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)
        tx, tw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
        _, tangent = jax.jvp(conv, (jnp.asarray(x), jnp.asarray(w)), (jnp.asarray(tx), jnp.asarray(tw)))
        np.testing.assert_allclose(
            np.asarray(tangent), reference_conv(tx, w, **kwargs) + reference_conv(x, tw, **kwargs), rtol=1e-9, atol=1e-9
        )
    return eqns


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.parametrize(
    ("ndim", "size", "kwargs", "by_convolution"),
    [
        (1, 11, {"stride": 1, "dilation": 1, "groups": 1, "padding": 0}, (True, True)),
        (1, 11, {"stride": 3, "dilation": 2, "groups": 2, "padding": ((1, 3),)}, (False, False)),  # strided: one product per tap
        (2, 11, {"stride": 2, "dilation": 1, "groups": 3, "padding": "valid"}, (False, False)),
        (2, 11, {"stride": 1, "dilation": 2, "groups": 1, "padding": 1}, (True, False)),  # 2-D, 81 output positions
        (2, 35, {"stride": 1, "dilation": 1, "groups": 3, "padding": "valid"}, (True, True)),  # 33 x 33 > LOOP_WEIGHT_TAPS_MAX_POSITIONS
    ],
)
def test_jax_loop_derivatives_are_convolutions_in_the_forward_layout(
    ndim: int, size: int, kwargs: dict[str, Any], by_convolution: tuple[bool, bool]
) -> None:
    """``loop``'s pullback convolves in the forward's layouts (``NC*``, ``OI*``), never with swapped dimension numbers.

    JAX's own transposition rules swap them, which XLA's CPU backend ran 10 to 30 times slower
    than the forward (see ``multiconv.backends.jax._loop``).  ``by_convolution``: whether the
    input's and the weight's derivatives are a convolution per sample, or one product per
    kernel tap (strided; the weight's also in 2-D and 3-D on few output positions).  Forward
    mode runs the transposes: it must still agree with the reference.
    """
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((3, 6, *(size,) * ndim)), rng.standard_normal((3, 12, 6 // kwargs["groups"], *(3,) * ndim))
    eqns = loop_pullback_checked(x, w, kwargs, rng)
    convs = [eqn for eqn in eqns if eqn.primitive.name == "conv_general_dilated"]
    assert len(convs) == sum(by_convolution) * 3  # per sample
    products = [eqn for eqn in eqns if eqn.primitive.name == "dot_general"]
    assert len(products) == (2 - sum(by_convolution)) * 3**ndim  # per kernel tap
    forward_layout = tuple(range(2 + ndim))
    for eqn in convs:
        numbers = eqn.params["dimension_numbers"]
        assert (tuple(numbers.lhs_spec), tuple(numbers.rhs_spec), tuple(numbers.out_spec)) == (forward_layout,) * 3, eqn
        assert eqn.params["batch_group_count"] == 1
        assert tuple(eqn.params["lhs_dilation"]) == (1,) * ndim  # g spread by the stride instead (XLA's CPU: faster)


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.parametrize(
    ("ndim", "out_channels", "kwargs"),
    [
        (1, 12, {"stride": 3, "dilation": 2, "groups": 6, "padding": ((1, 3),)}),  # two output channels per input channel
        (1, 6, {"stride": 1, "dilation": 1, "groups": 6, "padding": 2, "padding_mode": "reflect"}),
        (2, 6, {"stride": (2, 1), "dilation": 1, "groups": 6, "padding": 1}),
        (2, 2, {"stride": 1, "dilation": (1, 2), "groups": 1, "padding": "same"}),  # one input channel, ungrouped
    ],
)
def test_jax_loop_derivatives_are_the_depthwise_chains_when_depthwise(ndim: int, out_channels: int, kwargs: dict[str, Any]) -> None:
    """Depthwise, ``loop``'s pullback is ``shift``'s depthwise derivatives: no convolution, no product per tap; VJP and JVP exact."""
    rng = np.random.default_rng(13)
    in_channels = kwargs["groups"]
    x, w = rng.standard_normal((3, in_channels, *(9,) * ndim)), rng.standard_normal((3, out_channels, 1, *(3,) * ndim))
    names = {eqn.primitive.name for eqn in loop_pullback_checked(x, w, kwargs, rng)}
    assert not names & {"conv_general_dilated", "dot_general"}, names


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.parametrize(
    ("kernel", "stride", "dilation", "summed"),
    [
        ((3,), (1,), (1,), (3, (11,))),
        # 2-D: the rows' windows are copied first (col2im_split); the sum runs over the last dim's 2 taps, on 5 output rows
        ((3, 2), (2, 1), (1, 2), (2, (5, 11))),
    ],
)
def test_jax_col2im_differentiates_into_one_pad_of_the_gradient_per_tap(
    kernel: tuple[int, ...], stride: Any, dilation: Any, summed: tuple[int, tuple[int, ...]]
) -> None:
    """The pullback of ``col2im``'s shifted sum pads the output's gradient to the input's extent once per tap, not to all products.

    ``summed``: the taps the sum adds and the extent it adds them over.
    """
    import jax
    import jax.numpy as jnp

    from multiconv.testing import reference_conv_vjp

    rng = np.random.default_rng(11)
    n, (taps, extent) = len(kernel), summed
    x, w = rng.standard_normal((3, 4, *(9,) * n)), rng.standard_normal((3, 6, 2, *kernel))
    kwargs: dict[str, Any] = {"groups": 2, "stride": stride, "dilation": dilation, "padding": 1}

    def conv(x: Any, w: Any) -> Any:
        return multiconv.batch_conv(x, w, method="col2im", **kwargs)

    with jax.enable_x64(True):  # noqa: FBT003
        y, pullback = jax.vjp(conv, jnp.asarray(x), jnp.asarray(w))
        one_tap, products = (3, 2, 3, *extent), (3, 2, taps, 3, *extent)  # (B, groups, [taps,] Og, *S_padded)
        pads = [eqn for inner in jaxprs(jax.make_jaxpr(pullback)(y).jaxpr) for eqn in inner.eqns if eqn.primitive.name == "pad"]
        spread = [eqn for eqn in pads if eqn.outvars[0].aval.shape == one_tap]
        assert len(spread) == taps, [str(eqn) for eqn in pads]
        assert products not in [eqn.outvars[0].aval.shape for eqn in pads]
        g = rng.standard_normal(y.shape)
        for got, want in zip(pullback(jnp.asarray(g)), reference_conv_vjp(x, w, grad_y=g, **kwargs)[:2], strict=True):
            assert want is not None
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "product"),
    [
        # 2-D: the 3 row offsets' windows are 3 blocks of input channels (4 * 3), the product holds the 2 column
        # offsets' contributions over the 5 output rows (stride 2) of the padded width 12: (B * groups, 2 * Og, 5 * 12)
        ((3, 8, 9, 10), (3, 6, 4, 3, 2), {"groups": 2, "stride": (2, 1), "padding": 1}, (6, 6, 60)),
        # 3-D: 2 * 3 leading offsets; 2 last-dim offsets over 4 * 2 output rows and the width 7
        ((2, 3, 5, 5, 7), (2, 4, 3, 2, 3, 2), {"stride": (1, 2, 1)}, (2, 8, 56)),
        # one input channel per group: every offset's product over the padded input, as in 1-D
        ((3, 4, 9, 10), (3, 4, 1, 3, 2), {"groups": 4}, (12, 6, 90)),
        # 32 -> 4 channels: the windows (96 channels of 6 x 8) would outweigh every offset's product (9 * 4 of 8 x 8)
        ((2, 32, 8, 8), (2, 4, 32, 3, 3), {}, (2, 36, 64)),
    ],
)
def test_jax_col2im_copies_the_leading_windows_and_sums_along_the_last_dim(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], kwargs: dict[str, Any], product: tuple[int, ...]
) -> None:
    """``col2im`` in 2-D and 3-D: one product, of the last dim's offsets over the output's rows (``col2im_split``)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(12)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)

    def conv(x: Any, w: Any) -> Any:
        return multiconv.batch_conv(x, w, method="col2im", **kwargs)

    with jax.enable_x64(True):  # noqa: FBT003
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        jaxpr = jax.make_jaxpr(conv)(xj, wj).jaxpr
        dots = [eqn.outvars[0].aval.shape for inner in jaxprs(jaxpr) for eqn in inner.eqns if eqn.primitive.name == "dot_general"]
        assert dots == [product]
        assert_matches_reference(conv(xj, wj), xj, wj, method="col2im", **kwargs)


@pytest.mark.skipif("numpy" not in BACKENDS, reason="NumPy backend not requested")
@pytest.mark.parametrize("case", SHIFT_PATHS)
def test_numpy_shift_sums_in_each_chunks_part_of_the_result(case: str) -> None:
    """In chunks, ``shift`` writes its first product into the chunk's part of the result and sums there: bitwise one chunk's result."""
    x_shape, w_shape, kwargs = SHIFT_PATHS[case]
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    assert _algorithms.numpy_chunk(_api.plan(x, w, method="shift", workspace_limit=1, **kwargs).spec, "shift", 4) == 1
    chunked = multiconv.batch_conv(x, w, method="shift", workspace_limit=1, **kwargs)
    whole = multiconv.batch_conv(x, w, method="shift", **kwargs)
    np.testing.assert_array_equal(chunked, whole)
    assert_matches_reference(chunked, x, w, method="shift", **kwargs)


@pytest.mark.skipif("numpy" not in BACKENDS, reason="NumPy backend not requested")
def test_numpy_shift_chunks_keep_one_product_beside_the_result() -> None:
    """A chunk of one sample holds one product beside the result (before: its own sum and a copy as well)."""
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((4, 8, 4096)).astype(np.float32), rng.standard_normal((4, 8, 8, 3)).astype(np.float32)
    multiconv.batch_conv(x, w, method="shift", workspace_limit=1)  # plans and caches built outside the measurement
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        y = multiconv.batch_conv(x, w, method="shift", workspace_limit=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before - y.nbytes < 1.5 * y[0].nbytes  # measured 1.03 (3.03 with the sum apart)


@pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch backend not requested")
@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "copied"),
    [
        ((16, 1, 16), (16, 8, 1, 7), {"padding": "same"}, True),  # one input channel: the windows' view reshapes to the columns
        ((4, 16, 64), (4, 32, 1, 15), {"groups": 16}, True),  # depthwise, two outputs per channel
        ((2, 1, 8192), (2, 2, 1, 65), {}, True),  # 65 x 8128 elements a sample, but 4 MiB in all: copied
        ((16, 1, 8192), (16, 2, 1, 65), {}, False),  # 32.2 MiB in all: bmm's clone of each sample stays in the cache
    ],
)
def test_torch_matmul_hands_bmm_its_columns_copied_where_they_are_small(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], kwargs: dict[str, Any], copied: bool
) -> None:
    """Overlapping rows make ``torch.bmm`` multiply (and clone) one sample at a time (see ``_matmul_parts``): small columns are copied."""
    import torch

    from multiconv.backends import torch as torch_backend

    rng = np.random.default_rng(5)
    x, w = (torch.tensor(rng.standard_normal(shape).astype(np.float32)) for shape in (x_shape, w_shape))
    spec = _api.plan(x, w, method="matmul", **kwargs).spec
    assert torch_backend._columns_copied(spec) is copied
    with torch.profiler.profile() as profile:
        y = multiconv.batch_conv(x, w, method="matmul", **kwargs)
    selects = sum(event.count for event in profile.key_averages() if event.key == "aten::select")
    assert (selects < x_shape[0]) is copied  # bmm's loop over the samples selects each
    assert_matches_reference(y, x, w, method="matmul", **kwargs)


@pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch backend not requested")
@pytest.mark.parametrize("weight_kind", ["per_sample", "shared"])
def test_torch_chunked_batches_differentiate_like_the_reference(weight_kind: str) -> None:
    """Chunks of 2 + 2 + 1 samples: the gradients of x, w and bias come back whole, as the reference's."""
    import torch

    from multiconv.testing import reference_conv_vjp

    rng = np.random.default_rng(11)
    x, bias, g = rng.standard_normal((5, 4, 40)), rng.standard_normal((5, 6)), rng.standard_normal((5, 6, 40))
    w = rng.standard_normal((5, 6, 2, 7) if weight_kind == "per_sample" else (6, 2, 7))
    kwargs: dict[str, Any] = {"groups": 2, "padding": "same", "padding_mode": "reflect", "dilation": 2}
    expected = reference_conv_vjp(x, w, bias, grad_y=g, **kwargs)
    for method in engines("torch"):
        arrays = [torch.tensor(a, requires_grad=True) for a in (x, w, bias)]
        spec = _api.plan(*arrays, method=method, **kwargs).spec
        limit = 2 * _algorithms.workspace_elements(spec, method, 1) * 8
        spec = _api.plan(*arrays, method=method, workspace_limit=limit, **kwargs).spec
        assert _algorithms.batch_chunk(spec, method, 8) == 2, method
        y = multiconv.batch_conv(*arrays, method=method, workspace_limit=limit, **kwargs)
        assert_matches_reference(y.detach(), *(a.detach() for a in arrays), method=method, **kwargs)
        grads = torch.autograd.grad(y, arrays, torch.tensor(g))
        for got, want in zip(grads, expected, strict=True):
            assert want is not None
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10, err_msg=method)


@pytest.mark.skipif("numpy" not in BACKENDS, reason="NumPy backend not requested")
@pytest.mark.parametrize("method", ["einsum", "shift", "matmul", "col2im", "fft"])
def test_numpy_scratch_memory_stays_under_the_limit(method: str) -> None:
    """tracemalloc sees every NumPy allocation: scratch beyond inputs and output stays under the limit."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 16, 2048)).astype(np.float32)  # 8 MiB
    w = rng.standard_normal((64, 16, 16, 9)).astype(np.float32)
    limit = 2 * 2**20
    spec = _api.plan(x, w, method=method, workspace_limit=limit).spec
    unchunked = _algorithms.workspace_elements(spec, method, spec.batch) * 4
    assert unchunked > 4 * limit  # the limit must bite
    output = 64 * 16 * spec.out_size[0] * 4
    padded_chunk = _algorithms.batch_chunk(spec, method, 4) * 16 * 2048 * 4
    tracemalloc.start()
    try:
        multiconv.batch_conv(x, w, method=method, workspace_limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the result, one chunk's output while it is copied into place, and the padded chunk are not scratch
    chunk_output = _algorithms.batch_chunk(spec, method, 4) * 16 * spec.out_size[0] * 4
    assert peak - output - chunk_output - padded_chunk <= 2 * limit


@pytest.mark.skipif("numpy" not in BACKENDS, reason="NumPy backend not requested")
@pytest.mark.parametrize("method", ["einsum", "shift", "matmul", "col2im", "fft"])
def test_numpy_window_engines_work_on_cache_sized_chunks(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """im2col, shifted products and einsum see chunks of about NUMPY_CHUNK_TARGETS of workspace; fft the shared 32 MiB."""
    from multiconv.backends import numpy as numpy_backend

    seen: list[int] = []

    def counting(build: Any) -> Any:  # a builder whose engines (im2col for matmul) record their batch
        def built(*args: Any) -> Any:
            engine = build(*args)

            def run(x: Any, *rest: Any, **options: Any) -> Any:  # options: shift's ``out``
                seen.append(x.shape[0])
                return engine(x, *rest, **options)

            return run

        return built

    if method == "matmul":  # chunked, numpy's matmul writes in place: it calls the im2col buffer, not the engine
        monkeypatch.setattr(_engines, "im2col", counting(_engines.im2col))
    else:
        monkeypatch.setitem(numpy_backend.METHODS, method, counting(numpy_backend.METHODS[method]))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((256, 16, 256)).astype(np.float32)  # the benchmark's "many" shape
    w = rng.standard_normal((256, 16, 16, 7)).astype(np.float32)
    limit = 2**28 - 4096  # a spec of its own: no engine cached by another test
    y = multiconv.batch_conv(x, w, method=method, workspace_limit=limit)
    assert_matches_reference(y, x, w)
    spec = _api.plan(x, w, method=method, workspace_limit=limit).spec
    per_sample = _algorithms.workspace_elements(spec, method, 1) * 4
    target = _algorithms.NUMPY_CHUNK_TARGETS.get(method, _algorithms.CHUNK_TARGET)
    assert sum(seen) == 256
    assert max(seen) == min(256, target // per_sample)  # the chunks may run in any order (side by side)
    assert (len(seen) > 1) is (method != "fft")


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_avoids_engines_whose_sample_does_not_fit(backend: str) -> None:
    x = as_backend(np.ones((2, 64, 4096), np.float32), backend)
    w = as_backend(np.ones((2, 64, 64, 9), np.float32), backend)
    limit = 4 * 2**20  # shift (2 MiB per sample) fits; matmul and the direct engines (9.4 MiB) do not
    spec = _api.plan(x, w, workspace_limit=limit).spec
    assert _algorithms.workspace_elements(spec, spec.method, 1) * 4 <= limit
    tight = _api.plan(x, w, workspace_limit=2**20).spec  # nothing fits: the leanest engine
    assert tight.method == "shift"


def test_cost_model_prefers_fft_only_for_long_kernels() -> None:
    for taps, expect_fft in ((3, False), (9, False), (257, True)):
        x, w = np.ones((8, 8, 16384), np.float32), np.ones((8, 8, 8, taps), np.float32)
        picked = _api.plan(x, w).spec.method
        assert (picked == "fft") is expect_fft, (taps, picked)


def test_cost_features_scale_with_dtype() -> None:
    x, w = np.ones((4, 8, 256), np.float32), np.ones((4, 8, 8, 3), np.float32)
    single = _api.plan(x, w, method="matmul").spec
    double = _api.plan(x.astype(np.float64), w.astype(np.float64), method="matmul").spec
    f32, f64 = _cost.features(single, "matmul"), _cost.features(double, "matmul")
    gemm, copies = _cost.FEATURES.index("gemm"), _cost.FEATURES.index("copies")
    assert f64[gemm] == pytest.approx(2 * f32[gemm])
    assert f64[copies] == pytest.approx(2 * f32[copies])
    assert all(math.isfinite(v) and v >= 0 for v in f32)


@pytest.fixture
def fresh_profile() -> Iterator[None]:
    _cost.cpu_profile.cache_clear()
    yield
    _cost.cpu_profile.cache_clear()


@pytest.mark.usefixtures("fresh_profile")
def test_cpu_profile_follows_the_cpu_model_the_vendor_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU's own model's profile where measured, else its vendor's, else the default; the environment names one outright."""
    monkeypatch.delenv("MULTICONV_CPU_PROFILE", raising=False)
    models = [name for name in _calibration.COEFFICIENTS if "-family" in name]
    assert models  # at least one profile is a CPU model's (AuthenticAMD-family25-model17)
    for name in _calibration.COEFFICIENTS:
        vendor = name.split("-", 1)[0]
        monkeypatch.setattr(_cost, "cpu_vendor", lambda vendor=vendor: vendor)
        monkeypatch.setattr(_cost, "cpu_model", lambda name=name: name)
        _cost.cpu_profile.cache_clear()
        assert _cost.cpu_profile() == name
        monkeypatch.setattr(_cost, "cpu_model", lambda vendor=vendor: f"{vendor}-family99-model1")  # a model never measured
        _cost.cpu_profile.cache_clear()
        assert _cost.cpu_profile() == (vendor if vendor in _calibration.COEFFICIENTS else _cost.DEFAULT_PROFILE)
    monkeypatch.setattr(_cost, "cpu_vendor", lambda: "HygonGenuine")  # a vendor never measured
    monkeypatch.setattr(_cost, "cpu_model", lambda: "HygonGenuine-family24-model0")
    _cost.cpu_profile.cache_clear()
    assert _cost.cpu_profile() == _cost.DEFAULT_PROFILE
    monkeypatch.setattr(_cost, "cpu_model", lambda: models[0])
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", _cost.DEFAULT_PROFILE)
    _cost.cpu_profile.cache_clear()
    assert _cost.cpu_profile() == _cost.DEFAULT_PROFILE
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", "Pentium")
    _cost.cpu_profile.cache_clear()
    with pytest.raises(ValueError, match="MULTICONV_CPU_PROFILE='Pentium' names no calibration"):
        _cost.cpu_profile()


def test_cpu_model_reads_the_vendor_family_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """``model`` is its own field, not the ``model name`` that starts with it; a missing field gives no model."""
    cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC 9R14\n"
    monkeypatch.setattr(Path, "read_text", lambda *_, **__: cpuinfo)
    assert _cost.cpu_info("model") == "17"
    assert _cost.cpu_info("model name") == "AMD EPYC 9R14"
    assert _cost.cpu_model() == "AuthenticAMD-family25-model17"
    no_model = cpuinfo.replace("model\t\t: 17\n", "")
    monkeypatch.setattr(Path, "read_text", lambda *_, **__: no_model)
    assert _cost.cpu_info("model") == ""
    assert _cost.cpu_model() == ""


#: Engines a profile does not time, so ``auto`` does not rank them there: JAX's ``col2im`` came after the Intel
#: CPU was timed (it was not at hand since); NumPy's and PyTorch's ``col2im``, an engine to name until 2026-12-07,
#: was timed on the Zen 3 EPYC only.
NARROW_TIMED: Final = "AuthenticAMD-family25-model1"
UNTIMED: Final[dict[str, dict[str, frozenset[str]]]] = {
    profile: {
        **({} if profile == NARROW_TIMED else {"numpy": frozenset({"col2im"}), "torch": frozenset({"col2im"})}),
        **({"jax": frozenset({"col2im"})} if profile == "GenuineIntel" else {}),
    }
    for profile in _calibration.COEFFICIENTS
}


def test_every_profile_models_every_engine_it_has_timed() -> None:
    """Forward coefficients for every engine (but :data:`UNTIMED`); training coefficients for the engines each backend may train with."""
    assert set(_calibration.MACHINES) == set(_calibration.COEFFICIENTS)
    assert set(_calibration.TRAINING_COEFFICIENTS) <= set(_calibration.COEFFICIENTS)
    for profile, backends in _calibration.COEFFICIENTS.items():
        untimed = UNTIMED.get(profile, {})
        assert {b: set(m) for b, m in backends.items()} == {b: set(_spec.BACKEND_METHODS[b]) - untimed.get(b, set()) for b in backends}, (
            profile
        )
        timed = _calibration.TRAINING_COEFFICIENTS.get(profile, {})
        assert set(timed) <= {"torch", "jax"}, profile
        for backend, methods in timed.items():  # the engines auto may train with (JAX's vmap: never on a CPU)
            assert set(methods) == set(backends[backend]) - ({"vmap"} if backend == "jax" else set()), (profile, backend)
    for backend in BACKENDS:  # the installed backends' engines are those (a framework is imported in its own sessions only)
        assert _spec.BACKEND_METHODS[backend] == tuple(importlib.import_module(f"multiconv.backends.{backend}").METHODS), backend


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def calibrate_script() -> Any:
    """``benchmarks/calibrate.py`` as a module (it fits with scipy)."""
    pytest.importorskip("scipy", reason="benchmarks/calibrate.py fits with scipy.optimize.nnls")
    spec = importlib.util.spec_from_file_location("calibrate", BENCHMARKS / "calibrate.py")
    assert spec is not None
    assert spec.loader is not None
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    return calibrate


@pytest.mark.parametrize(
    ("backend", "training"), [(b, False) for b in BACKENDS] + [(b, True) for b in BACKENDS if b != "numpy"]
)  # NumPy has no autodiff: no training steps
def test_calibrate_times_every_engine_auto_may_use(backend: str, training: bool) -> None:
    """``calibrate.py``'s measurement: a finite, positive time for every engine ``auto`` may run (training: may train with)."""
    calibrate = calibrate_script()
    kwargs = {"groups": 2, "padding": "same"}
    case: dict[str, Any] = {"name": "tiny", "x": [3, 4, 10], "w": [3, 6, 2, 3], "kwargs": kwargs, "dtype": "float32"}
    (row,) = calibrate.measure(backend, [case], cap=1.0, training=training)
    methods = list(importlib.import_module(f"multiconv.backends.{backend}").METHODS)
    spec = _api.plan(*(as_backend(np.ones(case[k], np.float32), backend) for k in ("x", "w")), **case["kwargs"]).spec
    expected = [m for m in methods if _cost.eligible(backend, spec, m)] if training else methods
    assert sorted(row["times"]) == sorted(expected)
    assert all(0 < t < math.inf for t in row["times"].values()), row["times"]


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
def test_calibrate_times_the_steps_jax_auto_may_train_with() -> None:
    """``--training --mixed``: auto's forward engine differentiated through itself and through every other candidate."""
    import jax

    calibrate = calibrate_script()
    case: dict[str, Any] = {"name": "tiny", "x": [3, 4, 10], "w": [3, 6, 4, 3], "kwargs": {"padding": "same"}, "dtype": "float32"}
    (row,) = calibrate.measure("jax", [case], cap=1.0, training=True, mixed=True)
    spec = _api.plan(*(jax.numpy.ones(case[k], np.float32) for k in ("x", "w")), **case["kwargs"]).spec
    forward = dataclasses.replace(spec, method=_cost.choose("jax", spec, tuple(jax_backend().METHODS)))
    assert row["mixed"]["forward"] == forward.method
    assert list(row["mixed"]["times"]) == _cost.tangent_candidates("jax", forward, jax_backend().METHODS)
    assert len(row["mixed"]["times"]) > 1
    assert all(0 < t < math.inf for t in row["mixed"]["times"].values()), row["mixed"]


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize("profile", [p for p, timed in _calibration.TRAINING_COEFFICIENTS.items() if "jax" in timed])
def test_jax_trains_the_benchmark_shapes_with_the_fastest_timed_derivatives(profile: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the stored mixed steps (``--training --mixed``), the derivatives auto takes on each benchmark shape give its fastest step.

    Within :data:`calibrate.BENCHMARK_SLACK`, or 10 us (a step of tens of microseconds is
    mostly dispatch, which varies by more: the AMD profile's README-shape steps measured 51 to
    75 us, the benchmark's 25): what ``choose_tangent`` picks from the stored fit, against the
    steps timed as ``auto`` runs them (its forward engine's forward, which must still be the
    one ``auto`` picks); and over all the stored cases, a geometric mean of picked over fastest
    step under 1.1 (the rule of ``JAX_UNMIXED`` brought the Intel profile's from 1.14 to 1.08).
    The bound was 1.12 while ``col2im`` was new in the AMD profile (2026-12-06): its steps made the
    fastest step faster on many cases, and the fit of whole steps models ``col2im``'s less well
    (its own picks: 48 of 78 fastest, against 65 before), so the AMD profile's mean went from
    1.086 to 1.119 while ``auto``'s steps themselves got faster (geometric mean over the 78
    cases 0.93 of the steps it ran before; dense64 25.6 against 71.7 ms, float64 17.4 against 36.3).
    After the depthwise ``shift`` derivatives got faster (the picked steps 0.89 of those before,
    geometric mean) and ``calibrate.fit`` ranked its fits by these steps, 1.089; after ``col2im``
    copied the leading dims' windows in 2-D and 3-D (re-timed; the fits ranked by their picks too), 1.072.
    The Zen 4 EPYC's profile (``AuthenticAMD-family25-model17``, 2026-12-06) came to 1.122
    (held to 1.13 then): its fit took ``shift``'s derivatives after a depthwise ``shift``
    forward of 33 to 129 taps with two outputs per channel, where ``fft``'s step was 1.9 to
    4.5 times faster.  With those derivatives ruled out
    (:data:`multiconv._cost.JAX_SHIFT_MULTIPLIER_TAPS`) and every profile refitted
    (2026-12-07): Intel 1.080, the first AMD 1.088, Zen 4 1.065, Zen 3 1.062; Zen 3's re-timed
    with seven rounds on the benchmark's shapes (:data:`calibrate.BENCHMARK_ROUNDS`), 1.050; re-timed with
    the grid's edge shapes (:data:`calibrate.EDGE_CASES`, 90 cases), 1.069.
    """
    calibrate = calibrate_script()
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    rows = stored_timings(profile, "jax", training=True)
    assert all("mixed" in row for row in rows)  # re-timing the engines' steps drops them: time them again (--mixed)
    engines = tuple(_calibration.COEFFICIENTS[profile]["jax"])
    stale = [row["name"] for row in rows if _cost.choose("jax", calibrate._spec(row), engines) != row["mixed"]["forward"]]
    assert not stale, f"auto's forward engine changed since the mixed steps were timed: {stale}"
    picks = calibrate.mixed_picks("jax", rows, _calibration.TRAINING_COEFFICIENTS[profile]["jax"])
    assert len(picks) == len(rows)
    slow = {}
    for row, (picked, fastest, ratio) in zip(rows, picks, strict=True):
        steps = row["mixed"]["times"]
        if not row["name"].startswith("grid") and ratio > calibrate.BENCHMARK_SLACK and steps[picked] - steps[fastest] > 10e-6:
            slow[row["name"]] = (picked, fastest, ratio)
    assert not slow, slow
    assert math.exp(np.mean([math.log(ratio) for _, _, ratio in picks])) <= 1.1


def test_calibrate_merges_what_it_re_times_into_the_stored_rows(tmp_path: Path) -> None:
    """``--mixed`` adds the mixed steps to the stored rows; ``--methods`` replaces its engines' times and drops them."""
    calibrate = calibrate_script()
    path = tmp_path / "jax-training.json"
    stored = [{"name": "a", "times": {"shift": 1.0, "matmul": 2.0}, "mixed": {"forward": "shift", "times": {"shift": 1.5}}}]
    path.write_text(json.dumps({"rows": stored}), encoding="utf-8")
    fresh = [{"name": "a", "times": {"matmul": 3.0}}]
    assert calibrate.merge_stored(path, fresh, mixed=False, partial=False) == fresh
    assert calibrate.merge_stored(path, fresh, mixed=False, partial=True) == [{"name": "a", "times": {"shift": 1.0, "matmul": 3.0}}]
    mixed = [{"name": "a", "mixed": {"forward": "shift", "times": {"shift": 1.2, "matmul": 2.5}}}]
    assert calibrate.merge_stored(path, mixed, mixed=True, partial=False) == [{**stored[0], "mixed": mixed[0]["mixed"]}]
    with pytest.raises(SystemExit, match="holds other cases"):
        calibrate.merge_stored(path, [{"name": "b", "times": {}}], mixed=True, partial=False)
    with pytest.raises(SystemExit, match="is missing"):
        calibrate.merge_stored(tmp_path / "none.json", fresh, mixed=False, partial=True)


def test_calibrate_reports_mixed_steps_it_lacks() -> None:
    """``mixed_picks`` refuses rows whose timed mixed steps miss a candidate ``choose_tangent`` would rank."""
    calibrate = calibrate_script()
    profile = next(p for p, timed in _calibration.TRAINING_COEFFICIENTS.items() if "jax" in timed)
    row = next(row for row in stored_timings(profile, "jax", training=True) if row["name"] == "many")
    assert set(row["mixed"]["times"]) == {"loop", "shift", "matmul"}
    partial = {**row, "mixed": {**row["mixed"], "times": {m: t for m, t in row["mixed"]["times"].items() if m != "shift"}}}
    with pytest.raises(ValueError, match=r"many: the mixed steps of \['shift'\] were not timed"):
        calibrate.mixed_picks("jax", [partial], _calibration.TRAINING_COEFFICIENTS[profile]["jax"])


def jax_backend() -> Any:
    return importlib.import_module("multiconv.backends.jax")


def stored_timings(profile: str, backend: str, *, training: bool = False) -> list[dict[str, Any]]:
    path = calibrate_script().timings_path(BENCHMARKS / "calibration" / profile, backend, training=training)
    rows: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return rows


@pytest.mark.parametrize("profile", list(_calibration.COEFFICIENTS))
def test_the_calibration_is_the_fit_of_the_stored_timings(profile: str) -> None:
    """``benchmarks/calibrate.py --fit-only`` on the timings in the repository writes the coefficients ``auto`` uses."""
    calibrate = calibrate_script()
    tables = ((False, _calibration.COEFFICIENTS[profile]), (True, _calibration.TRAINING_COEFFICIENTS.get(profile, {})))
    for training, table in tables:
        for backend, stored in table.items():
            fitted = calibrate.fit(backend, stored_timings(profile, backend, training=training))
            assert {m: tuple(float(f"{c:.4g}") for c in values) for m, values in fitted.items()} == stored, (backend, training)
    timed = sorted(path.name for path in (BENCHMARKS / "calibration" / profile).glob("*-training.json"))
    assert timed == sorted(f"{backend}-training.json" for backend in _calibration.TRAINING_COEFFICIENTS.get(profile, {}))


def _near_the_fastest_timed(backend: str, spec: _spec.ConvSpec, stored: dict[str, float], picked: str, *, loops: int) -> bool:
    """``picked``'s stored time is within 1.1x (or 10 us) of the fastest eligible engine's.

    Up to 1.25x where an engine's loop over the groups, stored at its idle speed, is
    charged its risk (:func:`multiconv._cost.group_loop_risk`, ``loops`` per group).
    """
    times = {m: t for m, t in stored.items() if _cost.eligible(backend, spec, m)}
    fastest = min(times.values())
    if times[picked] <= 1.1 * fastest or times[picked] - fastest <= 10e-6:
        return True
    return any(_cost.group_loop_risk(backend, spec, m, loops=loops) for m in times) and times[picked] <= 1.25 * fastest


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize(("profile", "backend"), [(p, b) for p, tables in _calibration.COEFFICIENTS.items() for b in tables])
def test_auto_runs_the_benchmark_shapes_within_10_percent_of_the_fastest_timed_engine(
    monkeypatch: pytest.MonkeyPatch, profile: str, backend: str
) -> None:
    """With the coefficients as stored (4 significant digits), ``auto``'s forward engine took at most 1.1x the fastest timed one.

    Or within 10 us of it.  The fit ranks its candidates by these picks
    (``calibrate.stored_precision``): on the Zen 4 EPYC's NumPy timings the unrounded fit
    picked ``matmul`` for the depthwise shape, the stored one ``shift``, 1.23x slower in the
    benchmark.  Where PyTorch's loop over the groups is charged
    (:func:`multiconv._cost.group_loop_risk`), up to 1.25x.  (On the Zen 3 EPYC's JAX timings
    no fit picked within 1.1x on ``many`` until :func:`calibrate.fit` weighted the benchmark's
    shapes up where none did, :data:`calibrate.BENCHMARK_ESCALATION`; the test allowed 1.16
    there meanwhile.)
    """
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    calibrate = calibrate_script()
    coefficients = _calibration.COEFFICIENTS[profile][backend]
    rows = [row for row in stored_timings(profile, backend) if not row["name"].startswith("grid")]
    assert len(rows) == len(_bench.SHAPES)
    for row in rows:
        spec = calibrate._spec(row)
        runs = calibrate.charged_pick(backend, row, coefficients, training=False)
        assert runs == _cost.choose(backend, spec, tuple(coefficients))  # what auto runs
        assert _near_the_fastest_timed(backend, spec, row["times"], runs, loops=1), (row["name"], runs, row["times"])


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize("profile", list(_calibration.COEFFICIENTS))
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "jax"])
def test_numpy_and_torch_auto_consider_col2im_only_for_narrow_groups(monkeypatch: pytest.MonkeyPatch, backend: str, profile: str) -> None:
    """NumPy's and PyTorch's ``col2im``: right when named; ``auto`` considers it for groups of 4x as many input as output channels.

    A Siamese tracker's cross-correlation (8 samples of 256 -> 1 channels, 22x22, 6x6) runs it where
    the profile timed it (:data:`UNTIMED`); 16 -> 8 channels never.
    """
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    rng = np.random.default_rng(8)
    for c_out in (1, 4, 8):
        x_np, w_np = rng.standard_normal((2, 16, 12, 12)), rng.standard_normal((2, c_out, 16, 6, 6))
        x, w = as_backend(x_np, backend), as_backend(w_np, backend)
        spec = _api.plan(x, w).spec
        assert_matches_reference(multiconv.batch_conv(x, w, method="col2im"), x, w, method="col2im")
        assert _cost.eligible(backend, spec, "col2im") == (c_out * _cost.COL2IM_NARROW <= 16)
        if c_out == 8:
            assert spec.method != "col2im"
    siamese = _api.plan(np.zeros((8, 256, 22, 22), np.float32), np.zeros((8, 1, 256, 6, 6), np.float32)).spec
    timed = "col2im" not in UNTIMED[profile].get(backend, ())
    assert ("col2im" in _calibration.COEFFICIENTS[profile][backend]) == timed
    assert (_cost.choose(backend, siamese, _spec.BACKEND_METHODS[backend]) == "col2im") == timed


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize("profile", list(_calibration.COEFFICIENTS))
def test_auto_ranks_only_the_engines_its_profile_timed(monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    """An engine a profile has no coefficients for (:data:`UNTIMED`) is never ``auto``'s, forward or derivative; named, it runs."""
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    untimed = UNTIMED.get(profile, {}).get("jax", frozenset())
    methods = _spec.BACKEND_METHODS["jax"]
    for case in _bench.SHAPES.values():
        x, w = np.ones(case.x_shape, case.dtype), np.ones(case.w_shape, case.dtype)
        spec = _api.plan(x, w, groups=case.groups, padding=case.padding).spec
        candidates = set(_cost._candidates("jax", spec, methods))
        assert candidates == {m for m in methods if _cost.eligible("jax", spec, m) and _cost._fits(spec, m)} - untimed, case.name
        timed = _calibration.TRAINING_COEFFICIENTS[profile]["jax"]
        forward = dataclasses.replace(spec, method=_cost.choose("jax", spec, methods))
        assert _cost.pick_tangent("jax", forward, timed) not in untimed, case.name
    if "jax" in BACKENDS and untimed:
        x, w = (as_backend(np.ones(shape, np.float32), "jax") for shape in ((2, 4, 12), (2, 6, 4, 3)))
        for method in untimed:
            np.testing.assert_allclose(to_numpy(multiconv.batch_conv(x, w, method=method)), np.full((2, 6, 10), 12.0))


@pytest.mark.usefixtures("fresh_profile")
def test_a_profile_without_timed_training_steps_trains_as_it_infers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until ``calibrate.py --training`` times a profile's steps, a training step is modelled by the forward's estimate."""
    profile = _cost.cpu_profile()
    monkeypatch.setitem(_calibration.TRAINING_COEFFICIENTS, profile, {})
    spec = dataclasses.replace(_api.plan(np.ones((256, 16, 256)), np.ones((256, 16, 16, 7))).spec, training=True)
    for backend, methods in _calibration.COEFFICIENTS[profile].items():
        for method in methods:
            assert _cost.estimate_training(backend, spec, method) == _cost.estimate(backend, spec, method)
    assert _cost.choose("torch", spec, ("grouped", "shift", "matmul", "fft")) == _cost.choose(
        "torch", dataclasses.replace(spec, training=False), ("grouped", "shift", "matmul", "fft")
    )


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize("profile", list(_calibration.COEFFICIENTS))
def test_the_float64_benchmark_shape_trains_with_its_fastest_step(monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    """256 samples, 16 -> 16 channels, L 256, K 7, float64: PyTorch trains it with the engine whose step was fastest.

    Its stored training steps differ by CPU: on the Intel one, ``matmul``'s measured 25.6 ms
    against the fold's 35.3.  There, one training factor per engine (forward + backward over
    forward, what the profiles without timed steps used before 2026-12-06) trained it with the
    fold, 1.2 to 1.4x slower than ``matmul`` in three benchmark runs of 2026-12-05.  The fold's
    step counts with its loops' risk (:func:`multiconv._cost.group_loop_risk`): on the AMD CPU
    its idle 16.4 ms against ``matmul``'s 18.7 is not worth its 29-30 ms when a core lags.
    """
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    spec = _api.plan(np.ones((256, 16, 256)), np.ones((256, 16, 16, 7))).spec
    trained = dataclasses.replace(spec, training=True)
    steps = next(row for row in stored_timings(profile, "torch", training=True) if row["name"] == "float64")["times"]
    charged = {m: t + _cost.group_loop_risk("torch", trained, m, loops=3) for m, t in steps.items()}
    assert _cost.choose("torch", trained, ("grouped", "shift", "matmul", "fft")) == min(charged, key=charged.__getitem__) == "matmul"


def test_accelerator_rule() -> None:
    x, w = np.ones((2, 4, 512), np.float32), np.ones((2, 4, 4, 3), np.float32)
    spec = _api.plan(x, w).spec
    assert _cost.choose("torch", spec, ("grouped", "shift", "matmul", "fft"), accelerator=True) == "grouped"
    long_spec = _api.plan(x, np.ones((2, 4, 4, 65), np.float32)).spec
    assert _cost.choose("jax", long_spec, ("vmap", "shift", "matmul", "fft"), accelerator=True) == "fft"


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "1MB"])
def test_workspace_limit_is_validated(bad: object) -> None:
    x, w = np.ones((2, 4, 16)), np.ones((2, 4, 4, 3))
    with pytest.raises((TypeError, ValueError), match="workspace_limit="):
        multiconv.batch_conv(x, w, workspace_limit=bad)  # type: ignore[arg-type]


def spied_products(backend: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """The operands ``(a, b)`` of every ``OPS.matmul`` call ``backend``'s engines make from now on (filled as they run)."""
    ops = importlib.import_module(f"multiconv.backends.{backend}").OPS
    original, products = type(ops).matmul, []

    def spy(a: Any, b: Any, **kwargs: Any) -> Any:
        products.append((a, b))
        return original(a, b, **kwargs)

    monkeypatch.setattr(type(ops), "matmul", staticmethod(spy))
    return products


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "jax"])
@pytest.mark.parametrize("per_sample", [True, False])
def test_shift_multiplies_each_taps_weights_as_contiguous_matrices(backend: str, per_sample: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tap's slice of the weight, strided by the taps, is no BLAS operand: ``shift`` stacks the taps' matrices first.

    Strided so, NumPy multiplied them without BLAS (64 samples of 64 channels, L 1024, 3 taps:
    65 against 26 ms; 16 of 32 channels, 64x64, 3x3: 80 against 32) and PyTorch's ``bmm`` cloned
    them matrix by matrix (256 samples of 4 -> 8 channels, L 64, 3 taps: 5.5 against 0.57 ms;
    as the input's gradient of that shape, which ``auto`` ran with ``shift``: 2.9 against 0.39).
    """
    products = spied_products(backend, monkeypatch)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 6, 9, 10))
    w = rng.standard_normal((3, 4, 3, 3, 2) if per_sample else (4, 3, 3, 2))
    xb, wb = as_backend(x, backend), as_backend(w, backend)
    y = multiconv.batch_conv(xb, wb, method="shift", groups=2, dilation=(2, 1), padding="same")
    assert len(products) == 6  # one product per tap
    for a, _ in products:
        assert a.flags.c_contiguous if backend == "numpy" else a.is_contiguous()
    assert_matches_reference(y, xb, wb, method="shift", groups=2, dilation=(2, 1), padding="same")


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_stride_phases_read_every_taps_window(data: st.DataObject) -> None:
    """Each kernel offset's window, read from its phase: the same items as its strided window of the input."""
    ndim = data.draw(st.integers(1, 3))
    kernel = tuple(data.draw(st.integers(1, 4)) for _ in range(ndim))
    dilation = tuple(data.draw(st.integers(1, 3)) for _ in range(ndim))
    stride = tuple(data.draw(st.integers(1, 4)) for _ in range(ndim))
    size = tuple(data.draw(st.integers((k - 1) * d + 1, (k - 1) * d + 9)) for k, d in zip(kernel, dilation, strict=True))
    x = np.arange(2.0 * math.prod(size)).reshape(1, 2, *size)
    spec = _api.plan(x, np.ones((1, 3, 2, *kernel)), stride=stride, dilation=dilation, method="shift").spec
    split = _algorithms.stride_phases(spec)
    assert len(split.taps) == math.prod(kernel)
    phases = [x[_engines.index(..., *phase)] for phase in split.phases]
    assert sum(p.size for p in phases) <= x.size  # together at most one input's worth
    for (_, window), (part, in_part) in zip(_algorithms.kernel_taps(spec), split.taps, strict=True):
        assert all(step.step in (None, 1) for step in in_part)
        np.testing.assert_array_equal(phases[part][_engines.index(..., *in_part)], x[_engines.index(..., *window)])


#: Strided ``shift`` paths: ``(x, w, keyword arguments)``.
STRIDED_SHIFT_PATHS: dict[str, tuple[tuple[int, ...], tuple[int, ...], dict[str, Any]]] = {
    "1-d": ((3, 4, 31), (3, 6, 4, 5), {"stride": 2}),
    "1-d-dilated-grouped": ((3, 4, 31), (3, 6, 2, 3), {"stride": 3, "dilation": 2, "groups": 2, "padding": 2}),
    "shared-weight": ((3, 4, 31), (6, 4, 4), {"stride": 2}),
    "pointwise": ((3, 4, 31), (3, 6, 4, 1), {"stride": 2}),
    "2-d": ((3, 3, 11, 9), (3, 4, 3, 3, 2), {"stride": (2, 3), "padding": "valid"}),
    "depthwise": ((3, 4, 31), (3, 8, 1, 5), {"stride": 2, "groups": 4}),
}


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "jax"])
@pytest.mark.parametrize("case", STRIDED_SHIFT_PATHS)
def test_shift_multiplies_unit_step_windows_with_a_stride(backend: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stride, ``shift`` reads each tap from the input's phases: the products' input operands step by one item.

    A window that steps over the input is no BLAS operand either: PyTorch's ``bmm`` of one
    took 0.98 ms against 0.16 for a copy and the product, and 0.086 for the phase's window
    (128 samples of 8 -> 16 channels, L 256, stride 2).  The whole ``shift``, 7 taps: 6.7-7.1
    against 1.4 ms (PyTorch), 1.6 against 1.4 (NumPy); 64 of 2 -> 16 channels, L 1024, 5
    taps: 3.3-7.5 against 1.0-1.4 (PyTorch), 3.0-3.5 against 1.3-1.9 (NumPy).
    """
    x_shape, w_shape, kwargs = STRIDED_SHIFT_PATHS[case]
    products = spied_products(backend, monkeypatch)
    rng = np.random.default_rng(4)
    xb, wb = (as_backend(rng.standard_normal(shape), backend) for shape in (x_shape, w_shape))
    y = multiconv.batch_conv(xb, wb, method="shift", **kwargs)
    assert_matches_reference(y, xb, wb, method="shift", **kwargs)
    if case == "depthwise":  # broadcast multiply-adds, no products
        assert not products
        return
    assert len(products) == math.prod(w_shape[-len(x_shape) + 2 :])  # one product per tap
    for _, b in products:
        assert b.strides[-1] == b.itemsize if backend == "numpy" else b.stride(-1) == 1


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
def test_jax_auto_leaves_loop_to_samples_of_real_work() -> None:
    """One XLA convolution per sample costs tens of microseconds however small: ``loop`` needs 2^15 multiply-adds a sample."""
    jnp = importlib.import_module("jax.numpy")
    # 256 samples of 2 channels, 1024 positions, 5 taps: 20480 multiply-adds each (measured: loop 10.5 ms, matmul 1.0)
    small = _api.plan(jnp.zeros((256, 2, 1024), np.float32), jnp.zeros((256, 2, 2, 5), np.float32), padding="same").spec
    assert not _cost.eligible("jax", small, "loop")
    assert small.method != "loop"
    assert small.tangent_method != "loop"
    assert _cost.eligible("jax", dataclasses.replace(small, out_channels=4), "loop")  # 40960 multiply-adds a sample
    assert _cost.eligible("jax", dataclasses.replace(small, weight_kind="shared"), "loop")  # one convolution of the batch
    assert not _cost.eligible("jax", dataclasses.replace(small, out_channels=4, batch=257), "loop")


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize("profile", [p for p, backends in _calibration.COEFFICIENTS.items() if "col2im" in backends["jax"]])
def test_jax_auto_takes_col2im_beyond_32_slices_only_for_narrow_groups(monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    """A Siamese tracker's cross-correlation (256 -> 1 channels, 6x6: 36 slices) runs ``col2im``, on every profile that timed it.

    Measured on the Zen 3 EPYC: 0.69 ms against ``loop``'s 8.2, which ``auto`` ran before.  Beyond 32
    slices only where groups have at least four times as many input as output channels, and up to 256.
    """
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)

    def conv(x: tuple[int, ...], w: tuple[int, ...]) -> _spec.ConvSpec:
        return _api.plan(np.zeros(x, np.float32), np.zeros(w, np.float32)).spec

    siamese = conv((8, 256, 22, 22), (8, 1, 256, 6, 6))
    assert _algorithms.col2im_slices(siamese) == 36
    assert _cost.eligible("jax", siamese, "col2im")
    assert _cost.choose("jax", siamese, _spec.BACKEND_METHODS["jax"]) == "col2im"
    assert _cost.eligible("jax", conv((8, 256, 64), (8, 64, 256, 36)), "col2im")  # 4 times as many input channels
    assert not _cost.eligible("jax", conv((8, 256, 64), (8, 65, 256, 36)), "col2im")
    assert not _cost.eligible("jax", conv((8, 256, 40, 40), (8, 1, 256, 17, 17)), "col2im")  # 289 slices


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize(
    ("profile", "backend"), [(p, b) for p, timed in _calibration.TRAINING_COEFFICIENTS.items() for b in timed if b != "jax"]
)
def test_auto_trains_the_benchmark_shapes_within_10_percent_of_the_fastest_timed_step(
    monkeypatch: pytest.MonkeyPatch, profile: str, backend: str
) -> None:
    """On a profile with timed training steps, the engine ``auto`` trains with took at most 1.1x the fastest step.

    At most 1.25x where an engine's loop over the groups is charged its risk
    (:func:`multiconv._cost.group_loop_risk`; float64 on the AMD CPU: 18.7 against 16.4 ms).

    PyTorch: the engine of its training choice, against the steps of the engines ``auto`` may
    pick, as stored by ``calibrate.py --training``; or within 10 us of it (a step of tens of
    microseconds is mostly dispatch).  JAX runs its forward engine's forward with the
    derivatives picked, not an engine's own step: its fits are ranked by those steps
    (``calibrate.fit``), and they are checked on them
    (:func:`test_jax_trains_the_benchmark_shapes_with_the_fastest_timed_derivatives`).  The
    engines' own steps said otherwise within their noise: ``col2im``'s own step on dense256,
    18.6 ms there and 14.5 ms timed again as a mixed step, against ``shift``'s 15.5.
    """
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    calibrate = calibrate_script()
    methods = tuple(_calibration.COEFFICIENTS[profile][backend])
    rows = [row for row in stored_timings(profile, backend, training=True) if not row["name"].startswith("grid")]
    assert len(rows) == len(_bench.SHAPES)
    for row in rows:
        spec = dataclasses.replace(calibrate._spec(row), training=True)
        trained = _cost.choose(backend, spec, methods)
        near = _near_the_fastest_timed(backend, spec, row["times"], trained, loops=_cost.TRAINING_LOOPS)
        assert near, (row["name"], trained, row["times"])


@pytest.mark.usefixtures("fresh_profile")
def test_timed_jax_steps_choose_the_engine_jax_differentiates_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a fit of timed JAX training steps, the tangent engine is the eligible one of least modelled step.

    A made-up fit stands in for the stored one, in which each engine's step costs what its
    ``fixed`` coefficient says.
    """
    profile = _cost.DEFAULT_PROFILE
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    width = len(_cost.FEATURES)

    def fixed(**costs: float) -> dict[str, tuple[float, ...]]:
        return {m: (costs.get(m, 1.0), *(0.0,) * (width - 1)) for m in _calibration.COEFFICIENTS[profile]["jax"]}

    spec = _api.plan(np.ones((8, 16, 256), np.float32), np.ones((8, 16, 16, 3), np.float32)).spec  # 3 taps: no fft
    forward = dataclasses.replace(spec, method="shift")
    monkeypatch.setitem(_calibration.TRAINING_COEFFICIENTS, profile, {"jax": fixed(matmul=0.5, fft=0.1)})
    assert _cost.choose_tangent("jax", forward) == "matmul"  # fft is cheaper but not eligible for 3 taps
    assert _cost.choose_tangent("jax", dataclasses.replace(spec, method="matmul")) is None  # the forward's own
    loop = dataclasses.replace(spec, method="loop")
    assert not _cost.tangent_allowed(loop, "matmul")
    assert _cost.choose_tangent("jax", loop) is None  # matmul's derivatives never follow loop's forward (JAX_UNMIXED)
    monkeypatch.setitem(_calibration.TRAINING_COEFFICIENTS, profile, {"jax": fixed(matmul=0.5, shift=0.7)})
    assert _cost.choose_tangent("jax", loop) == "shift"
    assert _cost.choose_tangent("jax", forward) == "matmul"  # after shift's forward, matmul's are allowed
    monkeypatch.setitem(_calibration.TRAINING_COEFFICIENTS, profile, {"jax": fixed(vmap=0.1, loop=0.2)})
    assert _cost.choose_tangent("jax", forward) == "loop"  # vmap: never on a CPU
    assert _cost.choose_tangent("jax", forward, accelerator=True) is None
    # depthwise with two outputs per channel: shift's derivatives from 32 taps on (JAX_SHIFT_MULTIPLIER_TAPS), fft's instead
    monkeypatch.setitem(_calibration.TRAINING_COEFFICIENTS, profile, {"jax": fixed(shift=0.1, fft=0.5)})
    for taps, og, tangent in ((32, 2, "fft"), (31, 2, None), (32, 1, None)):
        multiplied = _api.plan(np.ones((4, 8, 512), np.float32), np.ones((4, 8 * og, 1, taps), np.float32), groups=8).spec
        forward = dataclasses.replace(multiplied, method="shift")
        assert _cost.tangent_allowed(forward, "shift") is (tangent is None)
        assert _cost.choose_tangent("jax", forward) == tangent, (taps, og)


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.usefixtures("fresh_profile")
def test_jax_auto_is_differentiated_through_the_tangent_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """JAX's ``auto`` takes derivatives through the engine ``choose_tangent`` picks, and they match the reference.

    A made-up fit of training steps makes an engine other than the forward's the cheapest
    to train with; without timed steps, ``auto`` differentiates its forward engine itself.
    """
    import jax

    profile = _cost.DEFAULT_PROFILE
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    monkeypatch.setattr(_api, "_PLAN_CACHE", {})  # plans made under the patched fits stay here

    from multiconv.testing import reference_conv_vjp

    rng = np.random.default_rng(9)
    width = len(_cost.FEATURES)
    with jax.enable_x64(True):  # noqa: FBT003
        x, w, bias = rng.standard_normal((24, 3, 30)), rng.standard_normal((24, 5, 3, 4)), rng.standard_normal((24, 5))
        g = rng.standard_normal((24, 5, 30))
        kwargs: dict[str, Any] = {"padding": "same", "padding_mode": "reflect"}
        arrays = tuple(jax.numpy.asarray(a) for a in (x, w, bias))
        monkeypatch.setitem(_calibration.TRAINING_COEFFICIENTS, profile, {})
        forward = _api.plan(*arrays, **kwargs).spec
        assert forward.tangent_method is None
        tangent = "matmul" if forward.method == "shift" else "shift"  # allowed after any forward (JAX_UNMIXED)
        fit = {m: (0.1 if m == tangent else 1.0, *(0.0,) * (width - 1)) for m in _calibration.COEFFICIENTS[profile]["jax"]}
        monkeypatch.setitem(_calibration.TRAINING_COEFFICIENTS, profile, {"jax": fit})
        monkeypatch.setattr(_api, "_PLAN_CACHE", {})
        spec = _api.plan(*arrays, **kwargs).spec
        assert (spec.method, spec.tangent_method) == (forward.method, tangent)
        y, pullback = jax.vjp(lambda *a: multiconv.batch_conv(*a, **kwargs), *(jax.numpy.asarray(a) for a in (x, w, bias)))
        _, forward_tangent = jax.jvp(lambda a: multiconv.batch_conv(a, w, bias, **kwargs), (jax.numpy.asarray(x),), (jax.numpy.asarray(x),))
        for got, want in zip(pullback(jax.numpy.asarray(g)), reference_conv_vjp(x, w, bias, grad_y=g, **kwargs), strict=True):
            assert want is not None
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(
            np.asarray(forward_tangent), np.asarray(y - multiconv.batch_conv(0 * x, w, bias, **kwargs)), rtol=1e-10, atol=1e-10
        )


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.parametrize("method", ["shift", "matmul", "col2im", "fft", "loop", "vmap"])
def test_jax_runs_batch_chunks_one_after_another(method: str) -> None:
    """Chunks become a loop in the compiled program (a remainder runs once more), with every transformation."""
    import jax

    from multiconv.backends import jax as jax_backend
    from multiconv.testing import reference_conv_vjp

    rng = np.random.default_rng(10)
    kwargs: dict[str, Any] = {"groups": 2, "padding": "same", "padding_mode": "circular", "dilation": 2}
    with jax.enable_x64(True):  # noqa: FBT003
        x, w, bias = rng.standard_normal((7, 4, 30)), rng.standard_normal((7, 6, 2, 5)), rng.standard_normal((7, 6))
        arrays = tuple(jax.numpy.asarray(a) for a in (x, w, bias))
        spec = _api.plan(*arrays, method=method, **kwargs).spec
        limit = 3 * _algorithms.workspace_elements(spec, method, 1) * 8
        spec = _api.plan(*arrays, method=method, workspace_limit=limit, **kwargs).spec
        assert jax_backend.chunk_size(spec, 8) == 3  # 3 + 3 + a remainder of 1

        def conv(*a: Any) -> Any:
            return multiconv.batch_conv(*a, method=method, workspace_limit=limit, **kwargs)

        assert "while" in jax.jit(conv).lower(*arrays).as_text()
        assert_matches_reference(conv(*arrays), *arrays, method=method, **kwargs)
        g = rng.standard_normal((7, 6, 30))
        _, pullback = jax.vjp(conv, *arrays)
        for got, want in zip(pullback(jax.numpy.asarray(g)), reference_conv_vjp(x, w, bias, grad_y=g, **kwargs), strict=True):
            assert want is not None
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)
        stacked = jax.vmap(conv)(*(jax.numpy.stack([a, 2 * a]) for a in arrays))
        for number, scale in enumerate((1, 2)):
            np.testing.assert_allclose(np.asarray(stacked[number]), np.asarray(conv(*(scale * a for a in arrays))), rtol=1e-12)


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
def test_jax_depthwise_shift_runs_its_forward_whole_and_its_weight_derivative_in_chunks(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """XLA fuses the depthwise chain into one loop: only the limit chunks it; the per-tap weight derivative keeps the chunk targets.

    The targets are set to two samples' workspace, so the derivative runs in chunks of 2
    (and a remainder of 1) while the forward runs all 5 samples; forward and reverse mode
    give the reference's derivatives through the chunks.
    """
    import jax

    from multiconv.backends import jax as jax_backend
    from multiconv.testing import reference_conv, reference_conv_vjp

    rng = np.random.default_rng(11)
    geometry: dict[str, Any] = {"groups": 4, "padding": 1}
    kwargs: dict[str, Any] = {**geometry, "method": "shift"}
    with jax.enable_x64(True):  # noqa: FBT003
        x, w = rng.standard_normal((5, 4, 301)), rng.standard_normal((5, 8, 1, 3))  # 301 positions: a product per tap
        arrays = tuple(jax.numpy.asarray(a) for a in (x, w))
        spec = _api.plan(*arrays, **kwargs).spec
        per_sample = _algorithms.workspace_elements(spec, "shift", 1) * 8
        _algorithms.batch_chunk.cache_clear()  # its cached chunks must neither come from nor outlive the patched target
        monkeypatch.setattr(_algorithms, "CHUNK_TARGET", 2 * per_sample)
        request.addfinalizer(_algorithms.batch_chunk.cache_clear)
        monkeypatch.setattr(jax_backend, "SEQUENTIAL_CHUNK_TARGET", 2 * per_sample)
        assert jax_backend.chunk_size(spec, 8) == 5
        assert jax_backend._sequential_chunk(spec, "shift", 8) == 2
        assert jax_backend.chunk_size(_api.plan(*arrays, workspace_limit=2 * per_sample, **kwargs).spec, 8) == 2  # the limit still binds

        def conv(*a: Any) -> Any:
            return multiconv.batch_conv(*a, **kwargs)

        g = rng.standard_normal((5, 8, 301))

        def pullback(*a: Any) -> Any:
            return jax.vjp(conv, *a)[1](jax.numpy.asarray(g))

        assert "while" not in jax.jit(conv).lower(*arrays).as_text()
        assert "while" in jax.jit(pullback).lower(*arrays).as_text()
        for got, want in zip(jax.jit(pullback)(*arrays), reference_conv_vjp(x, w, None, grad_y=g, **geometry)[:2], strict=True):
            assert want is not None
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-9)
        dx, dw = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
        _, pushed = jax.jvp(conv, arrays, (jax.numpy.asarray(dx), jax.numpy.asarray(dw)))
        linear = reference_conv(dx, w, **geometry) + reference_conv(x, dw, **geometry)
        np.testing.assert_allclose(np.asarray(pushed), linear, rtol=1e-9, atol=1e-9)


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
def test_jax_chunks_only_a_batch_whose_workspace_is_large() -> None:
    import jax

    from multiconv.backends import jax as jax_backend

    def chunk(batch: int) -> tuple[int, int]:  # matmul: 64 channels x 3 taps x 1022 positions x 4 bytes per sample
        x, w = jax.numpy.zeros((batch, 64, 1024), np.float32), jax.numpy.zeros((batch, 64, 64, 3), np.float32)
        spec = _api.plan(x, w, method="matmul").spec
        per_sample = _algorithms.workspace_elements(spec, "matmul", 1) * 4
        return jax_backend.chunk_size(spec, 4), per_sample

    assert chunk(16)[0] == 16  # 12 MiB: one chunk
    size, per_sample = chunk(64)  # 48 MiB: chunks of about SEQUENTIAL_CHUNK_TARGET
    assert size == jax_backend.SEQUENTIAL_CHUNK_TARGET // per_sample < 64


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
def test_jax_col2im_aims_its_chunks_at_a_few_mib_in_1d_whatever_the_batch() -> None:
    """1-D ``col2im`` chunks a 29 MiB batch (256 x 16 channels, L 256, 7 taps) into about 4 MiB; a small one stays whole."""
    import jax

    from multiconv.backends import jax as jax_backend

    def chunk(batch: int, length: int) -> tuple[int, int]:
        x, w = jax.numpy.zeros((batch, 16, length), np.float32), jax.numpy.zeros((batch, 16, 16, 7), np.float32)
        spec = _api.plan(x, w, method="col2im").spec
        return jax_backend.chunk_size(spec, 4), _algorithms.workspace_elements(spec, "col2im", 1) * 4

    size, per_sample = chunk(256, 256)
    assert per_sample * 256 < _algorithms.CHUNK_TARGET  # below the shared target: the other engines would run it whole
    assert size == jax_backend.COL2IM_CHUNK_TARGET // per_sample < 256
    assert chunk(8, 256)[0] == 8  # 0.9 MiB: whole


@pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch backend not requested")
@pytest.mark.parametrize(
    ("kernel", "padding", "pads_first"),
    [
        ((15,), 7, True),  # "same" of an odd kernel: 4.7 against 0.54 ms through multiconv, 32 x 256 channels, L 64
        ((16,), 4, False),
        ((3,), 3, True),
        ((3,), 1, False),
        ((3, 16), (1, 7), True),
        ((16, 3), (7, 0), False),
        ((3, 3), (3, 0), True),
        ((3, 3, 3), 3, False),  # the 3-D kernel keeps its speed
    ],
)
def test_torch_depthwise_fold_pads_the_input_where_its_convolution_would_be_slow(
    kernel: tuple[int, ...], padding: int | tuple[int, ...], pads_first: bool
) -> None:
    """``grouped`` pads the input itself where PyTorch's depthwise convolution would leave its fast kernel."""
    from multiconv.backends import torch as torch_backend

    rng = np.random.default_rng(len(kernel))
    size = tuple(2 * k + 3 for k in kernel)
    x = as_backend(rng.standard_normal((2, 3, *size)), "torch", "float32")
    w = as_backend(rng.standard_normal((2, 3, 1, *kernel)), "torch", "float32")
    spec = _api.plan(x, w, groups=3, padding=padding, method="grouped").spec
    assert torch_backend._pads_depthwise_input(spec) is pads_first
    assert not torch_backend._pads_depthwise_input(dataclasses.replace(spec, out_channels=6))  # two outputs a group: fast
    assert not torch_backend._pads_depthwise_input(dataclasses.replace(spec, dtype="float64"))  # its float64 kernel keeps its speed
    assert_matches_reference(multiconv.batch_conv(x, w, groups=3, padding=padding, method="grouped"), x, w, groups=3, padding=padding)


@pytest.mark.usefixtures("fresh_profile")
@pytest.mark.parametrize("profile", list(_calibration.COEFFICIENTS))
def test_torch_float64_grouped_forward_is_charged_for_its_loop_over_the_groups(monkeypatch: pytest.MonkeyPatch, profile: str) -> None:
    """PyTorch's float64 convolution runs one parallel region per group: ``auto``'s forward charges each one.

    The benchmark's float64 shape (256 samples) goes to ``matmul`` on every profile in training
    (charged three loops), and forward to ``matmul`` or, on the Zen 3 profile (timed after ``shift``
    multiplied contiguous matrices: 15.6 ms against ``matmul``'s 16.7), ``shift``; complex128 pays three times (three float64
    convolutions), a shared weight for its groups; float32 (oneDNN, one region), complex64
    (float32 inside), one weight of one group, an undilated 3-D convolution (one call for
    all groups) and the other engines and backends pay nothing.
    """
    monkeypatch.setenv("MULTICONV_CPU_PROFILE", profile)
    x, w = np.ones((256, 16, 256)), np.ones((256, 16, 16, 7))
    spec = dataclasses.replace(_api.plan(x, w).spec, method="grouped")
    charge = 256 * _cost.GROUP_LOOP_SECONDS
    assert _cost.group_loop_risk("torch", spec, "grouped") == pytest.approx(charge)
    fitted = _cost.modelled(_calibration.COEFFICIENTS[profile]["torch"]["grouped"], "torch", spec, "grouped")
    assert _cost.estimate("torch", spec, "grouped") == pytest.approx(fitted + charge)
    assert _cost.choose("torch", spec, ("grouped", "shift", "matmul", "fft")) in {"matmul", "shift"}
    assert _cost.group_loop_risk("torch", dataclasses.replace(spec, dtype="complex128"), "grouped") == pytest.approx(3 * charge)
    for weight in (w[0], w[:1]):  # one weight for the batch, as is and broadcast: its 4 groups loop
        shared = dataclasses.replace(_api.plan(x[:2], weight[..., :4, :], groups=4).spec, method="grouped")
        assert _cost.group_loop_risk("torch", shared, "grouped") == pytest.approx(4 * _cost.GROUP_LOOP_SECONDS)
    cubes, kernels = np.ones((2, 8, 6, 6, 6)), np.ones((2, 8, 4, 3, 3, 3))
    dilated = dataclasses.replace(_api.plan(cubes, kernels, groups=2, dilation=2).spec, method="grouped")
    assert _cost.group_loop_risk("torch", dilated, "grouped") == pytest.approx(4 * _cost.GROUP_LOOP_SECONDS)
    one_group = dataclasses.replace(_api.plan(x[:2], w[0]).spec, method="grouped")
    undilated = dataclasses.replace(dilated, dilation=(1, 1, 1))  # slow_conv3d takes every group in one call
    for free in (dataclasses.replace(spec, dtype="float32"), dataclasses.replace(spec, dtype="complex64"), one_group, undilated):
        assert _cost.group_loop_risk("torch", free, "grouped") == 0.0, free
    assert _cost.group_loop_risk("torch", spec, "matmul") == _cost.group_loop_risk("jax", spec, "vmap") == 0.0
    trained = dataclasses.replace(spec, training=True)
    steps = _calibration.TRAINING_COEFFICIENTS[profile]["torch"]["grouped"]
    assert _cost.estimate_training("torch", trained, "grouped") == pytest.approx(
        _cost.modelled(steps, "torch", trained, "grouped") + 3 * charge
    )
    assert _cost.choose("torch", trained, ("grouped", "shift", "matmul", "fft")) == "matmul"


@pytest.mark.parametrize("training", [False, True])
def test_calibrate_reports_where_auto_runs_another_engine_than_the_fits_pick(capsys: pytest.CaptureFixture[str], training: bool) -> None:
    """The AMD fit picks PyTorch's fold for the float64 shape; ``auto`` charges its loop over the groups and runs ``matmul``."""
    calibrate = calibrate_script()
    table = _calibration.TRAINING_COEFFICIENTS if training else _calibration.COEFFICIENTS
    rows = stored_timings("AuthenticAMD", "torch", training=training)
    calibrate.report("torch", rows, table["AuthenticAMD"]["torch"], " training" if training else "")
    lines = [line for line in capsys.readouterr().out.splitlines() if "auto runs" in line]
    assert any(line.split(":")[0].strip() == "float64" and "picks grouped" in line and "auto runs matmul" in line for line in lines), lines
    assert all("group loop charged" in line for line in lines)
