"""Tests of ``multiconv.testing``: the float64 oracle and the comparison helpers.

The oracle is checked only against facts that do not come from it: NumPy's 1-D
``correlate``/``convolve``, einsum, explicit index-based padding, PyTorch's
``F.conv*d`` and JAX's ``lax.conv_general_dilated``.  Its VJP is checked against
the linearity of the convolution in each argument, central differences, PyTorch
autograd and ``jax.vjp``.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import BACKENDS

import multiconv.testing as mt
from multiconv.testing import (
    assert_conv_close,
    assert_matches_reference,
    error_bound,
    reference_conv,
    reference_conv_vjp,
)

MODULE_PATH = Path(__file__).resolve().parents[1] / "multiconv" / "testing.py"


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _requested(name: str) -> Any:
    """The framework module, or a skip when MULTICONV_TEST_BACKENDS does not ask for it."""
    if name not in BACKENDS:
        pytest.skip(f"{name} backend not requested (MULTICONV_TEST_BACKENDS)")
    return importlib.import_module(name)


def _torch() -> Any:
    return _requested("torch")


def _jax() -> Any:
    return _requested("jax")


# ------------------------------------------------------------------ module hygiene


def test_public_names() -> None:
    assert sorted(mt.__all__) == [
        "assert_conv_close",
        "assert_matches_reference",
        "error_bound",
        "reference_conv",
        "reference_conv_vjp",
    ]


def test_doctests_pass() -> None:
    result = doctest.testmod(mt, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0


def test_imports_only_numpy_and_stdlib() -> None:
    tree = ast.parse(MODULE_PATH.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import: the oracle must not use multiconv"
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"__future__", "itertools", "math", "sys", "typing", "numpy", "collections"}


def test_loading_does_not_import_frameworks() -> None:
    code = f"""
