"""Dtypes, array types, devices and memory: what the result is made of.

The contract (arrays, dtypes, devices): the result has the array type, dtype and
device of ``x``; half precision accumulates in float32 and keeps its dtype;
``backend=`` computes elsewhere and hands the result back as ``x``'s type; integer
and bool arrays raise a ``TypeError`` that says to cast; ``B == 0`` gives an empty
result; the result is never a view of an input and inputs are never modified.
Torch and JAX are only imported when ``MULTICONV_TEST_BACKENDS`` requests them.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
from typing import Any

import numpy as np
import pytest
from conformance.strategies import BACKEND_DTYPES, ConvCase
from support import BACKENDS, as_backend, dtype_name, to_numpy

import multiconv
from multiconv.testing import assert_conv_close, assert_matches_reference, error_bound, reference_conv

torch: Any = importlib.import_module("torch") if "torch" in BACKENDS else None
jax: Any = importlib.import_module("jax") if "jax" in BACKENDS else None

#: Small cases with a per-sample weight and a per-sample bias, 1-D to 3-D, both layouts.
SMALL_CASES = {
    "1d": ConvCase(batch=2, groups=1, group_in=2, group_out=3, in_size=(9,), kernel=(3,), padding=1, bias_kind="per_sample"),
    "2d": ConvCase(
        batch=2, groups=2, group_in=1, group_out=2, in_size=(5, 6), kernel=(3, 2), stride=(1, 2), dilation=(2, 1), bias_kind="per_sample"
    ),
    "3d": ConvCase(batch=2, groups=1, group_in=2, group_out=2, in_size=(4, 3, 5), kernel=(2, 2, 3), padding="same", bias_kind="per_sample"),
    "1d-last-reflect": ConvCase(
        batch=3,
        groups=1,
        group_in=2,
        group_out=2,
        in_size=(8,),
        kernel=(4,),
        padding="same",
        padding_mode="reflect",
        layout="channels_last",
        bias_kind="per_sample",
    ),
    "2d-last-circular": ConvCase(
        batch=2,
        groups=2,
        group_in=2,
        group_out=1,
        in_size=(5, 4),
        kernel=(3, 3),
        padding=((2, 1), (1, 1)),
        padding_mode="circular",
        layout="channels_last",
        flip=True,
        bias_kind="per_sample",
    ),
    "3d-last-replicate": ConvCase(
        batch=2,
        groups=1,
        group_in=1,
        group_out=2,
        in_size=(3, 4, 3),
        kernel=(2, 3, 2),
        padding=1,
        padding_mode="replicate",
        layout="channels_last",
        bias_kind="per_sample",
    ),
}

#: Each new (case, dtype) costs JAX a compilation: 1-D to 3-D and one channels-last case with a padding mode.
EVERY_DTYPE_CASES = {name: SMALL_CASES[name] for name in ("1d", "2d", "3d", "2d-last-circular")}

BACKEND_DTYPE_PAIRS = [(backend, dtype) for backend in BACKENDS for dtype in BACKEND_DTYPES[backend]]
HALF_PAIRS = [(backend, dtype) for backend, dtype in BACKEND_DTYPE_PAIRS if dtype in ("float16", "bfloat16")]
ORDERED_PAIRS = list(itertools.product(BACKENDS, repeat=2))
OTHER_PAIRS = [(source, target) for source, target in ORDERED_PAIRS if source != target]


def inputs(case: ConvCase, backend: str, dtype: str | None = None) -> tuple[Any, Any, Any]:
    """``case``'s random arrays as ``backend`` arrays of ``dtype`` (default: the case's)."""
    dtype = dtype or case.dtype
    x, w, bias = dataclasses.replace(case, dtype=dtype).arrays()
    return as_backend(x, backend, dtype), as_backend(w, backend, dtype), as_backend(bias, backend, dtype)


def host_copy(a: Any) -> np.ndarray | None:
    """A host copy of ``a``'s values that keeps its dtype where NumPy has it."""
    if a is None:
        return None
    if torch is not None and isinstance(a, torch.Tensor):
        return to_numpy(a)
    return np.array(a, copy=True)


