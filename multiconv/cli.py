"""The ``multiconv`` command: ``multiconv demo`` and ``multiconv info``.

``demo`` runs the README's example (per-sample conv1d weights of shape
``(32, 8, 4, 1)``) on every installed backend, shows that the backends agree with
each other and with the float64 reference of :mod:`multiconv.testing`, and times
``batch_conv`` against the Python loop over the batch a user would otherwise
write.  ``info`` reports versions, devices and the methods of each backend.

A framework is imported only when :func:`importlib.util.find_spec` finds it, so
both commands work with NumPy alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import multiconv
from multiconv import _bench
from multiconv._api import plan
from multiconv._dispatch import BACKENDS, installed, load
from multiconv.testing import reference_conv

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["main"]

#: The README's example: ``x`` is (B, C_in, L), ``w`` is (B, C_out, C_in, K), one weight per sample.
X_SHAPE = (32, 4, 16)
W_SHAPE = (32, 8, 4, 1)
#: Largest difference, relative to ``max|reference|``, that still counts as agreement.
TOLERANCE = 1e-5
DEFAULT_REPEATS = 7
# Each timed repeat calls the function often enough to last about this long, so that
# microsecond calls are not lost in the timer's resolution.
_REPEAT_SECONDS = 0.01
_MAX_CALLS_PER_REPEAT = 1000
_MILLISECOND = 1e-3


def _emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _install_hint(name: str) -> str:
    return f"pip install 'multiconv[{name}]'"


# --------------------------------------------------------------------------- demo


@dataclass(frozen=True)
class _Subject:
    """One row of the demo: a way to run ``batch_conv`` and the loop it replaces."""

    label: str
    version: str
    device: str
    method: str
    convert: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    sync: Callable[[Any], object]
    batched: Callable[[Any, Any], Any]
    loop: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class DemoRow:
    """The measurements of one demo row (seconds per call; differences are max abs)."""

    backend: str
    version: str
    device: str
    method: str
    batch_conv_seconds: float
    loop_seconds: float
    speedup: float
    max_abs_diff_vs_numpy: float
    max_abs_diff_vs_reference: float
    relative_diff: float
    output_shape: tuple[int, ...]
    output_dtype: str


def _auto_method(name: str, x: np.ndarray, w: np.ndarray) -> str:
    """Return the method ``method="auto"`` picks on backend ``name``, resolved as ``batch_conv`` does."""
    return plan(x, w, backend=name).spec.method


def _numpy_loop(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per-sample valid cross-correlation, one ``tensordot`` per kernel offset."""
    kernel = w.shape[-1]
    out_len = x.shape[-1] - kernel + 1
    y = np.empty((x.shape[0], w.shape[1], out_len), dtype=x.dtype)
    for b in range(x.shape[0]):
        acc = np.zeros((w.shape[1], out_len), dtype=x.dtype)
        for k in range(kernel):
            acc += np.tensordot(w[b, :, :, k], x[b, :, k : k + out_len], axes=1)
        y[b] = acc
    return y


def _numpy_subjects(x: np.ndarray, w: np.ndarray) -> list[_Subject]:
    return [
        _Subject(
            label="numpy",
            version=np.__version__,
            device="cpu",
            method=_auto_method("numpy", x, w),
            convert=np.array,
            to_numpy=np.asarray,
            sync=lambda _: None,
            batched=multiconv.batch_conv,
            loop=_numpy_loop,
        )
    ]


def _torch_subjects(x: np.ndarray, w: np.ndarray) -> list[_Subject]:
    import torch  # noqa: PLC0415  (only once find_spec has found it)
    import torch.nn.functional as F  # noqa: N812, PLC0415

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def sync(_: object) -> None:
        if device.type == "cuda":  # pragma: no cover (CUDA only)
            torch.cuda.synchronize(device)

    def loop(xt: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.conv1d(xt[b : b + 1], wt[b]) for b in range(xt.shape[0])])

    return [
        _Subject(
            label="torch",
            version=torch.__version__,
            device=str(device),
            method=_auto_method("torch", x, w),
            convert=lambda a: torch.from_numpy(np.array(a)).to(device),
            to_numpy=lambda t: t.detach().cpu().numpy(),
            sync=sync,
            batched=multiconv.batch_conv,
            loop=loop,
        )
    ]