import importlib.util, sys
import numpy as np
spec = importlib.util.spec_from_file_location("oracle", {str(MODULE_PATH)!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
x = np.ones((2, 3, 8)); w = np.ones((2, 4, 3, 3))
y = mod.reference_conv(x, w, padding="same")
mod.assert_matches_reference(y, x, w, padding="same")
gx, gw, gb = mod.reference_conv_vjp(x, w, grad_y=y, padding="same", padding_mode="reflect")
assert gx.shape == x.shape and gw.shape == w.shape and gb is None
bad = sorted(m for m in ("torch", "jax", "multiconv") if m in sys.modules)
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ------------------------------------------------------------- reference: 1-D facts


@pytest.mark.parametrize("mode", ["valid", "full", "same"])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("flip", [False, True])
def test_1d_matches_numpy_correlate_and_convolve(mode: Literal["valid", "full", "same"], k: int, flip: bool) -> None:
    rng = _rng(k)
    a, v = rng.standard_normal(11), rng.standard_normal(k)
    y = reference_conv(a[None, None], v[None, None, None], padding=mode, flip=flip)
    want = np.convolve(a, v, mode) if flip else np.correlate(a, v, mode)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0, 0], want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(("stride", "dilation"), [(1, 1), (2, 1), (1, 3), (3, 2)])
@pytest.mark.parametrize("padding", [0, 2, (1, 3), "causal"])
def test_1d_scalar_loop(stride: int, dilation: int, padding: Any) -> None:
    rng = _rng(1)
    a, v = rng.standard_normal(13), rng.standard_normal(3)
    lo, hi = {0: (0, 0), 2: (2, 2), (1, 3): (1, 3), "causal": (2 * dilation, 0)}[padding]
    ap = np.concatenate([np.zeros(lo), a, np.zeros(hi)])
    extent = dilation * 2 + 1
    want = [sum(v[j] * ap[t * stride + j * dilation] for j in range(3)) for t in range((len(ap) - extent) // stride + 1)]
    pad = (padding,) if isinstance(padding, tuple) else padding
    y = reference_conv(a[None, None], v[None, None, None], stride=stride, dilation=dilation, padding=pad)
    np.testing.assert_allclose(y[0, 0], want, rtol=1e-13, atol=1e-13)


def test_causal_output_depends_only_on_the_past() -> None:
    rng = _rng(2)
    x, w = rng.standard_normal((2, 3, 20)), rng.standard_normal((2, 4, 3, 4))
    y = reference_conv(x, w, padding="causal", dilation=2)
    assert y.shape == (2, 4, 20)
    x2 = x.copy()
    x2[..., 12:] += 1.0
    y2 = reference_conv(x2, w, padding="causal", dilation=2)
    np.testing.assert_array_equal(y[..., :12], y2[..., :12])
    assert not np.allclose(y[..., 12], y2[..., 12])


@pytest.mark.parametrize(("length", "stride", "k"), [(10, 2, 3), (11, 2, 4), (9, 3, 2), (7, 4, 5)])
def test_same_output_length_and_split(length: int, stride: int, k: int) -> None:
    x, w = np.ones((1, 1, length)), np.ones((1, 1, k))
    y = reference_conv(x, w, padding="same", stride=stride)
    assert y.shape == (1, 1, -(-length // stride))
    out = -(-length // stride)
    total = max((out - 1) * stride + k - length, 0)
    explicit = reference_conv(x, w, padding=((total // 2, total - total // 2),), stride=stride)
    np.testing.assert_array_equal(y, explicit)


# ----------------------------------------------------------- reference: other facts


@pytest.mark.parametrize("stride", [1, 2])
def test_kernel_size_one_is_an_einsum(stride: int) -> None:
    rng = _rng(3)
    x, w = rng.standard_normal((3, 4, 5, 6)), rng.standard_normal((3, 2, 4, 1, 1))
    y = reference_conv(x, w, stride=stride)
    want = np.einsum("boc,bcij->boij", w[..., 0, 0], x[:, :, ::stride, ::stride])
    np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-13)


def test_per_sample_weights_equal_a_loop_of_shared_calls() -> None:
    rng = _rng(4)
    x, w = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((3, 6, 2, 3, 2))
    bias = rng.standard_normal((3, 6))
    kwargs: dict[str, Any] = {"stride": (2, 1), "dilation": (1, 2), "groups": 2, "padding": "same"}
    y = reference_conv(x, w, bias, **kwargs)
    for b in range(3):
        yb = reference_conv(x[b : b + 1], w[b], bias[b], **kwargs)
        np.testing.assert_allclose(y[b : b + 1], yb, rtol=1e-14, atol=1e-14)
    # a leading weight dim of 1 broadcasts, like a shared weight
    np.testing.assert_array_equal(reference_conv(x, w[:1], bias[0], **kwargs), reference_conv(x, w[0], bias[:1], **kwargs))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_channels_last_is_channels_first_transposed(n: int) -> None:
    rng = _rng(5)
    x = rng.standard_normal((2, 3, *([6] * n)))
    w, bias = rng.standard_normal((2, 4, 3, *([2] * n))), rng.standard_normal(4)
    first = reference_conv(x, w, bias, padding=1, stride=2)
    last = reference_conv(np.moveaxis(x, 1, -1), w, bias, padding=1, stride=2, layout="channels_last")
    np.testing.assert_array_equal(last, np.moveaxis(first, 1, -1))


# index maps for padding a length-5 axis by (2, 1); -1 marks a zero
_HAND_PADDED = {
    "zeros": [-1, -1, 0, 1, 2, 3, 4, -1],
    "reflect": [2, 1, 0, 1, 2, 3, 4, 3],
    "replicate": [0, 0, 0, 1, 2, 3, 4, 4],
    "circular": [3, 4, 0, 1, 2, 3, 4, 0],
}


def _hand_pad(x: np.ndarray, index: list[int], axis: int) -> np.ndarray:
    out = np.take(x, [max(i, 0) for i in index], axis=axis)
    mask = np.array([i < 0 for i in index])
    shape = [1] * x.ndim
    shape[axis] = len(index)
    return np.where(mask.reshape(shape), 0.0, out)


@pytest.mark.parametrize("mode", list(_HAND_PADDED))
def test_padding_modes_match_a_hand_padded_input(mode: str) -> None:
    rng = _rng(6)
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 2, 3, 3, 2))
    index = _HAND_PADDED[mode]
    xpad = _hand_pad(_hand_pad(x, index, 2), index, 3)
    y = reference_conv(x, w, padding=((2, 1), (2, 1)), padding_mode=mode)
    np.testing.assert_allclose(y, reference_conv(xpad, w, padding=0), rtol=1e-14, atol=1e-14)


_TORCH_CASES = [
    # n, stride, dilation, groups, padding (symmetric, per axis), padding_mode
    (1, 1, 1, 1, 0, "zeros"),
    (1, 2, 3, 2, 2, "reflect"),
    (1, 3, 1, 4, 1, "circular"),
    (2, (2, 1), (1, 2), 1, (1, 2), "replicate"),
    (2, 1, 2, 2, 2, "reflect"),
    (2, 2, 1, 4, (0, 1), "circular"),
    (3, 1, 1, 1, 1, "zeros"),
    (3, (1, 2, 2), (2, 1, 1), 2, (2, 1, 1), "replicate"),
    (3, 2, 1, 4, 1, "reflect"),
    (3, 1, (1, 1, 2), 1, (0, 1, 2), "circular"),
]


@pytest.mark.parametrize("case", _TORCH_CASES)
def test_matches_torch_conv(case: tuple[Any, ...]) -> None:
    n, stride, dilation, groups, padding, mode = case
    torch = _torch()
    functional = torch.nn.functional
    gen = torch.Generator().manual_seed(n * 100 + groups)
    x = torch.randn(2, 8, *([7] * n), generator=gen, dtype=torch.float64)
    w = torch.randn(4, 8 // groups, *([3] * n), generator=gen, dtype=torch.float64)
    bias = torch.randn(4, generator=gen, dtype=torch.float64)
    pads = (padding,) * n if isinstance(padding, int) else padding
    torch_pad = [p for q in reversed(pads) for p in (q, q)]
    torch_mode = {"zeros": "constant"}.get(mode, mode)
    conv = getattr(functional, f"conv{n}d")
    want = conv(functional.pad(x, torch_pad, mode=torch_mode), w, bias, stride, 0, dilation, groups)
    y = reference_conv(x, w, bias, stride=stride, dilation=dilation, groups=groups, padding=padding, padding_mode=mode)
    assert isinstance(y, np.ndarray)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize(("k", "dilation"), [(3, 1), (4, 1), (2, 3), (5, 2)])
def test_same_equals_torch_same_at_stride_one(k: int, dilation: int) -> None:
    torch = _torch()
    gen = torch.Generator().manual_seed(k)
    x = torch.randn(2, 3, 10, 9, generator=gen, dtype=torch.float64)
    w = torch.randn(2, 3, k, k, generator=gen, dtype=torch.float64)
    want = torch.nn.functional.conv2d(x, w, padding="same", dilation=dilation)
    y = reference_conv(x, w, padding="same", dilation=dilation)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_equals_jax_same_with_stride(stride: int) -> None:
    jax = _jax()
    rng = _rng(7)
    x = rng.standard_normal((2, 3, 10, 11)).astype(np.float32)
    w = rng.standard_normal((4, 3, 4, 3)).astype(np.float32)
    want = jax.lax.conv_general_dilated(x, w, (stride, stride), "SAME")
    y = reference_conv(x, w, padding="same", stride=stride)
    np.testing.assert_allclose(y, np.asarray(want), rtol=1e-4, atol=1e-4)


@settings(max_examples=40, deadline=None, database=None)
@given(
    st.fixed_dictionaries(
        {
            "n": st.integers(1, 3),
            "batch": st.integers(1, 3),
            "groups": st.sampled_from([1, 2]),
            "k": st.integers(1, 3),
            "stride": st.integers(1, 3),
            "dilation": st.integers(1, 2),
            "padding": st.integers(0, 2),
            "flip": st.booleans(),
            "seed": st.integers(0, 2**16),
        }
    )
)
def test_per_sample_matches_torch_per_sample_loop(cfg: dict[str, Any]) -> None:
    n, batch, groups, k = cfg["n"], cfg["batch"], cfg["groups"], cfg["k"]
    stride, dilation, padding, flip, seed = cfg["stride"], cfg["dilation"], cfg["padding"], cfg["flip"], cfg["seed"]
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, *([6] * n), generator=gen, dtype=torch.float64)
    w = torch.randn(batch, 2, 4 // groups, *([k] * n), generator=gen, dtype=torch.float64)
    bias = torch.randn(batch, 2, generator=gen, dtype=torch.float64)
    conv = getattr(torch.nn.functional, f"conv{n}d")
    wk = w.flip(list(range(3, 3 + n))) if flip else w
    want = torch.cat([conv(x[b : b + 1], wk[b], bias[b], stride, padding, dilation, groups) for b in range(batch)])
    y = reference_conv(x, w, bias, stride=stride, dilation=dilation, padding=padding, groups=groups, flip=flip)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-12, atol=1e-12)


def test_depthwise() -> None:
    rng = _rng(8)
    x, w = rng.standard_normal((3, 4, 12)), rng.standard_normal((3, 4, 1, 3))
    y = reference_conv(x, w, groups=4)
    assert y.shape == (3, 4, 10)
    for b in range(3):
        for c in range(4):
            np.testing.assert_allclose(y[b, c], np.correlate(x[b, c], w[b, c, 0]), rtol=1e-13)


def test_depthwise_channel_multiplier() -> None:
    rng = _rng(9)
    x, w = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 6, 1, 2))
    y = reference_conv(x, w, groups=3)
    for b in range(2):
        for o in range(6):
            np.testing.assert_allclose(y[b, o], np.correlate(x[b, o // 2], w[b, o, 0]), rtol=1e-13)


@pytest.mark.parametrize("w_batch", [0, 1, None])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_empty_batch(w_batch: int | None, layout: str) -> None:
    x = np.ones((0, 7, 2)) if layout == "channels_last" else np.ones((0, 2, 7))
    w = np.ones((3, 2, 3)) if w_batch is None else np.ones((w_batch, 3, 2, 3))
    y = reference_conv(x, w, np.ones(3), layout=layout)
    assert y.shape == ((0, 5, 3) if layout == "channels_last" else (0, 3, 5))
    assert y.dtype == np.float64


def test_complex_is_bilinear_without_conjugation() -> None:
    rng = _rng(10)
    xr, xi = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal((2, 2, 6, 5))
    wr, wi = rng.standard_normal((2, 3, 2, 3, 2)), rng.standard_normal((2, 3, 2, 3, 2))
    br, bi = rng.standard_normal(3), rng.standard_normal(3)
    y = reference_conv(xr + 1j * xi, wr + 1j * wi, br + 1j * bi, padding=1)
    real = reference_conv(xr, wr, br, padding=1) - reference_conv(xi, wi, padding=1)
    imag = reference_conv(xr, wi, bi, padding=1) + reference_conv(xi, wr, padding=1)
    assert y.dtype == np.complex128
    np.testing.assert_allclose(y, real + 1j * imag, rtol=1e-13, atol=1e-13)
    # one complex input is enough to compute in complex
    assert reference_conv(xr, wr + 1j * wi).dtype == np.complex128


def test_inputs_are_not_modified_and_result_is_not_a_view() -> None:
    x, w, b = np.ones((1, 1, 4)), np.ones((1, 1, 1, 1)), np.zeros(1)
    copies = [a.copy() for a in (x, w, b)]
    y = reference_conv(x, w, b)
    y += 5
    for a, c in zip((x, w, b), copies, strict=True):
        np.testing.assert_array_equal(a, c)


def test_accepts_torch_tensors_including_bfloat16_and_grad() -> None:
    torch = _torch()
    x = torch.arange(6.0, dtype=torch.bfloat16).reshape(1, 1, 6)
    w = torch.ones(1, 1, 1, 2, dtype=torch.bfloat16, requires_grad=True)
    y = reference_conv(x, w)
    assert isinstance(y, np.ndarray)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[[1.0, 3.0, 5.0, 7.0, 9.0]]])
    xc = torch.complex(torch.ones(1, 1, 3), torch.ones(1, 1, 3)).conj()  # a lazy-conj view
    yc = reference_conv(xc, torch.ones(1, 1, 1, dtype=torch.complex64))
    np.testing.assert_array_equal(yc, [[[1 - 1j] * 3]])


def test_accepts_jax_arrays() -> None:
    _jax()
    import jax.numpy as jnp

    x = jnp.arange(6.0, dtype=jnp.bfloat16).reshape(1, 1, 6)
    y = reference_conv(x, jnp.ones((1, 1, 2), dtype=jnp.bfloat16))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [[[1.0, 3.0, 5.0, 7.0, 9.0]]])


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "bias_shape", "kwargs", "match"),
    [
        ((2, 3), (1, 1, 3), None, {}, "x.shape"),
        ((2, 3, 4, 4, 4, 4), (1, 3, 1, 1, 1, 1), None, {}, "x.shape"),
        ((2, 3, 8), (3, 4, 3, 2), None, {}, "batch dim"),
        ((2, 3, 8), (4, 3), None, {}, "w.shape"),
        ((2, 3, 8), (4, 2, 3), None, {}, "C_in // groups"),
        ((2, 4, 8), (3, 2, 3), None, {"groups": 2}, "groups"),
        ((2, 3, 8), (4, 3, 3), (5,), {}, "bias.shape"),
        ((2, 3, 8), (4, 3, 3), (3, 4), {}, "bias.shape"),
        ((2, 3, 4), (4, 3, 6), None, {}, "effective kernel"),
        ((2, 3, 4), (4, 3, 3), None, {"dilation": 2}, "effective kernel"),
        ((2, 3, 8), (4, 3, 3), None, {"padding": "sideways"}, "padding"),
        ((2, 3, 8), (4, 3, 3), None, {"padding": -1}, "padding"),
        ((2, 3, 8), (4, 3, 3), None, {"padding": (1, 1)}, "padding"),
        ((2, 3, 8), (4, 3, 3), None, {"stride": 0}, "stride"),
        ((2, 3, 8), (4, 3, 3), None, {"dilation": (1, 1)}, "dilation"),
        ((2, 3, 8), (4, 3, 3), None, {"padding_mode": "mirror"}, "padding_mode"),
        ((2, 3, 8), (4, 3, 3), None, {"layout": "NCW"}, "layout"),
    ],
)
def test_inconsistent_arguments_raise_value_error(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None,
    kwargs: dict[str, Any],
    match: str,
) -> None:
    bias = None if bias_shape is None else np.ones(bias_shape)
    with pytest.raises(ValueError, match=match):
        reference_conv(np.ones(x_shape), np.ones(w_shape), bias, **kwargs)


# ----------------------------------------------------------------- reference: vjp


def _dot(a: np.ndarray, b: np.ndarray) -> complex:
    """The bilinear pairing ``sum(a * b)``, without conjugation."""
    return complex(np.sum(a * b))


def _random(rng: np.random.Generator, shape: tuple[int, ...], is_complex: bool) -> np.ndarray:
    values = rng.standard_normal(shape)
    return values + 1j * rng.standard_normal(shape) if is_complex else values


def _weight_shape(kind: str, batch: int, per_sample: tuple[int, ...]) -> tuple[int, ...]:
    return {"per_sample": (batch, *per_sample), "broadcast": (1, *per_sample), "shared": per_sample}[kind]


def _bias_shape(kind: str, batch: int, c_out: int) -> tuple[int, ...] | None:
    return {"none": None, "shared": (c_out,), "per_sample": (batch, c_out), "broadcast": (1, c_out)}[kind]


@st.composite
def _vjp_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Tiny arguments covering every padding form and mode, layout, weight and bias kind."""
    n = draw(st.integers(1, 3))
    per_axis = st.lists(st.integers(1, 2), min_size=n, max_size=n).map(tuple)
    form = draw(st.sampled_from(["int", "ints", "pairs", "valid", "same", "causal", "full"]))
    padding: Any = {
        "int": draw(st.integers(0, 2)),
        "ints": draw(st.lists(st.integers(0, 2), min_size=n, max_size=n).map(tuple)),
        "pairs": draw(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=n, max_size=n).map(tuple)),
    }.get(form, form)
    groups = draw(st.sampled_from([1, 2]))
    return {
        "batch": draw(st.integers(1, 3)),
        "c_in": groups * draw(st.integers(1, 2)),
        "c_out": groups * draw(st.integers(1, 2)),
        "spatial": tuple(draw(st.lists(st.integers(5, 6 if n < 3 else 5), min_size=n, max_size=n))),
        # effective kernel dilation * (K - 1) + 1 <= 5, never longer than the input
        "kernel": tuple(draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))),
        "weight": draw(st.sampled_from(["per_sample", "broadcast", "shared"])),
        "bias": draw(st.sampled_from(["none", "shared", "per_sample", "broadcast"])),
        "complex": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**16)),
        "kwargs": {
            "stride": draw(st.one_of(st.integers(1, 3), st.lists(st.integers(1, 3), min_size=n, max_size=n).map(tuple))),
            "dilation": draw(st.one_of(st.integers(1, 2), per_axis)),
            "padding": padding,
            "groups": groups,
            "padding_mode": draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"])),
            "layout": draw(st.sampled_from(["channels_first", "channels_last"])),
            "flip": draw(st.booleans()),
        },
    }


@settings(deadline=None, database=None)
@given(_vjp_cases())
def test_vjp_is_the_transpose_in_each_argument(case: dict[str, Any]) -> None:
    kwargs = case["kwargs"]
    rng, is_complex = _rng(case["seed"]), case["complex"]
    batch, c_in, c_out, spatial = case["batch"], case["c_in"], case["c_out"], case["spatial"]
    x_shape = (batch, *spatial, c_in) if kwargs["layout"] == "channels_last" else (batch, c_in, *spatial)
    w_shape = _weight_shape(case["weight"], batch, (c_out, c_in // kwargs["groups"], *case["kernel"]))
    b_shape = _bias_shape(case["bias"], batch, c_out)
    x, w = _random(rng, x_shape, is_complex), _random(rng, w_shape, is_complex)
    bias = None if b_shape is None else _random(rng, b_shape, is_complex)
    gy = _random(rng, reference_conv(x, w, **kwargs).shape, is_complex)

    gx, gw, gb = reference_conv_vjp(x, w, bias, grad_y=gy, **kwargs)
    dtype = np.dtype(np.complex128 if is_complex else np.float64)
    assert (gx.shape, gx.dtype, gw.shape, gw.dtype) == (x.shape, dtype, w.shape, dtype)

    # the convolution is linear in x for a fixed w, in w for a fixed x, and in bias:
    # each gradient is the transpose of that linear map, at any other point too
    x2, w2 = _random(rng, x_shape, is_complex), _random(rng, w_shape, is_complex)
    scale = _dot(reference_conv(np.abs(x2) + np.abs(x), np.abs(w2) + np.abs(w), **kwargs), np.abs(gy)).real
    assert abs(_dot(reference_conv(x2, w, **kwargs), gy) - _dot(x2, gx)) <= 1e-12 * scale
    assert abs(_dot(reference_conv(x, w2, **kwargs), gy) - _dot(w2, gw)) <= 1e-12 * scale
    if bias is None:
        assert gb is None
        return
    assert gb is not None
    assert (gb.shape, gb.dtype) == (bias.shape, dtype)
    b2 = _random(rng, bias.shape, is_complex)
    bias_term = reference_conv(np.zeros(x_shape), w, b2, **kwargs)
    bias_scale = _dot(reference_conv(np.zeros(x_shape), np.abs(w), np.abs(b2), **kwargs), np.abs(gy)).real
    assert abs(_dot(bias_term, gy) - _dot(b2, gb)) <= 1e-12 * bias_scale


_FD_CASES = [
    # x shape, w shape, bias shape, kwargs
    ((2, 4, 7), (2, 4, 2, 3), (2, 4), {"stride": 2, "dilation": 2, "groups": 2, "padding": ((3, 1),)}),
    ((1, 5, 4, 2), (1, 2, 1, 2, 3), (2,), {"stride": (1, 2), "groups": 2, "padding": "same", "layout": "channels_last", "flip": True}),
]


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", _FD_CASES)
def test_vjp_matches_central_differences(mode: str, case: tuple[Any, ...]) -> None:
    x_shape, w_shape, b_shape, kwargs = case
    kwargs = {**kwargs, "padding_mode": mode}
    rng = _rng(13)
    inputs = [rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(b_shape)]
    gy = rng.standard_normal(reference_conv(*inputs, **kwargs).shape)
    grads = reference_conv_vjp(*inputs, grad_y=gy, **kwargs)
    h = 1e-3
    for which, grad in enumerate(grads):
        assert grad is not None
        numeric = np.zeros(inputs[which].shape)
        for index in np.ndindex(*numeric.shape):
            values = []
            for step in (h, -h):
                moved = [a.copy() for a in inputs]
                moved[which][index] += step
                values.append(float(np.sum(reference_conv(*moved, **kwargs) * gy)))
            numeric[index] = (values[0] - values[1]) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-8, atol=1e-8)


def _torch_conv(torch: Any, x: Any, w: Any, bias: Any, case: dict[str, Any]) -> Any:
    """The convolution of the contract built from ``F.pad`` and a per-sample loop of ``F.conv*d``."""
    functional = torch.nn.functional
    n, kind, channels_last = case["n"], case["weight"], case["layout"] == "channels_last"
    xc = x.movedim(-1, 1) if channels_last else x
    pads = (case["padding"],) * n if isinstance(case["padding"], int) else case["padding"]
    torch_pad = [p for q in reversed(pads) for p in (q, q)]
    xpad = functional.pad(xc, torch_pad, mode={"zeros": "constant"}.get(case["mode"], case["mode"]))
    wk = w.flip(list(range(w.ndim - n, w.ndim))) if case["flip"] else w
    conv = getattr(functional, f"conv{n}d")
    outs = []
    for b in range(x.shape[0]):
        wb = {"per_sample": wk[b] if kind == "per_sample" else None, "broadcast": wk[0], "shared": wk}[kind]
        bb = None if bias is None else (bias[b] if bias.ndim == 2 and bias.shape[0] == x.shape[0] else bias.reshape(-1))
        outs.append(conv(xpad[b : b + 1], wb, bb, case["stride"], 0, case["dilation"], case["groups"]))
    y = torch.cat(outs)
    return y.movedim(1, -1) if channels_last else y


_AUTODIFF_KEYS = ("n", "c_in", "c_out", "groups", "stride", "dilation", "padding", "mode", "flip", "weight", "bias", "layout")
_AUTODIFF = [
    dict(zip(_AUTODIFF_KEYS, row, strict=True))
    for row in [
        (1, 2, 3, 1, 1, 1, 0, "zeros", False, "per_sample", "per_sample", "channels_first"),
        (1, 4, 2, 2, 2, 2, 2, "reflect", True, "broadcast", "shared", "channels_first"),
        (1, 4, 4, 4, 3, 1, 1, "circular", False, "shared", "broadcast", "channels_last"),
        (2, 2, 3, 1, (2, 1), (1, 2), (1, 2), "replicate", True, "per_sample", "none", "channels_last"),
        (2, 4, 2, 2, 1, 1, 2, "reflect", False, "shared", "shared", "channels_first"),
        (2, 2, 4, 2, 2, 1, (0, 1), "circular", False, "per_sample", "per_sample", "channels_last"),
        (3, 2, 2, 1, 2, 1, 1, "circular", False, "per_sample", "per_sample", "channels_first"),
        (3, 2, 2, 2, 1, (2, 1, 1), (1, 0, 2), "zeros", True, "broadcast", "none", "channels_last"),
    ]
]


def _autodiff_inputs(case: dict[str, Any], is_complex: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    n, batch = case["n"], 2
    rng = _rng(case["n"] * 10 + case["groups"])
    spatial = (5,) * n if n == 3 else (7,) * n
    x_shape = (batch, *spatial, case["c_in"]) if case["layout"] == "channels_last" else (batch, case["c_in"], *spatial)
    w_shape = _weight_shape(case["weight"], batch, (case["c_out"], case["c_in"] // case["groups"], *(3,) * n))
    b_shape = _bias_shape(case["bias"], batch, case["c_out"])
    bias = None if b_shape is None else _random(rng, b_shape, is_complex)
    return _random(rng, x_shape, is_complex), _random(rng, w_shape, is_complex), bias


def _reference_kwargs(case: dict[str, Any]) -> dict[str, Any]:
    return {
        "stride": case["stride"],
        "dilation": case["dilation"],
        "groups": case["groups"],
        "padding": case["padding"],
        "padding_mode": case["mode"],
        "layout": case["layout"],
        "flip": case["flip"],
    }


def _torch_grads(torch: Any, arrays: list[np.ndarray | None], gy: np.ndarray, case: dict[str, Any]) -> list[Any]:
    """The leaves (``requires_grad``) and their ``.grad`` after ``y.backward(gy)``."""
    leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    x, w, bias = leaves
    y = _torch_conv(torch, x, w, bias, case)
    assert tuple(y.shape) == gy.shape
    y.backward(torch.from_numpy(gy))
    return leaves


@pytest.mark.parametrize("case", _AUTODIFF, ids=lambda case: f"{case['n']}d-{case['mode']}-{case['weight']}-{case['bias']}")
def test_vjp_matches_torch_autograd(case: dict[str, Any]) -> None:
    torch = _torch()
    arrays = list(_autodiff_inputs(case))
    kwargs = _reference_kwargs(case)
    gy = _rng(14).standard_normal(reference_conv(*arrays, **kwargs).shape)
    leaves = _torch_grads(torch, arrays, gy, case)
    # the tensors themselves (requiring grad) are accepted
    grads = reference_conv_vjp(*leaves, grad_y=torch.from_numpy(gy), **kwargs)
    for leaf, grad in zip(leaves, grads, strict=True):
        if leaf is None:
            assert grad is None
            continue
        assert grad is not None
        assert grad.dtype == np.float64
        np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [_AUTODIFF[0], _AUTODIFF[2], _AUTODIFF[3]], ids=["1d-zeros", "1d-circular", "2d-replicate"])
def test_vjp_torch_complex_is_the_conjugate_of_the_vjp_of_the_conjugate(case: dict[str, Any]) -> None:
    torch = _torch()
    arrays = list(_autodiff_inputs(case, is_complex=True))
    kwargs = _reference_kwargs(case)
    gy = _random(_rng(15), reference_conv(*arrays, **kwargs).shape, is_complex=True)
    leaves = _torch_grads(torch, arrays, gy, case)
    vjp_of_conj = reference_conv_vjp(*arrays, grad_y=np.conj(gy), **kwargs)
    at_conj = reference_conv_vjp(*[None if a is None else np.conj(a) for a in arrays], grad_y=gy, **kwargs)
    plain = reference_conv_vjp(*arrays, grad_y=gy, **kwargs)
    for which, (leaf, conj_grad, conj_point, grad) in enumerate(zip(leaves, vjp_of_conj, at_conj, plain, strict=True)):
        if leaf is None:
            continue
        assert conj_grad is not None
        assert conj_point is not None
        assert grad is not None
        want = leaf.grad.numpy()
        np.testing.assert_allclose(np.conj(conj_grad), want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(conj_point, want, rtol=1e-12, atol=1e-12)
        if which < 2:  # for x and w the plain VJP is not what autograd returns; for bias its Jacobian is real
            assert not np.allclose(grad, want)


def _jax_conv(jax: Any, x: Any, w: Any, bias: Any, case: dict[str, Any]) -> Any:
    """The convolution of the contract built from ``jnp.pad`` and ``vmap`` of ``lax.conv_general_dilated``."""
    jnp = jax.numpy
    n, channels_last = case["n"], case["layout"] == "channels_last"
    xc = jnp.moveaxis(x, -1, 1) if channels_last else x
    pads = (case["padding"],) * n if isinstance(case["padding"], int) else case["padding"]
    mode = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}[case["mode"]]
    xpad = jnp.pad(xc, [(0, 0), (0, 0), *((p, p) for p in pads)], mode=mode)
    wk = jnp.flip(w, axis=tuple(range(w.ndim - n, w.ndim))) if case["flip"] else w
    wk = wk[None] if case["weight"] == "shared" else wk
    batch = x.shape[0]
    wk = jnp.broadcast_to(wk, (batch, *wk.shape[1:]))
    stride = (case["stride"],) * n if isinstance(case["stride"], int) else case["stride"]
    dilation = (case["dilation"],) * n if isinstance(case["dilation"], int) else case["dilation"]

    def one(xb: Any, wb: Any) -> Any:
        return jax.lax.conv_general_dilated(xb[None], wb, stride, "VALID", rhs_dilation=dilation, feature_group_count=case["groups"])[0]

    y = jax.vmap(one)(xpad, wk)
    if bias is not None:
        c_out = y.shape[1]
        y = y + jnp.broadcast_to(bias, (batch, c_out)).reshape(batch, c_out, *(1,) * n)
    return jnp.moveaxis(y, 1, -1) if channels_last else y


@pytest.mark.parametrize("is_complex", [False, True])
@pytest.mark.parametrize("case", _AUTODIFF, ids=lambda case: f"{case['n']}d-{case['mode']}-{case['weight']}-{case['bias']}")
def test_vjp_matches_jax_vjp(case: dict[str, Any], is_complex: bool) -> None:
    jax = _jax()
    arrays = list(_autodiff_inputs(case, is_complex))
    kwargs = _reference_kwargs(case)
    gy = _random(_rng(16), reference_conv(*arrays, **kwargs).shape, is_complex)
    with jax.enable_x64(new_val=True):
        x, w, bias = (None if a is None else jax.numpy.asarray(a) for a in arrays)
        if bias is None:
            _, pullback = jax.vjp(lambda x, w: _jax_conv(jax, x, w, None, case), x, w)
        else:
            _, pullback = jax.vjp(lambda x, w, b: _jax_conv(jax, x, w, b, case), x, w, bias)
        want = pullback(jax.numpy.asarray(gy))
        # JAX arrays are accepted as inputs
        grads = reference_conv_vjp(x, w, bias, grad_y=jax.numpy.asarray(gy), **kwargs)
    assert (grads[2] is None) == (bias is None)
    for grad, expected in zip(grads, want, strict=False):
        assert grad is not None
        assert grad.dtype == (np.complex128 if is_complex else np.float64)
        np.testing.assert_allclose(grad, np.asarray(expected), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("w_batch", [0, 1, None])
@pytest.mark.parametrize("b_shape", [None, (3,), (0, 3), (1, 3)])
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_vjp_empty_batch(w_batch: int | None, b_shape: tuple[int, ...] | None, layout: str) -> None:
    x = np.ones((0, 7, 2)) if layout == "channels_last" else np.ones((0, 2, 7))
    w = np.ones((3, 2, 3)) if w_batch is None else np.ones((w_batch, 3, 2, 3))
    bias = None if b_shape is None else np.ones(b_shape)
    gy = np.ones((0, 5, 3)) if layout == "channels_last" else np.ones((0, 3, 5))
    gx, gw, gb = reference_conv_vjp(x, w, bias, grad_y=gy, layout=layout, padding_mode="reflect")
    for grad, a in [(gx, x), (gw, w)]:
        assert (grad.shape, grad.dtype) == (a.shape, np.dtype(np.float64))
        assert not grad.any()
    if bias is None:
        assert gb is None
    else:
        assert gb is not None
        assert (gb.shape, gb.dtype) == (bias.shape, np.dtype(np.float64))
        assert not gb.any()


@pytest.mark.parametrize(
    ("gy_shape", "kwargs"),
    [((2, 4, 5), {}), ((2, 4, 4), {"padding": "same"}), ((2, 6, 4), {"layout": "channels_last"}), ((2, 4), {})],
)
def test_vjp_rejects_a_grad_y_of_the_wrong_shape(gy_shape: tuple[int, ...], kwargs: dict[str, Any]) -> None:
    x = np.ones((2, 6, 3)) if kwargs.get("layout") == "channels_last" else np.ones((2, 3, 6))
    with pytest.raises(ValueError, match=r"grad_y\.shape"):
        reference_conv_vjp(x, np.ones((2, 4, 3, 3)), grad_y=np.ones(gy_shape), **kwargs)


def test_vjp_validates_like_reference_conv() -> None:
    x, w, gy = np.ones((2, 3, 8)), np.ones((4, 3, 3)), np.ones((2, 4, 6))
    with pytest.raises(ValueError, match=r"bias\.shape"):
        reference_conv_vjp(x, w, np.ones(5), grad_y=gy)
    with pytest.raises(ValueError, match="effective kernel"):
        reference_conv_vjp(x, w, grad_y=gy, dilation=5)
    with pytest.raises(ValueError, match="padding_mode"):
        reference_conv_vjp(x, w, grad_y=gy, padding_mode="mirror")


# ---------------------------------------------------------------------- error_bound


_EPS = {
    "float16": (2.0**-10, 6.103515625e-05),
    "bfloat16": (2.0**-7, 1.1754943508222875e-38),
    "float32": (2.0**-23, 1.1754943508222875e-38),
    "float64": (2.0**-52, 2.2250738585072014e-308),
}


@pytest.mark.parametrize("name", list(_EPS))
def test_error_bound_uses_the_documented_eps(name: str) -> None:
    eps, tiny = _EPS[name]
    x, w = np.full((1, 1, 1), -2.0), np.full((1, 1, 1), 3.0)
    bound = error_bound(x, w, dtype=name, c=1.0)
    assert bound.dtype == np.float64
    assert bound.shape == (1, 1, 1)
    assert bound[0, 0, 0] == pytest.approx(6 * eps + tiny, rel=1e-12)
    assert eps == pytest.approx(float(np.finfo(name).eps) if name != "bfloat16" else 0.0078125)


@pytest.mark.parametrize(("complex_name", "real_name"), [("complex64", "float32"), ("complex128", "float64")])
def test_error_bound_doubles_for_complex(complex_name: str, real_name: str) -> None:
    x, w = np.ones((1, 1, 1)), np.ones((1, 1, 1))
    real = error_bound(x, w, dtype=real_name)
    np.testing.assert_allclose(error_bound(x, w, dtype=complex_name), 2 * real, rtol=1e-15)


def test_error_bound_counts_terms_and_bias() -> None:
    rng = _rng(11)
    x, w = rng.standard_normal((2, 6, 9)), rng.standard_normal((2, 4, 3, 5))
    bias = rng.standard_normal(4)
    eps = 2.0**-23
    magnitude = reference_conv(np.abs(x), np.abs(w), np.abs(bias), groups=2, padding="same")
    n = 3 * 5 + 1
    want = 4.0 * n * (eps * magnitude + 2.0**-126)
    got = error_bound(x, w, bias, dtype=np.float32, groups=2, padding="same")
    np.testing.assert_allclose(got, want, rtol=1e-14)
    no_bias = error_bound(x, w, dtype="float32", groups=2, padding="same")
    assert no_bias.shape == got.shape
    assert np.all(no_bias < got)


def test_error_bound_accepts_framework_dtypes() -> None:
    torch = _torch()
    jax = _jax()
    x, w = np.ones((1, 1, 2)), np.ones((1, 1, 1))
    for dtype, name in [
        (torch.bfloat16, "bfloat16"),
        (torch.float16, "float16"),
        (torch.complex64, "complex64"),
        (jax.numpy.bfloat16, "bfloat16"),
        (jax.numpy.float32, "float32"),
        (np.dtype("float64"), "float64"),
        (np.float16, "float16"),
    ]:
        np.testing.assert_array_equal(error_bound(x, w, dtype=dtype), error_bound(x, w, dtype=name))


@pytest.mark.parametrize("dtype", ["int32", "bool", np.int64])
def test_error_bound_rejects_non_float_dtypes(dtype: Any) -> None:
    with pytest.raises(TypeError, match="not a floating dtype"):
        error_bound(np.ones((1, 1, 2)), np.ones((1, 1, 1)), dtype=dtype)


def test_dtype_name_strips_torch_prefix() -> None:
    torch = _torch()
    assert mt._dtype_name(torch.float32) == "float32"
    assert mt._dtype_name("torch.bfloat16") == "bfloat16"
    assert mt._dtype_name(torch.ones(1, dtype=torch.float16)) == "float16"
    assert mt._dtype_name("f4") == "float32"
    assert mt._dtype_name(np.ones(1, np.complex64)) == "complex64"
    with pytest.raises(TypeError, match="cannot read a dtype"):
        mt._dtype_name(3.0)


def test_array_family() -> None:
    assert mt._array_family(np.ones(2)) == "numpy"
    with pytest.raises(TypeError, match=r"numpy\.ndarray, torch\.Tensor or jax\.Array"):
        mt._array_family([1.0, 2.0])


# ---------------------------------------------------------------- assert_conv_close


def test_assert_conv_close_passes_within_bound() -> None:
    expected = np.array([[1.0, -2.0], [3.0, 0.0]])
    actual = (expected + np.array([[1e-3, -1e-3], [0.0, 5e-4]])).astype(np.float32)
    assert_conv_close(actual, expected, bound=1.1e-3, like=np.ones(1, np.float32))
    assert_conv_close(actual, expected, bound=np.full((2, 2), 1.1e-3), dtype="float32")
    assert_conv_close(np.ones((0, 3)), np.ones((0, 3)), bound=0.0)


def test_assert_conv_close_fails_outside_bound() -> None:
    expected = np.zeros((2, 3))
    actual = expected.copy()
    actual[1, 2], actual[0, 0] = 0.5, 0.2
    with pytest.raises(AssertionError, match=r"2 of 6 elements exceed") as info:
        assert_conv_close(actual, expected, bound=0.1)
    message = str(info.value)
    assert "index (1, 2)" in message
    assert "actual=np.float64(0.5)" in message
    assert "expected=np.float64(0.0)" in message
    assert "bound=np.float64(0.1)" in message
    assert "error/bound=np.float64(5.0)" in message


def test_assert_conv_close_fails_on_nan_and_inf() -> None:
    expected = np.ones(3)
    with pytest.raises(AssertionError, match=r"1 of 3 elements.*index \(1,\).*actual=np.float64\(nan\)"):
        assert_conv_close(np.array([1.0, np.nan, 1.0]), expected, bound=1.0)
    with pytest.raises(AssertionError, match="1 of 3 elements"):
        assert_conv_close(np.array([1.0, np.inf, 1.0]), expected, bound=1.0)
    # NaN where the reference is NaN too (NaN inputs) and equal infinities are fine
    both = np.array([np.nan, np.inf, 1.0])
    assert_conv_close(both, both, bound=np.array([np.nan, np.inf, 0.0]))


def test_assert_conv_close_complex() -> None:
    expected = np.array([1 + 1j, 2 - 1j])
    assert_conv_close(expected.astype(np.complex64), expected, bound=1e-6, dtype="complex64")
    with pytest.raises(AssertionError, match=r"2 of 2 elements.*error/bound=np.float64\(4.0\)"):
        assert_conv_close(np.conj(expected), expected, bound=0.5)


def test_assert_conv_close_fails_on_wrong_dtype() -> None:
    with pytest.raises(AssertionError, match="dtype mismatch: expected float64, received float32"):
        assert_conv_close(np.ones(2, np.float32), np.ones(2), bound=1.0, dtype="float64")
    with pytest.raises(AssertionError, match="dtype mismatch: expected float16, received float32"):
        assert_conv_close(np.ones(2, np.float32), np.ones(2), bound=1.0, like=np.ones(1, np.float16))


def test_assert_conv_close_fails_on_wrong_shape() -> None:
    with pytest.raises(AssertionError, match=r"shape mismatch: expected \(2, 3\), received \(3, 2\)"):
        assert_conv_close(np.ones((3, 2)), np.ones((2, 3)), bound=1.0)


def test_assert_conv_close_fails_on_wrong_array_type() -> None:
    with pytest.raises(AssertionError, match=r"array type mismatch: expected numpy, received builtins\.list"):
        assert_conv_close([1.0, 1.0], np.ones(2), bound=1.0, like=np.ones(2))
    torch = _torch()
    like = torch.ones(2, dtype=torch.float64)
    # the type is checked before the dtype
    with pytest.raises(AssertionError, match="array type mismatch: expected torch, received numpy"):
        assert_conv_close(np.ones(2, np.float32), np.ones(2), bound=1.0, like=like)
    assert_conv_close(torch.ones(2, dtype=torch.float64), np.ones(2), bound=0.0, like=like)
    with pytest.raises(AssertionError, match="dtype mismatch: expected float64, received float32"):
        assert_conv_close(torch.ones(2), np.ones(2), bound=1.0, like=like)
    assert_conv_close(torch.ones(2), np.ones(2), bound=0.0, dtype=torch.float32)


def test_assert_conv_close_fails_on_wrong_device() -> None:
    torch = _torch()
    with pytest.raises(AssertionError, match="device mismatch: expected meta, received cpu"):
        assert_conv_close(torch.ones(2), np.ones(2), bound=1.0, like=torch.empty(2, device="meta"))


def test_assert_conv_close_with_jax() -> None:
    _jax()
    import jax.numpy as jnp

    like = jnp.ones(2, dtype=jnp.float32)
    assert_conv_close(jnp.ones(2, dtype=jnp.float32), np.ones(2), bound=0.0, like=like)
    with pytest.raises(AssertionError, match="array type mismatch: expected jax, received numpy"):
        assert_conv_close(np.ones(2, np.float32), np.ones(2), bound=1.0, like=like)
    with pytest.raises(AssertionError, match="dtype mismatch: expected float32, received bfloat16"):
        assert_conv_close(jnp.ones(2, jnp.bfloat16), np.ones(2), bound=1.0, like=like)


# --------------------------------------------------------- assert_matches_reference


def test_assert_matches_reference_accepts_a_float32_torch_conv() -> None:
    torch = _torch()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 30, 30, generator=gen)
    w = torch.randn(16, 4, 5, 5, generator=gen)
    bias = torch.randn(16, generator=gen)
    y = torch.nn.functional.conv2d(x, w, bias, stride=2, padding=2, groups=2)
    assert_matches_reference(y, x, w, bias, stride=2, padding=2, groups=2)
    bad = y.clone()
    bad[1, 3, 4, 5] += 1e-2
    with pytest.raises(AssertionError, match=r"1 of \d+ elements.*index \(1, 3, 4, 5\)"):
        assert_matches_reference(bad, x, w, bias, stride=2, padding=2, groups=2)
    with pytest.raises(AssertionError, match="dtype mismatch: expected float32, received float64"):
        assert_matches_reference(y.double(), x, w, bias, stride=2, padding=2, groups=2)


def test_assert_matches_reference_numpy_and_explicit_dtype() -> None:
    rng = _rng(12)
    x, w = rng.standard_normal((3, 2, 10)), rng.standard_normal((3, 4, 2, 3))
    ref = reference_conv(x, w, padding="full", flip=True)
    assert_matches_reference(ref, x, w, padding="full", flip=True)
    y32 = ref.astype(np.float32)
    assert_matches_reference(y32, x, w, dtype="float32", padding="full", flip=True)
    with pytest.raises(AssertionError, match="dtype mismatch"):
        assert_matches_reference(y32, x, w, padding="full", flip=True)
    with pytest.raises(AssertionError, match="shape mismatch"):
        assert_matches_reference(ref, x, w, padding="same")
