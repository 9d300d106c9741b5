"""``benchmarks/report.py``: the page renders from the recorded run, and misses carry the reason the data gives."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def report_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_recorded_run_renders_with_a_reason_column() -> None:
    report = report_module()
    data = json.loads((ROOT / "benchmarks" / "results.json").read_text(encoding="utf-8"))
    page = report.render(data)
    assert "| target | measured | status | reason (where the data gives one) |" in page
    for line in report.targets(data) + report.training_targets(data):
        assert len(line) == 4, line
        assert line[2] in {"met", "**missed**", "n/a"}
        assert line[2] != "met" or line[3] == "", line  # reasons only for misses


def _data(auto: float, baseline: float, *, median: float, method: str, best_engine: str, kernel: int = 3) -> dict[str, Any]:
    auto_row = {"shape": "s", "candidate": "auto", "seconds": auto, "seconds_median": median}
    shape = {"name": "s", "x_shape": [2, 4, 64], "w_shape": [2, 4, 4, kernel]}
    return {"backends": {"torch": {"rows": [auto_row], "training_rows": [auto_row], "shapes": [shape]}}} | {
        "item": {
            "backend": "torch",
            "shape": "s",
            "auto_method": method,
            "best_baseline": "groups=B",
            "auto_over_best_baseline": auto / baseline,
            "best_engine": best_engine,
            "auto_over_best_engine": 1.3,
        }
    }


def test_reasons_name_the_same_algorithm_the_noise_or_the_fft_rule() -> None:
    report = report_module()
    same = _data(1.05, 1.0, median=1.2, method="grouped", best_engine="grouped")
    assert report._baseline_reason(same, same["item"]).startswith("same algorithm (grouped is groups=B): 5% apart")
    assert report._engine_reason(same, same["item"]).startswith("auto runs grouped itself")
    noisy = _data(1.05, 1.0, median=1.2, method="shift", best_engine="matmul")
    assert report._baseline_reason(noisy, noisy["item"]) == "5% apart, within auto's own rounds' spread (14%)"
    assert report._engine_reason(noisy, noisy["item"]) == "the cost model estimates shift below matmul"
    clear = _data(1.5, 1.0, median=1.52, method="shift", best_engine="fft", kernel=7)
    assert report._baseline_reason(clear, clear["item"], training=True) == ""
    assert report._engine_reason(clear, clear["item"]).startswith("fft is kept out below 32 kernel taps (7 here)")
