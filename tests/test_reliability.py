"""Reliability on every engine: memory layouts, no mutation or aliasing, special values, half and complex.

The contract: the result is never a view of an input and inputs are never modified; every method
gives the same result whatever the memory layout of arrays holding the same values (bitwise where
the backend computes on one canonical layout: NumPy, JAX, arrays moved between backends; within the
contract's bound where PyTorch's own kernels choose by layout, see :func:`bitwise_expected`); a NaN
or Inf in one sample reaches only the outputs that read it (with ``fft``, as the README says, its
whole overlap-save block, and never another sample); half precision accumulates in float32;
complex convolution is bilinear, never conjugated.

``tests/test_dtypes.py`` and ``tests/conformance`` check some of this with ``method="auto"``; here
every engine of every requested backend is checked, on the arguments a lazy or layout-sensitive
implementation would get wrong.  JAX compiles every new shape, so JAX runs explicit cases where
NumPy and PyTorch also run Hypothesis.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from conformance.strategies import BACKEND_DTYPES, TROUBLE_SPOTS, ConvCase, conv_cases
from hypothesis import example, given
from hypothesis import strategies as st
from support import BACKENDS, as_backend, dtype_name, to_numpy

import multiconv
from multiconv import _algorithms, _api
from multiconv.testing import assert_conv_close, assert_matches_reference, error_bound, reference_conv

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

torch: Any = importlib.import_module("torch") if "torch" in BACKENDS else None
jax: Any = importlib.import_module("jax") if "jax" in BACKENDS else None
jnp: Any = importlib.import_module("jax.numpy") if "jax" in BACKENDS else None

ALL_DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
#: Backends cheap enough to run every engine on every Hypothesis example (JAX compiles each new shape).
EAGER_BACKENDS = [backend for backend in BACKENDS if backend != "jax"]
ORDERED_PAIRS = list(itertools.product(BACKENDS, repeat=2))


def engines(backend: str) -> tuple[str, ...]:
    """Every named engine of ``backend`` (``auto`` picks one of them)."""
    return tuple(importlib.import_module(f"multiconv.backends.{backend}").METHODS)


ENGINES = [(backend, engine) for backend in BACKENDS for engine in engines(backend)]
#: Engines whose outputs are elementwise sums (``fft`` mixes a whole block).
DIRECT_ENGINES = [(backend, engine) for backend, engine in ENGINES if engine != "fft"]
HALF_ENGINES = [
    (backend, dtype, engine) for backend, engine in ENGINES for dtype in BACKEND_DTYPES[backend] if dtype in ("float16", "bfloat16")
]


def trouble_spots(**fixed: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Pin every known trouble spot as an explicit example (with the other arguments ``fixed``)."""

    def pin(test: Callable[..., None]) -> Callable[..., None]:
        for case in TROUBLE_SPOTS.values():
            test = example(case=case, **fixed)(test)
        return test

    return pin


def fit_dtype(case: ConvCase, backend: str) -> ConvCase:
    """``case`` with a dtype ``backend`` supports (bfloat16 becomes float16 on NumPy)."""
    return case if case.dtype in BACKEND_DTYPES[backend] else dataclasses.replace(case, dtype="float16")


def convert(arrays: tuple[np.ndarray | None, ...], backend: str, dtype: str) -> tuple[Any, ...]:
    return tuple(as_backend(a, backend, dtype) for a in arrays)


def call(x: Any, w: Any, bias: Any, **kwargs: Any) -> Any:
    """``batch_conv`` with NumPy's floating-point warnings off.

    With an Inf in the input, the matmuls and FFTs of the NumPy engines warn ``invalid value``
    (``inf - inf``, or ``inf * 0`` inside BLAS), as ``np.matmul`` itself does; pytest makes
    warnings errors.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return multiconv.batch_conv(x, w, bias, **kwargs)


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: these tests make thousands of tiny calls.

    On a shared 2-core CPU, torch's intra-op pool spends about 10 ms a call synchronising its
    threads; on one thread a call takes about 50 us.  Restored after each test.
    """
    if torch is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# =============================================================================================
# (a) memory layouts: the same values in any layout give the same result


