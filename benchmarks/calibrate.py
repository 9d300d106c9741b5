"""Fit the coefficients of ``method="auto"``'s cost model (``multiconv/_cost.py``) to timings.

Usage (from the repository root, on an otherwise idle machine; needs scipy)::

    python benchmarks/calibrate.py                      # measure every installed backend, fit, write
    python benchmarks/calibrate.py --fit-only           # refit from the stored timings
    python benchmarks/calibrate.py --backends numpy --quick
    python benchmarks/calibrate.py --backends jax --methods matmul   # re-time one engine, refit
    python benchmarks/calibrate.py --fit-only --profile GenuineIntel  # refit another CPU's timings
    python benchmarks/calibrate.py --backends torch --training       # time training steps, refit
    python benchmarks/calibrate.py --backends jax --training --mixed # time the steps JAX's auto may run

Each backend is measured in its own process over a grid of shapes (the
benchmark's shapes, weighted up, plus a seeded random grid of 1-D and 2-D
convolutions: dense, grouped and depthwise; kernels of 1 to 257 taps; strides,
dilations; float32, float64, complex64; and, since 2026-12-07, a few shapes it rarely
draws: :data:`EDGE_CASES`).  Every engine is timed (JAX under
``jax.jit``): after a warm-up call (which compiles), the best of three blocks of
calls lasting at least 30 ms each (each after an untimed call, since 2026-12-06; seven blocks
on the benchmark's shapes, since 2026-12-07: :data:`BENCHMARK_ROUNDS`), the engines of a case
taking turns in a rotating order; an engine whose first timed call takes over ``--cap`` seconds is timed by that
one call.  With ``--training`` the timed call is a training step instead, as the
benchmark's training rows time it: the output and the gradients for ``x`` and ``w``
(PyTorch autograd; ``jax.vjp`` under ``jax.jit``).  With ``--training --mixed`` (JAX), the
timed steps are those ``auto`` may run: the forward engine it picks, with its own derivatives
and with those of every other engine it may differentiate through
(``multiconv._cost.tangent_candidates``), stored beside the engines' own steps (re-timing
those with ``--training`` drops them: time them again).  Measuring processes run with the
benchmark's allocator settings (``multiconv._bench.ALLOCATOR_ENV``; the Intel timings stored
on 2026-12-05 evening ran under its warm heap, 256 MiB / 512 MiB, earlier ones under fixed
32 MiB / 64 MiB thresholds, the forward timings before 2026-12-05 under glibc's defaults)
and, as ``benchmarks/run.sh`` runs the benchmark, without ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE``, so that OpenBLAS runs the kernel it detects (:data:`BLAS_OVERRIDES`;
each file stored since 2026-12-06 records NumPy's kernel as ``machine.blas``).  The raw timings go to
``benchmarks/calibration/<profile>/<backend>.json`` (training steps:
``<backend>-training.json``), where the profile is this CPU's vendor, family and
model (``multiconv._cost.cpu_model``: ``AuthenticAMD-family25-model17``; the first two
profiles, measured before the family and model were recorded, are named by the vendor
alone, ``GenuineIntel`` and ``AuthenticAMD``: ``--profile`` re-times or refits those):
each CPU measured keeps its own timings and coefficients.

The fit is, per (backend, engine), non-negative least squares of the modelled
time ``sum(c_i * feature_i)`` on relative error, refitted with the cases it ranks
wrongly weighted up until the benchmark's shapes pick well (:func:`fit`).  The
script prints how well the model ranks the engines (how often ``auto`` picks the
fastest, and the worst ratio of the picked engine's time to the fastest's) and
writes the coefficients to ``multiconv/_calibration.py`` (every profile's: the
others are kept as they are); stored training steps are fitted the same way, into
``TRAINING_COEFFICIENTS``; where mixed steps are stored, it also prints how well the fit
picks JAX's derivatives on them (``auto``'s step against the fastest timed).
``tests/test_engines.py`` checks that the coefficients there are this fit of the timings
stored here, and that on the benchmark's shapes the derivatives picked give the fastest
timed step.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "calibration"
MODULE = ROOT / "multiconv" / "_calibration.py"
BENCHMARK_WEIGHT = 10.0
#: Refits per family of fits in :func:`fit`.
REWEIGHT_ROUNDS = 15
#: :func:`fit` prefers fits that pick within this ratio of the fastest engine on every benchmark shape.
BENCHMARK_SLACK = 1.1
#: ... and, where ``auto`` charges the pick's loop over the groups (``multiconv._cost.group_loop_risk``) and so
#: runs another engine, that engine within this ratio of the fastest (the fastest may be the charged loop, timed idle).
CHARGED_SLACK = 1.25

#: How many times more :func:`fit` weights the benchmark's shapes when no fit picks within :data:`BENCHMARK_SLACK` on all.
BENCHMARK_ESCALATION = 3.0

#: Interleaved timing rounds per case (:func:`_times`): a grid case, and a benchmark shape, whose
#: picks the benchmark checks.  On the Zen 3 EPYC (2026-12-07) best-of-3 rounds timed JAX's
#: ``col2im`` on the dense64 shape at 22.6 ms, then 26.1 on a re-time, against ``loop``'s 27.1;
#: the benchmark ran them at 18.2 and 28.0 ms.
GRID_ROUNDS, BENCHMARK_ROUNDS = 3, 7
#: Engines that :func:`fit` may fit with one shared ``gemm`` coefficient (the same batched matmul).
SHARED_GEMM = ("shift", "matmul")
#: The backends whose training steps ``--training`` times.
DIFFERENTIABLE = ("torch", "jax")


def benchmark_cases() -> list[dict[str, Any]]:
    """The benchmark's shapes (``multiconv._bench.SHAPES``)."""
    bench = importlib.import_module("multiconv._bench")
    cases = []
    for case in bench.SHAPES.values():
        kwargs = case.conv_kwargs
        cases.append({"name": case.name, "x": list(case.x_shape), "w": list(case.w_shape), "kwargs": kwargs, "dtype": case.dtype})
    return cases


