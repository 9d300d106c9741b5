"""Derivatives: PyTorch autograd and JAX transformations of ``batch_conv``, on every engine.

The contract (transformations): differentiable with respect to ``x``, ``w`` and
``bias`` through PyTorch autograd (double backward too) and JAX ``grad``/``vjp``/
``jvp``; composes with ``jax.jit``, ``jax.vmap`` and ``torch.func``.  Every test runs
on ``"auto"`` and on every named engine of its framework (``METHODS``).

Gradients are checked against the independent float64 transpose
``multiconv.testing.reference_conv_vjp`` within an error bound in the spirit of the
contract's, PyTorch against JAX on the same inputs, through the adjoint identity
``<conv(x', w), g> = <x', vjp_x(g)>`` (NumPy included), and with each framework's own
numerical checker.  Nothing but the adjoint identity runs without torch or JAX
requested.

Conventions: a VJP here is ``jax.vjp``'s (bilinear, no conjugation).  PyTorch's
``.grad`` after ``y.backward(g)`` is ``conj(vjp(conj(g)))`` for complex tensors, so
:func:`torch_vjp` backpropagates ``conj(g)`` and conjugates the result.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from conformance.strategies import ConvCase, conv_cases, resolve_padding
from hypothesis import given, settings
from hypothesis import strategies as st
from support import BACKENDS, jaxprs, to_numpy

import multiconv
from multiconv.testing import assert_conv_close, error_bound, reference_conv, reference_conv_vjp

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

torch: Any = importlib.import_module("torch") if "torch" in BACKENDS else None
jax: Any = importlib.import_module("jax") if "jax" in BACKENDS else None
jnp: Any = importlib.import_module("jax.numpy") if "jax" in BACKENDS else None
jax_test_util: Any = importlib.import_module("jax.test_util") if "jax" in BACKENDS else None
jax_core: Any = importlib.import_module("jax.extend.core") if "jax" in BACKENDS else None

AUTODIFF_BACKENDS = [b for b in BACKENDS if b != "numpy"]
needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch backend not requested")
needs_jax = pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
needs_autodiff = pytest.mark.skipif(not AUTODIFF_BACKENDS, reason="needs PyTorch or JAX requested")


def engines(backend: str) -> list[str]:
    """``"auto"`` and every named engine of ``backend``; none when it is not requested."""
    if backend not in BACKENDS:
        return []
    return ["auto", *importlib.import_module(f"multiconv.backends.{backend}").METHODS]


ENGINES = {backend: engines(backend) for backend in BACKENDS}
TORCH_ENGINES, JAX_ENGINES = engines("torch"), engines("jax")
AUTODIFF_ENGINES = [(backend, method) for backend in AUTODIFF_BACKENDS for method in ENGINES[backend]]

#: Each drawn case costs backward passes and JAX compilations: a fraction of the profile's
#: examples.  The engine is drawn inside the test, so the examples are shared among engines.
GRADIENT_SETTINGS = settings(max_examples=max(5, settings().max_examples // 4))
#: The main property (every engine of both frameworks against the reference) gets more.
ENGINE_SETTINGS = settings(max_examples=max(10, settings().max_examples // 2))

EPS = 2.0**-52  # float64 (and the parts of complex128)
TINY = 2.0**-1022
#: Tolerance of float64 results that differ only in summation order, relative to their scale.
CLOSE = 2.0**-40

Arrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]
Grads = list["np.ndarray | None"]
NAMES = ("x", "w", "bias")


# ------------------------------------------------------------------------ helpers


def random_like(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(a.shape)
    return values + 1j * rng.standard_normal(a.shape) if np.iscomplexobj(a) else values


def cotangent_for(case: ConvCase, arrays: Arrays) -> np.ndarray:
    """A random cotangent of the result's shape (and of the case's realness)."""
    y = reference_conv(*arrays, **case.kwargs())
    return random_like(y, np.random.default_rng(case.seed + 1))


def inner(a: Any, b: Any) -> complex:
    """The bilinear pairing ``sum(a * b)`` (no conjugation, as the VJP's transpose)."""
    return complex(np.sum(np.asarray(a) * np.asarray(b)))


def to_backend(a: np.ndarray | None, backend: str) -> Any:
    """A float64/complex128 host array as ``backend``'s array, without a copy kernel to compile (unlike ``jnp.asarray``)."""
    if a is None or backend == "numpy":
        return a
    return torch.from_numpy(a) if backend == "torch" else jax.device_put(a)


def engine_of(backend: str, case: ConvCase, arrays: Arrays, method: str) -> str:
    """The engine ``method`` runs on ``backend`` for this case (``"auto"`` resolved)."""
    args = [to_backend(a, backend) for a in arrays]
    return str(multiconv._api.plan(*args, method=method, **case.kwargs()).spec.method)


def torch_vjp(case: ConvCase, arrays: Arrays, cotangent: np.ndarray, method: str) -> Grads:
    """The VJP through PyTorch autograd: ``conj(.grad)`` after ``y.backward(conj(cotangent))``."""
    leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    y = multiconv.batch_conv(*leaves, method=method, **case.kwargs())
    y.backward(torch.from_numpy(np.conj(cotangent)))
    grads: Grads = []
    for name, leaf in zip(NAMES, leaves, strict=True):
        if leaf is None:
            grads.append(None)
            continue
        assert leaf.grad is not None, f"d/d{name} is None"
        grads.append(np.conj(leaf.grad.numpy()))
    return grads


def jax_call(case: ConvCase, arrays: Arrays, method: str = "auto") -> tuple[Callable[..., Any], list[Any]]:
    """``batch_conv`` as a function of the arrays that are present, and those arrays in JAX."""
    present = [a is not None for a in arrays]

    def conv(*args: Any) -> Any:
        it = iter(args)
        full = [next(it) if here else None for here in present]
        # backend="jax": jax.test_util's numerical derivatives call this on NumPy arrays
        return multiconv.batch_conv(*full, method=method, backend="jax", **case.kwargs())

    # device_put, not jnp.asarray, which compiles a copy for every new shape
    return conv, [jax.device_put(a) for a in arrays if a is not None]


def with_nones(arrays: Arrays, grads: Sequence[Any]) -> Grads:
    it = iter(grads)
    return [None if a is None else np.asarray(next(it)) for a in arrays]


def jax_vjp(case: ConvCase, arrays: Arrays, cotangent: np.ndarray, method: str, *, jit: bool = True) -> Grads:
    """``jax.vjp`` of ``batch_conv`` with ``cotangent`` (under ``jit`` unless told otherwise: one compilation)."""
    conv, args = jax_call(case, arrays, method)

    def pull(args: list[Any], cotangent: Any) -> Any:
        _, pullback = jax.vjp(conv, *args)
        return pullback(cotangent)

    return with_nones(arrays, (jax.jit(pull) if jit else pull)(args, jnp.asarray(cotangent)))


def framework_vjp(backend: str, case: ConvCase, arrays: Arrays, cotangent: np.ndarray, method: str) -> Grads:
    return (torch_vjp if backend == "torch" else jax_vjp)(case, arrays, cotangent, method)


def real_loss(y: Any, cotangent: Any, xp: Any) -> Any:
    """``sum(real(y * conj(c)))``: for real arrays ``<y, c>``, whose gradient is the VJP of ``c``."""
    return xp.sum(xp.real(y * xp.conj(cotangent)))


# ------------------------------------------------------------------ error bounds


_NUMPY_PAD_MODES: dict[str, Any] = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def padding_fold(case: ConvCase) -> int:
    """The most copies of one input element in the padded input (1 with zero padding)."""
    if case.padding_mode == "zeros":
        return 1
    fold = 1
    for length, (lo, hi) in zip(case.in_size, resolve_padding(case), strict=True):
        copies = np.pad(np.arange(length), (lo, hi), mode=_NUMPY_PAD_MODES[case.padding_mode])
        fold *= int(np.bincount(copies).max())
    return fold


def fft_normwise(case: ConvCase, arrays: Arrays, cotangent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normwise error terms of FFT-computed ``grad_x`` and ``grad_w``, broadcastable to their shapes.

    A gradient of an FFT convolution is itself an FFT correlation: its rounding is
    spread over the transform, about ``eps * log2(points) * ||g[b]|| * ||w[b]||``
    for ``grad_x[b]`` (times the padding's fold) and ``... * ||g[b]|| * ||xpad[b]||``
    for ``grad_w[b]`` (summed over the batch for a broadcast or shared weight);
    the batch's own norms bound those of each channel.
    """
    x, w, _ = arrays
    channels_last = case.layout == "channels_last"
    xf = np.moveaxis(x, -1, 1) if channels_last else x
    gf = np.moveaxis(cotangent, -1, 1) if channels_last else cotangent
    batch, n = case.batch, case.ndim
    pads = resolve_padding(case)
    mode = _NUMPY_PAD_MODES.get(case.padding_mode, "constant")
    xpad_energy = np.pad(np.abs(xf) ** 2, [(0, 0), (0, 0), *pads], mode=mode)
    points = math.prod(xpad_energy.shape[2:]) * math.prod(case.kernel)
    scale = math.log2(2 * points)
    g_norm = np.sqrt(np.sum(np.abs(gf.reshape(batch, -1)) ** 2, axis=1))
    x_norm = np.sqrt(np.sum(xpad_energy.reshape(batch, -1), axis=1))
    w_full = np.broadcast_to(w, (batch, *case.w_shape[-(n + 2) :])) if case.weight_kind != "per_sample" else w
    w_norm = np.sqrt(np.sum(np.abs(w_full.reshape(batch, -1)) ** 2, axis=1))
    per_sample = (batch,) + (1,) * (x.ndim - 1)
    grad_x = (scale * padding_fold(case) * g_norm * w_norm).reshape(per_sample)
    grad_w_terms = scale * g_norm * x_norm
    per_sample_weight = case.weight_kind == "per_sample"
    grad_w = grad_w_terms.reshape((batch,) + (1,) * (w.ndim - 1)) if per_sample_weight else np.asarray(np.sum(grad_w_terms))
    return grad_x, grad_w


def vjp_bound(case: ConvCase, arrays: Arrays, cotangent: np.ndarray, *, method: str, c: float = 4.0) -> Grads:
    """Elementwise bounds on the errors of float64 gradients computed by engine ``method``.

    The contract's bound transposed: ``c * n * eps * magnitude + tiny``, where
    ``magnitude`` is the reference VJP of ``|g|`` at ``(|x|, |w|, |bias|)`` (the sum
    of the magnitudes of the products each gradient element adds up) and ``n`` the
    most products any element of that gradient adds up (the VJP of ones at ones, so
    padding folds and batch sums of shared weights count); doubled for complex.
    The ``fft`` engine adds :func:`fft_normwise`.
    """
    kwargs = case.kwargs()
    magnitude = reference_conv_vjp(*(None if a is None else np.abs(a) for a in arrays), grad_y=np.abs(cotangent), **kwargs)
    terms = reference_conv_vjp(*(None if a is None else np.ones(a.shape) for a in arrays), grad_y=np.ones(cotangent.shape), **kwargs)
    factor = c * (2.0 if np.iscomplexobj(cotangent) else 1.0)
    bounds: Grads = []
    for m, t in zip(magnitude, terms, strict=True):
        if m is None or t is None:
            bounds.append(None)
            continue
        n = max(float(np.max(t, initial=0.0)), 1.0)
        bounds.append(factor * n * (EPS * m + TINY))
    if method == "fft" and cotangent.size:
        grad_x, grad_w = fft_normwise(case, arrays, cotangent)
        assert bounds[0] is not None
        assert bounds[1] is not None
        bounds[0] = bounds[0] + factor * EPS * grad_x
        bounds[1] = bounds[1] + factor * EPS * grad_w
    return bounds


def assert_grads_within(actual: Sequence[np.ndarray | None], expected: Sequence[np.ndarray | None], bounds: Grads, what: str) -> None:
    """Each gradient has its input's shape and dtype and lies within its bound of the expected one."""
    for name, a, e, bound in zip(NAMES, actual, expected, bounds, strict=True):
        if e is None:
            assert a is None, f"{what}: d/d{name} is not None without {name}"
            continue
        assert a is not None, f"{what}: d/d{name} is None"
        try:
            assert_conv_close(a, e, bound=bound, like=e)
        except AssertionError as error:
            raise AssertionError(f"{what}: d/d{name}: {error}") from None


def assert_float64_close(actual: Any, expected: Any, what: str) -> None:
    """Float64 results computed two ways, equal up to summation order."""
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, expected {e.shape}"
    scale = 1.0 + float(np.max(np.abs(e), initial=0.0))
    np.testing.assert_allclose(a, e, rtol=0, atol=CLOSE * scale, err_msg=what)


def assert_grads_close(actual: Sequence[np.ndarray | None], expected: Sequence[np.ndarray | None], what: str) -> None:
    for name, a, e in zip(NAMES, actual, expected, strict=True):
        if e is None:
            assert a is None, f"{what}: d/d{name}"
            continue
        assert a is not None, f"{what}: d/d{name} is None"
        assert_float64_close(a, e, f"{what}: d/d{name}")


# ---------------------------------------------------------- adjoint identity


def assert_pairings_agree(lhs: complex, rhs: complex, tolerance: float, what: str) -> None:
    assert abs(lhs - rhs) <= tolerance, f"{what}: {lhs!r} != {rhs!r} (|difference| {abs(lhs - rhs)!r} > {tolerance!r})"


def pairing_slack(case: ConvCase, arrays: Arrays, cotangent: np.ndarray) -> float:
    """Rounding of the float64 pairings and of the reference on both sides.

    Every side is a sum of products ``x' w g`` whose magnitudes add up to
    ``<conv(|x'|, |w|, |bias|), |g|>``, with fewer than ``x.size + w.size + g.size``
    terms along any one summation path.
    """
    magnitude = reference_conv(*(None if a is None else np.abs(a) for a in arrays), **case.kwargs())
    terms = sum(a.size for a in arrays if a is not None) + cotangent.size
    c = 4.0 * (2.0 if np.iscomplexobj(cotangent) else 1.0)
    return c * terms * EPS * float(np.sum(magnitude * np.abs(cotangent))) + TINY


def perturbations(case: ConvCase, arrays: Arrays) -> Arrays:
    rng = np.random.default_rng(case.seed + 3)
    x, w, bias = arrays
    return random_like(x, rng), random_like(w, rng), None if bias is None else random_like(bias, rng)


def library_conv(backend: str, case: ConvCase, method: str, *arrays: np.ndarray | None) -> np.ndarray:
    args = [to_backend(a, backend) for a in arrays]
    return to_numpy(multiconv.batch_conv(*args, method=method, **case.kwargs()))


def check_adjoint_identity(
    backend: str, case: ConvCase, arrays: Arrays, cotangent: np.ndarray, *, method: str, grads: Grads, grad_bounds: Grads | None
) -> None:
    """``<conv(x', w), g> = <x', grad_x>``, ``<conv(x, w'), g> = <w', grad_w>``, ``<conv(0, w, b'), g> = <b', grad_b>``.

    The library's forward pass by engine ``method`` on ``backend`` against ``grads``;
    ``grad_bounds`` are the errors the gradients may carry (``None``: the reference's,
    covered by :func:`pairing_slack`).
    """
    x, w, _ = arrays
    x2, w2, bias2 = perturbations(case, arrays)
    zero_x = np.zeros_like(x)
    for name, primal, perturbed, grad, grad_bound in zip(
        NAMES, ((x2, w, None), (x, w2, None), (zero_x, w, bias2)), (x2, w2, bias2), grads, grad_bounds or [None] * 3, strict=True
    ):
        if perturbed is None:
            continue
        assert grad is not None, name
        y = library_conv(backend, case, method, *primal)
        engine = engine_of(backend, case, primal, method)
        what = f"{backend} method={method!r} (engine {engine!r}): adjoint identity in {name}"
        forward_bound = error_bound(*primal, dtype=case.dtype, method=engine, **case.kwargs())
        tolerance = float(np.sum(forward_bound * np.abs(cotangent))) + pairing_slack(case, primal, cotangent)
        if grad_bound is not None:
            tolerance += float(np.sum(np.abs(perturbed) * grad_bound))
        assert_pairings_agree(inner(y, cotangent), inner(perturbed, grad), tolerance, what)


# ------------------------------------------ every engine against the reference VJP


@needs_autodiff
@ENGINE_SETTINGS
@given(case=conv_cases(dtypes=("float64", "float64", "complex128")), data=st.data())
def test_every_engine_differentiates_like_the_reference(case: ConvCase, data: st.DataObject) -> None:
    """PyTorch autograd and ``jax.vjp`` (under ``jit``) of a drawn engine, three ways.

    Against ``reference_conv_vjp``; PyTorch against JAX; and through the adjoint
    identity with the engine's own forward pass, which involves no reference VJP.
    """
    arrays = case.arrays()
    cotangent = cotangent_for(case, arrays)
    expected = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    results: dict[str, tuple[Grads, Grads]] = {}
    for backend in AUTODIFF_BACKENDS:
        method = data.draw(st.sampled_from(ENGINES[backend]), label=f"{backend} method")
        engine = engine_of(backend, case, arrays, method)
        grads = framework_vjp(backend, case, arrays, cotangent, method)
        bounds = vjp_bound(case, arrays, cotangent, method=engine)
        assert_grads_within(grads, expected, bounds, f"{backend} method={method!r} (engine {engine!r}) vs reference")
        check_adjoint_identity(backend, case, arrays, cotangent, method=method, grads=grads, grad_bounds=bounds)
        results[backend] = (grads, bounds)
    if len(results) == 2:
        (torch_grads, torch_bounds), (jax_grads, jax_bounds) = results["torch"], results["jax"]
        both = [None if a is None or b is None else a + b for a, b in zip(torch_bounds, jax_bounds, strict=True)]
        assert_grads_within(torch_grads, jax_grads, both, "torch vs jax")


@needs_autodiff
def test_wirtinger_conventions_on_a_trivial_function() -> None:
    """Pin the convention the complex tests rely on, on ``L(z) = Re(z^2 conj(c))``.

    With ``z = a + ib``, PyTorch's ``z.grad`` is ``dL/da + i dL/db`` (twice the
    conjugate Wirtinger derivative ``dL/dconj(z)``), and ``jax.grad`` returns its
    conjugate ``dL/da - i dL/db``.  So ``torch_grad == conj(jax_grad)``.
    """
    z0, c = 1.0 + 2.0j, 3.0 - 0.5j

    def loss(z: complex) -> float:
        return (z * z * c.conjugate()).real

    h = 1e-6
    expected = (loss(z0 + h) - loss(z0 - h)) / (2 * h) + 1j * (loss(z0 + 1j * h) - loss(z0 - 1j * h)) / (2 * h)
    if "torch" in BACKENDS:
        z = torch.tensor(z0, dtype=torch.complex128, requires_grad=True)
        (z * z * c.conjugate()).real.backward()
        np.testing.assert_allclose(z.grad.item(), expected, rtol=1e-8)
    if "jax" in BACKENDS:
        grad = jax.grad(lambda z: jnp.real(z * z * jnp.conj(c)))(jnp.asarray(z0, dtype=jnp.complex128))
        np.testing.assert_allclose(complex(grad), np.conj(expected), rtol=1e-8)


# ------------------------------------------- adjoint identity, NumPy included


@GRADIENT_SETTINGS
@given(case=conv_cases(dtypes=("float64", "float64", "complex128")), data=st.data())
def test_adjoint_identity_of_every_engine_with_the_reference_vjp(case: ConvCase, data: st.DataObject) -> None:
    """Each backend's forward pass (NumPy too, a drawn engine) is the transpose of ``reference_conv_vjp``."""
    arrays = case.arrays()
    cotangent = cotangent_for(case, arrays)
    grads = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    for backend in BACKENDS:
        method = data.draw(st.sampled_from(ENGINES[backend]), label=f"{backend} method")
        check_adjoint_identity(backend, case, arrays, cotangent, method=method, grads=grads, grad_bounds=None)


# ------------------------------------------------ the frameworks' own checkers

#: Four small cases that between them cover every argument of the contract: 1-D to
#: 3-D, groups, stride, dilation, each padding mode (and uneven zero padding), both
#: layouts, flip, per-sample, broadcast and shared weights, each kind of bias.
CHECK_CASES = {
    "1d-groups-stride-dilation-reflect": ConvCase(
        batch=2,
        groups=2,
        group_in=1,
        group_out=2,
        in_size=(9,),
        kernel=(3,),
        stride=2,
        dilation=2,
        padding=2,
        padding_mode="reflect",
        bias_kind="per_sample",
    ),
    "2d-last-flip-circular-broadcast": ConvCase(
        batch=2,
        groups=1,
        group_in=2,
        group_out=1,
        in_size=(4, 3),
        kernel=(2, 2),
        padding="full",
        padding_mode="circular",
        layout="channels_last",
        flip=True,
        weight_kind="broadcast",
        bias_kind="broadcast",
    ),
    "3d-shared-replicate-same": ConvCase(
        batch=2,
        groups=1,
        group_in=1,
        group_out=2,
        in_size=(3, 3, 2),
        kernel=(2, 2, 2),
        padding="same",
        padding_mode="replicate",
        weight_kind="shared",
        bias_kind="shared",
    ),
    "1d-same-even-kernel-zeros": ConvCase(batch=2, groups=1, group_in=2, group_out=2, in_size=(7,), kernel=(4,), padding="same"),
}

#: One feature at a time, for PyTorch's (cheaper) checkers.
SINGLE_FEATURE_CASES = {
    "1d": ConvCase(batch=2, groups=1, group_in=2, group_out=2, in_size=(6,), kernel=(3,), padding=1, bias_kind="per_sample"),
    "2d-groups-stride": ConvCase(
        batch=2, groups=2, group_in=1, group_out=2, in_size=(5, 4), kernel=(2, 2), stride=(2, 1), bias_kind="per_sample"
    ),
    "3d-dilation": ConvCase(
        batch=2, groups=1, group_in=1, group_out=2, in_size=(3, 4, 3), kernel=(2, 2, 2), dilation=(1, 2, 1), bias_kind="per_sample"
    ),
    "same-even-kernel-stride": ConvCase(batch=2, groups=1, group_in=1, group_out=2, in_size=(7,), kernel=(4,), padding="same", stride=2),
    "reflect": ConvCase(batch=2, groups=1, group_in=2, group_out=1, in_size=(6,), kernel=(3,), padding=2, padding_mode="reflect"),
    "replicate-2d": ConvCase(
        batch=2, groups=1, group_in=1, group_out=1, in_size=(4, 3), kernel=(3, 2), padding=((1, 2), (0, 1)), padding_mode="replicate"
    ),
    "circular-causal": ConvCase(
        batch=2, groups=1, group_in=1, group_out=2, in_size=(5,), kernel=(3,), padding="causal", dilation=2, padding_mode="circular"
    ),
    "channels-last": ConvCase(batch=2, groups=2, group_in=1, group_out=1, in_size=(4, 3), kernel=(2, 2), padding=1, layout="channels_last"),
    "flip": ConvCase(batch=2, groups=1, group_in=1, group_out=2, in_size=(6,), kernel=(3,), flip=True, bias_kind="shared"),
    "broadcast-weight": ConvCase(
        batch=3, groups=1, group_in=2, group_out=2, in_size=(5,), kernel=(2,), weight_kind="broadcast", bias_kind="broadcast"
    ),
    "shared-weight": ConvCase(
        batch=2, groups=1, group_in=2, group_out=2, in_size=(5,), kernel=(3,), padding="same", weight_kind="shared", bias_kind="shared"
    ),
}
TORCH_CHECK_CASES = {**CHECK_CASES, **SINGLE_FEATURE_CASES}


def torch_leaves(case: ConvCase) -> list[Any]:
    return [torch.tensor(a, requires_grad=True) for a in case.arrays() if a is not None]


def torch_conv(case: ConvCase, method: str) -> Callable[..., Any]:
    def conv(*args: Any) -> Any:
        return multiconv.batch_conv(*args, method=method, **case.kwargs())

    return conv


@needs_torch
@pytest.mark.parametrize("method", TORCH_ENGINES)
@pytest.mark.parametrize("case", TORCH_CHECK_CASES.values(), ids=TORCH_CHECK_CASES.keys())
def test_torch_gradcheck_and_gradgradcheck(case: ConvCase, method: str) -> None:
    """First and second derivatives of every engine against PyTorch's finite differences.

    Whole Jacobians on the four covering cases; random projections of them
    (``fast_mode``) on the single-feature ones, a tenth of the cost.
    """
    leaves = torch_leaves(case)
    fast_mode = case not in CHECK_CASES.values()
    assert torch.autograd.gradcheck(torch_conv(case, method), leaves, fast_mode=fast_mode)
    assert torch.autograd.gradgradcheck(torch_conv(case, method), leaves, fast_mode=fast_mode)


@needs_torch
@pytest.mark.parametrize("method", TORCH_ENGINES)
def test_torch_gradcheck_complex(method: str) -> None:
    case = dataclasses.replace(CHECK_CASES["2d-last-flip-circular-broadcast"], dtype="complex128")
    assert torch.autograd.gradcheck(torch_conv(case, method), torch_leaves(case))


@needs_jax
@pytest.mark.parametrize("case", CHECK_CASES.values(), ids=CHECK_CASES.keys())
def test_jax_check_grads_second_order(case: ConvCase) -> None:
    """``jax.test_util.check_grads`` to second order in both modes (``"auto"``: every engine costs seconds here)."""
    conv, args = jax_call(case, case.arrays())
    jax_test_util.check_grads(conv, tuple(args), order=2, modes=("fwd", "rev"))


#: Depthwise per-sample convolutions whose JAX ``shift`` derivatives are depthwise convolutions
#: themselves (``multiconv._algorithms.depthwise_adjoints``): channel multipliers, N-d, stride
#: and dilation together, uneven padding in every mode, and many output positions (the weight's
#: derivative then one product and sum per tap instead of a chain over positions).
DEPTHWISE_CASES = {
    "1d-multiplier-stride-dilation": ConvCase(
        batch=3,
        groups=3,
        group_in=1,
        group_out=2,
        in_size=(11,),
        kernel=(3,),
        stride=3,
        dilation=2,
        padding=((2, 1),),
        bias_kind="per_sample",
    ),
    "2d-stride-reflect": ConvCase(
        batch=2, groups=2, group_in=1, group_out=1, in_size=(7, 6), kernel=(3, 2), stride=(2, 3), padding=1, padding_mode="reflect"
    ),
    "3d-dilation-circular-flip": ConvCase(
        batch=2,
        groups=2,
        group_in=1,
        group_out=2,
        in_size=(5, 4, 6),
        kernel=(2, 2, 3),
        dilation=(2, 1, 2),
        padding="same",
        padding_mode="circular",
        flip=True,
    ),
    "complex-channels-last": ConvCase(
        batch=2,
        groups=3,
        group_in=1,
        group_out=1,
        in_size=(9,),
        kernel=(4,),
        stride=2,
        padding="causal",
        layout="channels_last",
        dtype="complex128",
    ),
    "many-positions": ConvCase(batch=2, groups=2, group_in=1, group_out=2, in_size=(300,), kernel=(5,), padding="same"),
    # 12 taps and 19 output positions: both derivatives' chains split into running sums (JAX_TERMS_PER_SUM)
    "long-kernel-running-sums": ConvCase(batch=2, groups=2, group_in=1, group_out=1, in_size=(30,), kernel=(12,), bias_kind="shared"),
    # zero padding as large as the kernel: the torch engine pads the input itself (its convolution's padding is slow)
    "padding-beyond-the-kernel": ConvCase(batch=2, groups=3, group_in=1, group_out=1, in_size=(6,), kernel=(3,), padding=4),
    # complex values: the weight's per-tap sums read the input's strided windows (real values pad g instead)
    "many-positions-complex-stride": ConvCase(
        batch=2, groups=2, group_in=1, group_out=2, in_size=(600,), kernel=(3,), stride=2, dtype="complex128"
    ),
    "many-positions-2d-stride-dilation": ConvCase(
        batch=2, groups=2, group_in=1, group_out=1, in_size=(40, 31), kernel=(3, 2), stride=(1, 2), dilation=(2, 1), padding=1
    ),
    # dilated and unstrided in 2-D: the torch engine's input derivative is a convolution of the padded gradient (its padding cropped)
    "complex-2d-dilation-padding": ConvCase(
        batch=2, groups=2, group_in=1, group_out=2, in_size=(9, 8), kernel=(3, 2), dilation=(2, 3), padding=2, dtype="complex128"
    ),
    # dilated and strided in 1-D: that gradient spread by the stride first
    "1d-dilation-stride-padding": ConvCase(
        batch=2, groups=3, group_in=1, group_out=1, in_size=(17,), kernel=(4,), stride=2, dilation=3, padding=3
    ),
}


@needs_jax
@pytest.mark.parametrize("method", ["shift", "loop"])
@pytest.mark.parametrize("case", DEPTHWISE_CASES.values(), ids=DEPTHWISE_CASES.keys())
def test_jax_depthwise_shift_derivatives_are_adjoint_convolutions(case: ConvCase, method: str) -> None:
    """The depthwise ``shift`` engine's own derivative rule: VJP, JVP and second order, both forms of the weight's.

    ``loop`` differentiates through the same rule when depthwise (on the zero-padded input).
    """
    from multiconv.backends import jax as jax_backend

    arrays = case.arrays()
    conv, args = jax_call(case, arrays, method)
    spec = multiconv._api.plan(*args, method=method, **case.kwargs()).spec
    assert isinstance({"shift": jax_backend._shift, "loop": jax_backend._loop}[method](spec), jax.custom_jvp)
    many = math.prod(spec.out_size) > jax_backend.DEPTHWISE_CHAIN_MAX_POSITIONS
    assert many == (case.in_size[0] > 30), (spec.out_size, many)  # the two "many-positions" cases

    cotangent = cotangent_for(case, arrays)
    expected = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    assert_grads_close(jax_vjp(case, arrays, cotangent, method), expected, "jit(vjp)")
    assert_grads_close(jax_vjp(case, arrays, cotangent, method, jit=False), expected, "vjp")

    rng = np.random.default_rng(case.seed + 2)
    tangents = [random_like(a, rng) for a in arrays if a is not None]
    _, pushed = jax.jit(lambda p, t: jax.jvp(conv, p, t))(tuple(args), tuple(jnp.asarray(t) for t in tangents))
    # the convolution is bilinear: its JVP is conv(dx, w) + dbias + conv(x, dw)
    dx, dw, *dbias = tangents
    x, w, bias = arrays
    linear = reference_conv(dx, w, dbias[0] if bias is not None else None, **case.kwargs()) + reference_conv(x, dw, **case.kwargs())
    assert_float64_close(pushed, linear, "jvp")
    jax_test_util.check_grads(conv, tuple(args), order=2, modes=("fwd", "rev"))


#: A dense per-sample case with a complex twin: ``shift``/``matmul`` products that broadcast nothing.
DENSE_CASE = ConvCase(batch=3, groups=2, group_in=2, group_out=3, in_size=(7,), kernel=(3,), padding=1, bias_kind="per_sample")


def longest_addition_chain(jaxpr: Any) -> int:
    """The most additions one after another (each adding the previous one's result) within any one jaxpr."""
    longest = 0
    for inner in jaxprs(jaxpr):
        depth: dict[Any, int] = {}
        for eqn in inner.eqns:
            if eqn.primitive.name in {"add", "add_any"}:
                chain = 1 + max((depth.get(v, 0) for v in eqn.invars if not isinstance(v, jax_core.Literal)), default=0)
                depth |= dict.fromkeys(eqn.outvars, chain)
                longest = max(longest, chain)
    return longest


@needs_jax
def test_jax_depthwise_shift_derivatives_keep_their_running_sums() -> None:
    """The depthwise weight derivative (a chain over 19 output positions) adds up at most ``JAX_TERMS_PER_SUM`` terms in a row.

    Reverse mode transposes the engine's derivative rule twice, and a transpose adds a
    value's cotangents in one chain: without the copies that mark each running sum,
    the 19 terms came back as 18 additions in a row (XLA's CPU code for such a chain is
    about twice as slow; see ``JAX_TERMS_PER_SUM``).
    """
    from multiconv.backends import jax as jax_backend

    case = DEPTHWISE_CASES["long-kernel-running-sums"]
    arrays = case.arrays()
    conv, args = jax_call(case, arrays, "shift")
    cotangent = jnp.asarray(cotangent_for(case, arrays))
    pullback = jax.make_jaxpr(lambda *a: jax.vjp(conv, *a)[1](cotangent))(*args)
    per_sum = jax_backend.JAX_TERMS_PER_SUM
    assert 1 < per_sum < 18
    assert longest_addition_chain(pullback.jaxpr) <= per_sum + 2  # a sum of 7 (6 additions) then 3 sums added pairwise


@needs_jax
def test_jax_depthwise_shift_derivatives_sum_whole_arrays() -> None:
    """The many-positions derivatives sum what XLA's CPU code sums fast (a multiplier of 2, 300 positions).

    The weight's (real values): each tap's sum reads the cotangent padded onto the
    tap's window times the whole padded input, never the input sliced to the window (a slice
    per tap ran about 10x slower: 42 against 4.3 ms for 64 samples of 8 channels, L 4096,
    16 taps).  The input's:
    the output channels of a group are added slice by slice, never by a sum over their axis
    (fused with the chain before it, 70x slower).
    """
    case = DEPTHWISE_CASES["many-positions"]
    arrays = case.arrays()
    conv, args = jax_call(case, arrays, "shift")
    spec = multiconv._api.plan(*args, method="shift", **case.kwargs()).spec
    cotangent = jnp.asarray(cotangent_for(case, arrays))
    pullback = jax.make_jaxpr(lambda *a: jax.vjp(conv, *a)[1](cotangent))(*args)
    sums = [eqn for inner in jaxprs(pullback.jaxpr) for eqn in inner.eqns if eqn.primitive.name == "reduce_sum"]
    per_tap = [eqn for eqn in sums if tuple(eqn.outvars[0].aval.shape) == (case.batch, case.groups, case.group_out)]
    assert len(per_tap) == math.prod(case.kernel)
    for eqn in per_tap:
        assert tuple(eqn.invars[0].aval.shape[3:]) == spec.padded_size, eqn
    for eqn in sums:
        reduced = [eqn.invars[0].aval.shape[axis] for axis in eqn.params["axes"]]
        assert eqn in per_tap or reduced == [1], eqn  # no sum over the channels of a group


@needs_jax
def test_jax_depthwise_shift_forward_mode_pads_no_channel_of_a_group_to_all_of_them() -> None:
    """``jax.jvp`` of the depthwise ``shift`` (a multiplier of 2) runs the input derivative's transpose without og-fold pads.

    The input derivative takes a group's output channels apart with one split, whose
    transpose is one concatenation; ``og`` slices would transpose to ``og`` pads, each to
    all ``og`` channels (forward mode ran 44 ms against a 0.5 ms forward for a multiplier
    of 8).  The tangent is the reference's.
    """
    case = DEPTHWISE_CASES["many-positions"]
    arrays = case.arrays()
    conv, args = jax_call(case, arrays, "shift")
    x, *rest = args

    def push(a: Any, da: Any) -> Any:
        return jax.jvp(lambda b: conv(b, *rest), (a,), (da,))[1]

    eqns = [eqn for inner in jaxprs(jax.make_jaxpr(push)(x, x).jaxpr) for eqn in inner.eqns]
    per_group = (case.batch, case.groups, case.group_out)
    assert not [e for e in eqns if e.primitive.name == "pad" and tuple(e.outvars[0].aval.shape[:3]) == per_group]
    assert [e for e in eqns if e.primitive.name == "concatenate" and tuple(e.outvars[0].aval.shape[:3]) == per_group]
    dx = random_like(arrays[0], np.random.default_rng(case.seed + 5))
    assert_float64_close(push(x, jnp.asarray(dx)), reference_conv(dx, arrays[1], **case.kwargs()), "jvp in x")


@needs_jax
@pytest.mark.parametrize("method", ["shift", "loop"])
@pytest.mark.parametrize("name", ["many-positions", "many-positions-2d-stride-dilation"])
def test_jax_depthwise_shift_weight_gradient_keeps_a_nan_in_its_sample_and_channel(name: str, method: str) -> None:
    """README: the padded per-tap sums let a NaN of the input reach every tap of its channel's weight gradient, and no further.

    ``loop``, depthwise, has the same weight derivative.

    The other samples' and channels' weight gradients are the clean run's, bitwise.
    """
    case = DEPTHWISE_CASES[name]
    clean = case.arrays()
    x, w, bias = clean
    dirty_x = x.copy()
    spot = (1, 0, *(n // 2 for n in case.in_size))  # sample 1, the first channel of group 0
    dirty_x[spot] = np.nan
    cotangent = cotangent_for(case, clean)
    _, dw_clean, *_ = jax_vjp(case, clean, cotangent, method)
    _, dw_dirty, *_ = jax_vjp(case, (dirty_x, w, bias), cotangent, method)
    dw_clean, dw_dirty = np.asarray(dw_clean), np.asarray(dw_dirty)
    reached = np.zeros(dw_dirty.shape, bool)
    reached[1, : case.group_out] = True  # the output channels of group 0 read input channel 0
    assert np.isnan(dw_dirty[reached]).any()
    np.testing.assert_array_equal(dw_dirty[~reached], dw_clean[~reached])


@needs_jax
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_jax_tangent_engine_derivatives_run_its_own_rules(dtype: str) -> None:
    """``auto`` differentiated through another engine runs that engine's derivative rules (``_matmul``'s copied transposes).

    The ``matmul`` forward with ``shift`` tangents: each tangent term is ``shift``'s own JVP,
    so no product of the pullback contracts the rows of its left operand (XLA's slow
    CPU dot); applied to the tangents instead, three did.  The gradients are the reference's.
    """
    from multiconv.backends import jax as jax_backend

    case = dataclasses.replace(DENSE_CASE, dtype=dtype)
    arrays = case.arrays()
    _, args = jax_call(case, arrays, "matmul")
    spec = dataclasses.replace(multiconv._api.plan(*args, method="matmul", **case.kwargs()).spec, tangent_method="shift")
    cotangent = cotangent_for(case, arrays)

    def pullback(*a: Any) -> Any:
        return jax.vjp(lambda *b: jax_backend._convolve(spec, *b), *a)[1](jnp.asarray(cotangent))

    rows = [
        eqn.params["dimension_numbers"][0][0]
        for inner in jaxprs(jax.make_jaxpr(pullback)(*args).jaxpr)
        for eqn in inner.eqns
        if eqn.primitive.name == "dot_general" and tuple(eqn.params["dimension_numbers"][0][0]) != (eqn.invars[0].aval.ndim - 1,)
    ]
    assert not rows, rows
    expected = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    assert_grads_close([np.asarray(g) for g in jax.jit(pullback)(*args)], expected, "vjp")
    rng = np.random.default_rng(case.seed + 4)
    dx, dw, dbias = (random_like(a, rng) for a in arrays if a is not None)
    x, w, _ = arrays
    _, pushed = jax.jvp(lambda *b: jax_backend._convolve(spec, *b), tuple(args), tuple(jnp.asarray(t) for t in (dx, dw, dbias)))
    linear = reference_conv(dx, w, dbias, **case.kwargs()) + reference_conv(x, dw, **case.kwargs())
    assert_float64_close(pushed, linear, "jvp")
    # the bias's tangent alone (the others symbolic zeros): broadcast, no convolution
    _, pushed = jax.jvp(lambda b: jax_backend._convolve(spec, args[0], args[1], b), (args[2],), (jnp.asarray(dbias),))
    assert_float64_close(pushed, np.broadcast_to(dbias[:, :, None], pushed.shape), "jvp of the bias")


@needs_jax
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
@pytest.mark.parametrize("method", ["shift", "matmul", "fft"])
@pytest.mark.parametrize("limit", [0, 2**62], ids=["plain-autodiff", "own-rule"])
def test_jax_small_products_own_rule_and_plain_autodiff_agree_with_the_reference(
    method: str, dtype: str, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_matmul``'s derivative rule (small products) and JAX's own transpose (larger ones): VJP, JVP, second order."""
    from multiconv.backends import jax as jax_backend

    monkeypatch.setattr(jax_backend, "SMALL_PRODUCT_MACS", limit)
    jax.clear_caches()  # traces made under the other limit must not be reused
    case = dataclasses.replace(DENSE_CASE, dtype=dtype)
    arrays = case.arrays()
    conv, args = jax_call(case, arrays, method)
    cotangent = cotangent_for(case, arrays)
    expected = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    assert_grads_close(jax_vjp(case, arrays, cotangent, method), expected, "jit(vjp)")
    rng = np.random.default_rng(case.seed + 3)
    tangents = [random_like(a, rng) for a in arrays if a is not None]
    _, pushed = jax.jvp(conv, tuple(args), tuple(jnp.asarray(t) for t in tangents))
    dx, dw, dbias = tangents
    x, w, _ = arrays
    linear = reference_conv(dx, w, dbias, **case.kwargs()) + reference_conv(x, dw, **case.kwargs())
    assert_float64_close(pushed, linear, "jvp")
    jax_test_util.check_grads(conv, tuple(args), order=2, modes=("fwd", "rev"))
    jax.clear_caches()


@needs_jax
@pytest.mark.parametrize(
    ("shape", "sizes", "steps", "dilation"),
    [
        ((2, 3, 17), (4,), (1,), (1,)),  # im2col at stride 1: one strided slice per tap
        ((2, 3, 17), (3,), (2,), (3,)),  # stride and dilation
        ((2, 3, 40), (12,), (9,), (1,)),  # overlap-save blocks: rows of 9, two per block
        ((2, 3, 40), (5,), (7,), (1,)),  # frames shorter than their step (items skipped)
        ((1, 2, 9, 11), (3, 4), (2, 3), (1, 2)),  # 2-D
    ],
)
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_jax_windows_are_differentiated_through_slices(
    shape: tuple[int, ...], sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...], dtype: str
) -> None:
    """``_gathered_windows``' own rule (slices) gives the gather's own derivatives: JVP, VJP, second order."""
    from multiconv.backends import jax as jax_backend

    rng = np.random.default_rng(len(shape) + sum(sizes))

    def gathered(a: Any) -> Any:
        return jax_backend._windows(a, sizes, steps, dilation, gather=True)

    def own(a: Any) -> Any:
        return jax_backend._gathered_windows(a, sizes, steps, dilation)

    with jax.enable_x64(True):  # noqa: FBT003
        x = jnp.asarray(random_like(np.zeros(shape, dtype), rng))
        dx = jnp.asarray(random_like(np.zeros(shape, dtype), rng))
        assert x.dtype == dtype
        y, pushed = jax.jvp(own, (x,), (dx,))
        want_y, want_pushed = jax.jvp(gathered, (x,), (dx,))
        np.testing.assert_array_equal(np.asarray(y), np.asarray(want_y))
        np.testing.assert_array_equal(np.asarray(pushed), np.asarray(want_pushed))
        g = jnp.asarray(random_like(np.zeros(y.shape, dtype), rng))
        np.testing.assert_allclose(np.asarray(jax.vjp(own, x)[1](g)[0]), np.asarray(jax.vjp(gathered, x)[1](g)[0]), rtol=1e-14, atol=1e-14)
        jax_test_util.check_grads(own, (x,), order=2, modes=("fwd", "rev"))


@needs_torch
@pytest.mark.parametrize("case", DEPTHWISE_CASES.values(), ids=DEPTHWISE_CASES.keys())
def test_torch_depthwise_grouped_backward_is_adjoint_convolutions(case: ConvCase) -> None:
    """The depthwise ``grouped`` engine's own backward: the reference VJP, gradcheck and gradgradcheck (complex too)."""
    arrays = case.arrays()
    cotangent = cotangent_for(case, arrays)
    expected = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    assert_grads_close(torch_vjp(case, arrays, cotangent, "grouped"), expected, "autograd")
    leaves = torch_leaves(case)
    seen = autograd_nodes(torch_conv(case, "grouped")(*leaves))  # the autograd graph holds the engine's own backward
    assert "_DepthwiseBackward" in seen, seen
    assert torch.autograd.gradcheck(torch_conv(case, "grouped"), leaves, fast_mode=True)
    assert torch.autograd.gradgradcheck(torch_conv(case, "grouped"), leaves, fast_mode=True)


def autograd_nodes(y: Any) -> set[str]:
    """The names of every node in ``y``'s autograd graph."""
    nodes, seen = [y.grad_fn], set()
    while nodes:
        node = nodes.pop()
        seen.add(type(node).__name__)
        nodes += [child for child, _ in node.next_functions if child is not None]
    return seen


@needs_torch
@pytest.mark.parametrize("method", ["matmul", "fft"])
@pytest.mark.parametrize("case", [SINGLE_FEATURE_CASES[name] for name in ("3d-dilation", "same-even-kernel-stride", "2d-groups-stride")])
def test_torch_windows_and_real_transforms_have_their_own_backward(case: ConvCase, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """im2col windows and real FFTs pull back by their adjoints; autograd's own (the fallback) gives the same."""
    from multiconv.backends import torch as torch_backend

    arrays = case.arrays()
    cotangent = cotangent_for(case, arrays)
    expected = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    own = torch_vjp(case, arrays, cotangent, method)
    assert_grads_close(own, expected, "autograd")
    nodes = autograd_nodes(torch_conv(case, method)(*torch_leaves(case)))
    # matmul at stride 1 with per-sample weights pulls back as a whole (_WindowProduct), the rest window by window
    product = method == "matmul" and case.weight_kind == "per_sample" and case.stride in (1, (1,) * case.ndim)
    assert ("_WindowProductBackward" in nodes) is product, nodes
    assert ("_WindowsBackward" in nodes) is not product, nodes
    assert ("_RealFFTBackward" in nodes) is (method == "fft"), nodes
    monkeypatch.setattr(torch_backend, "WINDOW_ADJOINT_MAX_SLICES", 0)
    assert "_WindowsBackward" not in autograd_nodes(torch_conv(case, method)(*torch_leaves(case)))
    for mine, theirs in zip(own, torch_vjp(case, arrays, cotangent, method), strict=True):
        assert (mine is None) is (theirs is None)
        if mine is not None and theirs is not None:  # no bias, no gradient
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------- JAX transformations

#: Small enough for whole Jacobians: 12 outputs, 24 + 12 + 4 inputs.
TINY_CASE = ConvCase(
    batch=2,
    groups=2,
    group_in=1,
    group_out=1,
    in_size=(6,),
    kernel=(3,),
    stride=2,
    padding="same",
    padding_mode="reflect",
    flip=True,
    bias_kind="per_sample",
)


def reference_jacobians(case: ConvCase, arrays: Arrays) -> list[np.ndarray]:
    """``dy/dx``, ``dy/dw``, ``dy/dbias`` shaped ``y.shape + a.shape`` (as ``jax.jacrev``): row ``i`` is the VJP of ``e_i``."""
    y_shape = reference_conv(*arrays, **case.kwargs()).shape
    rows = [reference_conv_vjp(*arrays, grad_y=unit.reshape(y_shape), **case.kwargs()) for unit in np.eye(math.prod(y_shape))]
    jacobians = []
    for i, a in enumerate(arrays):
        assert a is not None
        jacobians.append(np.stack([np.asarray(row[i]) for row in rows]).reshape(*y_shape, *a.shape))
    return jacobians


@needs_jax
@pytest.mark.parametrize("method", JAX_ENGINES)
def test_jax_grad_vjp_jvp_jacfwd_jacrev_agree(method: str) -> None:
    """On a tiny case: both Jacobians equal the reference's; ``grad``, ``jit(grad)``, ``vjp`` and ``jvp`` agree with them."""
    case = TINY_CASE
    arrays = case.arrays()
    conv, args = jax_call(case, arrays, method)
    argnums = (0, 1, 2)
    expected = reference_jacobians(case, arrays)
    for transform in (jax.jacfwd, jax.jacrev):
        jacobians = transform(conv, argnums=argnums)(*args)
        for name, jacobian, reference in zip(NAMES, jacobians, expected, strict=True):
            assert_float64_close(jacobian, reference, f"{transform.__name__}: dy/d{name}")

    cotangent = cotangent_for(case, arrays)
    reference_vjp = list(reference_conv_vjp(*arrays, grad_y=cotangent, **case.kwargs()))
    y, pullback = jax.vjp(conv, *args)
    assert_float64_close(y, reference_conv(*arrays, **case.kwargs()), "vjp's primal output")
    grads_vjp = [np.asarray(g) for g in pullback(jnp.asarray(cotangent))]
    assert_grads_close(grads_vjp, reference_vjp, "vjp")

    def loss(*args: Any) -> Any:
        return real_loss(conv(*args), jnp.asarray(cotangent), jnp)

    grad = jax.grad(loss, argnums=argnums)
    assert_grads_close([np.asarray(g) for g in grad(*args)], reference_vjp, "grad")
    assert_grads_close([np.asarray(g) for g in jax.jit(grad)(*args)], reference_vjp, "jit(grad)")

    rng = np.random.default_rng(7)
    tangents = [random_like(a, rng) for a in arrays if a is not None]
    _, pushed = jax.jvp(conv, tuple(args), tuple(jnp.asarray(t) for t in tangents))
    linear = sum(np.tensordot(j, t, axes=t.ndim) for j, t in zip(expected, tangents, strict=True))
    assert_float64_close(pushed, linear, "jvp against the reference Jacobian")
    # <jvp(t), g> == <t, vjp(g)>: forward and reverse mode are transposes of each other
    assert_float64_close(inner(pushed, cotangent), sum(inner(t, g) for t, g in zip(tangents, grads_vjp, strict=True)), "<jvp, g>")


@needs_jax
@pytest.mark.parametrize("method", JAX_ENGINES)
def test_jax_jit_traces_once_per_signature(method: str) -> None:
    """New values of the same shapes reuse the trace; other static arguments trace again, once each."""
    case = dataclasses.replace(TINY_CASE, stride=1)
    fixed = {k: v for k, v in case.kwargs().items() if k not in ("padding", "flip")}
    traces: list[tuple[Any, bool]] = []

    def conv(x: Any, w: Any, bias: Any, *, padding: Any, flip: bool) -> Any:
        traces.append((padding, flip))  # a Python side effect: runs only while tracing
        return multiconv.batch_conv(x, w, bias, padding=padding, flip=flip, method=method, **fixed)

    jitted = jax.jit(conv, static_argnames=("padding", "flip"))
    calls = [("same", False)] * 3 + [(1, False)] * 2 + [("same", True), ("same", False), (1, False), ("same", True)]
    for seed, (padding, flip) in enumerate(calls):
        call = dataclasses.replace(case, seed=seed, padding=padding, flip=flip)
        arrays = call.arrays()
        y = jitted(*(jax.device_put(a) for a in arrays), padding=padding, flip=flip)
        bound = error_bound(*arrays, dtype="float64", method=engine_of("jax", call, arrays, method), **call.kwargs())
        assert_conv_close(y, reference_conv(*arrays, **call.kwargs()), bound=bound, like=jax.device_put(arrays[0]))
    assert traces == [("same", False), (1, False), ("same", True)]


POPULATION_CASES = {
    "1d": ConvCase(
        batch=3,
        groups=1,
        group_in=2,
        group_out=2,
        in_size=(7,),
        kernel=(3,),
        padding="same",
        padding_mode="reflect",
        bias_kind="per_sample",
    ),
    "2d-last-groups": ConvCase(
        batch=2, groups=2, group_in=1, group_out=2, in_size=(4, 5), kernel=(2, 3), stride=(1, 2), layout="channels_last", bias_kind="shared"
    ),
}
POPULATION = 3


def population(case: ConvCase) -> list[Arrays]:
    """Inputs of ``POPULATION`` hypernetworks: one batch of each."""
    return [dataclasses.replace(case, seed=seed).arrays() for seed in range(POPULATION)]


def stacked(members: list[Arrays], i: int) -> np.ndarray:
    return np.stack([np.asarray(m[i]) for m in members])


@needs_jax
@pytest.mark.parametrize("method", JAX_ENGINES)
@pytest.mark.parametrize("case", POPULATION_CASES.values(), ids=POPULATION_CASES.keys())
def test_jax_vmap_over_a_population_equals_a_loop(case: ConvCase, method: str) -> None:
    """``jax.vmap`` over a leading population axis, with per-member and with shared weights."""
    members = population(case)
    xs, ws, biases = (jnp.asarray(stacked(members, i)) for i in range(3))

    def conv(x: Any, w: Any, bias: Any) -> Any:
        return multiconv.batch_conv(x, w, bias, method=method, **case.kwargs())

    vmapped = jax.vmap(conv)(xs, ws, biases)
    shared_weight = jax.vmap(conv, in_axes=(0, None, None))(xs, ws[0], biases[0])
    single = [np.asarray(conv(jnp.asarray(x), jnp.asarray(w), jnp.asarray(bias))) for x, w, bias in members]
    engine = engine_of("jax", case, members[0], method)
    check_population(case, members, engine, vmapped=vmapped, shared_weight=shared_weight, single=single)


def check_population(case: ConvCase, members: list[Arrays], engine: str, *, vmapped: Any, shared_weight: Any, single: list[Any]) -> None:
    """Member ``p`` of a vmapped call equals the call on its own and the reference, with its own and with a shared weight."""
    for p, (x, w, bias) in enumerate(members):
        bound = 2 * error_bound(x, w, bias, dtype="float64", method=engine, **case.kwargs())
        assert_conv_close(vmapped[p], single[p], bound=bound)
        assert_conv_close(vmapped[p], reference_conv(x, w, bias, **case.kwargs()), bound=bound)
        shared = reference_conv(x, members[0][1], members[0][2], **case.kwargs())
        shared_bound = 2 * error_bound(x, members[0][1], members[0][2], dtype="float64", method=engine, **case.kwargs())
        assert_conv_close(shared_weight[p], shared, bound=shared_bound)


@needs_jax
@pytest.mark.parametrize("method", JAX_ENGINES)
def test_jax_vmap_of_grad_equals_a_loop(method: str) -> None:
    case = POPULATION_CASES["1d"]
    members = population(case)
    cotangent = jnp.asarray(cotangent_for(case, members[0]))

    def loss(x: Any, w: Any, bias: Any) -> Any:
        return real_loss(multiconv.batch_conv(x, w, bias, method=method, **case.kwargs()), cotangent, jnp)

    grad = jax.grad(loss, argnums=(0, 1, 2))
    batched = jax.vmap(grad)(*(jnp.asarray(stacked(members, i)) for i in range(3)))
    for p, arrays in enumerate(members):
        single = [np.asarray(g) for g in grad(*(jnp.asarray(a) for a in arrays))]
        assert_grads_close([np.asarray(g[p]) for g in batched], single, f"vmap(grad) member {p}")
        expected = reference_conv_vjp(*arrays, grad_y=np.asarray(cotangent), **case.kwargs())
        assert_grads_close(single, list(expected), f"grad member {p} vs reference")


# ---------------------------------------------------------------- torch.func


@needs_torch
@pytest.mark.parametrize("method", TORCH_ENGINES)
@pytest.mark.parametrize("case", POPULATION_CASES.values(), ids=POPULATION_CASES.keys())
def test_torch_func_vmap_over_a_population_equals_a_loop(case: ConvCase, method: str) -> None:
    """``torch.func.vmap`` over a leading population axis, with per-member and with shared weights."""
    members = population(case)
    xs, ws, biases = (torch.from_numpy(stacked(members, i)) for i in range(3))

    def conv(x: Any, w: Any, bias: Any) -> Any:
        return multiconv.batch_conv(x, w, bias, method=method, **case.kwargs())

    vmapped = torch.func.vmap(conv)(xs, ws, biases)
    shared_weight = torch.func.vmap(conv, in_dims=(0, None, None))(xs, ws[0], biases[0])
    single = [conv(xs[p], ws[p], biases[p]).numpy() for p in range(len(members))]
    engine = engine_of("torch", case, members[0], method)
    check_population(case, members, engine, vmapped=vmapped, shared_weight=shared_weight, single=single)


@needs_torch
# PyTorch has no batching rule for the backward of Tensor.unfold (the matmul and fft
# engines) and warns that it loops instead; the results are what this test checks.
@pytest.mark.filterwarnings("ignore:There is a performance drop because we have not yet implemented the batching rule:UserWarning")
@pytest.mark.parametrize("method", TORCH_ENGINES)
def test_torch_func_grad_over_a_population_equals_a_loop(method: str) -> None:
    """``vmap(grad)`` over a population of weight sets (and of inputs) equals ``grad`` member by member and the reference."""
    case = POPULATION_CASES["1d"]
    members = population(case)
    cotangent = torch.from_numpy(cotangent_for(case, members[0]))

    def loss(w: Any, x: Any, bias: Any) -> Any:
        return real_loss(multiconv.batch_conv(x, w, bias, method=method, **case.kwargs()), cotangent, torch)

    grad = torch.func.grad(loss, argnums=(0, 1, 2))
    xs, ws, biases = (torch.from_numpy(stacked(members, i)) for i in range(3))
    batched = torch.func.vmap(grad)(ws, xs, biases)
    weight_sets = torch.func.vmap(grad, in_dims=(0, None, None))(ws, xs[0], biases[0])
    for p, (x, w, bias) in enumerate(members):
        single = [g.numpy() for g in grad(ws[p], xs[p], biases[p])]
        assert_grads_close([g[p].numpy() for g in batched], single, f"vmap(grad) member {p}")
        gx, gw, gb = reference_conv_vjp(x, w, bias, grad_y=cotangent.numpy(), **case.kwargs())
        assert_grads_close([single[1], single[0], single[2]], [gx, gw, gb], f"grad member {p} vs reference")
        gx, gw, gb = reference_conv_vjp(members[0][0], w, members[0][2], grad_y=cotangent.numpy(), **case.kwargs())
        assert_grads_close(
            [weight_sets[1][p].numpy(), weight_sets[0][p].numpy(), weight_sets[2][p].numpy()], [gx, gw, gb], f"weight set {p}"
        )


# ---------------------------------------------------------------- empty batch

EMPTY_CASES = {
    "per-sample": ConvCase(batch=0, groups=1, group_in=2, group_out=3, in_size=(6,), kernel=(3,), bias_kind="per_sample"),
    "broadcast-2d": ConvCase(
        batch=0, groups=2, group_in=1, group_out=1, in_size=(4, 4), kernel=(2, 2), padding=1, weight_kind="broadcast", bias_kind="broadcast"
    ),
    "shared-3d": ConvCase(
        batch=0, groups=1, group_in=1, group_out=2, in_size=(3, 3, 3), kernel=(2, 2, 2), weight_kind="shared", bias_kind="shared"
    ),
}


@pytest.mark.parametrize(("backend", "method"), AUTODIFF_ENGINES, ids=[f"{b}-{m}" for b, m in AUTODIFF_ENGINES])
@pytest.mark.parametrize("case", EMPTY_CASES.values(), ids=EMPTY_CASES.keys())
def test_empty_batch_gradients_are_zeros_of_the_input_shapes(backend: str, method: str, case: ConvCase) -> None:
    arrays = case.arrays()
    cotangent = cotangent_for(case, arrays)
    assert cotangent.size == 0
    grads = torch_vjp(case, arrays, cotangent, method) if backend == "torch" else jax_vjp(case, arrays, cotangent, method, jit=False)
    for name, a, g in zip(NAMES, arrays, grads, strict=True):
        assert a is not None
        assert g is not None, f"d/d{name} is None"
        assert g.shape == a.shape, name
        assert g.dtype == a.dtype, name
        assert not np.any(g), name


@needs_torch
def test_torch_functions_keep_their_forward_signature() -> None:
    """Every ``torch.autograd.Function`` of the backend has its ``forward``'s signature worked out once (``apply`` binds to it)."""
    import inspect

    from multiconv.backends import torch as torch_backend

    functions: list[Any] = [
        value
        for value in vars(torch_backend).values()
        if isinstance(value, type) and issubclass(value, torch.autograd.Function) and value.__module__ == torch_backend.__name__
    ]
    assert len(functions) >= 4
    for function in functions:
        forward = function.forward
        assert inspect.signature(forward) is forward.__signature__, function.__name__
        code = forward.__code__
        assert list(forward.__signature__.parameters) == list(code.co_varnames[: code.co_argcount]), function.__name__
