"""Threads and repeated calls: ``batch_conv`` is thread-safe and deterministic on the CPU.

Eight threads released together by a barrier call ``batch_conv`` on a mix of shapes,
ranks, engines (every one of the backend's ``METHODS`` and ``"auto"``), arguments and
dtypes, starting from empty caches so that the first calls race to build the same
plans; every result (and every PyTorch gradient) must be bitwise the one a
single-threaded call gave.  Repeated calls of every engine of every requested backend,
batch chunking under ``workspace_limit`` included, must be bitwise identical too.

A failure in any thread (an exception, or a warning: pytest turns them into errors)
fails the test from the main thread, with the thread's traceback as its cause.

The library has no public way to forget its caches, so :func:`clear_caches` empties
the private ones (the plan cache of ``multiconv._api``, the type caches of
``multiconv._dispatch``, the geometry caches of ``multiconv._algorithms`` and every
backend's ``prepare``).  JAX's own compilation cache is left alone: it is JAX's, and
compiling every case again would cost more than this whole file.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import warnings
import zlib
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pytest
from support import BACKENDS, as_backend

import multiconv
from multiconv import _algorithms, _api, _dispatch

if TYPE_CHECKING:
    from collections.abc import Callable

torch: Any = importlib.import_module("torch") if "torch" in BACKENDS else None

T = TypeVar("T")

THREADS = 8
#: Seconds a barrier or a join waits before the test fails instead of hanging.
TIMEOUT = 120.0
#: Passes of every thread over its calls: the first in the same order in every thread
#: (they race to plan the same signatures), the others shuffled differently per thread.
ROUNDS = 3
REPEATS = 5

needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch backend not requested")


def engines(backend: str) -> list[str]:
    """``"auto"`` and every named engine of ``backend``."""
    return ["auto", *importlib.import_module(f"multiconv.backends.{backend}").METHODS]


def clear_caches() -> None:
    """Forget every plan, prepared engine and cached geometry (private names: there is no public way)."""
    _api._PLAN_CACHE.clear()
    _dispatch._TYPE_CACHE.clear()
    _dispatch.SIGNATURE_OF.clear()
    _dispatch._LOADED.clear()
    for cached in (_algorithms.kernel_taps, _algorithms.fft_blocks, _algorithms.batch_chunk, _algorithms.next_fast_len):
        cached.cache_clear()
    for name in BACKENDS:
        importlib.import_module(f"multiconv.backends.{name}").prepare.cache_clear()


# ------------------------------------------------------------------------ threads


class ThreadError(AssertionError):
    """One or more threads of :func:`run_in_threads` raised."""


def run_in_threads(worker: Callable[[int], T], threads: int = THREADS) -> list[T]:
    """``[worker(0), ..., worker(threads - 1)]``, each in its own thread, all released at once by a barrier.

    Every exception (warnings turned into errors included) is caught in its thread and
    raised here as a :class:`ThreadError` whose cause is the first thread's exception.
    """
    barrier = threading.Barrier(threads, timeout=TIMEOUT)
    results: dict[int, T] = {}
    errors: dict[int, BaseException] = {}

    def target(index: int) -> None:
        try:
            barrier.wait()
            results[index] = worker(index)
        except BaseException as error:  # noqa: BLE001  (reported by the main thread, below)
            errors[index] = error

    pool = [threading.Thread(target=target, args=(index,), name=f"batch_conv-{index}", daemon=True) for index in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(TIMEOUT)
    hung = [thread.name for thread in pool if thread.is_alive()]
    if hung:
        raise ThreadError(f"threads still running after {TIMEOUT} s: {', '.join(hung)}")
    if errors:
        # A broken barrier only says that another thread failed first.
        first = min(errors, key=lambda index: (isinstance(errors[index], threading.BrokenBarrierError), index))
        listing = "; ".join(f"thread {index}: {errors[index]!r}" for index in sorted(errors))
        raise ThreadError(f"{len(errors)} of {threads} threads failed ({listing})") from errors[first]
    return [results[index] for index in range(threads)]


# ------------------------------------------------------------------------ cases


@dataclasses.dataclass(frozen=True)
class Case:
    """Shapes (``x`` in its layout), dtype and keyword arguments of one call."""

    name: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    bias: tuple[int, ...] | None
    dtype: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: "native": arrays of the backend; "numpy-weight": ``w`` a NumPy array that joins
    #: them; "host": NumPy arrays computed on the backend with ``backend=``.
    inputs: str = "native"

    def host_arrays(self, variant: int = 0) -> list[np.ndarray | None]:
        rng = np.random.default_rng((zlib.crc32(self.name.encode()), variant))
        arrays: list[np.ndarray | None] = []
        for shape in (self.x, self.w, self.bias):
            if shape is None:
                arrays.append(None)
                continue
            values = rng.standard_normal(shape)
            arrays.append(values + 1j * rng.standard_normal(shape) if self.dtype.startswith("complex") else values)
        return arrays

    def arrays(self, backend: str, variant: int = 0) -> tuple[Any, Any, Any]:
        x, w, bias = self.host_arrays(variant)
        kinds = {"native": (backend,) * 3, "numpy-weight": (backend, "numpy", backend), "host": ("numpy",) * 3}[self.inputs]
        return (
            as_backend(x, kinds[0], self.dtype),
            as_backend(w, kinds[1], self.dtype),
            as_backend(bias, kinds[2], self.dtype),
        )

    def call_kwargs(self, backend: str, method: str) -> dict[str, Any]:
        extra = {"backend": backend} if self.inputs == "host" else {}
        return {**self.kwargs, **extra, "method": method}


#: The mix the threads run: 1-, 2- and 3-D; per-sample, broadcast and shared weights;
#: every bias kind and padding mode; groups, depthwise, stride, dilation, flip, channels last;
#: float16, float32, float64, complex64, complex128; an empty batch; NumPy arrays joining another framework.
MIX = [
    Case(
        "1d-groups-reflect-same-stride",
        (3, 4, 17),
        (3, 6, 2, 3),
        (3, 6),
        "float64",
        {"stride": 2, "padding": "same", "padding_mode": "reflect", "groups": 2},
    ),
    Case(
        "2d-channels-last-flip-circular",
        (2, 9, 8, 3),
        (2, 4, 3, 3, 2),
        (4,),
        "float32",
        {"padding": ((1, 2), (0, 1)), "dilation": (2, 1), "padding_mode": "circular", "flip": True, "layout": "channels_last"},
    ),
    Case(
        "3d-depthwise-broadcast-full-replicate",
        (2, 4, 5, 6, 4),
        (1, 4, 1, 2, 3, 2),
        None,
        "float64",
        {"groups": 4, "padding": "full", "padding_mode": "replicate", "stride": (1, 2, 1)},
    ),
    Case("1d-shared-complex128-causal", (3, 2, 12), (4, 2, 3), (1, 4), "complex128", {"padding": "causal", "dilation": 2}),
    Case("1d-float16-channels-last", (4, 10, 3), (4, 3, 3, 2), (4, 3), "float16", {"padding": 1, "layout": "channels_last"}),
    Case("2d-complex64-groups-strided", (2, 2, 7, 7), (2, 2, 1, 3, 3), None, "complex64", {"groups": 2, "stride": 2, "padding": "valid"}),
    Case("1d-empty-batch", (0, 2, 5), (0, 3, 2, 2), (0, 3), "float64", {"padding": "same", "padding_mode": "reflect"}),
]
#: Only where the arrays are not NumPy's already.
FOREIGN_MIX = [
    Case("numpy-weight-joins", (3, 4, 11), (3, 2, 4, 3), (2,), "float32", {"padding": "same"}, inputs="numpy-weight"),
    Case("host-arrays-backend", (2, 3, 6, 5), (2, 3, 3, 2, 2), (2, 3), "float64", {"padding": 1, "flip": True}, inputs="host"),
]


#: JAX compiles every case and engine once (about 0.3 s each here): two cases race its plans.
JAX_MIX = ("2d-channels-last-flip-circular", "host-arrays-backend")


def mix(backend: str) -> list[Case]:
    if backend == "numpy":
        return MIX
    return [case for case in MIX + FOREIGN_MIX if backend != "jax" or case.name in JAX_MIX]


#: Repeated calls: big enough for small workspace limits to cut the batch into chunks.
DETERMINISM_CASES = [
    Case(
        "1d-chunked-groups-reflect",
        (5, 8, 120),
        (5, 16, 4, 9),
        (5, 16),
        "float32",
        {"groups": 2, "padding": "same", "padding_mode": "reflect", "dilation": 2, "workspace_limit": 50_000},
    ),
    Case(
        "2d-chunked-complex64-channels-last-flip",
        (4, 16, 12, 4),
        (4, 6, 4, 5, 3),
        (6,),
        "complex64",
        {"stride": (2, 1), "padding": 2, "layout": "channels_last", "flip": True, "workspace_limit": 20_000},
    ),
    Case(
        "3d-chunked-broadcast-circular",
        (3, 2, 6, 7, 8),
        (1, 4, 2, 3, 3, 3),
        (3, 4),
        "float64",
        {"padding": "full", "padding_mode": "circular", "workspace_limit": 1},
    ),
    Case("1d-long-kernel-float16", (2, 4, 800), (2, 4, 4, 33), None, "float16", {}),
]


# ------------------------------------------------------------------------ comparisons


def raw(a: Any) -> np.ndarray:
    """The bytes of any backend's array as a host array of its dtype (bfloat16 as int16)."""
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach()
        return np.asarray((a.view(torch.int16) if a.dtype == torch.bfloat16 else a).cpu().numpy())
    return np.asarray(a)


