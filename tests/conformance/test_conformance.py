"""Conformance: every backend and method against the float64 reference, and against each other."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import example, given
from support import BACKENDS, as_backend, to_numpy

import multiconv
from conformance.strategies import BACKEND_DTYPES, TROUBLE_SPOTS, ConvCase, conv_cases, resolve_padding
from multiconv.testing import assert_conv_close, assert_matches_reference, error_bound, reference_conv

if TYPE_CHECKING:
    from collections.abc import Callable

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
WIDE_DTYPES = ("float32", "float64", "complex64", "complex128")


def trouble_spots(test: Callable[..., None]) -> Callable[..., None]:
    """Pin every known trouble spot as an explicit example of ``test``."""
    for case in TROUBLE_SPOTS.values():
        test = example(case=case)(test)
    return test


def methods(backend: str) -> list[str]:
    module = importlib.import_module(f"multiconv.backends.{backend}")
    return ["auto", *module.METHODS]


def fit_dtype(case: ConvCase, backend: str) -> ConvCase:
    """``case`` with a dtype ``backend`` supports (bfloat16 becomes float16 on NumPy)."""
    if case.dtype in BACKEND_DTYPES[backend]:
        return case
    return dataclasses.replace(case, dtype="float16")


def inputs(case: ConvCase, backend: str) -> tuple[Any, Any, Any]:
    x, w, bias = case.arrays()
    return as_backend(x, backend, case.dtype), as_backend(w, backend, case.dtype), as_backend(bias, backend, case.dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@trouble_spots
@given(case=conv_cases(dtypes=ALL_DTYPES))
def test_every_method_matches_reference(backend: str, case: ConvCase) -> None:
    case = fit_dtype(case, backend)
    x, w, bias = inputs(case, backend)
    for method in methods(backend):
        y = multiconv.batch_conv(x, w, bias, method=method, **case.kwargs())
        picked = multiconv._api.plan(x, w, bias, method=method, **case.kwargs()).spec.method
        assert_matches_reference(y, x, w, bias, method=picked, **case.kwargs())


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two backends to compare")
@trouble_spots
@given(case=conv_cases(dtypes=WIDE_DTYPES))
def test_backends_agree(case: ConvCase) -> None:
    x, w, bias = case.arrays()
    results = {}
    for backend in BACKENDS:
        args = (as_backend(a, backend, case.dtype) for a in (x, w, bias))
        results[backend] = to_numpy(multiconv.batch_conv(*args, **case.kwargs()))
    rounded = [as_backend(a, "numpy", case.dtype) for a in (x, w, bias)]
    bound = 2 * error_bound(*rounded, dtype=case.dtype, **case.kwargs())
    first, *others = BACKENDS
    for backend in others:
        assert_conv_close(results[backend], results[first], bound=bound)


@pytest.mark.parametrize("backend", BACKENDS)
@trouble_spots
@given(case=conv_cases(dtypes=WIDE_DTYPES, min_batch=1, weight_kinds=("per_sample",)))
def test_sample_slice_equals_single_conv(backend: str, case: ConvCase) -> None:
    if case.batch == 0 or case.weight_kind != "per_sample":
        return
    x, w, bias = inputs(case, backend)
    y = multiconv.batch_conv(x, w, bias, **case.kwargs())
    for b in range(case.batch):
        one = slice(b, b + 1)
        bias_b = bias[one] if case.bias_kind == "per_sample" else bias
        y_b = multiconv.batch_conv(x[one], w[one], bias_b, **case.kwargs())
        bound = 2 * error_bound(x[one], w[one], bias_b, dtype=case.dtype, **case.kwargs())
        assert_conv_close(to_numpy(y_b), to_numpy(y[one]), bound=bound)


@pytest.mark.parametrize("backend", BACKENDS)
@trouble_spots
@given(case=conv_cases(dtypes=WIDE_DTYPES, layouts=("channels_first",)))
def test_channels_last_is_a_transpose(backend: str, case: ConvCase) -> None:
    if case.layout != "channels_first":
        return
    x, w, bias = inputs(case, backend)
    y = to_numpy(multiconv.batch_conv(x, w, bias, **case.kwargs()))
    x_last = as_backend(np.moveaxis(to_numpy(x), 1, -1), backend, case.dtype)
    y_last = multiconv.batch_conv(x_last, w, bias, **{**case.kwargs(), "layout": "channels_last"})
    bound = 2 * error_bound(x, w, bias, dtype=case.dtype, **case.kwargs())
    assert_conv_close(np.moveaxis(to_numpy(y_last), -1, 1), y, bound=bound)


def framework_conv(case: ConvCase, backend: str, x: Any, w: Any) -> Any:
    """The framework's own convolution of ``x`` with one shared weight (channels-first)."""
    pads = resolve_padding(case)
    stride, dilation = case.kwargs()["stride"], case.kwargs()["dilation"]
    if backend == "torch":
        torch = importlib.import_module("torch")
        functional = importlib.import_module("torch.nn.functional")
        flat = [side for pair in reversed(pads) for side in pair]
        mode = "constant" if case.padding_mode == "zeros" else case.padding_mode
        xp = functional.pad(x, flat, mode=mode)
        weight = torch.flip(w, tuple(range(-case.ndim, 0))) if case.flip else w
        conv = getattr(functional, f"conv{case.ndim}d")
        return conv(xp, weight, None, stride, 0, dilation, case.groups)
    jnp = importlib.import_module("jax.numpy")
    lax = importlib.import_module("jax.lax")
    modes = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    xp = jnp.pad(x, ((0, 0), (0, 0), *pads), mode=modes[case.padding_mode])
    weight = jnp.flip(w, tuple(range(-case.ndim, 0))) if case.flip else w
    strides = stride if isinstance(stride, tuple) else (stride,) * case.ndim
    dilations = dilation if isinstance(dilation, tuple) else (dilation,) * case.ndim
    spatial = "DHW"[-case.ndim :]
    numbers = (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}")
    return lax.conv_general_dilated(
        xp, weight, strides, [(0, 0)] * case.ndim, rhs_dilation=dilations, dimension_numbers=numbers, feature_group_count=case.groups
    )


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
@trouble_spots
@given(case=conv_cases(dtypes=("float64",), weight_kinds=("shared",), layouts=("channels_first",)))
def test_shared_weight_is_the_framework_conv(backend: str, case: ConvCase) -> None:
    case = dataclasses.replace(case, weight_kind="shared", layout="channels_first", bias_kind="none", dtype="float64")
    if case.batch == 0:
        return
    x, w, _ = inputs(case, backend)
    y = multiconv.batch_conv(x, w, **case.kwargs())
    expected = to_numpy(framework_conv(case, backend, x, w))
    assert_conv_close(to_numpy(y), expected, bound=2 * error_bound(x, w, dtype="float64", **case.kwargs()))


