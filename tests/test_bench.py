"""The benchmark harness: quick runs in-process per backend, and ``multiconv bench`` end to end for NumPy."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from support import BACKENDS

import multiconv
from multiconv import _bench
from multiconv._api import plan
from multiconv._dispatch import load
from multiconv.cli import main
from multiconv.testing import reference_conv, reference_conv_vjp

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# One 2-D case with padding "same" and one grouped (depthwise) case: the baselines' hardest paths.
SHAPES = ["conv2d", "depthwise"]
BASELINES = {
    "numpy": ["loop", "einsum-windows", "im2col-matmul"],
    "torch": ["loop", "groups=B", "torch.func.vmap", "unfold+bmm", "einsum-windows"],
    "jax": ["loop", "groups=B", "jax.vmap", "im2col-matmul", "einsum-windows"],
}
ROW_KEYS = {
    "shape",
    "candidate",
    "kind",
    "auto_method",
    "picked_by_auto",
    "status",
    "note",
    "seconds",
    "seconds_median",
    "seconds_rounds",
    "calls_per_round",
    "first_call_seconds",
    "gflops",
    "pct_gemm",
    "peak_memory_bytes",
    "memory_method",
    "program",
    "rel_error",
}


#: One pytest-xdist worker runs this module (``--dist loadgroup``): its module-scoped run of every backend happens once.
pytestmark = pytest.mark.xdist_group("quick-bench")


@pytest.fixture(scope="module")
def quick_results() -> dict[str, dict[str, Any]]:
    """Each test backend run once, quick, one round, on :data:`SHAPES`."""
    settings = _bench.Settings.make(quick=True, rounds=1)
    return {name: _bench.run_backend(name, SHAPES, settings) for name in BACKENDS}


def _check_backend(name: str, result: dict[str, Any]) -> None:
    # The result is plain JSON.
    assert json.loads(json.dumps(result)) == result
    assert result["backend"] == name
    assert {"machine", "settings", "gemm", "shapes", "rows", "summary", "all_correct", "wall_seconds"} <= set(result)
    machine = result["machine"]
    assert machine["framework"] == name
    assert {"platform", "cpu", "cpu_count", "python", "threadpools", "env"} <= set(machine)
    assert set(machine["env"]) >= {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"}
    assert result["gemm"]["dtype"] == "float32"
    assert result["gemm"]["gflops"] > 0

    engines = [str(m) for m in load(name).METHODS]
    expected = ["auto", *(f"method={m}" if m in BASELINES[name] else m for m in engines), *BASELINES[name]]
    assert [s["name"] for s in result["shapes"]] == SHAPES
    for shape in result["shapes"]:
        rows = [r for r in result["rows"] if r["shape"] == shape["name"]]
        assert [r["candidate"] for r in rows] == expected
        assert shape["auto_method"] in engines
        assert shape["macs"] > 0
        assert shape["gemm_gflops"] > 0
        for row in rows:
            assert set(row) == ROW_KEYS
            # Every candidate passed its check against the float64 reference, and was timed.
            assert row["status"] == "ok", row
            assert row["rel_error"] <= shape["tolerance"]
            assert len(row["seconds_rounds"]) == 1
            assert row["seconds"] > 0
            assert row["gflops"] > 0
            assert row["pct_gemm"] > 0
            assert row["calls_per_round"] >= 1
            assert row["picked_by_auto"] == (row["kind"] == "engine" and row["candidate"].removeprefix("method=") == shape["auto_method"])
        assert sum(r["picked_by_auto"] for r in rows) == 1
    assert result["all_correct"] is True

    for summary in result["summary"]:
        by_name = {r["candidate"]: r for r in result["rows"] if r["shape"] == summary["shape"]}
        assert summary["best_baseline"] in BASELINES[name]
        assert by_name[summary["best_engine"]]["kind"] == "engine"
        assert summary["auto_seconds"] == by_name["auto"]["seconds"]
        baseline_times = [by_name[b]["seconds"] for b in BASELINES[name]]
        assert summary["best_baseline_seconds"] == min(baseline_times)
        assert math.isclose(summary["auto_over_best_baseline"], summary["auto_seconds"] / summary["best_baseline_seconds"])
        assert math.isclose(summary["auto_over_best_engine"], summary["auto_seconds"] / summary["best_engine_seconds"])
    _check_training(name, result)


def _check_training(name: str, result: dict[str, Any]) -> None:
    # Forward + backward of every candidate, checked against the reference VJP, where the framework differentiates.
    training = result["training_rows"]
    if name == "numpy":
        assert training == []
        assert result["training_summary"] == []
        assert {(s["autodiff_floor_seconds"], len(s["autodiff_floor_seconds_rounds"])) for s in result["shapes"]} == {(None, 0)}
        return
    rounds = result["settings"]["rounds"]
    for shape in result["shapes"]:  # the framework's own step of x * 2, timed once per training round
        assert len(shape["autodiff_floor_seconds_rounds"]) == rounds
        assert shape["autodiff_floor_seconds"] == min(shape["autodiff_floor_seconds_rounds"]) > 0
    assert [(r["shape"], r["candidate"]) for r in training] == [(r["shape"], r["candidate"]) for r in result["rows"]]
    tolerance = {s["name"]: s["tolerance"] for s in result["shapes"]}
    for row in training:
        assert set(row) == ROW_KEYS
        assert row["status"] == "ok", row
        assert row["rel_error"] <= tolerance[row["shape"]]
        assert row["seconds"] > 0
    forward = {s["shape"]: s["auto_seconds"] for s in result["summary"]}
    shapes = {s["name"]: s for s in result["shapes"]}
    for summary in result["training_summary"]:
        assert summary["auto_forward_seconds"] == forward[summary["shape"]]
        assert summary["autodiff_floor_seconds"] == shapes[summary["shape"]]["autodiff_floor_seconds"]
        assert summary["best_baseline"] in BASELINES[name]
        # The engines auto trains with, as a training step plans them (not the inference plan).
        shape = shapes[summary["shape"]]
        trained = _training_spec(name, _bench.QUICK_SHAPES[summary["shape"]])
        assert summary["auto_method"] == shape["auto_training_method"] == trained.method
        assert summary["auto_derivatives"] == shape["auto_derivatives"] == (trained.tangent_method or trained.method)
        assert {r["auto_method"] for r in training if r["shape"] == summary["shape"]} == {trained.method}


def _training_spec(name: str, case: _bench.Case) -> Any:
    """``auto``'s plan for a call whose gradients are taken: PyTorch inputs that require grad; JAX's plan holds its tangent engine."""
    if name == "torch":
        import torch

        dtype = getattr(torch, case.dtype)
        x, w = torch.zeros(case.x_shape, dtype=dtype, requires_grad=True), torch.zeros(case.w_shape, dtype=dtype, requires_grad=True)
        return plan(x, w, **case.conv_kwargs).spec
    import jax.numpy as jnp

    return plan(jnp.zeros(case.x_shape, case.dtype), jnp.zeros(case.w_shape, case.dtype), **case.conv_kwargs).spec


def test_quick_run_checks_and_times_every_candidate(quick_results: dict[str, dict[str, Any]]) -> None:
    for name, result in quick_results.items():
        _check_backend(name, result)


def test_peak_memory_is_reported(quick_results: dict[str, dict[str, Any]]) -> None:
    # NumPy (tracemalloc), torch on CPU (profiler allocations) and JAX (XLA's memory analysis) all report one.
    for result in quick_results.values():
        for row in result["rows"]:
            assert row["peak_memory_bytes"] is not None, row
            assert row["peak_memory_bytes"] >= 0


def test_jax_rows_carry_memory_and_a_program_digest_in_training_too(quick_results: dict[str, dict[str, Any]]) -> None:
    """XLA's memory analysis and the compiled program's digest, for the forward and the training step.

    ``groups=B`` and ``jax.vmap`` compile to one grouped convolution.  The other backends compile
    nothing and record None.
    """
    for name, result in quick_results.items():
        rows = result["rows"] + result["training_rows"]
        if name != "jax":
            assert {row["program"] for row in rows} == {None}
            continue
        for row in rows:
            assert row["memory_method"] == "XLA temp + output bytes", row
            assert isinstance(row["program"], str), row
            assert len(row["program"]) == 16, row
        digests = {(row["shape"], row["candidate"]): row["program"] for row in result["rows"]}
        for shape in {row["shape"] for row in result["rows"]}:
            assert digests[shape, "groups=B"] == digests[shape, "jax.vmap"]
            assert digests[shape, "auto"] != digests[shape, "loop"]


@pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")
def test_on_the_readme_shape_auto_and_three_engines_are_one_program() -> None:
    """Kernel size 1: ``auto`` (``shift``), ``shift``, ``matmul`` and ``col2im`` all compile to one batched dot."""
    fw, case = _bench.framework("jax"), _bench.QUICK_SHAPES["readme"]
    x_np, w_np = _bench._inputs(case, 0)
    x, w = fw.convert(x_np), fw.convert(w_np)
    digests = {c.name: fw.program(c.fn, x, w) for c in fw.candidates(case, _bench.Geometry.of(case)) if c.fn is not None}
    assert len({digests[name] for name in ("auto", "shift", "matmul", "col2im")}) == 1
    assert digests["auto"] not in {digests["einsum-windows"], digests["fft"], digests["loop"]}
    assert fw.program(lambda *_: None, x, w) is None  # nothing to lower: no digest


def test_a_program_digest_ignores_where_the_program_was_traced_from() -> None:
    text = """HloModule jit_step, entry_computation_layout={(f32[2]{0})->f32[2]{0}}