def unaligned_copy(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` one byte off its dtype's alignment."""
    raw = np.zeros(a.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(a.dtype).reshape(a.shape)
    unaligned[...] = a
    return unaligned


def numpy_layouts(a: np.ndarray) -> dict[str, np.ndarray]:
    """``a``'s values in other memory layouts (``broadcast``: stride 0, the values of ``a[:1]``)."""
    readonly = a.copy()
    readonly.flags.writeable = False
    big = np.zeros(tuple(2 * size + 1 for size in a.shape), a.dtype)
    strided = big[tuple(slice(1, None, 2) for _ in a.shape)]  # an offset and step 2 on every axis
    strided[...] = a
    return {
        "readonly": readonly,
        "fortran": np.asfortranarray(a),
        "negative": np.flip(np.flip(a).copy()),  # negative strides on every axis
        "strided": strided,
        "broadcast": np.broadcast_to(a[:1], a.shape),
        "byteswapped": a.astype(a.dtype.newbyteorder()),
        "unaligned": unaligned_copy(a),
    }


def torch_layouts(a: Any) -> dict[str, Any]:
    """``a``'s values in other strides, offsets, memory formats and lazy views (``expanded``: stride 0)."""
    dims = tuple(reversed(range(a.ndim)))
    big = a.new_zeros(tuple(2 * size + 1 for size in a.shape))
    strided = big[tuple(slice(1, None, 2) for _ in a.shape)]
    strided.copy_(a)
    flat = a.new_zeros(a.numel() + 3)
    offset = flat[3:].view(a.shape)  # contiguous, but 3 elements into its storage
    offset.copy_(a)
    layouts = {
        "transposed": a.permute(dims).contiguous().permute(dims),
        "strided": strided,
        "offset": offset,
        "expanded": a[:1].expand(a.shape),
    }
    if a.ndim >= 3:
        layouts["axis-1-last"] = a.movedim(1, -1).contiguous().movedim(-1, 1)
    if a.ndim in (4, 5):
        layouts["memory-format"] = a.contiguous(memory_format=torch.channels_last if a.ndim == 4 else torch.channels_last_3d)
    if a.is_complex():
        layouts["conj-view"] = a.conj().resolve_conj().conj()  # lazy: is_conj() is set, the values are a's
    return layouts


def jax_layouts(a: Any) -> dict[str, Any]:
    """``a`` committed to a device and uncommitted (JAX has no strides)."""
    return {"committed": jax.device_put(a, jax.devices()[0]), "uncommitted": jnp.asarray(np.asarray(a))}


def layouts(a: Any, backend: str) -> dict[str, Any]:
    if a is None:
        return {}
    return {"numpy": numpy_layouts, "torch": torch_layouts, "jax": jax_layouts}[backend](a)


def contiguous_copy(a: Any) -> Any:
    """A fresh, C-contiguous, aligned, native-order, uncommitted copy of ``a``'s values."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return np.array(a, dtype=a.dtype.newbyteorder("="), order="C")
    if torch is not None and isinstance(a, torch.Tensor):
        return a.resolve_conj().clone(memory_format=torch.contiguous_format)
    return jnp.asarray(np.asarray(a))


def layout_combinations(x: Any, w: Any, bias: Any, backend: str) -> dict[str, tuple[tuple[Any, Any, Any], set[str]]]:
    """Each layout for all three arrays at once, and rotations that give each array a different one.

    Every combination comes with the names of the layouts it uses.
    """
    per_array = [layouts(a, backend) for a in (x, w, bias)]
    names = sorted(set().union(*per_array))
    combos = {}
    for shift, name in enumerate(names):
        for label, picks in ((name, [name] * 3), (f"mixed-{name}", [names[(shift + i) % len(names)] for i in range(3)])):
            arrays = tuple(found.get(pick, a) for a, found, pick in zip((x, w, bias), per_array, picks, strict=True))
            used = {pick for found, pick in zip(per_array, picks, strict=True) if pick in found}
            combos[label] = (arrays, used)
    return combos


#: The torch layout that keeps the contiguous memory order: only its data pointer moves.
TORCH_SAME_ORDER = {"offset"}


def bitwise_expected(source: str, target: str, used: set[str]) -> bool:
    """Whether a layout must give bitwise the contiguous result, or only the contract's bound.

    NumPy and JAX compute on one canonical layout (NumPy: an aligned C-contiguous copy; JAX has no
    strides), and arrays leaving for another backend are made contiguous, so both must be bitwise.
    One exception, last-bit differences well inside the bound:

    * PyTorch hands strided tensors to its kernels as they are, and its kernels choose by layout,
      as ``F.conv2d`` itself does: oneDNN's channels-last convolution, and complex matmuls of
      transposed or conjugate-bit operands, sum in another order.  Torch alone does the same.
    """
    if source == target == "torch":
        return used <= TORCH_SAME_ORDER
    return True


def assert_layouts_match_contiguous(x: Any, w: Any, bias: Any, *, backend: str, target: str, kwargs: dict[str, Any]) -> None:
    dtype = dtype_name(x)
    for engine in engines(target):
        expected_by_values: dict[bytes, Any] = {}  # most layouts keep the values: one contiguous call serves them
        for name, ((xv, wv, bv), used) in layout_combinations(x, w, bias, backend).items():
            y = multiconv.batch_conv(xv, wv, bv, method=engine, backend=target, **kwargs)
            contiguous = [contiguous_copy(a) for a in (xv, wv, bv)]
            key = b"|".join(b"" if a is None else to_numpy(a).tobytes() for a in contiguous)
            if key not in expected_by_values:
                expected_by_values[key] = multiconv.batch_conv(*contiguous, method=engine, backend=target, **kwargs)
            expected = expected_by_values[key]
            assert type(y) is type(expected)
            what = f"{backend} layout {name}, {target} engine {engine}"
            if bitwise_expected(backend, target, used):
                np.testing.assert_array_equal(to_numpy(y), to_numpy(expected), err_msg=what)
            else:
                bound = error_bound(*contiguous, dtype=dtype, method=engine, **kwargs)
                assert_conv_close(y, to_numpy(expected), bound=bound, like=expected)


@pytest.mark.parametrize("backend", EAGER_BACKENDS)
@trouble_spots()
@given(case=conv_cases(dtypes=ALL_DTYPES))
def test_every_engine_gives_the_contiguous_result_for_any_memory_layout(backend: str, case: ConvCase) -> None:
    case = fit_dtype(case, backend)
    x, w, bias = convert(case.arrays(), backend, case.dtype)
    assert_layouts_match_contiguous(x, w, bias, backend=backend, target=backend, kwargs=case.kwargs())


@pytest.mark.skipif("numpy" not in BACKENDS, reason="NumPy backend not requested")
def test_numpy_unaligned_inputs_give_bitwise_the_aligned_result() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 10)), rng.standard_normal((1, 1, 1, 4))
    expected = multiconv.batch_conv(x, w, method="matmul")
    np.testing.assert_array_equal(multiconv.batch_conv(unaligned_copy(x), w, method="matmul"), expected)


#: Explicit layout cases (cached JAX compilations): 1-D to 3-D, groups, both layouts, every weight kind.
LAYOUT_CASES = {
    "1d-groups-stride": ConvCase(
        batch=3, groups=2, group_in=2, group_out=3, in_size=(11,), kernel=(3,), stride=2, padding=1, bias_kind="per_sample"
    ),
    "2d-last-reflect-broadcast": ConvCase(
        batch=2,
        groups=1,
        group_in=3,
        group_out=2,
        in_size=(5, 6),
        kernel=(3, 2),
        padding="same",
        padding_mode="reflect",
        layout="channels_last",
        weight_kind="broadcast",
        bias_kind="shared",
    ),
    "3d-dilated-shared-flip": ConvCase(
        batch=2,
        groups=2,
        group_in=1,
        group_out=2,
        in_size=(4, 3, 5),
        kernel=(2, 2, 2),
        dilation=(1, 1, 2),
        padding=((1, 0), (0, 1), (1, 1)),
        flip=True,
        weight_kind="shared",
        bias_kind="broadcast",
    ),
}
FIRST_LAYOUT_CASE = next(iter(LAYOUT_CASES))
#: Every (source, target, dtype, case), except into JAX, where each engine compiles per case, dtype,
#: source device and commitment: NumPy and torch bring the first case, JAX arrays the others in float64.
LAYOUT_PARAMS = [
    (source, target, dtype, name)
    for source, target in ORDERED_PAIRS
    for dtype in ("float64", "complex64")
    for name in LAYOUT_CASES
    if target != "jax"
    or (name == FIRST_LAYOUT_CASE and source != "jax")
    or (source == "jax" and dtype == "float64" and name != FIRST_LAYOUT_CASE)
]


@pytest.mark.parametrize(("source", "target", "dtype", "name"), LAYOUT_PARAMS)
def test_layouts_on_every_engine_of_every_target(source: str, target: str, dtype: str, name: str) -> None:
    """Every source's layouts (JAX: committed or not) through every engine of every ``backend=`` target."""
    case = LAYOUT_CASES[name]
    x, w, bias = convert(case.arrays(), source, dtype)
    assert_layouts_match_contiguous(x, w, bias, backend=source, target=target, kwargs=case.kwargs())


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"] or ["numpy"])
def test_numpy_views_beside_a_framework_array_match_contiguous(backend: str, dtype: str) -> None:
    """NumPy weights and biases in odd layouts join a torch or JAX ``x`` (on NumPy alone: NumPy ``x``)."""
    case = LAYOUT_CASES[FIRST_LAYOUT_CASE]
    x_host, w_host, bias_host = case.arrays()
    assert bias_host is not None
    x = as_backend(x_host, backend, dtype)
    w, bias = as_backend(w_host, "numpy", dtype), as_backend(bias_host, "numpy", dtype)
    for engine in engines(backend):
        expected = multiconv.batch_conv(x, w, bias, method=engine, **case.kwargs())
        for name, wv in numpy_layouts(w).items():
            bv = numpy_layouts(bias)[name]
            y = multiconv.batch_conv(x, wv, bv, method=engine, **case.kwargs())
            if name == "broadcast":
                expected_here = multiconv.batch_conv(x, contiguous_copy(wv), contiguous_copy(bv), method=engine, **case.kwargs())
            else:
                expected_here = expected
            what = f"{name} beside {backend}, engine {engine}"
            if bitwise_expected("numpy", backend, {name}):
                np.testing.assert_array_equal(to_numpy(y), to_numpy(expected_here), err_msg=what)
            else:
                assert_conv_close(y, to_numpy(expected_here), bound=error_bound(x, w, bias, dtype=dtype, method=engine, **case.kwargs()))


def channels_last_memory(x: Any, backend: str) -> Any:
    """``x`` (channels first) with its channels last in memory: torch's memory formats, a NumPy view (JAX: ``x``)."""
    if backend == "torch":
        return x.contiguous(memory_format=torch.channels_last if x.ndim == 4 else torch.channels_last_3d)
    if backend == "numpy":
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)
    return x


def move_channels_last(x: Any, backend: str) -> Any:
    if backend == "torch":
        return x.movedim(1, -1)
    return (np if backend == "numpy" else jnp).moveaxis(x, 1, -1)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize(("backend", "engine"), ENGINES)
def test_channels_last_memory_and_the_channels_last_layout(backend: str, engine: str, ndim: int) -> None:
    """NCHW in channels-last memory (torch.channels_last, channels_last_3d), and the NHWC tensor that memory is.

    ``layout="channels_last"`` given that contiguous NHWC array or a permuted (non-contiguous) one agree,
    and both are the channels-first result moved.
    """
    case = ConvCase(
        batch=2, groups=2, group_in=2, group_out=2, in_size=(5, 4, 3)[:ndim], kernel=(3, 2, 2)[:ndim], padding=1, bias_kind="shared"
    )
    kwargs = case.kwargs()
    x, w, bias = convert(case.arrays(), backend, "float32")
    bound = error_bound(x, w, bias, dtype="float32", method=engine, **kwargs)
    formatted = channels_last_memory(x, backend)
    y = multiconv.batch_conv(x, w, bias, method=engine, **kwargs)
    y_formatted = multiconv.batch_conv(formatted, w, bias, method=engine, **kwargs)
    if bitwise_expected(backend, backend, {"memory-format"}):
        np.testing.assert_array_equal(to_numpy(y_formatted), to_numpy(y))
    else:
        assert_conv_close(y_formatted, to_numpy(y), bound=bound, like=x)
    last = {**kwargs, "layout": "channels_last"}
    y_nhwc = multiconv.batch_conv(move_channels_last(formatted, backend), w, bias, method=engine, **last)
    y_permuted = multiconv.batch_conv(move_channels_last(x, backend), w, bias, method=engine, **last)
    if bitwise_expected(backend, backend, {"transposed"}):
        np.testing.assert_array_equal(to_numpy(y_nhwc), to_numpy(y_permuted))
    else:
        assert_conv_close(y_nhwc, to_numpy(y_permuted), bound=np.moveaxis(bound, 1, -1), like=x)
    assert_conv_close(y_nhwc, np.moveaxis(to_numpy(y), 1, -1), bound=2 * np.moveaxis(bound, 1, -1), like=x)


# =============================================================================================
# (b) no mutation, no aliasing, on the cases where a lazy engine could hand back an input


@dataclasses.dataclass(frozen=True)
class MemoryCase:
    """A case whose weight makes the result an input (``identity``) or the bias (``zeros``) in value."""

    case: ConvCase
    weight: str = "identity"


def center_identity(case: ConvCase) -> np.ndarray:
    """A weight whose center tap copies channel ``c`` of each group to output ``c`` (needs ``group_in == group_out``)."""
    core = np.zeros((case.out_channels, case.group_in, *case.kernel))
    center = tuple(k // 2 for k in case.kernel)
    for o in range(case.out_channels):
        position = (o, o % case.group_in, *center)
        core[position] = 1.0
    weight: np.ndarray = np.broadcast_to(core, case.w_shape).copy()
    return weight


def _pointwise(**kwargs: Any) -> ConvCase:
    base: dict[str, Any] = {"batch": 2, "groups": 1, "group_in": 2, "group_out": 2, "in_size": (7,), "kernel": (1,)}
    return ConvCase(**{**base, **kwargs})


#: The result equals an input (or a reshaped bias) in value: "return a view" would pass a value test.
LAZY_CASES = {
    "pointwise-identity": MemoryCase(_pointwise()),
    "pointwise-identity-bias": MemoryCase(_pointwise(bias_kind="per_sample")),
    "depthwise-identity-2d": MemoryCase(_pointwise(groups=3, group_in=1, group_out=1, in_size=(4, 5), kernel=(1, 1))),
    "batch-1-identity": MemoryCase(_pointwise(batch=1)),
    "stride-2-identity": MemoryCase(_pointwise(in_size=(9,), stride=2)),
    "channels-last-identity-3d": MemoryCase(
        _pointwise(groups=2, group_in=1, group_out=1, in_size=(3, 2, 4), kernel=(1, 1, 1), layout="channels_last")
    ),
    "flip-identity": MemoryCase(_pointwise(flip=True)),
    "broadcast-identity": MemoryCase(_pointwise(weight_kind="broadcast", bias_kind="broadcast")),
    "shared-identity": MemoryCase(_pointwise(weight_kind="shared", bias_kind="shared")),
    "reflect-no-padding": MemoryCase(_pointwise(padding_mode="reflect")),
    "replicate-center-tap": MemoryCase(_pointwise(kernel=(3,), padding=1, padding_mode="replicate")),
    "circular-same-2d-flip": MemoryCase(
        _pointwise(in_size=(4, 5), kernel=(3, 3), padding="same", padding_mode="circular", flip=True, layout="channels_last")
    ),
    "bias-only": MemoryCase(_pointwise(group_out=3, in_size=(4,), kernel=(4,), bias_kind="per_sample"), weight="zeros"),
    "batch-0": MemoryCase(_pointwise(batch=0, kernel=(3,), padding=1, bias_kind="per_sample"), weight="random"),
}
#: Every target engine compiles anew on JAX for each case (and source device): JAX runs fewer.
JAX_LAZY_CASES = ("pointwise-identity-bias", "stride-2-identity", "channels-last-identity-3d", "broadcast-identity", "bias-only", "batch-0")
#: The cases run through every other backend (``backend=``).
OVERRIDE_CASES = ("pointwise-identity-bias", "stride-2-identity", "channels-last-identity-3d", "batch-0")


def memory_cases(source: str, target: str) -> tuple[str, ...]:
    if source == target:
        return JAX_LAZY_CASES if target == "jax" else tuple(LAZY_CASES)
    return OVERRIDE_CASES[:1] if target == "jax" else OVERRIDE_CASES


MEMORY_PARAMS = [(source, target, name) for source, target in ORDERED_PAIRS for name in memory_cases(source, target)]


def memory_case_inputs(memory: MemoryCase, backend: str, *, requires_grad: bool) -> tuple[Any, Any, Any]:
    case = memory.case
    x, w, bias = case.arrays()
    if memory.weight == "identity":
        w = center_identity(case)
    elif memory.weight == "zeros":
        w = np.zeros(case.w_shape)
    arrays = convert((x, w, bias), backend, "float32")
    if backend == "numpy":
        arrays[0].flags.writeable = False  # a read-only x and a writable w: both flags must survive
    if requires_grad:
        arrays = tuple(None if a is None else a.requires_grad_(True) for a in arrays)  # noqa: FBT003
    return arrays


def memory_range(a: Any) -> tuple[int, int] | None:
    """The bytes ``a`` can reach (a torch tensor: its whole storage); ``None`` when empty."""
    if isinstance(a, np.ndarray):
        if a.size == 0:
            return None
        start = a.__array_interface__["data"][0]
        low = sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True) if s < 0)
        high = sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True) if s > 0)
        return start + low, start + high + a.itemsize
    if torch is not None and isinstance(a, torch.Tensor):
        storage = a.untyped_storage()
        return (storage.data_ptr(), storage.data_ptr() + storage.nbytes()) if storage.nbytes() else None
    if a.size == 0:
        return None
    pointer = a.unsafe_buffer_pointer()
    return pointer, pointer + a.nbytes


def assert_owns_its_memory(y: Any, arrays: tuple[Any, ...], what: str) -> None:
    mine = memory_range(y)
    for name, a in zip(("x", "w", "bias"), arrays, strict=True):
        if a is None:
            continue
        if isinstance(y, np.ndarray) and isinstance(a, np.ndarray):
            assert not np.shares_memory(y, a), f"{what}: the result shares memory with {name}"
        theirs = memory_range(a)
        if mine is not None and theirs is not None:
            assert mine[1] <= theirs[0] or theirs[1] <= mine[0], f"{what}: the result's memory {mine} overlaps {name}'s {theirs}"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What an input looked like: its values; its strides and flags (NumPy), version and autograd state (torch), liveness (JAX)."""

    values: np.ndarray
    state: tuple[Any, ...]


def state_of(a: Any) -> tuple[Any, ...]:
    if isinstance(a, np.ndarray):
        flags = a.flags
        return (a.strides, flags.writeable, flags.aligned, flags.c_contiguous, flags.f_contiguous, flags.owndata)
    if torch is not None and isinstance(a, torch.Tensor):
        return (a.stride(), a.storage_offset(), a._version, a.requires_grad, a.is_leaf, a.dtype)
    return (a.is_deleted(), a.committed, a.dtype)


def snapshot(a: Any) -> Snapshot | None:
    return None if a is None else Snapshot(to_numpy(a).copy(), state_of(a))


def assert_unchanged(snapshots: list[Snapshot | None], arrays: tuple[Any, ...], what: str) -> None:
    for name, before, a in zip(("x", "w", "bias"), snapshots, arrays, strict=True):
        if before is None:
            continue
        np.testing.assert_array_equal(to_numpy(a), before.values, err_msg=f"{what}: {name} was modified")
        assert state_of(a) == before.state, f"{what}: {name}'s flags/version changed"


@pytest.mark.parametrize(("source", "target", "name"), MEMORY_PARAMS)
def test_no_engine_modifies_an_input_or_returns_a_view_of_one(source: str, target: str, name: str) -> None:
    memory = LAZY_CASES[name]
    kwargs = memory.case.kwargs()
    # Autograd needs PyTorch to compute; other targets refuse tensors that require grad (test_errors).
    requires_grad = source == target == "torch"
    for engine in engines(target):
        what = f"{source} -> {target} engine {engine}"
        arrays = memory_case_inputs(memory, source, requires_grad=requires_grad)
        before = [snapshot(a) for a in arrays]
        y = multiconv.batch_conv(*arrays, method=engine, backend=None if source == target else target, **kwargs)
        assert_owns_its_memory(y, arrays, what)
        assert_unchanged(before, arrays, what)
        assert_matches_reference(y, *arrays, method=engine, **kwargs)
        if requires_grad:
            y.backward(torch.ones_like(y))
            for a in arrays:
                if a is not None:
                    assert a.grad is not None
                    assert a.grad.shape == a.shape
                    assert_owns_its_memory(a.grad, arrays, f"{what}, a gradient")
            assert_unchanged(before, arrays, f"{what}, after backward")
        # Writing into the result never reaches an input (JAX arrays are immutable).
        if isinstance(y, np.ndarray):
            assert y.flags.writeable
            y += 1
        elif torch is not None and isinstance(y, torch.Tensor):
            y.detach().add_(1)
        assert_unchanged(before, arrays, f"{what}, after writing into the result")


# =============================================================================================
# (c) special values: NaN and Inf reach only the outputs that read them


def reach(case: ConvCase, where: str, index: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(must, may)``: the outputs that read the element ``index`` of ``where``, and those allowed to see it.

    ``may`` is larger than ``must`` only for a weight: where its tap falls on zero padding the
    reference multiplies ``0 * NaN``, which a framework convolution that skips the padding never does.
    """
    kwargs = case.kwargs()
    if where == "bias":
        may = np.zeros(reference_conv(np.zeros(case.x_shape), np.zeros(case.w_shape), **kwargs).shape, bool)
        b, o = index
        may[(b, Ellipsis, o) if case.layout == "channels_last" else (b, o)] = True
        return may, may
    if where == "x":
        marked = np.zeros(case.x_shape)
        marked[index] = 1.0
        must = reference_conv(marked, np.ones(case.w_shape), **kwargs) > 0
        return must, must
    marked = np.zeros(case.w_shape)
    marked[index] = 1.0
    must = reference_conv(np.ones(case.x_shape), marked, **kwargs) > 0
    may = np.zeros_like(must)
    b, o = index[:2]
    may[(b, Ellipsis, o) if case.layout == "channels_last" else (b, o)] = True
    return must, may


def spoil(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray | None], where: str, index: tuple[int, ...], value: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Copies of ``(x, w, bias)`` with ``value`` at ``index`` of ``where``."""
    spoiled = [None if a is None else a.copy() for a in arrays]
    target = spoiled[("x", "w", "bias").index(where)]
    assert target is not None
    target[index] = value
    return spoiled[0], spoiled[1], spoiled[2]  # type: ignore[return-value]


def random_index(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(rng.integers(size)) for size in shape)


def assert_stays_local(clean: np.ndarray, dirty: np.ndarray, must: np.ndarray, may: np.ndarray, what: str) -> None:
    finite = np.isfinite(dirty)
    outside = ~may
    leaked = int((~finite & outside).sum())
    assert not leaked, f"{what}: {leaked} outputs that never read the special value are not finite"
    # Same shapes, same summation order: the outputs that never read it are bitwise those of the clean run.
    np.testing.assert_array_equal(dirty[outside], clean[outside], err_msg=what)
    lost = int((finite & must).sum())
    assert not lost, f"{what}: {lost} of {int(must.sum())} outputs that read the special value are finite"


@pytest.mark.parametrize("backend", EAGER_BACKENDS)
@trouble_spots(where="w", value=np.nan)
@given(
    case=conv_cases(dtypes=ALL_DTYPES, min_batch=2),
    where=st.sampled_from(("x", "w", "bias")),
    value=st.sampled_from((np.nan, np.inf, -np.inf)),
)
def test_nan_and_inf_reach_only_the_outputs_that_read_them(backend: str, case: ConvCase, where: str, value: float) -> None:
    case = fit_dtype(case, backend)
    if case.batch < 2:  # a trouble spot with fewer samples than this property needs
        return
    if (where == "w" and case.weight_kind != "per_sample") or (where == "bias" and case.bias_kind != "per_sample"):
        where = "x"  # a shared weight or bias is every sample's: its NaN belongs everywhere
    clean_host = case.arrays()
    rng = np.random.default_rng(case.seed)
    shape = {"x": case.x_shape, "w": case.w_shape, "bias": case.bias_shape}[where]
    assert shape is not None
    index = random_index(shape, rng)
    must, may = reach(case, where, index)
    clean = convert(clean_host, backend, case.dtype)
    dirty = convert(spoil(clean_host, where, index, value), backend, case.dtype)
    for engine in engines(backend):
        if engine == "fft":
            continue
        y_clean = to_numpy(call(*clean, method=engine, **case.kwargs()))
        y_dirty = to_numpy(call(*dirty, method=engine, **case.kwargs()))
        assert_stays_local(y_clean, y_dirty, must, may, f"{backend} {engine}: {value} at {where}{list(index)}")


#: Explicit cases for every backend (JAX included): padding modes, dilation, stride, groups, layouts.
SPECIAL_CASES = {
    "1d-dilated-groups": ConvCase(
        batch=3, groups=2, group_in=2, group_out=2, in_size=(24,), kernel=(4,), dilation=2, padding=3, bias_kind="per_sample"
    ),
    "2d-last-reflect-stride": ConvCase(
        batch=3,
        groups=1,
        group_in=2,
        group_out=3,
        in_size=(7, 8),
        kernel=(3, 3),
        stride=(2, 1),
        padding="same",
        padding_mode="reflect",
        layout="channels_last",
        bias_kind="per_sample",
    ),
    "3d-shared-circular": ConvCase(
        batch=2,
        groups=1,
        group_in=2,
        group_out=2,
        in_size=(4, 5, 4),
        kernel=(2, 3, 2),
        padding=1,
        padding_mode="circular",
        weight_kind="shared",
    ),
}


@pytest.mark.parametrize("name", SPECIAL_CASES)
@pytest.mark.parametrize(("backend", "engine"), DIRECT_ENGINES)
def test_special_values_stay_local_and_keep_their_sign(backend: str, engine: str, name: str) -> None:
    """On positive data an Inf must come out as an Inf of its sign, not a NaN, wherever it is read."""
    case = SPECIAL_CASES[name]
    rng = np.random.default_rng(7)
    clean_host = tuple(None if shape is None else rng.uniform(0.5, 1.5, shape) for shape in (case.x_shape, case.w_shape, case.bias_shape))
    clean = convert(clean_host, backend, "float64")
    y_clean = to_numpy(call(*clean, method=engine, **case.kwargs()))
    places = ["x", "w", "bias"] if case.weight_kind == "per_sample" else ["x"]
    for where, value in itertools.product(places, (np.nan, np.inf, -np.inf)):
        shape = {"x": case.x_shape, "w": case.w_shape, "bias": case.bias_shape}[where]
        assert shape is not None
        index = random_index(shape, rng)
        index = (1, *index[1:])  # sample 1: the middle one when B = 3
        must, may = reach(case, where, index)
        dirty = convert(spoil(clean_host, where, index, value), backend, "float64")  # type: ignore[arg-type]
        y_dirty = to_numpy(call(*dirty, method=engine, **case.kwargs()))
        what = f"{backend} {engine}: {value} at {where}{list(index)}"
        assert_stays_local(y_clean, y_dirty, must, may, what)
        if np.isnan(value):
            assert np.isnan(y_dirty[must]).all(), what
        else:
            np.testing.assert_array_equal(y_dirty[must], value, err_msg=f"{what}: an Inf read with positive weights stays an Inf")


def fft_block_reach(spec: Any, padded_position: int) -> np.ndarray:
    """The stride-1 outputs of every overlap-save block whose input contains ``padded_position`` (1-D)."""
    blocks = _algorithms.fft_blocks(spec)
    (nfft,), (step,), (count,), (full,) = blocks.nfft, blocks.step, blocks.blocks, blocks.full
    spread = np.zeros(full, bool)
    for j in range(count):
        if j * step <= padded_position < j * step + nfft:
            spread[j * step : min((j + 1) * step, full)] = True
    return spread


#: Six overlap-save blocks of 135 points, 103 apart (a position in [103 j + 103, 103 j + 135) is in two).
FFT_CASE = ConvCase(batch=3, groups=1, group_in=2, group_out=2, in_size=(600,), kernel=(33,), padding=((4, 6),), bias_kind="per_sample")


@pytest.mark.parametrize("backend", BACKENDS)
def test_fft_spreads_a_nan_over_its_block_and_no_further(backend: str) -> None:
    """README: with ``fft`` a NaN or Inf spreads over its overlap-save block; other samples stay clean."""
    case = FFT_CASE
    clean_host = case.arrays()
    clean = convert(clean_host, backend, "float64")
    kwargs = case.kwargs()
    y_clean = to_numpy(call(*clean, method="fft", **kwargs))
    spec = _api.plan(*clean, method="fft", **kwargs).spec
    lo = spec.padding[0][0]
    bound = error_bound(*clean_host, dtype="float64", method="fft", **kwargs)
    assert _algorithms.fft_blocks(spec).blocks == (6,)
    # x: inside one block, in two overlapping blocks, in the low padding's block; a weight; a bias.
    spots: list[tuple[str, tuple[int, ...]]] = [
        ("x", (1, 0, 300)),
        ("x", (1, 1, 220)),
        ("x", (1, 1, 2)),
        ("w", (1, 1, 0, 5)),
        ("bias", (1, 0)),
    ]
    for where, index in spots:
        for value in (np.nan, np.inf):
            must, may = reach(case, where, index)
            if where == "x":  # every output channel of sample 1, over the blocks that hold the position
                may = np.zeros_like(may)
                may[1] = fft_block_reach(spec, index[2] + lo)[None, :]
                assert may.sum() < may[1].size  # some blocks of the sample never see it
            dirty = convert(spoil(clean_host, where, index, value), backend, "float64")
            y_dirty = to_numpy(call(*dirty, method="fft", **kwargs))
            what = f"{backend} fft: {value} at {where}{list(index)}"
            finite = np.isfinite(y_dirty)
            assert not (finite & must).any(), what
            assert finite[~may].all(), f"{what}: the special value left its block(s)"
            # Other samples: not a bit changed (each sample's transforms and products are its own).
            others = np.arange(case.batch) != 1
            np.testing.assert_array_equal(y_dirty[others], y_clean[others], err_msg=what)
            # Blocks of the same sample that never saw it: clean within the FFT's bound.
            assert_conv_close(y_dirty[~may], y_clean[~may], bound=2 * bound[~may])


# =============================================================================================
# half precision: long sums accumulate in float32


def half_eps(dtype: str) -> float:
    return {"float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]


def float16_running_sum(terms: np.ndarray) -> float:
    """What a float16 accumulator makes of ``terms``, summed in order."""
    total = np.float16(0)
    for term in terms.astype(np.float16):
        total = np.float16(total + term)
    return float(total)


@pytest.mark.parametrize(("backend", "dtype", "engine"), HALF_ENGINES)
def test_half_precision_long_reductions_accumulate_in_float32(backend: str, dtype: str, engine: str) -> None:
    """4096 positive products per output (512 channels x 8 taps), sums near 2300: float16 steps are 2 there.

    A float32 accumulator leaves one rounding to half (``eps * |y|``) plus float32's own bound;
    a half accumulator would be off by hundreds (checked below on one output).
    """
    rng = np.random.default_rng(11)
    x = as_backend(rng.uniform(0.5, 1.0, (2, 512, 20)), backend, dtype)
    w = as_backend(rng.uniform(0.5, 1.0, (2, 2, 512, 8)), backend, dtype)
    bias = as_backend(rng.uniform(-1.0, 1.0, (2, 2)), backend, dtype)
    y = multiconv.batch_conv(x, w, bias, method=engine)
    xs, ws, bs = to_numpy(x), to_numpy(w), to_numpy(bias)  # the half-rounded values, exactly
    ref = reference_conv(xs, ws, bs)
    assert_matches_reference(y, x, w, bias, method=engine)  # the contract's bound (loose: n * eps > 1 here)
    tight = half_eps(dtype) * np.abs(ref) + error_bound(xs, ws, bs, dtype="float32", method=engine)
    assert_conv_close(y, ref, bound=tight, like=x)
    if dtype == "float16":
        naive = float16_running_sum((xs[0, :, :8] * ws[0, 0]).ravel()) + bs[0, 0]
        assert abs(naive - ref[0, 0, 0]) > 10 * tight[0, 0, 0]  # the bound tells the two accumulators apart


@pytest.mark.parametrize(("backend", "dtype", "engine"), [p for p in HALF_ENGINES if p[1] == "float16"])
def test_float16_partial_sums_beyond_its_range_do_not_overflow(backend: str, dtype: str, engine: str) -> None:
    """50 channels x 3 taps x 480 = 72000 > 65504, cancelled by 50 more channels: y = 0, finite."""
    x = as_backend(np.full((1, 100, 4), 480.0), backend, dtype)
    signs = np.repeat([1.0, -1.0], 50)
    w = as_backend(np.broadcast_to(signs[:, None], (1, 1, 100, 3)), backend, dtype)
    y = multiconv.batch_conv(x, w, method=engine)
    values = to_numpy(y)
    assert np.isfinite(values).all()
    ref = reference_conv(to_numpy(x), to_numpy(w))
    assert_conv_close(y, ref, bound=error_bound(to_numpy(x), to_numpy(w), dtype="float32", method=engine), like=x)


# =============================================================================================
# complex: bilinear, never conjugated


COMPLEX_CASE = ConvCase(
    batch=2, groups=2, group_in=2, group_out=2, in_size=(9,), kernel=(3,), padding="same", flip=True, bias_kind="per_sample"
)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize(("backend", "engine"), ENGINES)
def test_complex_convolution_is_bilinear_and_never_conjugated(backend: str, engine: str, dtype: str) -> None:
    case = dataclasses.replace(COMPLEX_CASE, dtype=dtype)
    x, w, bias = case.arrays()
    assert bias is not None
    xb, wb, bb = convert((x, w, bias), backend, dtype)
    y = multiconv.batch_conv(xb, wb, bb, method=engine, **case.kwargs())
    xs, ws, bs = to_numpy(xb), to_numpy(wb), to_numpy(bb)
    bound = error_bound(xs, ws, bs, dtype=dtype, method=engine, **case.kwargs())
    assert_conv_close(y, reference_conv(xs, ws, bs, **case.kwargs()), bound=bound, like=xb)
    values = to_numpy(y)
    for name, (xc, wc) in {"conj(x)": (xs.conj(), ws), "conj(w)": (xs, ws.conj()), "conj(x) and conj(w)": (xs.conj(), ws.conj())}.items():
        conjugated = reference_conv(xc, wc, bs, **case.kwargs())
        # Far outside the bound almost everywhere: the test can tell the two formulas apart.
        assert np.median(np.abs(values - conjugated) / bound) > 100, f"{backend} {engine} looks like the formula with {name}"
