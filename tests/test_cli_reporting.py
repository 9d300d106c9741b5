"""How ``multiconv demo`` and ``multiconv info`` report failures, disagreements and devices.

``tests/test_cli.py`` runs the commands end to end on healthy backends; these tests break one
piece at a time (a backend that raises, a wrong result, no BLAS information, a GPU) and check
what the user is told and the exit status.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from support import BACKENDS

import multiconv
from multiconv import _bench, cli

if TYPE_CHECKING:
    import argparse
    from pathlib import Path


def _row(**changes: Any) -> cli.DemoRow:
    good = cli.DemoRow(
        backend="numpy",
        version="1",
        device="cpu",
        method="einsum",
        batch_conv_seconds=1e-4,
        loop_seconds=1e-3,
        speedup=10.0,
        max_abs_diff_vs_numpy=0.0,
        max_abs_diff_vs_reference=1e-7,
        relative_diff=1e-7,
        output_shape=(32, 8, 16),
        output_dtype="float32",
    )
    return dataclasses.replace(good, **changes)


def _numpy_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI see NumPy as the only installed backend (so the demo runs quickly)."""
    monkeypatch.setattr(cli, "installed", lambda: {"numpy": True, "torch": False, "jax": False})


def test_a_backend_that_raises_is_reported_and_fails_the_demo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def broken(x: np.ndarray, w: np.ndarray) -> list[Any]:
        msg = "boom"
        raise RuntimeError(msg)

    _numpy_only(monkeypatch)
    monkeypatch.setitem(cli._SUBJECTS, "numpy", broken)
    report_path = tmp_path / "demo.json"
    assert cli.main(["demo", "--repeats", "1", "--json", str(report_path)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREEMENT: numpy failed: RuntimeError: boom (tolerance 1e-05)" in out
    assert "all backends agree" not in out
    assert "missing backends: torch (pip install 'multiconv[torch]'), jax (pip install 'multiconv[jax]')" in out
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["agree"] is False
    assert report["failures"] == ["numpy failed: RuntimeError: boom"]
    assert report["rows"] == []
    assert report["missing"] == ["torch", "jax"]


def test_a_wrong_result_is_a_disagreement(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def off_by_one(x: Any, w: Any, *args: Any, **kwargs: Any) -> Any:
        return multiconv.batch_conv(x, w, *args, **kwargs) + 1

    subject = cli._numpy_subjects
    monkeypatch.setitem(cli._SUBJECTS, "numpy", lambda x, w: [dataclasses.replace(s, batched=off_by_one) for s in subject(x, w)])
    _numpy_only(monkeypatch)
    assert cli.main(["demo", "--repeats", "1"]) == 1
    out = capsys.readouterr().out
    assert "DISAGREEMENT: numpy differs by" in out
    assert "all backends agree" not in out


def test_disagreements_name_the_shape_dtype_and_difference() -> None:
    expected = (32, 8, 16)
    assert cli._disagreements([_row()], expected) == []
    assert cli._disagreements([_row(backend="torch", output_shape=(32, 8, 15))], expected) == [
        "torch returned (32, 8, 15) float32, expected (32, 8, 16) float32"
    ]
    assert cli._disagreements([_row(backend="jax", output_dtype="float64", relative_diff=1e-3)], expected) == [
        "jax returned (32, 8, 16) float64, expected (32, 8, 16) float32",
        "jax differs by 1.0e-03 relative to max|reference|",
    ]


@pytest.mark.parametrize(("seconds", "text"), [(2.5e-6, "2.5 us"), (0.0123, "12.30 ms"), (1.0, "1.00 s"), (75.25, "75.25 s")])
def test_times_are_shown_in_readable_units(seconds: float, text: str) -> None:
    assert cli._format_seconds(seconds) == text


def test_table_with_no_rows_is_just_the_header() -> None:
    assert cli._table(["a", "bb"], [], right={1}) == ["a  bb", "-  --"]


def test_numpy_info_without_blas_information(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dicts(mode: str | None = None) -> None:
        raise TypeError(mode)

    monkeypatch.setattr(np, "show_config", no_dicts)
    assert cli._blas() is None
    assert cli._framework_info("numpy") == np.__version__


def test_numpy_info_names_the_blas() -> None:
    blas = cli._blas()
    text = cli._framework_info("numpy")
    assert text.startswith(np.__version__)
    assert (f"  (BLAS: {blas})" in text) if blas else text == np.__version__


def test_an_unknown_framework_is_just_installed() -> None:
    assert cli._framework_info("cupy") == "installed"


@pytest.mark.skipif("torch" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves torch out")
def test_torch_info_lists_cuda_and_mps_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"Card {i}")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert cli._framework_info("torch") == f"{torch.__version__}  devices: cpu, cuda:0 (Card 0), cuda:1 (Card 1), mps"


@pytest.mark.skipif("torch" not in BACKENDS, reason="MULTICONV_TEST_BACKENDS leaves torch out")
def test_torch_info_on_a_cpu_only_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert cli._framework_info("torch") == f"{torch.__version__}  devices: cpu"


def test_bench_command_gets_the_parsed_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []

    def fake(args: argparse.Namespace) -> int:
        seen.append(args)
        return 7

    monkeypatch.setattr(_bench, "command", fake)
    assert cli.main(["bench", "--quick", "--backends", "numpy", "--rounds", "3", "--no-plot"]) == 7
    (args,) = seen
    assert args.command == "bench"
    assert args.quick is True
    assert args.backends == ["numpy"]
    assert args.rounds == 3
    assert args.no_plot is True


def test_help_and_version_return_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"multiconv {multiconv.__version__}"
    assert cli.main(["--help"]) == 0
    assert "usage: multiconv" in capsys.readouterr().out