def bitwise_difference(actual: Any, expected: Any) -> str | None:
    """``None`` when the two arrays have one type, dtype, shape and the same bits; else what differs."""
    if type(actual) is not type(expected):
        return f"type {type(actual).__name__} != {type(expected).__name__}"
    if str(actual.dtype) != str(expected.dtype) or tuple(actual.shape) != tuple(expected.shape):
        return f"{actual.dtype}{tuple(actual.shape)} != {expected.dtype}{tuple(expected.shape)}"
    a, b = np.ascontiguousarray(raw(actual)), np.ascontiguousarray(raw(expected))
    if not a.size:
        return None
    differing = a.view(np.uint8).reshape(a.size, -1) != b.view(np.uint8).reshape(b.size, -1)
    count = int(np.any(differing, axis=-1).sum())
    if not count:
        return None
    wide = np.max(np.abs(a.astype(np.complex128) - b.astype(np.complex128)))
    return f"{count} of {a.size} elements differ (max |difference| {wide:.3g})"


def assert_bitwise_equal(actual: Any, expected: Any, what: str) -> None:
    difference = bitwise_difference(actual, expected)
    assert difference is None, f"{what}: {difference}"


# ------------------------------------------------------------------------ forward calls

#: Each call has inputs of this many different values (same signatures): threads that run
#: one call at the same time use different ones, so a buffer they wrongly shared would show.
VARIANTS = 4
Arrays = tuple[Any, Any, Any]