def assert_unchanged(before: list[np.ndarray | None], after: list[Any]) -> None:
    for old, new in zip(before, after, strict=True):
        if old is None:
            assert new is None
            continue
        np.testing.assert_array_equal(host_copy(new), old)


# ------------------------------------------------------------------- every dtype


@pytest.mark.parametrize("case", EVERY_DTYPE_CASES.values(), ids=EVERY_DTYPE_CASES.keys())
@pytest.mark.parametrize(("backend", "dtype"), BACKEND_DTYPE_PAIRS)
def test_every_dtype_matches_reference(backend: str, dtype: str, case: ConvCase) -> None:
    x, w, bias = inputs(case, backend, dtype)
    y = multiconv.batch_conv(x, w, bias, **case.kwargs())
    # Checks array type, device and dtype of x, the shape, then the values within the contract bound.
    assert_matches_reference(y, x, w, bias, **case.kwargs())


@pytest.mark.parametrize(("backend", "dtype"), BACKEND_DTYPE_PAIRS)
@pytest.mark.parametrize("weight_kind", ["broadcast", "shared"])
def test_every_dtype_with_broadcast_and_shared_weight(backend: str, dtype: str, weight_kind: str) -> None:
    case = dataclasses.replace(SMALL_CASES["2d"], weight_kind=weight_kind, bias_kind="shared")
    x, w, bias = inputs(case, backend, dtype)
    y = multiconv.batch_conv(x, w, bias, **case.kwargs())
    assert_matches_reference(y, x, w, bias, **case.kwargs())


# ------------------------------------------------------------ half accumulation

#: Ones of length n convolved with ones of length n give n.  Accumulated in half
#: precision the running sum stalls where adding 1 is no longer exact: at 2048 in
#: float16 (11 significant bits) and at 256 in bfloat16 (8 significant bits).
#: 3000 = 375 * 8 (9 bits) is exact in float16 and 600 = 75 * 8 (7 bits) in bfloat16.
HALF_LENGTH = {"float16": 3000, "bfloat16": 600}


def ones_case(backend: str, dtype: str) -> tuple[Any, Any]:
    n = HALF_LENGTH[dtype]
    return as_backend(np.ones((1, 1, n)), backend, dtype), as_backend(np.ones((1, 1, 1, n)), backend, dtype)


@pytest.mark.parametrize(("backend", "dtype"), HALF_PAIRS)
def test_half_precision_accumulates_in_float32(backend: str, dtype: str) -> None:
    x, w = ones_case(backend, dtype)
    y = multiconv.batch_conv(x, w)
    assert type(y) is type(x)
    assert dtype_name(y) == dtype
    assert tuple(y.shape) == (1, 1, 1)
    assert to_numpy(y).item() == HALF_LENGTH[dtype]


@pytest.mark.parametrize("target", BACKENDS)
@pytest.mark.parametrize(("backend", "dtype"), HALF_PAIRS)
def test_half_precision_with_backend_override(backend: str, dtype: str, target: str) -> None:
    x, w = ones_case(backend, dtype)
    y = multiconv.batch_conv(x, w, backend=target)
    assert type(y) is type(x)
    assert dtype_name(y) == dtype
    assert to_numpy(y).item() == HALF_LENGTH[dtype]


@pytest.mark.parametrize(("backend", "dtype"), HALF_PAIRS)
def test_half_precision_with_bias_and_backend_override_matches_reference(backend: str, dtype: str) -> None:
    case = SMALL_CASES["2d-last-circular"]
    x, w, bias = inputs(case, backend, dtype)
    for target in BACKENDS:
        y = multiconv.batch_conv(x, w, bias, backend=target, **case.kwargs())
        assert_matches_reference(y, x, w, bias, **case.kwargs())


