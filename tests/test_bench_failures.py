"""The benchmark harness when things go wrong: bad cases, failing candidates and children, missing tools.

``tests/test_bench.py`` runs the harness on healthy backends; these tests feed it one fault at a
time and check that the run goes on and says what happened.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import pathlib
import platform
import sys
import time
import tracemalloc
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from support import BACKENDS

from multiconv import _bench, _cost

if TYPE_CHECKING:
    from pathlib import Path

README = _bench.QUICK_SHAPES["readme"]
QUICK = _bench.Settings.make(quick=True, rounds=1)


def _measure(candidates: list[_bench.Candidate], settings: _bench.Settings = QUICK, tick: Any = None) -> dict[str, dict[str, Any]]:
    """Rows by candidate name for NumPy on the README case."""
    _, rows, _ = _bench._measure_case(
        _bench._numpy_framework(), README, index=0, candidates=candidates, settings=settings, tick=tick or (lambda _: None)
    )
    return {r["candidate"]: r for r in rows}


def _loop(x: Any, w: Any) -> Any:
    return _bench._np_loop(x, w, _bench.Geometry.of(README))


# ----- cases and candidates


def test_a_case_with_unknown_padding_is_rejected() -> None:
    case = dataclasses.replace(README, name="odd", padding="causal")
    with pytest.raises(ValueError, match=r"case 'odd': padding='causal' must be 'valid' or 'same'"):
        _bench.Geometry.of(case)


def test_a_case_whose_groups_do_not_fit_is_rejected() -> None:
    case = dataclasses.replace(README, name="odd", groups=3)
    with pytest.raises(ValueError, match=r"case 'odd': groups=3 does not fit x"):
        _bench.Geometry.of(case)


def test_a_baseline_that_cannot_express_the_case_is_an_na_row() -> None:
    def unable() -> Any:
        msg = "no dilation here"
        raise _bench.NotApplicableError(msg)

    engines = [_bench.Candidate("auto", "auto", _loop), _bench.Candidate("loop", "engine", _loop)]
    found = _bench._with_baselines(engines, {"loop": lambda: _loop, "limited": unable})
    assert [(c.name, c.kind, c.fn is None, c.reason) for c in found] == [
        ("auto", "auto", False, ""),
        ("method=loop", "engine", False, ""),  # an engine named like a baseline is labelled method=NAME
        ("loop", "baseline", False, ""),
        ("limited", "baseline", True, "no dilation here"),
    ]


def test_a_wrong_shape_is_wrong_and_never_timed() -> None:
    rows = _measure([_bench.Candidate("short", "baseline", lambda x, w: _loop(x, w)[..., :-1])])
    row = rows["short"]
    assert row["status"] == "wrong"
    assert row["note"].startswith("shape (")
    assert ", expected (" in row["note"]
    assert row["seconds"] is None
    assert row["seconds_rounds"] == []


def test_a_nan_result_is_wrong() -> None:
    rows = _measure([_bench.Candidate("nan", "baseline", lambda x, w: _loop(x, w) * np.nan)])
    assert rows["nan"]["status"] == "wrong"
    assert rows["nan"]["note"].startswith("max|y - ref| / max|ref| = nan >")


def test_a_candidate_over_the_time_cap_is_skipped() -> None:
    slow = dataclasses.replace(QUICK, time_cap=1e-12)
    row = _measure([_bench.Candidate("loop", "baseline", _loop)], slow)["loop"]
    assert row["status"] == "skipped"
    assert row["note"].startswith("slow: ")
    assert row["note"].endswith("s/call > cap 1e-12 s")
    assert row["rel_error"] is not None  # checked before it was skipped
    assert row["seconds"] is None


def test_warnings_of_a_candidate_go_in_its_note_once() -> None:
    def noisy(x: Any, w: Any) -> Any:
        warnings.warn("careful\nsecond line", UserWarning, stacklevel=1)
        return _loop(x, w)

    row = _measure([_bench.Candidate("noisy", "baseline", noisy)])["noisy"]
    assert row["status"] == "ok"
    assert row["note"] == "UserWarning: careful"


def test_a_candidate_that_fails_during_the_rounds_is_an_error() -> None:
    armed = False

    def flaky(x: Any, w: Any) -> Any:
        if armed:
            msg = "lost the device"
            raise RuntimeError(msg)
        return _loop(x, w)

    def tick(label: str) -> None:
        nonlocal armed
        armed = armed or "flaky (round" in label

    candidates = [_bench.Candidate("flaky", "baseline", flaky), _bench.Candidate("loop", "baseline", _loop)]
    rows = _measure(candidates, dataclasses.replace(QUICK, rounds=2), tick=tick)
    assert rows["flaky"]["status"] == "error"
    assert rows["flaky"]["note"] == "RuntimeError: lost the device"
    assert rows["flaky"]["seconds"] is None
    assert rows["flaky"]["seconds_rounds"] == []  # not timed in the second round either
    assert rows["loop"]["status"] == "ok"
    assert len(rows["loop"]["seconds_rounds"]) == 2


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (RuntimeError("x" * 200), "RuntimeError: " + "x" * 143 + "..."),
        (RuntimeError("first\nsecond"), "RuntimeError: first"),
        (KeyError(), "KeyError"),
    ],
)
def test_error_notes_are_one_short_line(error: BaseException, text: str) -> None:
    assert _bench._short(error) == text
    assert len(_bench._short(error)) <= 160


# ----- run_backend


def test_run_backend_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"backend='tensorflow' is not one of numpy, torch, jax"):
        _bench.run_backend("tensorflow")
    with pytest.raises(ValueError, match=r"unknown shape\(s\) huge; expected some of readme"):
        _bench.run_backend("numpy", ["huge"], QUICK)


def test_run_backend_reports_progress_to_the_end() -> None:
    seen: list[tuple[int, int, str]] = []
    result = _bench.run_backend("numpy", ["readme"], QUICK, progress=lambda done, total, label: seen.append((done, total, label)))
    assert result["all_correct"] is True
    total = seen[0][1]
    assert [done for done, _, _ in seen] == list(range(total + 1))
    assert {t for _, t, _ in seen} == {total}
    assert seen[-1] == (total, total, "numpy done")
    assert seen[0][2] == "numpy readme auto (check)"


# ----- memory measurement


def test_tracemalloc_peak_leaves_a_running_trace_running() -> None:
    tracemalloc.start()
    try:
        peak, method = _bench._tracemalloc_peak(lambda *_: np.ones(1 << 16), None, None)
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()
    assert method == "tracemalloc peak"
    assert peak is not None
    assert peak >= 8 << 16


def test_tracemalloc_peak_stops_the_trace_it_started() -> None:
    assert not tracemalloc.is_tracing()
    peak, _ = _bench._tracemalloc_peak(lambda *_: np.ones(1 << 16), None, None)
    assert not tracemalloc.is_tracing()
    assert peak is not None
    assert peak >= 8 << 16


def test_quiet_stderr_without_a_file_descriptor_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dup(fd: int) -> int:
        raise OSError(fd)

    monkeypatch.setattr(os, "dup", no_dup)
    ran = False
    with _bench._quiet_stderr():
        ran = True
    assert ran


@pytest.mark.skipif("torch" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves torch out")
def test_torch_memory_is_na_when_the_profiler_fails() -> None:
    def fails(x: Any, w: Any) -> Any:
        msg = "no profiler"
        raise RuntimeError(msg)

    assert _bench._torch_profiler_peak(fails, None, None) == (None, "torch.profiler unavailable (RuntimeError)")


@pytest.mark.skipif("jax" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves jax out")
def test_jax_memory_is_na_without_a_memory_analysis() -> None:
    peak_memory = _bench._jax_framework().peak_memory

    class NoAnalysis:
        """A compiled function whose backend has no memory analysis."""

        def __call__(self, x: Any, _w: Any) -> Any:
            return x

        def lower(self, *_: Any) -> Any:
            return self

        def compile(self) -> Any:
            return self

        def memory_analysis(self) -> None:
            return None

    assert peak_memory(NoAnalysis(), None, None) == (None, "memory_analysis unavailable")
    # A plain function cannot be lowered: also n/a, naming why.
    assert peak_memory(lambda *_: None, None, None) == (None, "memory_analysis unavailable (AttributeError)")


# ----- machine description


def test_machine_info_without_a_framework() -> None:
    info = _bench.machine_info()
    assert isinstance(info["threadpools"], list)  # threadpoolctl is a dependency of the package
    assert "framework" not in info


def test_cpu_name_without_proc_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreadable(*args: Any, **kwargs: Any) -> str:
        raise OSError

    monkeypatch.setattr(pathlib.Path, "read_text", unreadable)
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    assert _cost.cpu_name() == "riscv64"
    assert _bench.machine_info()["cpu"] == "riscv64"


def test_load_average_where_the_platform_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "getloadavg", raising=False)
    assert _bench._load_average() is None


# ----- progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    stream = _Terminal()
    bar = _bench.ProgressBar(stream, width=10)
    assert bar.tty
    bar.update(0, 4, "numpy readme auto")
    bar.message("a note")
    bar.update(4, 4, "done")
    bar.clear()
    out = stream.getvalue()
    assert "\n" not in out.replace("a note\n", "")  # the bar itself never starts a new line
    assert out.startswith("\r[..........] 0/4 numpy readme auto")
    assert "a note\n\r[..........] 0/4 numpy readme auto" in out  # the bar comes back under the message
    assert "\r[##########] 4/4 done" in out
    assert out.endswith("\r" + " " * len("[##########] 4/4 done") + "\r")
    bar.clear()  # nothing shown: nothing to erase
    assert stream.getvalue() == out


def test_progress_bar_message_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = _bench.ProgressBar(stream)
    bar.message("hello\n")
    assert stream.getvalue() == "hello\n"


def test_progress_bar_on_a_terminal_redraws_at_most_every_50_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    stream = _Terminal()
    bar = _bench.ProgressBar(stream, width=4)
    bar.update(0, 3, "a")
    now[0] += 0.01
    bar.update(1, 3, "b")  # too soon: not drawn
    assert stream.getvalue() == "\r[....] 0/3 a"
    now[0] += 0.05
    bar.update(2, 3, "c")
    now[0] += 0.001
    bar.update(3, 3, "d")  # the last step is always drawn
    assert stream.getvalue() == "\r[....] 0/3 a\r[###.] 2/3 c\r[####] 3/3 d"


def test_protocol_progress_is_one_json_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    _bench._protocol_progress(3, 10, "jax conv2d shift")
    err = capsys.readouterr().err
    assert err.startswith(_bench.PROGRESS_PREFIX)
    assert json.loads(err[len(_bench.PROGRESS_PREFIX) :]) == [3, 10, "jax conv2d shift"]


# ----- the child process and the command


def test_a_failing_child_is_reported_with_its_last_lines() -> None:
    stream = io.StringIO()
    result, failure = _bench._run_child("numpy", ["huge"], QUICK, _bench.ProgressBar(stream))
    assert result is None
    assert failure is not None
    assert failure.startswith("the numpy benchmark process exited with status 1: ")
    assert "unknown shape(s) huge" in failure
    assert "[numpy] " in stream.getvalue()  # its output was shown as it came


def test_a_child_that_cannot_start_is_reported() -> None:
    # Full settings and every shape: the arguments of a full run (the child stops at its usage error).
    result, failure = _bench._run_child("tensorflow", None, _bench.Settings(), _bench.ProgressBar(io.StringIO()))
    assert result is None
    assert failure is not None
    assert failure.startswith("the tensorflow benchmark process exited with status 2: ")
    assert "invalid choice: 'tensorflow'" in failure


def test_child_main_writes_its_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The child process's entry point, in this process; torch's child also turns TF32 off.
    name = "torch" if "torch" in BACKENDS else "numpy"
    path = tmp_path / f"{name}.json"
    argv = ["--backend", name, "--shapes", "readme", "--quick", "--rounds", "1", "--time-cap", "5", "--json", str(path)]
    assert _bench.main(argv) == 0
    result = json.loads(path.read_text(encoding="utf-8"))
    assert result["backend"] == name
    assert result["all_correct"] is True
    assert result["settings"]["time_cap"] == 5
    err = capsys.readouterr().err
    assert f"{name} done" in err  # the progress bar, by default
    assert err.endswith("\n")
    if name == "torch":
        import torch

        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32


def test_command_reports_a_failed_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_bench, "_run_child", lambda name, *_: (None, f"the {name} benchmark process exited"))
    json_path = tmp_path / "out" / "results.json"
    args = argparse.Namespace(
        backends=["numpy"], shapes=None, quick=True, rounds=1, time_cap=None, json=json_path, plot=None, no_plot=False
    )
    assert _bench.command(args) == 1
    out = capsys.readouterr().out
    assert "FAILED: the numpy benchmark process exited" in out
    assert "plot" not in out  # no results: no plot
    report = json.loads(json_path.read_text(encoding="utf-8"))
    assert report["failures"] == {"numpy": "the numpy benchmark process exited"}
    assert report["all_correct"] is False
    assert report["backends"] == {}
    assert not json_path.with_suffix(".png").exists()


def test_command_reports_wrong_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench.run_backend("numpy", ["readme"], QUICK)
    result["rows"][1] |= {"status": "wrong", "note": "off by one"}
    monkeypatch.setattr(_bench, "_run_child", lambda *_: (result, None))
    json_path = tmp_path / "results.json"
    args = argparse.Namespace(
        backends=["numpy"], shapes=["readme"], quick=True, rounds=1, time_cap=None, json=json_path, plot=None, no_plot=True
    )
    assert _bench.command(args) == 1
    out = capsys.readouterr().out
    candidate = result["rows"][1]["candidate"]
    assert f"FAILED: numpy readme {candidate}: wrong (off by one)" in out
    assert "wrong; off by one" in out  # the table's note column
    assert json.loads(json_path.read_text(encoding="utf-8"))["all_correct"] is False


@pytest.mark.parametrize(("text", "message"), [("fast", "got 'fast'"), ("0", "got 0.0"), ("nan", "got nan"), ("-2", "got -2.0")])
def test_time_cap_must_be_a_positive_number(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"expected a positive number, {message}"):
        _bench._positive_float(text)


def test_default_json_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert _bench._default_json() == tmp_path / "multiconv-bench.json"
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "multiconv").mkdir()
    (tmp_path / "multiconv" / "__init__.py").touch()
    assert _bench._default_json() == tmp_path / "benchmarks" / "results.json"


# ----- tables and plot


def test_sizes_and_marks_in_the_table() -> None:
    assert _bench._format_bytes(None) == "n/a"
    assert _bench._format_bytes(512) == "512 B"
    assert _bench._format_bytes(3 * 1024**2) == "3.0 MiB"
    assert _bench._format_bytes(5 * 1024**4) == "5120.0 GiB"
    row = {"kind": "baseline", "picked_by_auto": False, "shape": "readme", "candidate": "loop", "status": "error", "note": "boom"}
    assert _bench._marks(row, {("readme", "loop")}) == "* best baseline; error; boom"


def test_backend_header_without_blas_or_load_information() -> None:
    result = {
        "backend": "numpy",
        "machine": {
            "framework_version": "2.0",
            "device": "cpu",
            "cpu": "a cpu",
            "cpus_usable": 2,
            "threadpools": "threadpoolctl not installed",
        },
        "gemm": {"size": 256, "gflops": None},
    }
    assert _bench._backend_header(result) == ("numpy 2.0 on cpu (a cpu, 2 CPUs; BLAS unknown); float32 GEMM 256x256: n/a")


def test_plot_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    path = tmp_path / "plot.png"
    assert _bench.write_plot({}, path) == f"no plot: matplotlib is not installed (pip install matplotlib), so {path} was not written"
    assert not path.exists()


def test_plot_marks_untimed_candidates(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # an optional extra ("bench"), not a backend
    result = _bench.run_backend("numpy", ["readme"], QUICK)
    result["rows"][1] |= {"status": "wrong", "seconds": None}
    path = tmp_path / "plot.png"
    assert _bench.write_plot({"numpy": result}, path) == f"plot written to {path}"
    assert path.read_bytes().startswith(b"\x89PNG")


def test_the_callers_allocator_settings_win(monkeypatch: pytest.MonkeyPatch) -> None:
    # ALLOCATOR_ENV only fills in what the environment leaves unset.
    seen: dict[str, str] = {}

    def popen(*_: object, env: dict[str, str], **__: object) -> None:
        seen.update(env)
        raise RuntimeError  # stop before a child starts

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4096")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.setattr("multiconv._bench.subprocess.Popen", popen)
    with pytest.raises(RuntimeError):
        _bench._run_child("numpy", None, QUICK, _bench.ProgressBar(io.StringIO()))
    assert seen["MALLOC_MMAP_THRESHOLD_"] == "4096"
    assert seen["MALLOC_TRIM_THRESHOLD_"] == _bench.ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"]
