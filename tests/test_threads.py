"""NumPy's engines run their batch chunks side by side (multiconv._threads)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import multiconv
from multiconv import _threads
from multiconv.testing import assert_matches_reference

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.xdist_group("blas-threads")  # they change the process's BLAS thread count

_BLAS = _threads.blas_threads()
needs_threads = pytest.mark.skipif(_BLAS < 2, reason="NumPy's BLAS runs one thread here: nothing runs side by side")


def _dense() -> tuple[np.ndarray, np.ndarray]:
    """96 samples that every engine cuts into several chunks (fft's 48 MiB of spectra into 32 MiB ones)."""
    rng = np.random.default_rng(3)
    return rng.standard_normal((96, 32, 512)).astype(np.float32), rng.standard_normal((96, 32, 32, 3)).astype(np.float32)


@needs_threads
@pytest.mark.parametrize("method", ["einsum", "shift", "matmul", "fft"])
def test_side_by_side_chunks_give_the_serial_result_bit_for_bit(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    x, w = _dense()
    runs: list[tuple[int, int]] = []

    def run_all(tasks: list[Callable[[], None]], threads: int, at_once: int) -> None:
        runs.append((len(tasks), min(threads, at_once)))
        run_all_itself(tasks, threads, at_once)

    run_all_itself = _threads.run_all
    monkeypatch.setattr(_threads, "run_all", run_all)
    y = multiconv.batch_conv(x, w, method=method)
    assert runs[0][0] > 1
    assert runs[0][1] == _BLAS
    with threadpool_limits(1):  # one BLAS thread: the chunks run one after another, here
        serial = multiconv.batch_conv(x, w, method=method)
    np.testing.assert_array_equal(y, serial)
    assert_matches_reference(y, x, w)
    assert _threads.blas_threads() == _BLAS


@needs_threads
def test_the_workspace_limit_caps_the_chunks_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks run side by side only as many at once as their workspaces fit the limit together."""
    from multiconv import _algorithms, _api

    x, w = _dense()
    at_once: list[int] = []
    run_all_itself = _threads.run_all

    def run_all(tasks: list[Callable[[], None]], threads: int, lanes: int) -> None:
        at_once.append(min(threads, lanes, len(tasks)))
        run_all_itself(tasks, threads, lanes)

    monkeypatch.setattr(_threads, "run_all", run_all)
    spec = _api.plan(x, w, method="matmul").spec
    chunk = _algorithms.workspace_elements(spec, "matmul", _algorithms.numpy_chunk(spec, "matmul", 4)) * 4
    for limit, expected in ((chunk * 3 // 2, 1), (2 * chunk, 2)):
        y = multiconv.batch_conv(x, w, method="matmul", workspace_limit=limit)
        assert at_once.pop() == min(expected, _BLAS)
        assert_matches_reference(y, x, w)


def _recording(count: int) -> tuple[list[Callable[[], None]], list[tuple[int, str]]]:
    """``count`` tasks that record the BLAS thread count they saw and their thread's name."""
    seen: list[tuple[int, str]] = []

    def run() -> None:
        seen.append((_threads.blas_threads(), threading.current_thread().name))

    return [run] * count, seen


@needs_threads
def test_tasks_run_on_one_blas_thread_and_the_count_comes_back() -> None:
    tasks, seen = _recording(16)
    _threads.run_all(tasks, _BLAS, 16)
    assert len(seen) == 16
    assert {blas for blas, _ in seen} == {1}
    assert _threads.blas_threads() == _BLAS


def test_one_thread_runs_every_task_here_in_order() -> None:
    order: list[int] = []
    _threads.run_all([lambda n=n: order.append(n) for n in range(5)], 1, 5)  # type: ignore[misc]
    assert order == list(range(5))
    tasks, seen = _recording(3)
    _threads.run_all(tasks, _BLAS, 1)  # one at a time (the workspace limit's cap): here, BLAS untouched
    assert {name for _, name in seen} == {threading.current_thread().name}
    assert {blas for blas, _ in seen} == {_BLAS}  # the BLAS keeps its threads


@needs_threads
def test_a_failing_task_raises_here_and_the_count_comes_back() -> None:
    ran: list[int] = []

    def task(n: int) -> Callable[[], None]:
        def run() -> None:
            if n == 3:
                raise ValueError("task 3")
            ran.append(n)

        return run

    with pytest.raises(ValueError, match="task 3"):
        _threads.run_all([task(n) for n in range(200)], _BLAS, 200)
    assert len(ran) < 199  # the tasks after the failure are dropped
    assert _threads.blas_threads() == _BLAS


@needs_threads
def test_overlapping_calls_from_user_threads() -> None:
    """Several threads calling batch_conv at once: right results, and the BLAS count restored by the last."""
    x, w = _dense()
    expected = multiconv.batch_conv(x, w, method="matmul")
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.extend(multiconv.batch_conv(x, w, method="matmul") for _ in range(5))
        except BaseException as error:  # noqa: BLE001 (re-raised below, in the test's thread)
            errors.append(error)

    users = [threading.Thread(target=call) for _ in range(4)]
    for user in users:
        user.start()
    for user in users:
        user.join()
    assert not errors
    assert len(results) == 20
    for y in results:
        np.testing.assert_array_equal(y, expected)
    assert _threads.blas_threads() == _BLAS


@needs_threads
def test_fewer_tasks_than_threads_share_the_blas_threads() -> None:
    """Two chunks on a BLAS of ``2 t`` threads: each chunk's products get ``t``."""
    tasks, seen = _recording(2)
    _threads.run_all(tasks, 2 * _BLAS, 8)
    assert [blas for blas, _ in seen] == [_BLAS, _BLAS]
    assert _threads.blas_threads() == _BLAS


@needs_threads
def test_a_forked_child_starts_afresh() -> None:
    """In a forked child the parent's workers and held lock are gone: the fork hook drops them and restores the BLAS."""
    tasks, _ = _recording(4)
    _threads.run_all(tasks, _BLAS, 4)
    parent_pool = _threads._state["pool"]
    _threads._limit_blas(1)  # as if the fork came while a call ran side by side
    assert _threads.blas_threads() == 1
    _threads._after_fork_in_child()
    assert _threads.blas_threads() == _BLAS
    assert _threads._state == {"users": 0, "limiter": None, "pool": None}
    tasks, seen = _recording(4)
    _threads.run_all(tasks, _BLAS, 4)
    assert len(seen) == 4
    assert _threads._state["pool"] is not parent_pool
