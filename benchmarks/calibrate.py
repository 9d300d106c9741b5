"""Fit the coefficients of ``method="auto"``'s cost model (``multiconv/_cost.py``) to timings.

Usage (from the repository root, on an otherwise idle machine; needs scipy)::

    python benchmarks/calibrate.py                      # measure every installed backend, fit, write
    python benchmarks/calibrate.py --fit-only           # refit from the stored timings
    python benchmarks/calibrate.py --backends numpy --quick
    python benchmarks/calibrate.py --backends jax --methods matmul   # re-time one engine, refit
    python benchmarks/calibrate.py --fit-only --profile GenuineIntel  # refit another CPU's timings

Each backend is measured in its own process over a grid of shapes (the
benchmark's shapes, weighted up, plus a seeded random grid of 1-D and 2-D
convolutions: dense, grouped and depthwise; kernels of 1 to 257 taps; strides,
dilations; float32, float64, complex64).  Every engine is timed (JAX under
``jax.jit``): after a warm-up call (which compiles), the best of three blocks of
calls lasting at least 30 ms each, the engines of a case taking turns in a rotating
order; an engine whose first timed call takes over ``--cap`` seconds is timed by that
one call.  The raw timings go to ``benchmarks/calibration/<profile>/<backend>.json``,
where the profile is this CPU's vendor (``multiconv._cost.cpu_profile``:
``GenuineIntel``, ``AuthenticAMD``): each vendor measured keeps its own timings and
coefficients.

The fit is, per (backend, engine), non-negative least squares of the modelled
time ``sum(c_i * feature_i)`` on relative error.  The script prints how well the
model ranks the engines (how often ``auto`` picks the fastest, and the worst
ratio of the picked engine's time to the fastest's) and writes the coefficients
to ``multiconv/_calibration.py`` (every profile's: the others are kept as they are).
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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "calibration"
MODULE = ROOT / "multiconv" / "_calibration.py"
BENCHMARK_WEIGHT = 10.0


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


def _runner(backend: str, case: dict[str, Any], method: str) -> Any:
    multiconv = importlib.import_module("multiconv")
    kwargs = {**case["kwargs"], "method": method}
    if backend == "jax":
        jax = importlib.import_module("jax")
        jitted = jax.jit(lambda x, w: multiconv.batch_conv(x, w, **kwargs))
        return lambda x, w: jitted(x, w).block_until_ready()
    return lambda x, w: multiconv.batch_conv(x, w, **kwargs)


def _block(fn: Any, x: Any, w: Any) -> float:
    """Seconds per call over a block of calls lasting at least 30 ms."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < 0.03 or calls == 0:
        fn(x, w)
        calls += 1
    return elapsed / calls