def _jax_subjects(x: np.ndarray, w: np.ndarray) -> list[_Subject]:
    import jax  # noqa: PLC0415  (only once find_spec has found it)
    import jax.numpy as jnp  # noqa: PLC0415
    from jax import lax  # noqa: PLC0415

    def loop(xj: jax.Array, wj: jax.Array) -> jax.Array:
        return jnp.concatenate([lax.conv_general_dilated(xj[b : b + 1], wj[b], (1,), "VALID") for b in range(xj.shape[0])])

    device = jax.devices()[0]
    common: dict[str, Any] = {
        "version": jax.__version__,
        "device": f"{device.platform}:{device.id}",
        "method": _auto_method("jax", x, w),
        "convert": jnp.asarray,
        "to_numpy": np.asarray,
        "sync": jax.block_until_ready,
    }
    return [
        _Subject(label="jax", batched=multiconv.batch_conv, loop=loop, **common),
        # Under jit the loop is jitted too: the fair comparison for a jitted program.
        _Subject(label="jax (jit)", batched=jax.jit(multiconv.batch_conv), loop=jax.jit(loop), **common),
    ]


_SUBJECTS: dict[str, Callable[[np.ndarray, np.ndarray], list[_Subject]]] = {
    "numpy": _numpy_subjects,
    "torch": _torch_subjects,
    "jax": _jax_subjects,
}


