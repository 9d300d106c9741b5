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
fewer chunks than threads, each chunk's products get a share of them.  One call runs
side by side at a time: it sets every BLAS that ``threadpoolctl`` found at its first use
to its share of threads (one, when there are as many chunks as threads), for the whole
process, and puts the counts back when it ends; a call made meanwhile (from another
thread) waits for it, so that every call's products run on the thread count its own
chunks set (OpenBLAS's results can depend on it: :func:`run_all`).

Setting the BLAS to fewer threads does not stop OpenBLAS's idle workers spinning:
they spin for about 2^28 cycles after each multi-threaded call, and chunks run
within that time share the cores with them (the 64-sample shape above: 16-19 ms
within 0.1 s of a 1024x1024 product).  ``OPENBLAS_THREAD_TIMEOUT=4`` in the
environment, before OpenBLAS loads, makes them sleep at once (README).
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import ThreadpoolController

#: One side-by-side run at a time: it owns the BLAS setting and the workers until it ends.
_running = threading.Lock()
#: Held while a run records its count and sets the BLAS, and while :func:`blas_threads` reads them.
_reading = threading.Lock()
#: ``threads``: the BLAS's count before the running call set it; ``limiter``: that setting; ``pool``: (size, workers).
_state: dict[str, Any] = {"threads": None, "limiter": None, "pool": None}


@cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded now (NumPy's among them), found once."""
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415 (scanning the loaded libraries costs ms: on first use only)

    return ThreadpoolController().select(user_api="blas")


def blas_threads() -> int:
    """The most threads any loaded BLAS uses (1 if none is found); while a call runs side by side, the count it found."""
    with _reading:  # not the count a run has just set (for its own chunks) instead of the one it found
        held: int | None = _state["threads"]
        return held if held is not None else max((lib.num_threads for lib in _blas().lib_controllers), default=1)


def _pool(threads: int) -> ThreadPoolExecutor:
    """The workers of runs on ``threads`` threads (``threads - 1``: the calling thread is the other); the running call's alone."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 (8 ms of imports: on the first run side by side only)

    pool = _state["pool"]
    if pool is None or pool[0] != threads:
        if pool is not None:
            pool[1].shutdown(wait=False)  # idle: no other call runs side by side
        pool = (threads, ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="multiconv"))
        _state["pool"] = pool
    executor: ThreadPoolExecutor = pool[1]
    return executor


def _after_fork_in_child() -> None:
    """A forked child has only the forking thread: no workers, no call in flight; the BLAS gets its count back."""
    global _running, _reading
    _running, _reading = threading.Lock(), threading.Lock()  # the parent's may be held by a thread the child lacks
    if _state["limiter"] is not None:
        _state["limiter"].restore_original_limits()
    _state.update(threads=None, limiter=None, pool=None)


if hasattr(os, "register_at_fork"):  # pragma: no branch (not on Windows, which does not fork)
    os.register_at_fork(after_in_child=_after_fork_in_child)


def run_all(tasks: Sequence[Callable[[], None]], threads: int, at_once: int) -> None:
    """Run every task, up to ``at_once`` at a time, on the ``threads`` threads of the BLAS.

    ``w = min(threads, at_once, len(tasks))`` threads (this one and ``w - 1`` workers)
    take the tasks in order, with every BLAS set to ``threads // w`` threads meanwhile.
    With ``w == 1`` they run here, in order, and the BLAS keeps its setting.  While another
    call runs side by side, this one waits for it to end: run here meanwhile, its products
    would run on whatever count the BLAS had at each moment (the other call's share, then
    the count restored), and OpenBLAS's bits can depend on that count (its Haswell kernel's
    do: a batch of 8 products of 32 x 96 by 96 x 510 on 1 and 2 threads differed by up to
    1.5e-5).  An exception in any task (or an interrupt here) stops the others once their
    current task is done, and is raised here; the tasks not started by then are dropped.
    """
    workers = min(threads, at_once, len(tasks))
    if workers <= 1:
        for task in tasks:
            task()
        return
    _running.acquire()
    try:
        with _reading:
            _state["threads"] = threads
            limiter = _blas().limit(limits=threads // workers)
        # the context manager: restored by this thread, which threadpoolctl then lets go of the BLAS
        with limiter:
            _state["limiter"] = limiter
            _take_turns(tasks, workers, _pool(threads))
    finally:
        _state.update(threads=None, limiter=None)
        _running.release()


def _take_turns(tasks: Sequence[Callable[[], None]], workers: int, pool: ThreadPoolExecutor) -> None:
    """:func:`run_all`'s run: this thread and ``workers - 1`` of ``pool``'s take the tasks in turn."""
    from concurrent.futures import wait  # noqa: PLC0415 (imported with the pool)

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

    futures = [pool.submit(drain) for _ in range(workers - 1)]
    try:
        drain()
        wait(futures)
    except BaseException:
        failed.set()
        for future in futures:
            future.cancel()
        wait(futures)
        raise
    errors = [error for error in (future.exception() for future in futures) if error is not None]
    if errors:
        raise errors[0]
