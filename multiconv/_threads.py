"""Batch chunks run side by side in threads, with the BLAS single-threaded meanwhile.

NumPy copies im2col windows, adds shifted products and runs FFTs on one core,
and OpenBLAS spreads each of the engines' small matrix products (one per sample
or chunk) over its threads, with a sync per product and operands in another
core's cache.  Giving each core whole chunks instead (its own window copies and
its own single-threaded products, on data in its own cache) is what pays: 64
samples of 64 -> 64 channels, L 1024, K 3 (Intel Xeon, OpenBLAS SkylakeX, 2 cores)
went from 10.6-11.2 ms with a 2-thread BLAS to 6.9-8.0 ms.  Two threads calling a
2-thread OpenBLAS take the same 11-12 ms: its calls wait for one another.

The number of threads is the BLAS's own thread count at the call
(``threadpoolctl``), so a process or a block that sets the BLAS to one thread
(``OPENBLAS_NUM_THREADS=1``, ``threadpool_limits(1)``) gets a serial engine.  With
fewer chunks than threads, each chunk's products get a share of them.  While a call
runs chunks side by side, every BLAS that ``threadpoolctl`` finds is set to that
share (one thread, when there are as many chunks as threads), for the whole process;
calls that overlap share the first one's setting, and the last to finish puts the
thread counts back.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from threadpoolctl import ThreadpoolController

_lock = threading.Lock()
_state: dict[str, Any] = {"users": 0, "limiter": None, "pool": None}


@cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded now (NumPy's among them), found once."""
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415 (scanning the loaded libraries costs ms: on first use only)

    return ThreadpoolController().select(user_api="blas")


def blas_threads() -> int:
    """The most threads any loaded BLAS uses now (1 if none is found)."""
    return max((lib.num_threads for lib in _blas().lib_controllers), default=1)


def _pool(threads: int) -> ThreadPoolExecutor:
    """The shared workers for runs on ``threads`` threads (``threads - 1`` of them: the calling thread is the other)."""
    with _lock:
        pool = _state["pool"]
        if pool is None or pool[0] != threads:
            if pool is not None:
                pool[1].shutdown(wait=False)
            pool = (threads, ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="multiconv"))
            _state["pool"] = pool
        executor: ThreadPoolExecutor = pool[1]
        return executor


def _limit_blas(threads: int) -> None:
    """Set every BLAS to ``threads`` threads, unless an overlapping call has set it already."""
    with _lock:
        if _state["users"] == 0:
            _state["limiter"] = _blas().limit(limits=threads)
        _state["users"] += 1


def _release_blas() -> None:
    """The last overlapping call out puts the BLAS thread counts back."""
    with _lock:
        _state["users"] -= 1
        if _state["users"] == 0:
            _state["limiter"].restore_original_limits()
            _state["limiter"] = None


def _after_fork_in_child() -> None:
    """A forked child has only the forking thread: no workers, no calls in flight, and maybe a held lock."""
    global _lock  # noqa: PLW0603 (the parent's lock may have been held by a thread the child lacks)
    _lock = threading.Lock()
    if _state["limiter"] is not None:
        _state["limiter"].restore_original_limits()
    _state.update(users=0, limiter=None, pool=None)


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_all(tasks: Sequence[Callable[[], None]], threads: int, at_once: int) -> None:
    """Run every task, up to ``at_once`` at a time, on the ``threads`` threads of the BLAS.

    ``w = min(threads, at_once, len(tasks))`` threads (this one and ``w - 1`` shared
    workers) take the tasks in order, with the BLAS set to ``threads // w`` threads
    meanwhile.  With ``w == 1`` they run here, in order, and the BLAS keeps its
    threads.  An exception in any task is raised here once every thread has stopped;
    the tasks not started by then are dropped.
    """
    workers = min(threads, at_once, len(tasks))
    if workers <= 1:
        for task in tasks:
            task()
        return
    pending: Iterator[Callable[[], None]] = iter(tasks)
    taking = threading.Lock()
    failed = threading.Event()

    def drain() -> None:
        while not failed.is_set():
            with taking:
                task = next(pending, None)
            if task is None:
                return
            try:
                task()
            except BaseException:
                failed.set()
                raise

    pool = _pool(threads)
    _limit_blas(threads // workers)
    try:
        futures = [pool.submit(drain) for _ in range(workers - 1)]
        try:
            drain()
        finally:
            errors = [error for error in (future.exception() for future in futures) if error is not None]
    finally:
        _release_blas()
    if errors:
        raise errors[0]