def _time_per_call(fn: Callable[[], Any], sync: Callable[[Any], object], repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` repeats, after a warm-up call."""
    sync(fn())  # warm-up: compilation, caches, lazy initialisation
    start = time.perf_counter()
    sync(fn())
    once = time.perf_counter() - start
    calls = max(1, min(_MAX_CALLS_PER_REPEAT, int(_REPEAT_SECONDS / max(once, 1e-9))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            sync(fn())
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def _measure(subject: _Subject, x: np.ndarray, w: np.ndarray, *, y_numpy: np.ndarray, ref: np.ndarray, repeats: int) -> DemoRow:
    """Run ``subject`` on ``x`` and ``w``, compare it with NumPy and the reference, and time it."""
    xa, wa = subject.convert(x), subject.convert(w)
    y = subject.batched(xa, wa)
    subject.sync(y)
    host = subject.to_numpy(y)
    wide = host.astype(np.float64)
    diff_ref = float(np.max(np.abs(wide - ref)))
    diff_numpy = float(np.max(np.abs(wide - y_numpy)))
    # The loop is what batch_conv replaces: it must compute the same thing.
    diff_loop = float(np.max(np.abs(subject.to_numpy(subject.loop(xa, wa)).astype(np.float64) - ref)))
    scale = max(float(np.max(np.abs(ref))), float(np.finfo(np.float64).tiny))
    batch_s = _time_per_call(lambda: subject.batched(xa, wa), subject.sync, repeats)
    loop_s = _time_per_call(lambda: subject.loop(xa, wa), subject.sync, repeats)
    return DemoRow(
        backend=subject.label,
        version=subject.version,
        device=subject.device,
        method=subject.method,
        batch_conv_seconds=batch_s,
        loop_seconds=loop_s,
        speedup=loop_s / batch_s,
        max_abs_diff_vs_numpy=diff_numpy,
        max_abs_diff_vs_reference=diff_ref,
        relative_diff=max(diff_ref, diff_numpy, diff_loop) / scale,
        output_shape=tuple(int(n) for n in host.shape),
        output_dtype=host.dtype.name,
    )


def _format_seconds(seconds: float) -> str:
    if seconds < _MILLISECOND:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Aligned text table; columns whose index is in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(n) if i in right else c.ljust(n) for i, (c, n) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(header), line(["-" * n for n in widths]), *(line(row) for row in rows)]


def _run_backends(x: np.ndarray, w: np.ndarray, ref: np.ndarray, repeats: int) -> tuple[list[DemoRow], list[str]]:
    """One row per installed backend (two for JAX), and the failures met on the way."""
    found = installed()
    y_numpy = multiconv.batch_conv(x, w).astype(np.float64)
    rows: list[DemoRow] = []
    failures: list[str] = []
    for name in BACKENDS:
        if not found[name]:
            continue
        try:
            rows += [_measure(subject, x, w, y_numpy=y_numpy, ref=ref, repeats=repeats) for subject in _SUBJECTS[name](x, w)]
        except Exception as error:  # noqa: BLE001  (report every backend, then fail)
            failures.append(f"{name} failed: {type(error).__name__}: {error}")
    return rows, failures


def _print_table(rows: Sequence[DemoRow], repeats: int) -> None:
    header = ["backend", "version", "device", "method", "batch_conv", "python loop", "speed-up", "max|y - numpy|", "max|y - ref64|"]
    cells = [
        [
            r.backend,
            r.version,
            r.device,
            r.method,
            _format_seconds(r.batch_conv_seconds),
            _format_seconds(r.loop_seconds),
            f"{r.speedup:.1f}x",
            f"{r.max_abs_diff_vs_numpy:.1e}",
            f"{r.max_abs_diff_vs_reference:.1e}",
        ]
        for r in rows
    ]
    plural = "" if repeats == 1 else "s"
    _emit(f"time per call: median of {repeats} repeat{plural} after warm-up; the loop calls the framework's own conv once per sample")
    for line in _table(header, cells, right={4, 5, 6, 7, 8}):
        _emit(line)
    _emit()


def _disagreements(rows: Sequence[DemoRow], expected_shape: tuple[int, ...]) -> list[str]:
    failures = []
    for r in rows:
        if r.output_shape != expected_shape or r.output_dtype != "float32":
            failures.append(f"{r.backend} returned {r.output_shape} {r.output_dtype}, expected {expected_shape} float32")
        if r.relative_diff > TOLERANCE:
            failures.append(f"{r.backend} differs by {r.relative_diff:.1e} relative to max|reference|")
    return failures


def _demo(repeats: int, json_path: Path | None) -> int:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(X_SHAPE, dtype=np.float32)
    w = rng.standard_normal(W_SHAPE, dtype=np.float32)
    ref = reference_conv(x, w)
    expected_shape = tuple(int(n) for n in ref.shape)

    _emit(f"multiconv {multiconv.__version__} demo: batch_conv with a different weight for every batch element")
    _emit(f"  x: {X_SHAPE} float32 (B, C_in, L)")
    _emit(f"  w: {W_SHAPE} float32 (B, C_out, C_in, K), one weight per sample")
    _emit(f"  y = multiconv.batch_conv(x, w) -> output shape {expected_shape} float32")
    _emit()

    rows, failures = _run_backends(x, w, ref, repeats)
    _print_table(rows, repeats)
    failures += _disagreements(rows, expected_shape)
    for failure in failures:
        _emit(f"DISAGREEMENT: {failure} (tolerance {TOLERANCE:.0e})")
    if not failures:
        worst = max((r.relative_diff for r in rows), default=0.0)
        _emit(f"all backends agree (largest difference {worst:.1e} relative to max|reference|, tolerance {TOLERANCE:.0e})")
    found = installed()
    missing = [name for name in BACKENDS if not found[name]]
    if missing:
        _emit(f"missing backends: {', '.join(f'{name} ({_install_hint(name)})' for name in missing)}")
    else:
        _emit(f"backends run: {', '.join(BACKENDS)} (all installed)")

    if json_path is not None:
        report = {
            "multiconv": multiconv.__version__,
            "x_shape": list(X_SHAPE),
            "w_shape": list(W_SHAPE),
            "output_shape": list(expected_shape),
            "dtype": "float32",
            "repeats": repeats,
            "tolerance": TOLERANCE,
            "agree": not failures,
            "failures": failures,
            "missing": missing,
            "rows": [dataclasses.asdict(r) for r in rows],
        }
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        _emit(f"table written to {json_path}")
    return 1 if failures else 0


# --------------------------------------------------------------------------- info


def _blas() -> str | None:
    """Name and version of the BLAS NumPy was built with, if NumPy can say cheaply."""
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001  (older NumPy: no mode="dicts"; the BLAS line is optional)
        return None


def _framework_info(name: str) -> str:
    """Version and devices of an installed framework (this imports it)."""
    if name == "numpy":
        blas = _blas()
        return str(np.__version__) + (f"  (BLAS: {blas})" if blas else "")
    if name == "torch":
        import torch  # noqa: PLC0415  (only once find_spec has found it)

        devices = ["cpu"]
        if torch.cuda.is_available():
            devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
        if torch.backends.mps.is_available():
            devices.append("mps")
        return f"{torch.__version__}  devices: {', '.join(devices)}"
    if name == "jax":
        import jax  # noqa: PLC0415  (only once find_spec has found it)

        devices = [f"{d.platform}:{d.id}" + ("" if d.device_kind == d.platform else f" ({d.device_kind})") for d in jax.devices()]
        return f"{jax.__version__}  devices: {', '.join(devices)}"
    return "installed"


def _info() -> int:
    found = installed()
    lines = [
        ("multiconv", multiconv.__version__),
        ("python", f"{platform.python_version()} ({platform.python_implementation()}, {platform.platform()})"),
    ]
    lines += [(name, _framework_info(name) if found[name] else f"not installed ({_install_hint(name)})") for name in BACKENDS]
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        _emit(f"{label.ljust(width)}  {text}")
    _emit()
    _emit("methods (method=...; 'auto' picks one per call):")
    for name in BACKENDS:
        methods = ", ".join(load(name).METHODS) if found[name] else "(not installed)"
        _emit(f"  {name.ljust(width)}{methods}")
    return 0


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multiconv",
        description="Batch-wise convolution (a different weight for every batch element) for NumPy, PyTorch and JAX.",
    )
    parser.add_argument("--version", action="version", version=f"multiconv {multiconv.__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run the README example on every installed backend, check agreement, time it",
        description="Run batch_conv on x (32, 4, 16) with per-sample weights (32, 8, 4, 1) on every installed backend, "
        "check that all agree with a float64 reference, and time it against a Python loop over the batch.",
    )
    demo.add_argument(
        "--repeats", type=_bench.positive_int, default=DEFAULT_REPEATS, metavar="N", help="timed repeats (default: %(default)s)"
    )
    demo.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the table as JSON to PATH")
    commands.add_parser("info", help="versions, devices and methods of each backend", description="Show versions, devices and methods.")
    bench = commands.add_parser(
        "bench",
        help="benchmark auto, every engine and hand-written baselines on every backend",
        description="Time multiconv (auto and every engine) against the code users write by hand, each backend in its own process; "
        "print tables, write JSON and a PNG plot.",
    )
    _bench.add_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``multiconv`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 1 when ``demo`` finds backends that
        disagree, 2 for a usage error (no command, unknown option).

    Examples
    --------
    >>> main([])  # no command: help goes to stderr
    2
    """
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors: return, don't exit
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command == "demo":
        return _demo(args.repeats, args.json)
    if args.command == "info":
        return _info()
    if args.command == "bench":
        return _bench.command(args)
    parser.print_help(sys.stderr)
    return 2