@pytest.mark.parametrize("method", list(importlib.import_module("multiconv.backends.numpy").METHODS))
@pytest.mark.parametrize(("backend", "dtype"), HALF_PAIRS)
def test_every_numpy_engine_computes_half_precision_of_any_framework(backend: str, dtype: str, method: str) -> None:
    """A bfloat16 array from JAX or PyTorch reaches NumPy as ``ml_dtypes.bfloat16`` (kind ``"V"``, which einsum rejects)."""
    case = SMALL_CASES["2d-last-circular"]
    x, w, bias = inputs(case, backend, dtype)
    y = multiconv.batch_conv(x, w, bias, backend="numpy", method=method, **case.kwargs())
    assert dtype_name(y) == dtype
    assert_matches_reference(y, x, w, bias, **case.kwargs())


# ------------------------------------------------------------- backend override


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
@pytest.mark.parametrize(("source", "target"), ORDERED_PAIRS)
def test_backend_override_returns_the_input_array_type(source: str, target: str, dtype: str) -> None:
    for case in (SMALL_CASES["1d"], SMALL_CASES["2d-last-circular"], SMALL_CASES["3d"]):
        x, w, bias = inputs(case, source, dtype)
        y = multiconv.batch_conv(x, w, bias, backend=target, **case.kwargs())
        assert_matches_reference(y, x, w, bias, **case.kwargs())


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("source", [b for b in BACKENDS if b != "jax"])
def test_jax_backend_keeps_64_bit_inputs_without_global_x64(source: str, dtype: str) -> None:
    """With x64 off (JAX's default) 64-bit inputs must not come back truncated to 32 bits."""
    case = SMALL_CASES["2d"]
    x, w, bias = inputs(case, source, dtype)
    with jax.enable_x64(False):  # noqa: FBT003
        y = multiconv.batch_conv(x, w, bias, backend="jax", **case.kwargs())
    assert jax.config.jax_enable_x64, "the conftest's x64 setting must be restored"
    assert_matches_reference(y, x, w, bias, **case.kwargs())


# ---------------------------------------------- integer and bool dtypes, empty batch


