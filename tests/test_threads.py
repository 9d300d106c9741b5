"""NumPy's engines run their batch chunks side by side (multiconv._threads)."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from support import BACKENDS
from threadpoolctl import threadpool_limits

import multiconv
from multiconv import _algorithms, _api, _threads
from multiconv.testing import assert_matches_reference

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [
    pytest.mark.xdist_group("blas-threads"),  # they change the process's BLAS thread count
    pytest.mark.skipif("numpy" not in BACKENDS, reason="NumPy backend not requested"),
]

_BLAS = _threads.blas_threads()
needs_threads = pytest.mark.skipif(_BLAS < 2, reason="NumPy's BLAS runs one thread here: nothing runs side by side")


def _dense() -> tuple[np.ndarray, np.ndarray]:
    """96 samples that every engine cuts into several chunks (fft's 48 MiB of spectra into 32 MiB ones)."""
    rng = np.random.default_rng(3)
    return rng.standard_normal((96, 32, 512)).astype(np.float32), rng.standard_normal((96, 32, 32, 3)).astype(np.float32)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record ``(tasks, threads that may run them at once)`` of every ``run_all`` the NumPy backend makes."""
    runs: list[tuple[int, int]] = []
    run_all_itself = _threads.run_all

    def run_all(tasks: list[Callable[[], None]], threads: int, at_once: int) -> None:
        runs.append((len(tasks), min(threads, at_once, len(tasks))))
        run_all_itself(tasks, threads, at_once)

    monkeypatch.setattr(_threads, "run_all", run_all)
    return runs


@needs_threads
@pytest.mark.parametrize("method", ["einsum", "shift", "matmul", "col2im", "fft"])
def test_side_by_side_chunks_give_the_serial_result_bit_for_bit(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    x, w = _dense()
    runs = _spy(monkeypatch)
    y = multiconv.batch_conv(x, w, method=method)
    spec = _api.plan(x, w, method=method).spec
    assert runs == [
        (len(list(_algorithms.batch_slices(spec, method, 4, _algorithms.numpy_chunk(spec, method, 4)))), min(_BLAS, runs[0][0]))
    ]
    assert runs[0][1] >= 2
    with threadpool_limits(1):  # one BLAS thread: the chunks run one after another, here
        serial = multiconv.batch_conv(x, w, method=method)
    np.testing.assert_array_equal(y, serial)
    assert_matches_reference(y, x, w)
    assert _threads.blas_threads() == _BLAS


@needs_threads
def test_the_workspace_limit_caps_the_chunks_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks run side by side only as many at once as their workspaces, padded inputs and outputs fit the limit together."""
    x, w = _dense()
    runs = _spy(monkeypatch)
    spec = _api.plan(x, w, method="matmul").spec
    chunk = _algorithms.numpy_chunk(spec, "matmul", 4)
    each = (_algorithms.workspace_elements(spec, "matmul", chunk) + chunk * 32 * (512 + 510)) * 4
    for limit, expected in ((each * 3 // 2, 1), (2 * each, 2)):
        y = multiconv.batch_conv(x, w, method="matmul", workspace_limit=limit)
        assert runs.pop()[1] == min(expected, _BLAS)
        assert_matches_reference(y, x, w)


@needs_threads
@pytest.mark.parametrize("method", ["shift", "matmul"])
def test_chunks_in_flight_keep_their_scratch_under_the_limit(method: str) -> None:
    """tracemalloc sees every thread: padded chunks, workspaces and chunk outputs in flight stay within the limit."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 16, 2048)).astype(np.float32)
    w = rng.standard_normal((64, 16, 16, 9)).astype(np.float32)
    spec = _api.plan(x, w, method=method, padding="same").spec
    chunk = _algorithms.numpy_chunk(spec, method, 4)
    limit = (_algorithms.workspace_elements(spec, method, chunk) + chunk * 16 * (2056 + 2048)) * 4 * 5 // 2  # 2 chunks in flight
    spec = _api.plan(x, w, method=method, padding="same", workspace_limit=limit).spec
    assert _algorithms.numpy_lanes(spec, method, 4) == 2  # side by side, and the limit bites
    assert _algorithms.workspace_elements(spec, method, 64) * 4 > 2 * limit
    output = 64 * 16 * 2048 * 4
    tracemalloc.start()
    try:
        multiconv.batch_conv(x, w, method=method, padding="same", workspace_limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - output <= limit


def _recording(count: int) -> tuple[list[Callable[[], None]], list[tuple[int, str]]]:
    """``count`` tasks that record the BLAS thread count they saw and their thread's name."""
    seen: list[tuple[int, str]] = []

    def run() -> None:
        seen.append((_threads.blas_threads(), threading.current_thread().name))

    return [run] * count, seen


def _limits_set(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every thread count ``run_all`` sets the BLAS to."""
    limits: list[int] = []
    controller = _threads._blas()
    limit_itself = controller.limit

    def limit(**kwargs: Any) -> Any:
        limits.append(kwargs["limits"])
        return limit_itself(**kwargs)

    monkeypatch.setattr(controller, "limit", limit)
    return limits


@needs_threads
def test_tasks_run_with_the_blas_on_one_thread_and_the_count_comes_back(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = _limits_set(monkeypatch)
    started = threading.Barrier(2, timeout=10)
    names: list[str] = []

    def meet() -> None:  # two tasks that wait for each other: they must run on two threads at once
        started.wait()
        names.append(threading.current_thread().name)

    tasks, _ = _recording(14)
    _threads.run_all([meet, meet, *tasks], _BLAS, 16)
    assert limits == [_BLAS // min(_BLAS, 16)]  # as many threads as the BLAS's, one BLAS thread each
    assert len(set(names)) == 2
    assert _threads.blas_threads() == _BLAS  # restored
    with threadpool_limits(1):  # and the BLAS still obeys the caller (threadpoolctl let go of it)
        assert max(lib.num_threads for lib in _threads._blas().lib_controllers) == 1


def test_one_thread_runs_every_task_here_in_order() -> None:
    order: list[int] = []
    _threads.run_all([lambda n=n: order.append(n) for n in range(5)], 1, 5)  # type: ignore[misc]
    assert order == list(range(5))
    tasks, seen = _recording(3)
    _threads.run_all(tasks, _BLAS, 1)  # one at a time (the workspace limit's cap): here, BLAS untouched
    assert {name for _, name in seen} == {threading.current_thread().name}
    assert {blas for blas, _ in seen} == {_BLAS}


@needs_threads
def test_fewer_tasks_than_threads_share_the_blas_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two chunks on a BLAS of ``2 t`` threads: each chunk's products get ``t``."""
    limits = _limits_set(monkeypatch)
    tasks, seen = _recording(2)
    _threads.run_all(tasks, 2 * _BLAS, 8)
    assert limits == [_BLAS]
    assert len(seen) == 2


@needs_threads
@pytest.mark.parametrize("in_caller", [False, True], ids=["in a worker", "in the calling thread"])
def test_a_failure_stops_the_other_threads_and_is_raised_here(in_caller: bool) -> None:
    """The failing thread is chosen by identity, not by scheduling; the others' tasks are slow enough that it stops them."""
    caller = threading.current_thread()
    ran: list[str] = []

    def task() -> None:
        if (threading.current_thread() is caller) is in_caller:
            raise ValueError("the failing task")
        time.sleep(0.002)
        ran.append(threading.current_thread().name)

    with pytest.raises(ValueError, match="the failing task"):
        _threads.run_all([task] * 200, _BLAS, 200)
    assert len(ran) < 50
    assert _threads.blas_threads() == _BLAS
    assert not _threads._running.locked()


@needs_threads
def test_overlapping_calls_from_user_threads() -> None:
    """Several threads calling batch_conv at once, the first of them not the main thread: right results, BLAS restored."""
    x, w = _dense()
    expected = multiconv.batch_conv(x, w, method="matmul")
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.extend(multiconv.batch_conv(x, w, method="matmul") for _ in range(5))
        except BaseException as error:  # noqa: BLE001 (re-raised below, in the test's thread)
            errors.append(error)

    first = threading.Thread(target=call)
    first.start()
    first.join()
    users = [threading.Thread(target=call) for _ in range(4)]
    for user in users:
        user.start()
    for user in users:
        user.join()
    assert not errors
    assert len(results) == 25
    for y in results:
        np.testing.assert_array_equal(y, expected)
    assert _threads.blas_threads() == _BLAS
    with threadpool_limits(1):  # a call made in another thread left the BLAS to this one
        assert max(lib.num_threads for lib in _threads._blas().lib_controllers) == 1


@needs_threads
def test_a_call_made_meanwhile_waits_then_runs_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second call while one runs side by side waits for it, then sets the BLAS for its own chunks.

    Run meanwhile, its products would run on the first call's share of the BLAS and then on the
    count restored, and OpenBLAS's Haswell kernel gives other bits on 1 and 2 threads.
    """
    limits = _limits_set(monkeypatch)
    inside, release = threading.Barrier(3, timeout=10), threading.Event()
    order: list[str] = []
    live: list[int] = []  # the BLAS's own count, as the second call's tasks saw it

    def hold() -> None:
        inside.wait()
        assert release.wait(10)
        order.append("first")

    def second_task() -> None:
        order.append("second")
        live.append(max(lib.num_threads for lib in _threads._blas().lib_controllers))

    first = threading.Thread(target=_threads.run_all, args=([hold] * 2, 2, 2))
    first.start()
    inside.wait()  # both of the first call's tasks run, on the BLAS's share
    assert _threads.blas_threads() == _BLAS  # the count the run found, not its share
    second = threading.Thread(target=_threads.run_all, args=([second_task] * 4, _BLAS, 4))
    second.start()
    time.sleep(0.05)
    assert order == []  # nothing of the second call ran meanwhile
    release.set()
    first.join(10)
    second.join(10)
    assert order == ["first"] * 2 + ["second"] * 4
    assert limits == [_BLAS // 2, _BLAS // min(_BLAS, 4)]
    assert set(live) == {_BLAS // min(_BLAS, 4)}
    assert _threads.blas_threads() == _BLAS


def test_the_count_is_not_read_while_a_run_sets_it() -> None:
    """``blas_threads`` waits while a run records the count it found and sets the BLAS to its share."""
    got: list[int] = []
    with _threads._reading:
        reader = threading.Thread(target=lambda: got.append(_threads.blas_threads()))
        reader.start()
        time.sleep(0.05)
        assert got == []
    reader.join(10)
    assert got == [_BLAS]


@needs_threads
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_side_by_side_with_workers_of_its_own() -> None:
    x, w = _dense()
    expected = multiconv.batch_conv(x, w, method="matmul")  # the parent's workers exist now
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fork() of a process with threads (Python 3.12+; JAX's own warning when imported)
        pid = os.fork()
    if pid == 0:  # the child: exit status 0 if it computed the same result side by side
        status = 1
        try:
            runs: list[int] = []
            run_all_itself = _threads.run_all

            def run_all(tasks: list[Callable[[], None]], threads: int, at_once: int) -> None:
                runs.append(min(threads, at_once, len(tasks)))
                run_all_itself(tasks, threads, at_once)

            _threads.run_all = run_all  # type: ignore[assignment]
            y = multiconv.batch_conv(x, w, method="matmul")
            status = 0 if runs and runs[0] >= 2 and np.array_equal(y, expected) and _threads.blas_threads() == _BLAS else 2
        finally:
            os._exit(status)
    deadline = time.monotonic() + 120
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if waited[0] == 0:  # a hung child fails the test instead of hanging the suite
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish in 120 s")
    assert os.waitstatus_to_exitcode(waited[1]) == 0


@needs_threads
def test_the_fork_hook_restores_the_blas_and_drops_the_workers() -> None:
    """The hook as a child runs it when the fork came while a call ran side by side."""
    tasks, _ = _recording(4)
    _threads.run_all(tasks, _BLAS, 4)
    limiter = _threads._blas().limit(limits=1)
    _threads._state.update(threads=_BLAS, limiter=limiter)
    assert max(lib.num_threads for lib in _threads._blas().lib_controllers) == 1
    _threads._after_fork_in_child()
    assert _threads._state == {"threads": None, "limiter": None, "pool": None}
    assert _threads.blas_threads() == _BLAS
    _threads._after_fork_in_child()  # a fork while no call ran side by side: nothing to restore
    assert _threads.blas_threads() == _BLAS
    tasks, seen = _recording(4)
    _threads.run_all(tasks, _BLAS, 4)
    assert len(seen) == 4


@needs_threads
def test_a_new_thread_count_gets_a_new_pool() -> None:
    tasks, seen = _recording(4)
    _threads.run_all(tasks, _BLAS, 4)
    first = _threads._state["pool"]
    _threads.run_all(tasks, _BLAS + 1, 4)  # as if the BLAS had been given another thread
    assert _threads._state["pool"][0] == _BLAS + 1
    assert _threads._state["pool"][1] is not first[1]
    assert len(seen) == 8