FileNames
1 "/home/a/model.py"

FunctionNames
1 "step"

FileLocations
1 {file_name_id=1 function_name_id=1 line=7 end_line=7 column=1 end_column=9}

StackFrames
1 {file_location_id=1 parent_frame_id=1}


ENTRY %main (x: f32[2]) -> f32[2] {
  %x = f32[2]{0} parameter(0), metadata={op_name="x"}
  ROOT %multiply = f32[2]{0} multiply(%x, %x), metadata={op_name="jit(step)/mul" stack_frame_id=1}
}
"""
    elsewhere = text.replace("jit_step", "jit_other").replace("/home/a/model.py", "/srv/b.py").replace('"step"', '"other"')
    elsewhere = elsewhere.replace("line=7 end_line=7", "line=70 end_line=70").replace("jit(step)/mul", "jit(other)/mul")
    assert _bench.program_digest(elsewhere) == _bench.program_digest(text)
    counted = """ENTRY %main.5 (x.1: f32[2]) -> f32[2] {
  %x.1 = f32[2]{0} parameter(0), metadata={op_name="x{0}"}
  ROOT %multiply.3 = f32[2]{0} multiply(%x.1, %x.1), metadata={op_name="jit(a)/mul"}
}"""
    recounted = counted.replace("main.5", "main.9").replace("x.1", "x.7").replace("multiply.3", "multiply.11").replace("jit(a)", "jit(b)")
    assert _bench.program_digest(recounted) == _bench.program_digest(counted)  # XLA's counters, and a brace in a quoted name
    assert _bench.program_digest(counted.replace("(%x.1, %x.1)", "(%x.1, %multiply.3)")) != _bench.program_digest(counted)
    assert len(_bench.program_digest(text)) == 16
    assert _bench.program_digest(text.replace("multiply(%x, %x)", "add(%x, %x)")) != _bench.program_digest(text)
    assert _bench.program_digest(text.replace("f32[2]{0})->", "f32[2]{0:T(8)})->")) != _bench.program_digest(text)  # layouts count


def test_tables_mark_auto_pick_and_best_baseline(quick_results: dict[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    _bench.print_tables(quick_results)
    out = capsys.readouterr().out
    assert "<- auto's pick" in out
    assert "* best baseline" in out
    assert "summary (ratio < 1: auto is faster)" in out
    for name in quick_results:
        assert "GEMM" in out
        assert any(line.startswith(f"{name} ") for line in out.splitlines())


def test_wrong_and_failing_candidates_are_caught() -> None:
    case = _bench.QUICK_SHAPES["readme"]
    geo = _bench.Geometry.of(case)
    good = _bench.Candidate("good", "baseline", lambda x, w: _bench._np_loop(x, w, geo))
    wrong = _bench.Candidate("wrong", "baseline", lambda x, w: 2 * _bench._np_loop(x, w, geo))

    def fails(x: Any, w: Any) -> Any:
        raise RuntimeError("boom")

    failing = _bench.Candidate("failing", "baseline", fails)
    absent = _bench.Candidate("absent", "baseline", None, "cannot express this case")
    framework = _bench._numpy_framework()
    settings = _bench.Settings.make(quick=True, rounds=1)
    info, rows, training = _bench._measure_case(
        framework, case, index=0, candidates=[good, wrong, failing, absent], settings=settings, tick=lambda _: None
    )
    status = {r["candidate"]: (r["status"], r["seconds"]) for r in rows}
    assert status["good"][0] == "ok"
    assert status["good"][1] is not None
    assert status["wrong"] == ("wrong", None)
    assert status["failing"] == ("error", None)
    assert status["absent"] == ("n/a", None)
    assert "boom" in next(r["note"] for r in rows if r["candidate"] == "failing")
    assert info["gemm_gflops"] > 0
    assert training == []  # NumPy has no autodiff


def test_progress_bar_lines() -> None:
    stream = io.StringIO()
    bar = _bench.ProgressBar(stream)
    for done in range(41):
        bar.update(done, 40, f"torch dense64 step{done}")
    lines = stream.getvalue().splitlines()
    assert "[######..............] 12/40 torch dense64 step12" in lines
    assert lines[-1] == "[####################] 40/40 torch dense64 step40"
    assert len(lines) == 11  # not a tty: one line per tenth


def test_cli_bench_numpy_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # main() runs the NumPy benchmark in its own subprocess, as the full run does.
    for name in _bench.ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    json_path, plot_path = tmp_path / "results.json", tmp_path / "results.png"
    argv = ["bench", "--quick", "--backends", "numpy", "--shapes", "readme,depthwise", "--rounds", "1", "--json", str(json_path)]
    assert main([*argv, "--plot", str(plot_path)]) == 0
    captured = capsys.readouterr()
    assert "summary (ratio < 1: auto is faster)" in captured.out
    assert "1/" in captured.err  # the progress bar
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert list(report["backends"]) == ["numpy"]
    # the child ran under the benchmark's fixed allocator thresholds, and says so
    assert report["backends"]["numpy"]["machine"]["env"].items() >= _bench.ALLOCATOR_ENV.items()
    assert report["all_correct"] is True
    assert report["failures"] == {}
    assert [s["shape"] for s in report["summary"]] == ["readme", "depthwise"]
    for summary in report["summary"]:
        assert summary["backend"] == "numpy"
        assert summary["auto_over_best_baseline"] > 0
        assert summary["auto_over_best_engine"] > 0
    if "no plot: matplotlib is not installed" in captured.out:
        assert not plot_path.exists()
    else:
        assert plot_path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--backends", "tensorflow"],
        ["bench", "--shapes", "huge"],
        ["bench", "--rounds", "0"],
        ["bench", "--time-cap", "-1"],
    ],
)
def test_bench_usage_errors_return_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "bench" in capsys.readouterr().err


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "numpy"])
def test_a_training_step_computes_the_output_with_the_gradients(name: str) -> None:
    """A step returns ``y`` with the gradients: a bilinear map's gradients do not use ``y``, and a
    compiled step that dropped it (XLA removes unused work) would time the backward alone."""
    fw = _bench.framework(name)
    rng = np.random.default_rng(3)
    x_np, w_np = rng.standard_normal((3, 2, 9)).astype(np.float32), rng.standard_normal((3, 4, 2, 3)).astype(np.float32)
    g_np = rng.standard_normal((3, 4, 7)).astype(np.float32)
    step = fw.train(multiconv.batch_conv, fw.convert(g_np))  # type: ignore[misc]
    got = step(fw.convert(x_np), fw.convert(w_np))
    want = (reference_conv(x_np, w_np), *reference_conv_vjp(x_np, w_np, grad_y=g_np)[:2])
    assert len(got) == 3
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(fw.to_numpy(a), b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", [b for b in BACKENDS if b != "numpy"])
def test_the_autodiff_floor_is_a_step_of_x_times_two(name: str) -> None:
    """The framework's own training step of ``x * 2`` (the report's measure of what one differentiated operation costs)."""
    fw = _bench.framework(name)
    assert fw.autodiff_floor is not None
    x_np = np.random.default_rng(4).standard_normal((3, 2, 9)).astype(np.float32)
    y, dx = fw.autodiff_floor(fw.convert(x_np))()
    np.testing.assert_array_equal(fw.to_numpy(y), 2 * x_np)
    np.testing.assert_array_equal(fw.to_numpy(dx), 2 * x_np)  # the cotangent is x itself


def test_settling_calls_last_their_time_and_run_at_least_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[None] = []
    assert _bench._settle(lambda: calls.append(None), lambda _: None, 0.0) == 1
    clock = iter(range(100))
    monkeypatch.setattr(time, "perf_counter", lambda: float(next(clock)))  # the harness reads time.perf_counter
    assert _bench._settle(lambda: calls.append(None), lambda _: None, 5.0) == 5  # deadline 0 + 5: calls end at 1..5


@pytest.mark.parametrize("quick", [False, True])
def test_numpy_blocks_settle_after_other_candidates(quick: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """NumPy's blocks wait out the BLAS workers' spin (full runs only); a framework without threads of its own does not."""
    settled: list[float] = []

    def settle(fn: Callable[[], Any], _sync: object, seconds: float) -> None:
        settled.append(seconds)
        fn()

    monkeypatch.setattr(_bench, "_settle", settle)
    case = _bench.QUICK_SHAPES["readme"]
    geo = _bench.Geometry.of(case)
    settings = dataclasses.replace(_bench.Settings.make(quick=True, rounds=1), settle_seconds=0.0 if quick else 0.25)
    candidate = _bench.Candidate("loop", "baseline", lambda x, w: _bench._np_loop(x, w, geo))
    numpy = _bench._numpy_framework()
    for framework, expected in ((numpy, settings.settle_seconds), (dataclasses.replace(numpy, own_threads=False), 0.0)):
        settled.clear()
        _bench._measure_case(framework, case, index=0, candidates=[candidate], settings=settings, tick=lambda _: None)
        assert settled == [expected, expected]  # the candidate's block and the GEMM's
    assert _bench.Settings.make(quick=quick).settle_seconds == (0.0 if quick else 0.25)