@pytest.mark.parametrize("which", ["all", "x", "w", "bias"])
@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "bool"])
def test_integer_and_bool_dtypes_say_cast(backend: str, dtype: str, which: str) -> None:
    case = SMALL_CASES["1d"]
    names = ("x", "w", "bias")
    x, w, bias = (
        as_backend(a, backend, dtype if which in ("all", name) else "float32") for a, name in zip(case.arrays(), names, strict=True)
    )
    # The message says to cast and names the offending dtype.
    with pytest.raises(TypeError, match=f"(?s)(?=.*cast)(?=.*{dtype})"):
        multiconv.batch_conv(x, w, bias, **case.kwargs())


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
@pytest.mark.parametrize("weight_kind", ["per_sample", "broadcast", "shared"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_empty_batch_gives_empty_result(backend: str, ndim: int, weight_kind: str, dtype: str) -> None:
    in_size, kernel = {1: ((7,), (3,)), 2: ((5, 4), (3, 2)), 3: ((4, 3, 3), (2, 2, 3))}[ndim]
    bias_kind = "per_sample" if weight_kind == "per_sample" else "shared"
    case = ConvCase(
        batch=0,
        groups=2,
        group_in=1,
        group_out=2,
        in_size=in_size,
        kernel=kernel,
        stride=2,
        padding=1,
        weight_kind=weight_kind,
        bias_kind=bias_kind,
    )
    x, w, bias = inputs(case, backend, dtype)
    y = multiconv.batch_conv(x, w, bias, **case.kwargs())
    out_size = tuple((n + 2 - k) // 2 + 1 for n, k in zip(in_size, kernel, strict=True))
    assert tuple(y.shape) == (0, 4, *out_size)
    assert type(y) is type(x)
    assert dtype_name(y) == dtype
    assert_matches_reference(y, x, w, bias, **case.kwargs())


# ---------------------------------------------------------------- memory safety

#: Cases where a lazy implementation could hand back (a view of) an input.
MEMORY_CASES = {
    "kernel-1-valid": ConvCase(batch=2, groups=1, group_in=1, group_out=1, in_size=(6,), kernel=(1,), padding="valid"),
    "kernel-1-depthwise-last": ConvCase(
        batch=2, groups=3, group_in=1, group_out=1, in_size=(4, 3), kernel=(1, 1), layout="channels_last", bias_kind="shared"
    ),
    "broadcast-weight": ConvCase(
        batch=3, groups=1, group_in=2, group_out=2, in_size=(5,), kernel=(1,), weight_kind="broadcast", bias_kind="broadcast"
    ),
    "shared-weight": ConvCase(batch=2, groups=1, group_in=1, group_out=1, in_size=(3, 3), kernel=(1, 1), weight_kind="shared"),
    "padded": SMALL_CASES["1d-last-reflect"],
}


def assert_no_shared_memory(y: Any, arrays: list[Any]) -> None:
    for a in arrays:
        if a is None:
            continue
        if isinstance(y, np.ndarray):
            assert not np.shares_memory(y, a)
        elif torch is not None and isinstance(y, torch.Tensor):
            assert y.untyped_storage().data_ptr() != a.untyped_storage().data_ptr()
        else:  # JAX arrays are immutable, but a result should still be its own buffer
            assert y.unsafe_buffer_pointer() != a.unsafe_buffer_pointer()


@pytest.mark.parametrize("dtype", ["float16", "float64"])
@pytest.mark.parametrize("case", MEMORY_CASES.values(), ids=MEMORY_CASES.keys())
@pytest.mark.parametrize(("source", "target"), ORDERED_PAIRS)
def test_result_never_shares_memory_and_inputs_are_unchanged(source: str, target: str, case: ConvCase, dtype: str) -> None:
    x, w, bias = inputs(case, source, dtype)
    if case.group_in == case.group_out == 1:
        # An identity kernel makes "return x" (or a view of it) a plausible wrong answer.
        w = as_backend(np.ones(case.w_shape), source, dtype)
    before = [host_copy(a) for a in (x, w, bias)]
    y = multiconv.batch_conv(x, w, bias, backend=target, **case.kwargs())
    assert_no_shared_memory(y, [x, w, bias])
    assert_unchanged(before, [x, w, bias])
    assert_matches_reference(y, x, w, bias, **case.kwargs())


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_numpy_inputs_beside_a_framework_array_are_unchanged(backend: str) -> None:
    case = MEMORY_CASES["broadcast-weight"]
    x, w, bias = case.arrays()
    assert bias is not None
    before: list[np.ndarray | None] = [x.copy(), bias.copy()]
    # Typed as x's type, but a NumPy x beside a framework's w gives that framework's array.
    y: Any = multiconv.batch_conv(x, as_backend(w, backend), bias, **case.kwargs())
    assert not isinstance(y, np.ndarray)
    if backend == "torch":
        assert_no_shared_memory(y, [torch.from_numpy(x), torch.from_numpy(bias)])
    assert_unchanged(before, [x, bias])


# ----------------------------------------------------------------- mixed inputs


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
@pytest.mark.parametrize("framework_args", ["x", "w", "w,bias"])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"])
def test_numpy_arrays_join_the_framework(backend: str, framework_args: str, dtype: str) -> None:
    case = SMALL_CASES["2d-last-circular"]
    arrays = dict(zip(("x", "w", "bias"), dataclasses.replace(case, dtype=dtype).arrays(), strict=True))
    on = {name: backend if name in framework_args.split(",") else "numpy" for name in arrays}
    x, w, bias = (as_backend(arrays[name], on[name], dtype) for name in ("x", "w", "bias"))
    like = next(a for a in (x, w, bias) if not isinstance(a, np.ndarray))
    y = multiconv.batch_conv(x, w, bias, **case.kwargs())
    expected = reference_conv(x, w, bias, **case.kwargs())
    bound = error_bound(x, w, bias, dtype=dtype, **case.kwargs())
    # The framework's array type and device, x's dtype.
    assert_conv_close(y, expected, bound=bound, like=like, dtype=dtype)