def shuffled(count: int, thread: int, round_: int) -> list[int]:
    """The order of a thread's calls in one round: the same everywhere in round 0, shuffled after."""
    if not round_:
        return list(range(count))
    return [int(index) for index in np.random.default_rng((thread, round_)).permutation(count)]


def check_in_threads(count: int, describe: Callable[[int], str], run: Callable[[int, int], list[tuple[Any, Any]]]) -> None:
    """``run(call, variant)`` (pairs of actual and expected arrays) for every call, in every thread and round."""

    def worker(thread: int) -> list[str]:
        failures = []
        for round_ in range(ROUNDS):
            variant = (thread + round_) % VARIANTS
            for index in shuffled(count, thread, round_):
                for number, (actual, expected) in enumerate(run(index, variant)):
                    difference = bitwise_difference(actual, expected)
                    if difference is not None:
                        failures.append(
                            f"thread {thread}, round {round_}, {describe(index)}, variant {variant}, array {number}: {difference}"
                        )
        return failures

    failures = [failure for found in run_in_threads(worker) for failure in found]
    if failures:
        pytest.fail(f"{len(failures)} results differ from single-threaded calls:\n" + "\n".join(failures[:20]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_get_the_single_threaded_results(backend: str) -> None:
    calls = [(case, method) for case in mix(backend) for method in engines(backend)]
    inputs = [{case.name: case.arrays(backend, variant) for case in mix(backend)} for variant in range(VARIANTS)]

    def conv(index: int, variant: int) -> Any:
        case, method = calls[index]
        return multiconv.batch_conv(*inputs[variant][case.name], **case.call_kwargs(backend, method))

    expected = [[conv(index, variant) for variant in range(VARIANTS)] for index in range(len(calls))]
    plans = [_api.plan(*inputs[0][case.name], **case.call_kwargs(backend, method)) for case, method in calls]
    originals = [{name: [raw(a).copy() for a in arrays if a is not None] for name, arrays in variant.items()} for variant in inputs]
    clear_caches()
    assert not _api._PLAN_CACHE

    def describe(index: int) -> str:
        case, method = calls[index]
        return f"{case.name}, method={method}"

    check_in_threads(len(calls), describe, lambda index, variant: [(conv(index, variant), expected[index][variant])])
    for (case, method), before in zip(calls, plans, strict=True):
        after = _api.plan(*inputs[0][case.name], **case.call_kwargs(backend, method))
        assert after == before, f"{case.name}, method={method}: the plan built in threads differs from the first"
    for variant, original in zip(inputs, originals, strict=True):
        for name, arrays in variant.items():
            for number, (array, copy) in enumerate(zip((a for a in arrays if a is not None), original[name], strict=True)):
                assert_bitwise_equal(raw(array), copy, f"{name}: input {number} was modified")


# ------------------------------------------------------------------------ PyTorch gradients

Grads = list[Any]


def torch_forward_backward(case: Case, method: str, arrays: Arrays, cotangent: Any) -> Grads:
    """``[y, x.grad, w.grad, bias.grad]`` after ``y.backward(cotangent)`` on fresh leaves."""
    leaves = [None if a is None else a.detach().clone().requires_grad_(requires_grad=True) for a in arrays]
    y = multiconv.batch_conv(*leaves, **case.call_kwargs("torch", method))
    y.backward(cotangent)
    grads: Grads = [y.detach()]
    for leaf in leaves:
        if leaf is not None:
            assert leaf.grad is not None
            grads.append(leaf.grad)
    return grads


def cotangent_for(case: Case, y: Any, variant: int = 0) -> Any:
    """A random tensor like ``y``, the same for every engine of a case."""
    rng = np.random.default_rng((zlib.crc32(case.name.encode()), variant, 1))
    values = rng.standard_normal(tuple(y.shape))
    if y.is_complex():
        values = values + 1j * rng.standard_normal(tuple(y.shape))
    return as_backend(values, "torch", str(y.dtype).removeprefix("torch."))


@needs_torch
def test_torch_gradients_in_threads_are_the_single_threaded_ones() -> None:
    calls = [(case, method) for case in MIX for method in engines("torch")]
    inputs: list[dict[str, tuple[Arrays, Any]]] = []
    for variant in range(VARIANTS):
        inputs.append({})
        for case in MIX:
            arrays = case.arrays("torch", variant)
            y = multiconv.batch_conv(*arrays, **case.call_kwargs("torch", "auto"))
            inputs[variant][case.name] = (arrays, cotangent_for(case, y, variant))

    def forward_backward(index: int, variant: int) -> Grads:
        case, method = calls[index]
        return torch_forward_backward(case, method, *inputs[variant][case.name])

    expected = [[forward_backward(index, variant) for variant in range(VARIANTS)] for index in range(len(calls))]
    clear_caches()

    def describe(index: int) -> str:
        case, method = calls[index]
        return f"{case.name}, method={method} (y, then the gradients)"

    def run(index: int, variant: int) -> list[tuple[Any, Any]]:
        return list(zip(forward_backward(index, variant), expected[index][variant], strict=True))

    check_in_threads(len(calls), describe, run)


# ------------------------------------------------------------------------ failures in threads


def test_an_exception_in_one_thread_fails_the_run() -> None:
    def worker(thread: int) -> int:
        if thread == 3:
            raise RuntimeError("thread 3 gives up")
        return thread

    with pytest.raises(ThreadError, match=r"1 of 8 threads failed \(thread 3: RuntimeError") as caught:
        run_in_threads(worker)
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert run_in_threads(lambda thread: thread) == list(range(THREADS))


def test_a_warning_in_a_thread_fails_the_run() -> None:
    """pytest's ``filterwarnings = error`` reaches the threads: a warning there is an error here."""

    def worker(thread: int) -> None:
        if thread % 2:
            warnings.warn(f"thread {thread} warns", UserWarning, stacklevel=1)

    with pytest.raises(ThreadError, match="4 of 8 threads failed") as caught:
        run_in_threads(worker)
    assert isinstance(caught.value.__cause__, UserWarning)


@pytest.mark.parametrize("backend", BACKENDS)
def test_invalid_calls_raise_in_every_thread_and_valid_ones_still_agree(backend: str) -> None:
    """Errors raised while other threads plan valid calls are the single-threaded errors, and are never cached."""
    rng = np.random.default_rng(7)
    x = as_backend(rng.standard_normal((2, 4, 9)), backend, "float32")
    w = as_backend(rng.standard_normal((2, 6, 2, 3)), backend, "float32")
    bad: dict[str, tuple[dict[str, Any], type[Exception]]] = {
        "groups": ({"groups": 3}, ValueError),
        "padding": ({"padding": -1}, ValueError),
        "method": ({"method": "no-such-engine"}, ValueError),
        "flip": ({"flip": "yes"}, TypeError),
    }
    valid: dict[str, Any] = {"groups": 2, "padding": "same"}
    expected = multiconv.batch_conv(x, w, **valid)
    messages = {}
    for name, (kwargs, kind) in bad.items():
        with pytest.raises(kind) as caught:
            multiconv.batch_conv(x, w, **{**valid, **kwargs})
        messages[name] = str(caught.value)
    clear_caches()

    def worker(thread: int) -> list[str]:
        failures = []
        for round_ in range(ROUNDS):
            for name in map(str, np.random.default_rng((thread, round_)).permutation(list(bad))):
                kwargs, kind = bad[name]
                try:
                    multiconv.batch_conv(x, w, **{**valid, **kwargs})
                except kind as error:
                    if str(error) != messages[name]:
                        failures.append(f"thread {thread}, {name}: {error}")
                else:
                    failures.append(f"thread {thread}, {name}: no {kind.__name__}")
                difference = bitwise_difference(multiconv.batch_conv(x, w, **valid), expected)
                if difference is not None:
                    failures.append(f"thread {thread}, valid call after {name}: {difference}")
        return failures

    failures = [failure for found in run_in_threads(worker) for failure in found]
    if failures:
        pytest.fail("\n".join(failures[:20]))
    assert len(_api._PLAN_CACHE) == 1  # the valid call's plan, none for the invalid ones


# ------------------------------------------------------------------------ repeated calls


def compute_itemsize(case: Case) -> int:
    """Bytes per element of the dtype the engines compute in on the CPU (half precision: float32)."""
    return max(np.dtype(case.dtype).itemsize, 4)


DETERMINISM = [(backend, case, method) for backend in BACKENDS for case in DETERMINISM_CASES for method in engines(backend)]


@pytest.mark.parametrize(
    ("backend", "case", "method"),
    DETERMINISM,
    ids=[f"{backend}-{case.name}-{method}" for backend, case, method in DETERMINISM],
)
def test_repeated_calls_are_bitwise_identical(backend: str, case: Case, method: str) -> None:
    arrays = case.arrays(backend)
    kwargs = case.call_kwargs(backend, method)
    spec = _api.plan(*arrays, **kwargs).spec
    if "workspace_limit" in case.kwargs:
        chunk = _algorithms.batch_chunk(spec, spec.method, compute_itemsize(case))
        assert chunk < spec.batch, f"the workspace limit does not cut the batch ({spec.method}: chunks of {chunk})"
    first = multiconv.batch_conv(*arrays, **kwargs)
    for repeat in range(1, REPEATS):
        assert_bitwise_equal(multiconv.batch_conv(*arrays, **kwargs), first, f"call {repeat + 1} of {spec.method}")


TORCH_DETERMINISM = [(case, method) for case in DETERMINISM_CASES for method in (engines("torch") if "torch" in BACKENDS else [])]


@needs_torch
@pytest.mark.parametrize(("case", "method"), TORCH_DETERMINISM, ids=[f"{case.name}-{method}" for case, method in TORCH_DETERMINISM])
def test_repeated_torch_gradients_are_bitwise_identical(case: Case, method: str) -> None:
    arrays = case.arrays("torch")
    cotangent = cotangent_for(case, multiconv.batch_conv(*arrays, **case.call_kwargs("torch", method)))
    first = torch_forward_backward(case, method, arrays, cotangent)
    for repeat in range(1, REPEATS):
        again = torch_forward_backward(case, method, arrays, cotangent)
        for name, actual, expected in zip(("y", "x.grad", "w.grad", "bias.grad"), again, first, strict=False):
            assert_bitwise_equal(actual, expected, f"call {repeat + 1}, {name}")