def strided_layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """Views of ``a``'s values in other memory layouts."""
    padded = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
    padded[..., ::2] = a
    reversed_ = a[::-1].copy()[::-1]
    readonly = a.copy()
    readonly.flags.writeable = False
    return {"fortran": np.asfortranarray(a), "strided": padded[..., ::2], "negative": reversed_, "readonly": readonly}


@pytest.mark.skipif("numpy" not in BACKENDS, reason="NumPy backend not requested")
@trouble_spots
@given(case=conv_cases(dtypes=WIDE_DTYPES))
def test_numpy_memory_layouts_match_contiguous(case: ConvCase) -> None:
    x, w, bias = inputs(case, "numpy")
    expected = multiconv.batch_conv(x, w, bias, **case.kwargs())
    for (name, xv), wv in zip(strided_layouts(x).items(), strided_layouts(w).values(), strict=True):
        before = (xv.copy(), wv.copy())
        y = multiconv.batch_conv(xv, wv, bias, **case.kwargs())
        np.testing.assert_array_equal(y, expected, err_msg=f"layout {name}")
        np.testing.assert_array_equal(xv, before[0])
        np.testing.assert_array_equal(wv, before[1])


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@trouble_spots
@given(case=conv_cases(dtypes=WIDE_DTYPES))
def test_jax_jit_equals_eager(case: ConvCase) -> None:
    jax = importlib.import_module("jax")
    x, w, bias = inputs(case, "jax")
    eager = multiconv.batch_conv(x, w, bias, **case.kwargs())
    jitted = jax.jit(lambda x, w, bias: multiconv.batch_conv(x, w, bias, **case.kwargs()))(x, w, bias)
    assert_conv_close(jitted, to_numpy(eager), bound=2 * error_bound(x, w, bias, dtype=case.dtype, **case.kwargs()), like=x)


def test_reference_is_independent_of_the_library() -> None:
    """The oracle must not share code with what it checks."""
    source = importlib.import_module("multiconv.testing").__file__
    assert source is not None
    text = Path(source).read_text(encoding="utf-8")
    for forbidden in ("multiconv._spec", "multiconv.backends", "multiconv._api", "from multiconv", "sliding_window_view"):
        assert forbidden not in text, forbidden
    assert reference_conv is not None
