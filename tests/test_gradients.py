"""Derivatives: PyTorch autograd and JAX transformations of ``batch_conv``.

The contract (transformations): differentiable with respect to ``x``, ``w`` and
``bias`` through PyTorch autograd (double backward too) and JAX ``grad``/``vjp``/
``jvp``; composes with ``jax.jit`` and ``jax.vmap``.  Gradients are checked three
ways: against directional derivatives of the independent float64 reference
(``multiconv.testing.reference_conv``), PyTorch against JAX on the same inputs, and
with each framework's own numerical checker (``gradcheck``/``gradgradcheck``,
``jax.test_util.check_grads``).  Nothing here runs without torch or JAX requested.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from conformance.strategies import ConvCase, conv_cases
from hypothesis import given, settings
from support import BACKENDS

import multiconv
from multiconv.testing import assert_conv_close, error_bound, reference_conv

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

torch: Any = importlib.import_module("torch") if "torch" in BACKENDS else None
jax: Any = importlib.import_module("jax") if "jax" in BACKENDS else None
jnp: Any = importlib.import_module("jax.numpy") if "jax" in BACKENDS else None
jax_test_util: Any = importlib.import_module("jax.test_util") if "jax" in BACKENDS else None

AUTODIFF_BACKENDS = [b for b in BACKENDS if b != "numpy"]
needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch backend not requested")
needs_jax = pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
needs_autodiff = pytest.mark.skipif(not AUTODIFF_BACKENDS, reason="needs PyTorch or JAX requested")

#: Each drawn case costs backward passes and JAX compilations: a fraction of the profile's examples.
GRADIENT_SETTINGS = settings(max_examples=max(5, settings().max_examples // 4))

Arrays = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]
Grads = list["np.ndarray | None"]


# ------------------------------------------------------------------------ helpers


def random_like(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(a.shape)
    return values + 1j * rng.standard_normal(a.shape) if np.iscomplexobj(a) else values


def cotangent_for(case: ConvCase, arrays: Arrays) -> np.ndarray:
    """A random cotangent of the result's shape (and of the case's realness)."""
    y = reference_conv(*arrays, **case.kwargs())
    return random_like(y, np.random.default_rng(case.seed + 1))


def loss_of(y: Any, cotangent: Any, xp: Any) -> Any:
    """The real loss ``sum(real(y * conj(c)))``; for real arrays ``<y, c>``, whose gradient is the VJP with ``c``."""
    return xp.sum(xp.real(y * xp.conj(cotangent)))


def torch_grads(case: ConvCase, arrays: Arrays, cotangent: np.ndarray) -> Grads:
    """``.grad`` of ``x``, ``w``, ``bias`` after ``backward`` of the real loss."""
    leaves = [None if a is None else torch.tensor(a, requires_grad=True) for a in arrays]
    y = multiconv.batch_conv(*leaves, **case.kwargs())
    loss_of(y, torch.from_numpy(cotangent), torch).backward()
    grads: Grads = []
    for leaf in leaves:
        if leaf is None:
            grads.append(None)
            continue
        assert leaf.grad is not None
        grads.append(leaf.grad.numpy())
    return grads


def jax_call(case: ConvCase, arrays: Arrays) -> tuple[Callable[..., Any], list[Any]]:
    """``batch_conv`` as a function of the arrays that are present, and those arrays in JAX."""
    present = [a is not None for a in arrays]

    def conv(*args: Any) -> Any:
        it = iter(args)
        full = [next(it) if here else None for here in present]
        return multiconv.batch_conv(*full, **case.kwargs())

    return conv, [jnp.asarray(a) for a in arrays if a is not None]


def with_nones(arrays: Arrays, grads: Sequence[Any]) -> Grads:
    it = iter(grads)
    return [None if a is None else np.asarray(next(it)) for a in arrays]


def jax_vjp(case: ConvCase, arrays: Arrays, cotangent: np.ndarray) -> Grads:
    """``jax.vjp`` of ``batch_conv`` with ``cotangent``, under ``jit`` (one compilation per case)."""
    conv, args = jax_call(case, arrays)

    def pull(args: list[Any], cotangent: Any) -> Any:
        _, pullback = jax.vjp(conv, *args)
        return pullback(cotangent)

    return with_nones(arrays, jax.jit(pull)(args, jnp.asarray(cotangent)))


def jax_grads(case: ConvCase, arrays: Arrays, cotangent: np.ndarray, *, jit: bool = True) -> Grads:
    """``jax.grad`` of the real loss (under ``jit`` unless told otherwise)."""
    conv, args = jax_call(case, arrays)

    def loss(*args: Any) -> Any:
        return loss_of(conv(*args), jnp.asarray(cotangent), jnp)

    grad = jax.grad(loss, argnums=tuple(range(len(args))))
    return with_nones(arrays, (jax.jit(grad) if jit else grad)(*args))


def assert_grads_close(actual: Sequence[np.ndarray | None], expected: Sequence[np.ndarray | None], what: str) -> None:
    """Float64 gradients computed two ways, equal up to summation order."""
    for name, a, e in zip(("x", "w", "bias"), actual, expected, strict=True):
        if e is None:
            assert a is None, name
            continue
        assert a is not None, name
        assert a.shape == e.shape, f"{what}: d/d{name} has shape {a.shape}, expected {e.shape}"
        scale = 1.0 + float(np.max(np.abs(e), initial=0.0))
        np.testing.assert_allclose(a, e, rtol=1e-9, atol=1e-10 * scale, err_msg=f"{what}: d/d{name}")


def assert_directional_derivatives(case: ConvCase, arrays: Arrays, cotangent: np.ndarray, grads: Sequence[np.ndarray | None]) -> None:
    """``<grad, v>`` against central differences of the reference's real loss along random ``v``.

    ``grad`` follows PyTorch's convention ``dL/dRe(z) + i dL/dIm(z)``, so the
    derivative along ``v`` is ``Re(sum(conj(grad) * v))`` (``sum(grad * v)`` when real).
    The loss is quadratic along any line (the convolution is bilinear in ``(x, w)``
    and linear in ``bias``), so central differences have no truncation error, only
    rounding, whatever the step.
    """
    rng = np.random.default_rng(case.seed + 2)
    step = 1e-2

    def loss(args: list[np.ndarray | None]) -> float:
        return float(np.sum(np.real(reference_conv(*args, **case.kwargs()) * np.conj(cotangent))))

    for i, (name, a, g) in enumerate(zip(("x", "w", "bias"), arrays, grads, strict=True)):
        if a is None:
            continue
        assert g is not None, name
        v = random_like(a, rng)
        plus, minus = list(arrays), list(arrays)
        plus[i], minus[i] = a + step * v, a - step * v
        numerical = (loss(plus) - loss(minus)) / (2 * step)
        analytic = float(np.sum(np.real(np.conj(g) * v)))
        # A bound on |derivative| from the inputs alone (not from the gradient under test):
        # the loss with every array, v and the cotangent replaced by their magnitudes.
        magnitudes = [None if b is None else np.abs(b) for b in arrays]
        magnitudes[i] = np.abs(v)
        if name == "bias":
            magnitudes[0] = np.zeros(arrays[0].shape)
        scale = float(np.sum(reference_conv(*magnitudes, **case.kwargs()) * np.abs(cotangent)))
        assert abs(analytic - numerical) <= 1e-6 * scale + 1e-12, (
            f"d/d{name} along a random direction: autodiff {analytic!r}, central differences {numerical!r}"
        )


def float64_arrays(case: ConvCase) -> Arrays:
    x, w, bias = case.arrays()
    return x, w, bias


# ------------------------------------------------------- against the reference


def gradients_by_backend(case: ConvCase, arrays: Arrays, cotangent: np.ndarray) -> dict[str, Grads]:
    """Each requested framework's gradients of ``sum(real(y * conj(cotangent)))``, in PyTorch's convention.

    Real inputs go through ``jax.vjp`` with the cotangent; complex ones through
    ``jax.grad``, whose result is conjugated (see the Wirtinger test below).
    """
    grads: dict[str, Grads] = {}
    if "torch" in BACKENDS:
        grads["torch"] = torch_grads(case, arrays, cotangent)
    if "jax" in BACKENDS:
        if np.iscomplexobj(cotangent):
            grads["jax"] = [None if g is None else np.conj(g) for g in jax_grads(case, arrays, cotangent)]
        else:
            grads["jax"] = jax_vjp(case, arrays, cotangent)
    return grads


def check_gradients(case: ConvCase) -> None:
    arrays = float64_arrays(case)
    cotangent = cotangent_for(case, arrays)
    grads = gradients_by_backend(case, arrays, cotangent)
    for backend, backend_grads in grads.items():
        try:
            assert_directional_derivatives(case, arrays, cotangent, backend_grads)
        except AssertionError as error:
            raise AssertionError(f"{backend}: {error}") from None
    if len(grads) == 2:
        assert_grads_close(grads["torch"], grads["jax"], "torch vs jax")


@needs_autodiff
@GRADIENT_SETTINGS
@given(case=conv_cases(dtypes=("float64",)))
def test_gradients_match_reference_and_agree_across_frameworks(case: ConvCase) -> None:
    """Torch autograd and ``jax.vjp`` against central differences of the reference, and against each other."""
    check_gradients(case)


# --------------------------------------------------------------------- complex


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


@needs_autodiff
@settings(max_examples=max(3, settings().max_examples // 6))
@given(case=conv_cases(dtypes=("complex128",)))
def test_complex_gradients_match_reference_and_agree_across_frameworks(case: ConvCase) -> None:
    """The real loss ``sum(real(y * conj(c)))``: torch ``.grad`` equals ``conj(jax.grad)``, both match the reference."""
    check_gradients(case)


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


@needs_torch
@pytest.mark.parametrize("case", TORCH_CHECK_CASES.values(), ids=TORCH_CHECK_CASES.keys())
def test_torch_gradcheck_and_gradgradcheck(case: ConvCase) -> None:
    leaves = [torch.tensor(a, requires_grad=True) for a in float64_arrays(case) if a is not None]

    def conv(*args: Any) -> Any:
        return multiconv.batch_conv(*args, **case.kwargs())

    assert torch.autograd.gradcheck(conv, leaves)
    assert torch.autograd.gradgradcheck(conv, leaves)


@needs_torch
def test_torch_gradcheck_complex() -> None:
    case = dataclasses.replace(CHECK_CASES["2d-last-flip-circular-broadcast"], dtype="complex128")
    leaves = [torch.tensor(a, requires_grad=True) for a in float64_arrays(case) if a is not None]

    def conv(*args: Any) -> Any:
        return multiconv.batch_conv(*args, **case.kwargs())

    assert torch.autograd.gradcheck(conv, leaves)


@needs_jax
@pytest.mark.parametrize("case", CHECK_CASES.values(), ids=CHECK_CASES.keys())
def test_jax_check_grads_second_order(case: ConvCase) -> None:
    conv, args = jax_call(case, float64_arrays(case))
    jax_test_util.check_grads(conv, tuple(args), order=2, modes=("fwd", "rev"))


# --------------------------------------------------------------- JAX tracers

TRACER_CASE = ConvCase(
    batch=3, groups=1, group_in=2, group_out=2, in_size=(7,), kernel=(3,), padding="same", padding_mode="reflect", bias_kind="per_sample"
)


def jax_loss(case: ConvCase, cotangent: Any) -> Callable[..., Any]:
    def loss(x: Any, w: Any, bias: Any) -> Any:
        return loss_of(multiconv.batch_conv(x, w, bias, **case.kwargs()), cotangent, jnp)

    return loss


@needs_jax
def test_jax_jit_grad_and_jit_of_grad() -> None:
    case = TRACER_CASE
    arrays = float64_arrays(case)
    x, w, bias = (jnp.asarray(a) for a in arrays)
    eager = multiconv.batch_conv(x, w, bias, **case.kwargs())
    jitted = jax.jit(lambda x, w, bias: multiconv.batch_conv(x, w, bias, **case.kwargs()))(x, w, bias)
    assert_conv_close(jitted, np.asarray(eager), bound=2 * error_bound(*arrays, dtype="float64", **case.kwargs()), like=x)

    cotangent = cotangent_for(case, arrays)
    loss = jax_loss(case, jnp.asarray(cotangent))
    grads = jax.grad(loss, argnums=(0, 1, 2))(x, w, bias)
    assert_directional_derivatives(case, arrays, cotangent, [np.asarray(g) for g in grads])
    jit_grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, w, bias)
    assert_grads_close([np.asarray(g) for g in jit_grads], [np.asarray(g) for g in grads], "jit(grad) vs grad")


POPULATION_CASES = {
    "1d": TRACER_CASE,
    "2d-last-groups": ConvCase(
        batch=2, groups=2, group_in=1, group_out=2, in_size=(4, 5), kernel=(2, 3), stride=(1, 2), layout="channels_last", bias_kind="shared"
    ),
}


@needs_jax
@pytest.mark.parametrize("case", POPULATION_CASES.values(), ids=POPULATION_CASES.keys())
def test_jax_vmap_over_a_population_equals_a_loop(case: ConvCase) -> None:
    population = 4
    members = [dataclasses.replace(case, seed=seed).arrays() for seed in range(population)]
    xs, ws, biases = (jnp.asarray(np.stack([np.asarray(m[i]) for m in members])) for i in range(3))

    def conv(x: Any, w: Any, bias: Any) -> Any:
        return multiconv.batch_conv(x, w, bias, **case.kwargs())

    vmapped = jax.vmap(conv)(xs, ws, biases)
    shared_weight = jax.vmap(conv, in_axes=(0, None, None))(xs, ws[0], biases[0])
    for p, (x, w, bias) in enumerate(members):
        bound = 2 * error_bound(x, w, bias, dtype="float64", **case.kwargs())
        assert_conv_close(vmapped[p], np.asarray(conv(jnp.asarray(x), jnp.asarray(w), jnp.asarray(bias))), bound=bound)
        assert_conv_close(vmapped[p], reference_conv(x, w, bias, **case.kwargs()), bound=bound)
        shared = reference_conv(x, members[0][1], members[0][2], **case.kwargs())
        assert_conv_close(
            shared_weight[p], shared, bound=2 * error_bound(x, members[0][1], members[0][2], dtype="float64", **case.kwargs())
        )


@needs_jax
def test_jax_vmap_of_grad_equals_a_loop() -> None:
    case = TRACER_CASE
    population = 3
    members = [dataclasses.replace(case, seed=seed).arrays() for seed in range(population)]
    cotangent = cotangent_for(case, members[0])
    xs, ws, biases = (jnp.asarray(np.stack([np.asarray(m[i]) for m in members])) for i in range(3))
    grad = jax.grad(jax_loss(case, jnp.asarray(cotangent)), argnums=(0, 1, 2))
    batched = jax.vmap(grad)(xs, ws, biases)
    for p, arrays in enumerate(members):
        single = [np.asarray(g) for g in grad(*(jnp.asarray(a) for a in arrays))]
        assert_grads_close([np.asarray(g[p]) for g in batched], single, f"vmap(grad) member {p}")


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


@pytest.mark.parametrize("backend", AUTODIFF_BACKENDS)
@pytest.mark.parametrize("case", EMPTY_CASES.values(), ids=EMPTY_CASES.keys())
def test_empty_batch_gradients_are_zeros_of_the_input_shapes(backend: str, case: ConvCase) -> None:
    arrays = float64_arrays(case)
    cotangent = cotangent_for(case, arrays)
    assert cotangent.size == 0
    grads = torch_grads(case, arrays, cotangent) if backend == "torch" else jax_grads(case, arrays, cotangent, jit=False)
    for name, a, g in zip(("x", "w", "bias"), arrays, grads, strict=True):
        assert a is not None
        assert g is not None, f"d/d{name} is None"
        assert g.shape == a.shape, name
        assert g.dtype == a.dtype, name
        assert not np.any(g), name