def _times(runners: dict[str, Any], x: Any, w: Any, cap: float, rounds: int = 3) -> dict[str, float]:
    """The best block of each engine over interleaved rounds (the order rotates every round).

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


def measure(backend: str, cases: list[dict[str, Any]], cap: float, methods: list[str] | None = None) -> list[dict[str, Any]]:
    """Time every engine of ``backend`` (or only ``methods``) on every case."""
    if backend == "jax":
        importlib.import_module("jax").config.update("jax_enable_x64", True)  # noqa: FBT003
    api = importlib.import_module("multiconv._api")
    methods = methods or list(importlib.import_module(f"multiconv.backends.{backend}").METHODS)
    rows = []
    for number, case in enumerate(cases, 1):
        x, w = _arrays(case, backend)
        spec = api.plan(x, w, **case["kwargs"]).spec
        times = _times({method: _runner(backend, case, method) for method in methods}, x, w, cap)
        rows.append({**case, "spec": dataclasses.asdict(spec), "times": times})
        best = min(times, key=times.__getitem__)
        sys.stderr.write(f"\r{backend} {number}/{len(cases)} {case['name']}: best {best} {times[best] * 1e3:.3g} ms      ")
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


def fit(backend: str, rows: list[dict[str, Any]]) -> dict[str, tuple[float, ...]]:
    """Non-negative least squares on relative error, per engine."""
    nnls = importlib.import_module("scipy.optimize").nnls
    cost = importlib.import_module("multiconv._cost")
    coefficients = {}
    for method in rows[0]["times"]:
        # the cases auto decides on (all of them for an engine auto never picks, to keep its estimate meaningful)
        rows_m = [row for row in rows if cost.eligible(backend, _spec(row), method)] or rows
        features = np.array([cost.features(_spec(row), method, backend) for row in rows_m])
        times = np.array([row["times"][method] for row in rows_m])
        # Relative error, with the benchmark's shapes weighted up and hopeless cases (over 4x the
        # fastest engine, where any estimate ranks the engine last) weighted down: the model only
        # has to rank the engines that compete.
        best = np.array([min(row["times"].values()) for row in rows_m])
        competitive = np.where(times <= 4 * best, 1.0, 0.1)
        weights = np.array([BENCHMARK_WEIGHT if not row["name"].startswith("grid") else 1.0 for row in rows_m]) * competitive / times
        scale = features.max(axis=0)
        scale[scale == 0] = 1.0
        solution, _ = nnls(features / scale * weights[:, None], times * weights)
        coefficients[method] = tuple(float(c) for c in solution / scale)
    return coefficients


def report(backend: str, rows: list[dict[str, Any]], coefficients: dict[str, tuple[float, ...]]) -> None:
    """How well the fitted model picks engines on the measured cases."""
    cost = importlib.import_module("multiconv._cost")
    regrets = []
    for row in rows:
        spec = _spec(row)
        predicted = {
            m: sum(c * f for c, f in zip(coefficients[m], cost.features(spec, m, backend), strict=True))
            for m in row["times"]
            if cost.eligible(backend, spec, m)
        }
        picked = min(predicted, key=predicted.__getitem__)
        best = min(predicted, key=row["times"].__getitem__)  # the fastest engine auto may pick
        regret = row["times"][picked] / row["times"][best]
        regrets.append(regret)
        if not row["name"].startswith("grid") or regret > 1.25:
            picked_ms, best_ms = row["times"][picked] * 1e3, row["times"][best] * 1e3
            print(f"  {row['name']:>10}: picks {picked:8} ({picked_ms:9.3f} ms), fastest {best:8} ({best_ms:9.3f} ms), ratio {regret:.2f}")
    hits = sum(r <= 1.0 + 1e-9 for r in regrets)
    close = sum(r <= 1.1 for r in regrets)
    print(f"{backend}: picks the fastest engine on {hits}/{len(regrets)} cases; within 10% on {close}; worst ratio {max(regrets):.2f}")


def write_module(coefficients: dict[str, dict[str, dict[str, tuple[float, ...]]]], machines: dict[str, str]) -> None:
    """Write ``multiconv/_calibration.py`` (``coefficients`` and ``machines`` keyed by profile)."""
    lines = [
        '"""Cost-model coefficients (seconds per feature unit), one set per CPU profile, written by ``benchmarks/calibrate.py``."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Final",
        "",
        "#: profile -> where and with what its timings were measured.",
        "MACHINES: Final[dict[str, str]] = {",
        *(f"    {profile!r}: {machine!r},".replace("'", '"') for profile, machine in machines.items()),
        "}",
        "",
        f"#: profile -> backend -> engine -> coefficients of {tuple(importlib.import_module('multiconv._cost').FEATURES)}.".replace(
            "'", ""
        ),
        "COEFFICIENTS: Final[dict[str, dict[str, dict[str, tuple[float, ...]]]]] = {",
    ]
    for profile, backends in coefficients.items():
        lines.append(f'    "{profile}": {{')
        for backend, methods in backends.items():
            lines.append(f'        "{backend}": {{')
            for method, values in methods.items():
                lines.append(f'            "{method}": ({", ".join(f"{v:.4g}" for v in values)}),')
            lines.append("        },")
        lines.append("    },")
    lines.append("}")
    MODULE.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _describe(machine: dict[str, Any]) -> str:
    return f"{machine['cpu']} ({machine['cores']} cores), Python {machine['python']}, {machine['versions']}, {machine['date']}"


def _machine() -> dict[str, Any]:
    cpu = importlib.import_module("multiconv._cost").cpu_info("model name") or platform.processor()
    versions = []
    for name in ("numpy", "torch", "jax"):
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            continue
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": ", ".join(versions),
        "date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
    }


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
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child process: measure one backend
    args = parser.parse_args()
    profile = args.profile or (importlib.import_module("multiconv._cost").cpu_vendor() or "unknown")
    data = DATA / profile
    cases = grid_cases(10) if args.quick else benchmark_cases() + grid_cases(args.cases)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    if args.measure:
        path = data / f"{args.measure}.json"
        rows = measure(args.measure, cases, args.cap, methods)
        if methods:  # re-timed engines replace theirs in the stored rows; the other engines' times stay
            stored = json.loads(path.read_text(encoding="utf-8"))["rows"]
            if [row["name"] for row in stored] != [row["name"] for row in rows]:
                raise SystemExit(f"{path} holds other cases; measure every engine (without --methods)")
            rows = [{**old, **new, "times": {**old["times"], **new["times"]}} for old, new in zip(stored, rows, strict=True)]
        data.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=1), encoding="utf-8")
        return 0
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.fit_only:
        for backend in backends:
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
                    "--profile",
                    profile,
                ],
                check=True,
            )
    calibration = importlib.import_module("multiconv._calibration")
    coefficients = {name: dict(backends) for name, backends in calibration.COEFFICIENTS.items()}
    machines = dict(calibration.MACHINES)
    fitted = coefficients.setdefault(profile, {})
    for backend in backends:
        stored = json.loads((data / f"{backend}.json").read_text(encoding="utf-8"))
        fitted[backend] = fit(backend, stored["rows"])
        machines[profile] = _describe(stored["machine"])
        report(backend, stored["rows"], fitted[backend])
    write_module(coefficients, machines)
    print(f"wrote {MODULE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