def grid_cases(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded random grid of valid, affordable convolutions."""
    rng = np.random.default_rng(seed)
    cases: list[dict[str, Any]] = []
    while len(cases) < count:
        ndim = 1 if rng.random() < 0.7 else 2
        batch = int(rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 256]))
        channels = int(rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 256]))
        kind = rng.choice(["dense", "dense", "grouped", "depthwise"])
        if kind == "depthwise":
            groups, c_in, c_out = channels, channels, channels * int(rng.choice([1, 1, 2]))
        elif kind == "grouped" and channels >= 4:
            groups = int(rng.choice([2, 4]))
            c_in, c_out = channels, channels
        else:
            groups, c_in, c_out = 1, channels, int(rng.choice([channels, max(1, channels // 2), channels * 2]))
        kernel: tuple[int, ...]
        size: tuple[int, ...]
        if ndim == 1:
            kernel = (int(rng.choice([1, 2, 3, 5, 7, 9, 16, 33, 65, 129, 257])),)
            size = (int(rng.choice([16, 64, 256, 1024, 4096, 16384])),)
        else:
            k = int(rng.choice([1, 3, 3, 5, 7]))
            kernel = (k, k)
            side = int(rng.choice([8, 16, 32, 64, 128]))
            size = (side, side)
        stride = 2 if rng.random() < 0.15 else 1
        dilation = 2 if rng.random() < 0.15 else 1
        padding = "same" if rng.random() < 0.5 else "valid"
        dtype = str(rng.choice(["float32"] * 8 + ["float64", "complex64"]))
        effective = [dilation * (k - 1) + 1 for k in kernel]
        if any(s < e for s, e in zip(size, effective, strict=True)):
            continue
        positions = math.prod(size) // stride**ndim
        macs = batch * c_out * positions * (c_in // groups) * math.prod(kernel)
        if macs > 3e9 or batch * c_in * math.prod(size) > 2e7 or macs < 1e3:
            continue
        cases.append(
            {
                "name": f"grid{len(cases)}",
                "x": [batch, c_in, *size],
                "w": [batch, c_out, c_in // groups, *kernel],
                "kwargs": {"groups": groups, "stride": stride, "dilation": dilation, "padding": padding},
                "dtype": dtype,
            }
        )
    return cases


#: Shapes the random grid rarely draws, where ``auto`` picked slowly off the grid (2026-12-07, a sweep of 40
#: random shapes on the Zen 3 EPYC): kernels as long as the input, whose few outputs make ``fft``'s transforms of the
#: weight cost more than the product (JAX 3.6 and NumPy 5.4 times the fastest engine on 2 -> 16 channels, L 32,
#: 32 taps: ``fft``'s fitted fixed cost was 0), a Siamese tracker's cross-correlations (many input channels, few
#: outputs), a 1x1 reduction with a stride, and small or thin products.  The last six, added the same night from
#: a second sweep's worst picks: a strided long thin kernel (PyTorch 3.9x), a strided 1x1 expansion (PyTorch 1.8x),
#: a dense 3x3 of 96 -> 128 channels (JAX 2.5x), 4 -> 32 channels with 7 taps (JAX 1.7x), one channel to 32 in 2-D
#: (JAX 2.2x) and a dilated narrow group of 31 taps (PyTorch 2.6x).  Named ``grid-*``: weighted as grid cases.
#: Each: (name, x's shape, w's shape, keyword arguments).
EDGE_CASES: tuple[tuple[str, tuple[int, ...], tuple[int, ...], dict[str, Any]], ...] = (
    ("grid-kernel-as-long", (1, 2, 32), (1, 16, 2, 32), {}),
    ("grid-kernel-nearly-as-long", (4, 16, 32), (4, 8, 16, 31), {}),
    ("grid-long-kernel-44-outputs", (8, 4, 300), (8, 8, 4, 257), {}),
    ("grid-long-kernel-25-outputs", (16, 8, 281), (16, 4, 8, 257), {}),
    ("grid-depthwise-64-taps", (2, 32, 256), (2, 32, 1, 64), {"groups": 32}),
    ("grid-siamese", (8, 256, 22, 22), (8, 1, 256, 6, 6), {}),
    ("grid-siamese-4-outputs", (8, 256, 22, 22), (8, 4, 256, 6, 6), {}),
    ("grid-siamese-depthwise", (8, 256, 29, 29), (8, 256, 1, 5, 5), {"groups": 256}),
    ("grid-1x1-reduction-stride-2", (64, 96, 32, 32), (64, 1, 96, 1, 1), {"stride": 2}),
    ("grid-thin-stride-2", (64, 2, 1024), (64, 16, 2, 5), {"stride": 2}),
    ("grid-rgb-5x5", (2, 3, 32, 32), (2, 1, 3, 5, 5), {}),
    ("grid-one-channel-same", (128, 1, 16), (128, 8, 1, 7), {"padding": "same"}),
    ("grid-strided-thin-long", (2, 32, 4096), (2, 4, 32, 31), {"stride": 2}),
    ("grid-1x1-expansion-stride-2", (1, 16, 256), (1, 64, 16, 1), {"stride": 2}),
    ("grid-dense-96-128-3x3", (16, 96, 8, 8), (16, 128, 96, 3, 3), {"padding": "same"}),
    ("grid-4-to-32-7-taps", (128, 4, 100), (128, 32, 4, 7), {}),
    ("grid-one-to-32-5x5", (1, 1, 56, 56), (1, 32, 1, 5, 5), {"padding": "same"}),
    ("grid-narrow-dilated-31-taps", (8, 32, 1024), (8, 8, 32, 31), {"dilation": 2, "padding": "same"}),
)


def edge_cases() -> list[dict[str, Any]]:
    """:data:`EDGE_CASES` as calibration cases (float32)."""
    return [
        {
            "name": name,
            "x": list(x),
            "w": list(w),
            "kwargs": {"groups": 1, "stride": 1, "dilation": 1, "padding": "valid", **kwargs},
            "dtype": "float32",
        }
        for name, x, w, kwargs in EDGE_CASES
    ]


def _arrays(case: dict[str, Any], backend: str) -> tuple[Any, Any]:
    rng = np.random.default_rng(0)
    dtype = np.dtype(case["dtype"])
    x, w = (rng.standard_normal(case[k]).astype(dtype) for k in ("x", "w"))
    if backend == "torch":
        torch = importlib.import_module("torch")
        return torch.from_numpy(x), torch.from_numpy(w)
    if backend == "jax":
        jnp = importlib.import_module("jax.numpy")
        return jnp.asarray(x), jnp.asarray(w)
    return x, w


def _runner(framework: Any, case: dict[str, Any], method: str) -> Any:
    """One call of ``method``, as the benchmark times it (``multiconv._bench.Framework.compile``), waited for."""
    multiconv = importlib.import_module("multiconv")
    kwargs = {**case["kwargs"], "method": method}
    compiled = framework.compile(lambda x, w: multiconv.batch_conv(x, w, **kwargs))
    return lambda x, w: framework.sync(compiled(x, w))


def _step(framework: Any, case: dict[str, Any], fn: Any, x: Any, w: Any) -> Any:
    """One training step of ``fn(x, w)``: the output and the gradients for ``x`` and ``w`` of ``sum(y * g)``.

    The benchmark's own step (``multiconv._bench.Framework.train``: PyTorch autograd on
    fresh leaves; JAX ``jax.vjp`` under ``jax.jit``), waited for.
    """
    g = np.random.default_rng(1).standard_normal(fn(x, w).shape).astype(case["dtype"])
    step = framework.train(fn, framework.convert(g))
    return lambda x, w: framework.sync(step(x, w))


def _training_runner(framework: Any, case: dict[str, Any], method: str, x: Any, w: Any) -> Any:
    """One training step of ``method`` (:func:`_step`)."""
    multiconv = importlib.import_module("multiconv")
    kwargs = {**case["kwargs"], "method": method}
    return _step(framework, case, lambda x, w: multiconv.batch_conv(x, w, **kwargs), x, w)


def _mixed_runner(framework: Any, case: dict[str, Any], mixed: Any, x: Any, w: Any) -> Any:
    """One JAX training step of ``mixed.method``'s forward with ``mixed.tangent_method``'s derivatives (as ``auto`` trains)."""
    convolve = importlib.import_module("multiconv.backends.jax").convolve
    return _step(framework, case, lambda x, w: convolve(mixed, x, w, None), x, w)


def _block(fn: Any, x: Any, w: Any) -> float:
    """Seconds per call over a block of calls lasting at least 30 ms, after an untimed call.

    As the benchmark's rounds: the first call after another engine's refills caches and the
    allocator, and a block of one call (a step of 30 ms or more) would time only that call
    (PyTorch's float64 ``many`` step, AMD: the fold 31.2 ms timed so, 16.8-18.5 alone).
    """
    fn(x, w)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < 0.03 or calls == 0:
        fn(x, w)
        calls += 1
    return elapsed / calls


def _times(runners: dict[str, Any], x: Any, w: Any, cap: float, rounds: int) -> dict[str, float]:
    """The best block of each engine over ``rounds`` interleaved rounds (the order rotates every round).

    Engines are timed in turn rather than one after the other: the first engine timed after
    another's large buffers ran up to 2.4x slower for several calls (allocator and caches),
    which a fixed order would always charge to the same engine.  An engine whose first
    call after the warm-up takes over ``cap`` seconds is timed by that one call.
    """
    best: dict[str, float] = {}
    slow: set[str] = set()
    for method, fn in runners.items():
        fn(x, w)  # warm-up: compilation (JAX), caches, lazy initialisation
        start = time.perf_counter()
        fn(x, w)
        best[method] = time.perf_counter() - start
        if best[method] > cap:
            slow.add(method)
    order = [m for m in runners if m not in slow]
    for number in range(rounds if order else 0):
        turn = number % len(order)
        for method in order[turn:] + order[:turn]:
            best[method] = min(best[method], _block(runners[method], x, w))
    return best


def measure(
    backend: str,
    cases: list[dict[str, Any]],
    cap: float,
    methods: list[str] | None = None,
    *,
    training: bool = False,
    mixed: bool = False,
) -> list[dict[str, Any]]:
    """Time every engine of ``backend`` (or only ``methods``) on every case (``training``: its training step).

    ``mixed`` (JAX training steps): instead, the steps ``auto`` may train with, in one process: the
    forward engine ``auto`` picks (``F``) differentiated through itself, and ``F``'s forward with the
    derivatives of every other engine it may pick (``spec.tangent_method``), stored per row as
    ``{"forward": F, "times": {T: seconds}}`` (``T == F``: ``F``'s own step).
    """
    if backend == "jax":
        importlib.import_module("jax").config.update("jax_enable_x64", True)  # noqa: FBT003
    api, cost = importlib.import_module("multiconv._api"), importlib.import_module("multiconv._cost")
    methods = list(methods or importlib.import_module(f"multiconv.backends.{backend}").METHODS)
    framework = importlib.import_module("multiconv._bench").framework(backend)
    rows = []
    for number, case in enumerate(cases, 1):
        x, w = _arrays(case, backend)
        spec = api.plan(x, w, **case["kwargs"]).spec
        if mixed:
            forward = dataclasses.replace(spec, method=cost.choose(backend, spec, tuple(methods)), tangent_method=None)
            specs = {
                t: dataclasses.replace(forward, tangent_method=None if t == forward.method else t)
                for t in cost.tangent_candidates(backend, forward, methods)
            }
            runners = {t: _mixed_runner(framework, case, mixed_spec, x, w) for t, mixed_spec in specs.items()}
        elif training:  # only the engines auto may train with (JAX's vmap or a 257-tap shift would take minutes)
            usable = [method for method in methods if cost.eligible(backend, spec, method)]
            runners = {method: _training_runner(framework, case, method, x, w) for method in usable}
        else:
            runners = {method: _runner(framework, case, method) for method in methods}
        times = _times(runners, x, w, cap, BENCHMARK_ROUNDS if _is_benchmark(case) else GRID_ROUNDS)
        timed = {"mixed": {"forward": forward.method, "times": times}} if mixed else {"times": times}
        rows.append({**case, "spec": dataclasses.asdict(spec), **timed})
        best = min(times, key=times.__getitem__, default=None)  # None: no engine to time (--methods, training)
        label = f"{forward.method}+{best}" if mixed else best
        done = f"best {label} {times[best] * 1e3:.3g} ms" if best else "nothing timed"
        sys.stderr.write(f"\r{backend} {number}/{len(cases)} {case['name']}: {done}      ")
        sys.stderr.flush()
    sys.stderr.write("\n")
    return rows


def _spec(row: dict[str, Any]) -> Any:
    spec_module = importlib.import_module("multiconv._spec")
    fields = {
        k: tuple(tuple(v) if isinstance(v, list) else v for v in value) if isinstance(value, list) else value
        for k, value in row["spec"].items()
    }
    return spec_module.ConvSpec(**fields)


def _design(backend: str, rows: list[dict[str, Any]], method: str, boost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``method``'s least-squares system over the rows ``auto`` decides it on: features, times, weights.

    Relative error (weights ``1 / time``), with the benchmark's shapes weighted up and
    hopeless cases (over 4x the fastest engine, where any estimate ranks the engine last)
    weighted down: the model only has to rank the engines that compete.  ``boost`` (per
    row) multiplies the weights.
    """
    cost = importlib.import_module("multiconv._cost")
    # the cases auto decides on (all of them for an engine auto never picks, to keep its estimate meaningful)
    timed = [i for i, row in enumerate(rows) if method in row["times"]]  # training steps: the eligible engines only
    chosen = [i for i in timed if cost.eligible(backend, _spec(rows[i]), method)] or timed
    rows_m = [rows[i] for i in chosen]
    features = np.array([cost.features(_spec(row), method, backend) for row in rows_m])
    times = np.array([row["times"][method] for row in rows_m])
    best = np.array([min(row["times"].values()) for row in rows_m])
    competitive = np.where(times <= 4 * best, 1.0, 0.1)
    weights = _case_weights(rows_m) * boost[chosen] * competitive / times
    return features, times, weights


def timed_engines(rows: list[dict[str, Any]]) -> list[str]:
    """The engines timed on any row, in the order first timed."""
    return list(dict.fromkeys(method for row in rows for method in row["times"]))


def _nnls(features: np.ndarray, times: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted non-negative least squares, each feature scaled to a largest value of 1."""
    scale = features.max(axis=0)
    scale[scale == 0] = 1.0
    solution, _ = importlib.import_module("scipy.optimize").nnls(features / scale * weights[:, None], times * weights)
    return np.asarray(solution / scale)


def _fit_engines(backend: str, rows: list[dict[str, Any]], boost: np.ndarray, *, shared: bool) -> dict[str, tuple[float, ...]]:
    """Per-engine least squares (``boost``: a weight per row and engine).

    ``shared``: the engines of :data:`SHARED_GEMM` are fitted together with one ``gemm``
    coefficient (they issue the same batched matmul), the others alone.
    """
    methods = timed_engines(rows)
    together = [m for m in SHARED_GEMM if m in methods] if shared else []
    systems = {m: _design(backend, rows, m, boost[:, j]) for j, m in enumerate(methods)}
    coefficients = {m: tuple(float(c) for c in _nnls(*systems[m])) for m in methods if m not in together}
    if together:
        gemm = importlib.import_module("multiconv._cost").FEATURES.index("gemm")
        width = systems[together[0]][0].shape[1] - 1  # every feature but gemm, per engine
        blocks = []
        for number, method in enumerate(together):
            features = systems[method][0]
            block = np.zeros((features.shape[0], 1 + width * len(together)))
            block[:, 0] = features[:, gemm]
            block[:, 1 + number * width : 1 + (number + 1) * width] = np.delete(features, gemm, axis=1)
            blocks.append(block)
        stacked = (np.concatenate([systems[m][i] for m in together]) for i in (1, 2))
        solution = _nnls(np.vstack(blocks), *stacked)
        for number, method in enumerate(together):
            own = list(solution[1 + number * width : 1 + (number + 1) * width])
            coefficients[method] = tuple(float(c) for c in [*own[:gemm], solution[0], *own[gemm:]])
    return {m: stored_precision(coefficients[m]) for m in methods}


def stored_precision(values: tuple[float, ...]) -> tuple[float, ...]:
    """``values`` to the 4 significant digits ``multiconv/_calibration.py`` keeps (:func:`_table`).

    Fits are ranked by the picks of the coefficients ``auto`` will use: on the Zen 4 EPYC's
    NumPy timings (2026-12-06), the fit kept picked ``matmul`` for the depthwise benchmark
    shape (1.67 ms against ``shift``'s 2.05) by 8e-11 s of 2.07e-3, and its rounded
    coefficients picked ``shift``.
    """
    return tuple(float(f"{c:.4g}") for c in values)


def _is_benchmark(case: dict[str, Any]) -> bool:
    """Whether ``case`` is one of the benchmark's shapes (the others are the random grid's)."""
    return not case["name"].startswith("grid")


def _case_weights(rows: list[dict[str, Any]]) -> np.ndarray:
    """The benchmark's shapes count :data:`BENCHMARK_WEIGHT` times a grid case."""
    return np.array([BENCHMARK_WEIGHT if _is_benchmark(row) else 1.0 for row in rows])


def regrets(backend: str, rows: list[dict[str, Any]], coefficients: dict[str, tuple[float, ...]]) -> list[tuple[str, str, float]]:
    """Per row: the engine the model picks, the fastest engine auto may pick, and the ratio of their times."""
    cost = importlib.import_module("multiconv._cost")
    picks = []
    for row in rows:
        spec = _spec(row)
        times = row["times"]
        predicted = {m: cost.modelled(coefficients[m], backend, spec, m) for m in times if cost.eligible(backend, spec, m)}
        picked = min(predicted, key=predicted.__getitem__)
        best = min(predicted, key=times.__getitem__)
        picks.append((picked, best, times[picked] / times[best]))
    return picks


def _inversions(backend: str, rows: list[dict[str, Any]], coefficients: dict[str, tuple[float, ...]]) -> np.ndarray:
    """Per row: the sum of ``log(t_slow / t_fast)`` over the pairs of eligible engines the model orders wrongly.

    The whole ranking counts, not only the pick.
    """
    cost = importlib.import_module("multiconv._cost")
    penalties = []
    for row in rows:
        spec = _spec(row)
        engines = [m for m in row["times"] if cost.eligible(backend, spec, m)]
        penalties.append(_misordered(backend, spec, coefficients, {m: row["times"][m] for m in engines}))
    return np.array(penalties)


def _misordered(backend: str, spec: Any, coefficients: dict[str, tuple[float, ...]], times: dict[str, float]) -> float:
    """The sum of ``log(t_slow / t_fast)`` over the pairs of the engines in ``times`` that ``coefficients`` order wrongly."""
    cost = importlib.import_module("multiconv._cost")
    t = np.array(list(times.values()))
    p = np.array([cost.modelled(coefficients[m], backend, spec, m) for m in times])
    wrong = (t[:, None] > t[None, :]) & (p[:, None] < p[None, :])
    return float(np.sum(np.log(t[:, None] / t[None, :])[wrong]))


def _mixed_rows(rows: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], Any]]:
    """Each row with timed mixed steps, and its spec with ``auto``'s forward engine as they were timed."""
    for row in rows:
        if "mixed" in row:
            yield row, dataclasses.replace(_spec(row), method=row["mixed"]["forward"])


def fit(backend: str, rows: list[dict[str, Any]], *, training: bool = False) -> dict[str, tuple[float, ...]]:
    """The per-engine fits (:func:`_fit_engines`) that rank the measured engines best.

    ``rows``: forward timings, or (``training``) timings of training steps, which the same
    features model (``multiconv._calibration.TRAINING_COEFFICIENTS``).

    Each engine's least squares knows nothing of the others, so small relative errors
    in opposite directions can still pick a slower engine.  Two families of fits are
    tried, each engine on its own and :data:`SHARED_GEMM` with one ``gemm``
    coefficient; within each, :data:`REWEIGHT_ROUNDS` rounds reweight every row on
    which the model picks a slower engine (for the engine picked and the fastest: by
    the square root of their time ratio) and refit.  Kept: of the fits that pick
    within :data:`BENCHMARK_SLACK` of the fastest engine on every benchmark shape,
    the one whose regret is least over all rows (:func:`_rank`: the ordering penalty of
    :func:`_inversions` plus the picks' mean log ratio to the fastest, weighted as the fit); if none
    does, the least regret of all.  (Until 2026-12-06 it was then the plain fit, the first
    round of the first family: on AMD JAX forward timings where no fit picked within 10% on
    every benchmark shape, that fit was the fastest on 55 of 78 cases, geometric mean 1.098,
    and the fit of the same engines' earlier timings scored 59 and 1.045 on them.)
    JAX's training steps with mixed steps timed are ranked by those (:func:`_rank`): on the
    AMD timings stored on 2026-12-06 (before ``col2im``'s split), the fit the whole steps rank
    first picked steps 1.129 times the fastest (geometric mean of the mixed steps), the fit so
    ranked 1.089.  Where no fit picks within the slack on every benchmark shape, both families
    are fitted again with the benchmark's shapes weighted :data:`BENCHMARK_ESCALATION` times
    more, and ranked with the others: on the Zen 3 EPYC's JAX forward timings (2026-12-07), no fit
    picked ``loop`` for ``many`` (timed 4.89 ms against ``col2im``'s 5.88; the benchmark ran
    them at 4.31 and 5.32), and the escalated one does (fastest on 51 of 78 cases, geometric mean
    1.101, against 48 and 1.092).  Weighting the benchmark's shapes so on every fit made the
    Intel profile's PyTorch forward fit worse (geometric mean 1.109 to 1.244).  Since 2026-12-08 a
    benchmark shape on which ``auto`` runs another engine than the pick, its loop over the groups
    charged, counts as beyond the slack too unless that engine is within :data:`CHARGED_SLACK`: on the
    Zen 3 EPYC's PyTorch timings re-timed that night, the fit kept picked ``grouped`` for ``float64``
    (10.7 ms, the fastest) and so ran ``matmul``, 1.28 times it, which the model put at 10.9 ms.
    """
    methods = timed_engines(rows)
    benchmark = np.array([_is_benchmark(row) for row in rows])
    kept, kept_rank = None, (True, math.inf)
    for escalation in (1.0, BENCHMARK_ESCALATION):
        if escalation > 1 and not kept_rank[0]:
            break  # a fit picks within the slack on every benchmark shape: the benchmark's weight stays
        for shared in (False, True):
            boost = np.ones((len(rows), len(methods)))
            boost[benchmark] *= escalation
            for _ in range(REWEIGHT_ROUNDS):
                coefficients = _fit_engines(backend, rows, boost, shared=shared)
                picks = regrets(backend, rows, coefficients)
                rank = _rank(backend, rows, coefficients, picks, training=training)
                if kept is None or rank < kept_rank:
                    kept, kept_rank = coefficients, rank
                for number, (picked, best, ratio) in enumerate(picks):
                    boost[number, methods.index(picked)] *= math.sqrt(ratio)
                    boost[number, methods.index(best)] *= math.sqrt(ratio)
    assert kept is not None  # noqa: S101 (REWEIGHT_ROUNDS >= 1)
    return kept


def _rank(
    backend: str,
    rows: list[dict[str, Any]],
    coefficients: dict[str, tuple[float, ...]],
    picks: list[tuple[str, str, float]],
    *,
    training: bool = False,
) -> tuple[bool, float]:
    """How :func:`fit` ranks a fit: whether a benchmark shape picks (or runs) beyond the slack, then its regret.

    Runs: :func:`_charged_beyond_slack`.

    The regret is the ordering penalty plus the mean ``log(picked / fastest)`` (both weighted
    as the fit): the ordering alone kept, on AMD JAX training steps re-timed 2026-12-06 (with
    ``col2im`` split in 2-D), a fit whose picks came out at 1.154 times the fastest step
    (geometric mean; 128 samples, 8 -> 16 channels in 8 groups, L 16384, 129 taps: ``shift``'s
    derivatives, 2.9 s against ``fft``'s 0.36) over one of the same penalty (0.3080 against
    0.3078) at 1.072.  On every other stored profile and backend both rankings keep the same fit.
    Where the rows hold JAX's mixed steps (``--mixed``), both are of the steps ``auto``
    runs, its forward engine's forward with the derivatives picked (:func:`mixed_picks`,
    :func:`_mixed_inversions`): the coefficients of whole steps serve only that pick.
    """
    mixed = [i for i, row in enumerate(rows) if "mixed" in row]
    chosen = mixed or list(range(len(rows)))
    if mixed:
        ratios = np.array([ratio for _, _, ratio in mixed_picks(backend, rows, coefficients)])
        penalties = _mixed_inversions(backend, rows, coefficients)
    else:
        ratios = np.array([ratio for _, _, ratio in picks])
        penalties = _inversions(backend, rows, coefficients)
    subset = [rows[i] for i in chosen]
    weights = _case_weights(subset)
    benchmark = np.array([_is_benchmark(row) for row in subset])
    worst = float(ratios[benchmark].max(initial=1.0))
    beyond = worst > BENCHMARK_SLACK or (not mixed and _charged_beyond_slack(backend, rows, coefficients, picks, training=training))
    return beyond, float(np.sum(weights * (penalties + np.log(ratios))) / np.sum(weights))


def _charged_beyond_slack(
    backend: str,
    rows: list[dict[str, Any]],
    coefficients: dict[str, tuple[float, ...]],
    picks: list[tuple[str, str, float]],
    *,
    training: bool,
) -> bool:
    """Whether, on a benchmark shape, ``auto`` runs another engine than the pick (a charged loop) beyond :data:`CHARGED_SLACK`."""
    cost = importlib.import_module("multiconv._cost")
    for row, (picked, _, _) in zip(rows, picks, strict=True):
        if not _is_benchmark(row):
            continue
        runs, spec = charged_pick(backend, row, coefficients, training=training), _spec(row)
        fastest = min(t for m, t in row["times"].items() if cost.eligible(backend, spec, m))
        if runs != picked and row["times"][runs] > CHARGED_SLACK * fastest:
            return True
    return False


def _mixed_inversions(backend: str, rows: list[dict[str, Any]], coefficients: dict[str, tuple[float, ...]]) -> np.ndarray:
    """:func:`_inversions` of the derivatives ``auto`` may take after its forward, by their timed mixed steps (rows with them)."""
    cost = importlib.import_module("multiconv._cost")
    penalties = []
    for row, spec in _mixed_rows(rows):
        candidates = cost.tangent_candidates(backend, spec, coefficients)
        options = [m for m in candidates if m in coefficients and cost.tangent_allowed(spec, m)]
        penalties.append(_misordered(backend, spec, coefficients, {m: row["mixed"]["times"][m] for m in options}))
    return np.array(penalties)


def charged_pick(backend: str, row: dict[str, Any], coefficients: dict[str, tuple[float, ...]], *, training: bool) -> str:
    """The engine ``auto`` runs on ``row`` with these coefficients: the fit's pick, unless ``_cost.group_loop_risk`` charges it."""
    cost = importlib.import_module("multiconv._cost")
    spec = _spec(row)
    ranked = {
        m: cost.charged(coefficients[m], backend, spec, m, training=training) for m in row["times"] if cost.eligible(backend, spec, m)
    }
    runs: str = min(ranked, key=ranked.__getitem__)
    return runs


def report(backend: str, rows: list[dict[str, Any]], coefficients: dict[str, tuple[float, ...]], label: str = "") -> None:
    """How well the fitted model picks engines on the measured cases (``label``: after the backend's name).

    The picks are the fit's; a row where ``auto`` charges the pick's loop over the groups
    (``multiconv._cost.group_loop_risk``) and so runs another engine says which.
    """
    ratios = []
    for row, (picked, best, ratio) in zip(rows, regrets(backend, rows, coefficients), strict=True):
        ratios.append(ratio)
        runs = charged_pick(backend, row, coefficients, training="training" in label)
        if _is_benchmark(row) or ratio > 1.25 or runs != picked:
            picked_ms, best_ms = row["times"][picked] * 1e3, row["times"][best] * 1e3
            line = f"  {row['name']:>10}: picks {picked:8} ({picked_ms:9.3f} ms), fastest {best:8} ({best_ms:9.3f} ms), ratio {ratio:.2f}"
            print(line if runs == picked else f"{line}; auto runs {runs} ({row['times'][runs] * 1e3:.3f} ms: group loop charged)")
    hits = sum(r <= 1.0 + 1e-9 for r in ratios)
    close = sum(r <= 1.1 for r in ratios)
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(
        f"{backend}{label}: picks the fastest engine on {hits}/{len(ratios)} cases; within 10% on {close}; "
        f"worst ratio {max(ratios):.2f}; geometric mean {mean:.3f}"
    )


def mixed_picks(backend: str, rows: list[dict[str, Any]], coefficients: dict[str, tuple[float, ...]]) -> list[tuple[str, str, float]]:
    """Per row with timed mixed steps: the derivatives ``auto`` takes, the fastest step's, and the ratio of their steps.

    The pick is :func:`multiconv._cost.choose_tangent`'s with ``coefficients`` (the fit of the
    engines' own steps, :func:`multiconv._cost.pick_tangent`), among candidates that must all
    have been timed (those :func:`multiconv._cost.tangent_allowed` lets follow the forward); the fastest, of all those timed.  The stored
    forward engine is taken as it is (the tests check it against ``auto``'s current pick).
    """
    cost = importlib.import_module("multiconv._cost")
    picks = []
    for row, spec in _mixed_rows(rows):
        times = row["mixed"]["times"]
        allowed = {m for m in cost.tangent_candidates(backend, spec, coefficients) if cost.tangent_allowed(spec, m)}
        untimed = sorted(allowed - set(times))
        if untimed:
            raise ValueError(f"{row['name']}: the mixed steps of {untimed} were not timed; time them (--mixed)")
        picked = cost.pick_tangent(backend, spec, coefficients)
        best = min(times, key=times.__getitem__)
        picks.append((picked, best, times[picked] / times[best]))
    return picks


def report_mixed(backend: str, rows: list[dict[str, Any]], coefficients: dict[str, tuple[float, ...]]) -> None:
    """How well ``auto`` picks the engine JAX differentiates its forward engine through, on the timed mixed steps."""
    mixed = [row for row in rows if "mixed" in row]
    ratios = []
    for row, (picked, best, ratio) in zip(mixed, mixed_picks(backend, rows, coefficients), strict=True):
        ratios.append(ratio)
        if _is_benchmark(row) or ratio > 1.25:
            forward, times = row["mixed"]["forward"], row["mixed"]["times"]
            print(
                f"  {row['name']:>10}: {forward} + derivatives of {picked:6} ({times[picked] * 1e3:9.3f} ms), "
                f"fastest {forward} + {best:6} ({times[best] * 1e3:9.3f} ms), ratio {ratio:.2f}"
            )
    hits = sum(r <= 1.0 + 1e-9 for r in ratios)
    mean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(
        f"{backend} training as auto runs it (its forward, the derivatives picked): the fastest step on {hits}/{len(ratios)} "
        f"cases; within 10% on {sum(r <= 1.1 for r in ratios)}; worst ratio {max(ratios):.2f}; geometric mean {mean:.3f}"
    )


Coefficients = dict[str, dict[str, dict[str, tuple[float, ...]]]]


def write_module(coefficients: Coefficients, training: Coefficients, machines: dict[str, str]) -> None:
    """Write ``multiconv/_calibration.py`` (forward and ``training`` coefficients and ``machines``, keyed by profile)."""
    lines = [
        '"""Cost-model coefficients (seconds per feature unit), one set per CPU profile, written by ``benchmarks/calibrate.py``."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Final",
        "",
        "#: profile -> where and with what its timings were measured.",
        "MACHINES: Final[dict[str, str]] = {",
        *(line for profile, machine in machines.items() for line in _machine_entry(profile, machine)),
        "}",
        "",
        f"#: profile -> backend -> engine -> coefficients of {tuple(importlib.import_module('multiconv._cost').FEATURES)}.".replace(
            "'", ""
        ),
        *_table("COEFFICIENTS", coefficients),
        "",
        "#: The same for one training step (forward and gradients of x and w), where timed.",
        *_table("TRAINING_COEFFICIENTS", training),
    ]
    MODULE.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _table(name: str, coefficients: Coefficients) -> list[str]:
    """The lines of one coefficient table of ``multiconv/_calibration.py``."""
    lines = [f"{name}: Final[dict[str, dict[str, dict[str, tuple[float, ...]]]]] = {{"]
    for profile, backends in coefficients.items():
        lines.append(f'    "{profile}": {{')
        for backend, methods in backends.items():
            lines.append(f'        "{backend}": {{')
            for method, values in methods.items():
                lines.append(f'            "{method}": ({", ".join(f"{v:.4g}" for v in values)}),')  # as stored_precision rounds
            lines.append("        },")
        lines.append("    },")
    lines.append("}")
    return lines


def _machine_entry(profile: str, machine: str) -> list[str]:
    """``MACHINES``' lines for one profile: the description cut after its semicolons, one piece a line."""
    pieces = [f"{piece}; " for piece in machine.split("; ")]
    pieces[-1] = pieces[-1].removesuffix("; ")
    return [f'    "{profile}": (', *(f'        "{piece}"' for piece in pieces), "    ),"]


def _describe(data: Path) -> str:
    """Where a profile's stored timings were measured, with the date of each backend's."""
    stored = {path.stem: json.loads(path.read_text(encoding="utf-8"))["machine"] for path in sorted(data.glob("*.json"))}
    machine = max(stored.values(), key=lambda m: m["date"])  # the latest measurement names the machine and versions
    dates = ", ".join(f"{backend} {m['date']}" for backend, m in stored.items())
    model = f"{machine['cpu_model']}, " if machine.get("cpu_model") else ""  # recorded since 2026-12-06, late
    return f"{machine['cpu']} ({model}{machine['cores']} cores), Python {machine['python']}, {machine['versions']}; timed: {dates}"


#: What ``benchmarks/run.sh`` unsets for the benchmark: OpenBLAS then runs the kernel it detects.
BLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def _measuring_env() -> dict[str, str]:
    """A measuring process's environment: the benchmark's allocator, and OpenBLAS as ``run.sh`` leaves it."""
    allocator = importlib.import_module("multiconv._bench").ALLOCATOR_ENV
    return {key: value for key, value in {**allocator, **os.environ}.items() if key not in BLAS_OVERRIDES}


def _machine() -> dict[str, Any]:
    cost = importlib.import_module("multiconv._cost")
    versions = []
    for name in ("numpy", "torch", "jax"):
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            continue
    from threadpoolctl import threadpool_info  # noqa: PLC0415 (scans the loaded libraries: once, here)

    return {
        "cpu": cost.cpu_name(),
        "cpu_model": cost.cpu_model(),  # vendor, family and model
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": ", ".join(versions),
        # NumPy's BLAS kernel (threadpoolctl), as the benchmark reports it
        "blas": ", ".join(f"{p['internal_api']} {p.get('architecture', '?')}" for p in threadpool_info() if p.get("user_api") == "blas"),
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
    }


def refit(backends: list[str], profile: str, data: Path) -> None:
    """Fit every stored kind of timing (forward calls; training steps where timed) of ``backends`` and write the module."""
    calibration = importlib.import_module("multiconv._calibration")
    coefficients = {name: dict(tables) for name, tables in calibration.COEFFICIENTS.items()}
    training = {name: dict(tables) for name, tables in calibration.TRAINING_COEFFICIENTS.items()}
    machines = dict(calibration.MACHINES)
    for backend in backends:
        for kind, table in ((False, coefficients), (True, training)):
            path = timings_path(data, backend, training=kind)
            if kind and not path.exists():
                continue
            if not path.exists():
                raise SystemExit(f"{path} is missing: time {backend}'s forward calls first (calibrate.py --backends {backend})")
            rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
            fitted = table.setdefault(profile, {})[backend] = fit(backend, rows, training=kind)
            report(backend, rows, fitted, " training" if kind else "")
            if kind and any("mixed" in row for row in rows):
                report_mixed(backend, rows, fitted)
    machines[profile] = _describe(data)
    write_module(coefficients, training, machines)


def timings_path(data: Path, backend: str, *, training: bool) -> Path:
    """Where a profile's timings of ``backend`` (forward calls, or training steps) are stored."""
    return data / f"{backend}{'-training' if training else ''}.json"


def merge_stored(path: Path, rows: list[dict[str, Any]], *, mixed: bool, partial: bool) -> list[dict[str, Any]]:
    """The rows to store at ``path``: ``rows``, or merged into those stored there.

    ``mixed`` (``--mixed``): the mixed steps join the stored rows of the engines' own steps.
    ``partial`` (``--methods``): the re-timed engines replace theirs and the other engines'
    times stay; the stored mixed steps, timed against the engines' steps as they were, go.
    """
    if not (mixed or partial):
        return rows
    if not path.exists():
        raise SystemExit(f"{path} is missing: time every engine first (without --methods or --mixed)")
    stored = json.loads(path.read_text(encoding="utf-8"))["rows"]
    if [row["name"] for row in stored] != [row["name"] for row in rows]:
        raise SystemExit(f"{path} holds other cases; time every engine first (without --methods or --mixed)")
    if mixed:
        return [{**old, "mixed": new["mixed"]} for old, new in zip(stored, rows, strict=True)]
    return [
        {**{k: v for k, v in old.items() if k != "mixed"}, **new, "times": {**old["times"], **new["times"]}}
        for old, new in zip(stored, rows, strict=True)
    ]


def main() -> int:
    """Measure, fit and write (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="numpy,torch,jax")
    parser.add_argument("--cases", type=int, default=70, help="random grid cases besides the benchmark shapes")
    parser.add_argument("--cap", type=float, default=1.0, help="seconds; slower engines are timed by one call")
    parser.add_argument("--quick", action="store_true", help="10 grid cases, no benchmark shapes")
    parser.add_argument("--fit-only", action="store_true")
    parser.add_argument("--methods", help="re-time only these engines (comma-separated), keeping the stored times of the others")
    parser.add_argument("--profile", help="the CPU profile whose timings to measure or fit (default: this CPU's)")
    parser.add_argument("--training", action="store_true", help="time training steps (PyTorch, JAX) instead of forward calls")
    parser.add_argument("--mixed", action="store_true", help="with --training, JAX: time auto's forward with each engine's derivatives")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child process: measure one backend
    args = parser.parse_args()
    cost = importlib.import_module("multiconv._cost")
    profile = args.profile or cost.cpu_model() or cost.cpu_vendor() or "unknown"
    data = DATA / profile
    cases = grid_cases(10) if args.quick else benchmark_cases() + grid_cases(args.cases) + edge_cases()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.measure:
        path = timings_path(data, args.measure, training=args.training)
        rows = measure(args.measure, cases, args.cap, methods, training=args.training, mixed=args.mixed)
        rows = merge_stored(path, rows, mixed=args.mixed, partial=bool(methods))
        data.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=1), encoding="utf-8")
        return 0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.mixed and (not args.training or backends != ["jax"] or methods):
        parser.error("--mixed times JAX's training steps as auto runs them: use it with --training --backends jax, without --methods")
    if not args.fit_only:
        for backend in backends:
            if args.training and backend not in DIFFERENTIABLE:
                print(f"{backend}: no training steps to time (NumPy has no autodiff)")
                continue
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    backend,
                    *(["--quick"] if args.quick else []),
                    "--cases",
                    str(args.cases),
                    "--cap",
                    str(args.cap),
                    *(["--methods", args.methods] if args.methods else []),
                    *(["--training"] if args.training else []),
                    *(["--mixed"] if args.mixed else []),
                    "--profile",
                    profile,
                ],
                check=True,
                env=_measuring_env(),
            )
    refit(backends, profile, data)
    print(f"wrote {MODULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
