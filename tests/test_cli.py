"""The ``multiconv`` command line: ``demo``, ``info``, ``python -m multiconv``, NumPy-only installs."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import numpy as np
import pytest
from support import BACKENDS

import multiconv
from multiconv.cli import main

if TYPE_CHECKING:
    from pathlib import Path

SHAPE_LINE = "output shape (32, 8, 16) float32"
AGREE_LINE = "all backends agree"


def auto_method(backend: str) -> str:
    """What ``method="auto"`` picks for the README example on ``backend``."""
    x, w = np.ones((32, 4, 16), np.float32), np.ones((32, 8, 4, 1), np.float32)
    return multiconv._api.plan(x, w, backend=backend).spec.method


def engines(backend: str) -> list[str]:
    return list(importlib.import_module(f"multiconv.backends.{backend}").METHODS)


ROW_LABELS = {"numpy": ["numpy"], "torch": ["torch"], "jax": ["jax", "jax (jit)"]}


def _table_rows(out: str) -> dict[str, list[str]]:
    """Demo table rows by backend label (cells are split on runs of two or more spaces)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("backend "))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        cells = [cell.strip() for cell in line.split("  ") if cell.strip()]
        rows[cells[0]] = cells
    return rows


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "multiconv", *args]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)


def test_demo_in_process(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report_path = tmp_path / "demo.json"
    assert main(["demo", "--repeats", "2", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert SHAPE_LINE in out
    assert AGREE_LINE in out
    rows = _table_rows(out)
    for backend in BACKENDS:
        for label in ROW_LABELS[backend]:
            assert label in rows, f"no demo row for {label!r} in:\n{out}"
            assert rows[label][3] == auto_method(backend)
            assert rows[label][6].endswith("x")  # speed-up
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["agree"] is True
    assert report["output_shape"] == [32, 8, 16]
    labels = {row["backend"]: row for row in report["rows"]}
    for backend in BACKENDS:
        for label in ROW_LABELS[backend]:
            row = labels[label]
            assert row["output_shape"] == [32, 8, 16]
            assert row["relative_diff"] <= 1e-5
            assert row["batch_conv_seconds"] > 0
            assert row["loop_seconds"] > 0


def test_no_command_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["demo", "--repeats", "0"], ["demo", "--repeats", "x"], ["nonsense"]])
def test_usage_errors_return_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_python_m_demo() -> None:
    result = _run("demo", "--repeats", "1")
    assert result.returncode == 0, result.stderr
    assert SHAPE_LINE in result.stdout
    assert AGREE_LINE in result.stdout
    rows = _table_rows(result.stdout)
    for backend in BACKENDS:
        assert backend in rows


def test_python_m_info() -> None:
    result = _run("info")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["multiconv", __import__("multiconv").__version__]
    assert any(line.startswith("python ") for line in lines)
    for backend in BACKENDS:
        assert any(line.startswith(f"{backend} ") and "not installed" not in line for line in lines)
        assert any(line.split(None, 1) == [backend, ", ".join(engines(backend))] for line in lines)
    if "torch" in BACKENDS or "jax" in BACKENDS:
        assert "devices:" in result.stdout


_NUMPY_ONLY = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = ("torch", "jax", "jaxlib")


    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None


    sys.meta_path.insert(0, Block())
    for name in BLOCKED:
        sys.modules[name] = None  # importlib.util.find_spec(name) returns None, as when not installed

    from multiconv.cli import main

    status = main(["demo", "--repeats", "1"])
    loaded = [name for name in BLOCKED if sys.modules.get(name) is not None]
    print("frameworks loaded:", loaded)
    raise SystemExit(status)
    """
)


def test_demo_with_numpy_only() -> None:
    result = _run(code=_NUMPY_ONLY)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert AGREE_LINE in out
    assert SHAPE_LINE in out
    assert list(_table_rows(out)) == ["numpy"]
    assert "missing backends: torch (pip install 'multiconv[torch]'), jax (pip install 'multiconv[jax]')" in out
    assert "frameworks loaded: []" in out


def test_info_with_numpy_only() -> None:
    code = _NUMPY_ONLY.replace('main(["demo", "--repeats", "1"])', 'main(["info"])')
    result = _run(code=code)
    assert result.returncode == 0, result.stderr
    assert "not installed (pip install 'multiconv[torch]')" in result.stdout
    assert "not installed (pip install 'multiconv[jax]')" in result.stdout
    assert "frameworks loaded: []" in result.stdout
