"""``benchmarks/report.py``: the page renders from the recorded run, and misses carry the reason the data gives."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from multiconv import _bench

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


RECORDED = [ROOT / "benchmarks" / "results.json", *sorted((ROOT / "benchmarks" / "runs").glob("*.json"))]


@pytest.mark.parametrize("source", RECORDED, ids=[p.stem for p in RECORDED])
def test_the_recorded_runs_render_with_a_reason_column(source: Path) -> None:
    report = report_module()
    data = json.loads(source.read_text(encoding="utf-8"))
    assert source.with_suffix(".png").is_file()
    page = report.render(data)
    assert "| target | measured | status | reason (where the data gives one) |" in page
    for line in report.targets(data) + report.training_targets(data):
        assert len(line) == 4, line
        assert line[2] in {"met", "**missed**", "n/a"}
        assert line[2] != "met" or line[3] == "", line  # reasons only for misses


def test_without_arguments_every_run_gets_a_page_and_the_latest_links_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = report_module()
    (tmp_path / "benchmarks" / "runs").mkdir(parents=True)
    for source in RECORDED:
        target = tmp_path / source.relative_to(ROOT)
        target.write_bytes(source.read_bytes())
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr("sys.argv", ["report.py"])
    assert report.main() == 0
    latest = (tmp_path / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "![benchmark plot](../benchmarks/results.png)" in latest
    for run in RECORDED[1:]:
        assert f"(benchmarks-{run.stem}.md)" in latest
        page = (tmp_path / "docs" / f"benchmarks-{run.stem}.md").read_text(encoding="utf-8")
        assert f"![benchmark plot](../benchmarks/runs/{run.stem}.png)" in page
        assert "[benchmarks.md](benchmarks.md)" in page
    assert capsys.readouterr().out.count("wrote ") == len(RECORDED)


def test_the_page_names_the_cpu_model_where_the_run_recorded_it() -> None:
    """Runs since 2026-12-06, late, record the CPU's vendor, family and model (the calibration profile's name when measured)."""
    report = report_module()
    recorded = [json.loads(source.read_text(encoding="utf-8")) for source in RECORDED]
    with_model = [data for data in recorded if next(iter(data["backends"].values()))["machine"].get("cpu_model")]
    assert with_model  # the Zen 4 EPYC's runs
    for data in recorded:
        machine = next(iter(data["backends"].values()))["machine"]
        line = next(line for line in report.render(data).splitlines() if line.startswith("- Machine: "))
        model = machine.get("cpu_model")
        assert line.startswith(f"- Machine: {machine['cpu']} ({model}), " if model else f"- Machine: {machine['cpu']}, "), line


def test_the_method_line_mentions_the_autodiff_floor_only_where_the_run_timed_it() -> None:
    report = report_module()
    data = json.loads(RECORDED[-1].read_text(encoding="utf-8"))
    sentence = "also time each framework's own training step of `x * 2`"

    def method(data: dict[str, Any]) -> str:
        page: str = report.render(data)
        return next(line for line in page.splitlines() if line.startswith("- Method: "))

    for result in data["backends"].values():
        for shape in result["shapes"]:
            shape.pop("autodiff_floor_seconds", None)
    assert sentence not in method(data)
    next(iter(data["backends"]["torch"]["shapes"]))["autodiff_floor_seconds"] = 6.5e-05
    assert sentence in method(data)
    digests = "Each JAX row records a digest of its compiled program"
    for result in data["backends"].values():
        for row in result["rows"]:
            row.pop("program", None)
    assert digests not in method(data)
    data["backends"]["jax"]["rows"][0]["program"] = "0123456789abcdef"
    assert digests in method(data)


def test_the_page_states_the_allocator_thresholds_the_run_had() -> None:
    report = report_module()
    machine = {"env": {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20)}}
    assert report._allocator(machine, "MALLOC_MMAP_THRESHOLD_") == "32 MiB"
    assert report._allocator(machine, "MALLOC_TRIM_THRESHOLD_") == "unset"


def test_the_allocator_line_follows_the_run_not_todays_setting() -> None:
    # Recorded runs keep the description of the allocator they ran under.
    report = report_module()
    fixed = report._allocator_line({"env": {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(64 * 2**20)}})
    assert "fixed at 32 MiB" in fixed
    assert "trim threshold at 64 MiB" in fixed
    warm = report._allocator_line({"env": dict(_bench.ALLOCATOR_ENV)})
    assert "mmap threshold at 256 MiB" in warm
    assert "trim threshold at 512 MiB" in warm
    assert "stays in the heap" in warm
    assert "arenas of their own" in warm
    one_arena = report._allocator_line({"env": {**_bench.ALLOCATOR_ENV, "MALLOC_ARENA_MAX": "1"}})
    assert "stays in the heap" in one_arena
    assert "`MALLOC_ARENA_MAX=1`" in one_arena
    assert "fixed at" in report._allocator_line({})  # no setting recorded: the older description, thresholds "unset"


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
    assert report._baseline_reason(clear, clear["item"], training=True).startswith("auto trains with shift; fft trains faster here")
    assert report._engine_reason(clear, clear["item"]).startswith("fft is kept out below 32 kernel taps (7 here)")
    clear["item"]["best_engine"] = "shift"
    assert report._baseline_reason(clear, clear["item"], training=True) == ""
    clear["item"] |= {"best_engine": "fft", "auto_over_best_engine": 0.99}  # auto itself trained faster than fft
    assert report._baseline_reason(clear, clear["item"], training=True) == ""
    lucky = _data(1.5, 1.0, median=1.55, method="shift", best_engine="shift")  # the baseline's best round: 1.0, its median 1.6
    lucky["backends"]["torch"]["rows"].append({"shape": "s", "candidate": "groups=B", "seconds": 1.0, "seconds_median": 1.6})
    assert report._baseline_reason(lucky, lucky["item"]) == (
        "auto's median round (1.55 s) is below groups=B's (1.60 s), whose median lies 60% above its best round"
    )
    lucky["backends"]["torch"]["rows"].append({"shape": "s", "candidate": "shift", "seconds": 1.0, "seconds_median": 1.5})
    assert report._engine_reason(lucky, lucky["item"]) == (
        "auto runs shift itself: the same code path, auto's own rounds spread 3%; median rounds 1.55 s against 1.50 s"
    )


def test_auto_behind_the_best_engine_by_noise_alone_says_its_own_engine_kept_up() -> None:
    """JAX's README shape: ``auto`` ran ``shift`` (19.8 us) while ``shift``'s own row took 14.0 and ``col2im`` 13.8."""
    report = report_module()
    data = _data(19.8, 15.4, median=32.5, method="shift", best_engine="col2im")
    data["backends"]["jax"] = data["backends"].pop("torch")
    data["item"]["backend"] = "jax"
    rows = data["backends"]["jax"]["rows"]
    rows += [{"shape": "s", "candidate": "col2im", "seconds": 13.8}, {"shape": "s", "candidate": "shift", "seconds": 14.0}]
    assert report._engine_reason(data, data["item"]) == (
        "auto runs shift, whose own row (14.00 s) is within 10% of col2im (13.80 s): auto and the engine it runs are "
        "apart by noise, auto's own rounds spread 64%"
    )
    rows[-1]["seconds"] = 15.5  # the engine itself slower than the 10% slack: the cost model's choice is at stake
    assert report._engine_reason(data, data["item"]) == "the cost model estimates shift below col2im"
    data["backends"]["torch"] = data["backends"].pop("jax")
    data["item"]["backend"] = "torch"  # PyTorch's col2im: auto runs it only for narrow groups (4 -> 4 channels here)
    assert report._engine_reason(data, data["item"]) == (
        "auto considers col2im on torch only for groups of 4x as many input as output channels"
    )
    data["backends"]["torch"]["shapes"][0]["w_shape"][1] = 1  # 4 -> 1 channels: auto may run col2im, the model ranked it below
    assert report._engine_reason(data, data["item"]) == "the cost model estimates shift below col2im"
    data["backends"]["torch"]["shapes"][0]["w_shape"][1] = 4
    rows[-1] = {"shape": "s", "candidate": "method=shift", "seconds": 14.0}  # JAX names an engine that shares a baseline's name so
    assert report._engine_reason(data, data["item"]).startswith("auto runs shift, whose own row (14.00 s)")


def test_one_compiled_program_is_named_before_any_other_reason() -> None:
    """JAX's README shape: ``auto``, ``shift``, ``matmul`` and ``col2im`` compile to one XLA program (one batched dot)."""
    report = report_module()
    data = _data(1.17, 1.1, median=1.3, method="shift", best_engine="matmul")
    rows = data["backends"]["torch"]["rows"]
    rows[0]["program"] = "a1b2"
    rows += [
        {"shape": "s", "candidate": "matmul", "seconds": 1.0, "program": "a1b2"},
        {"shape": "s", "candidate": "groups=B", "seconds": 1.1},
    ]
    assert report._engine_reason(data, data["item"]) == (
        "auto compiles to the same program as matmul (XLA's optimized HLO, digest a1b2): the rows differ by the run's "
        "noise alone, auto's own rounds spread 11%"
    )
    assert report._baseline_reason(data, data["item"]) == "6% apart, within auto's own rounds' spread (11%)"  # another program
    rows[-1]["program"] = "a1b2"
    assert report._baseline_reason(data, data["item"]).startswith("auto compiles to the same program as groups=B")
    rows[-2]["program"] = "c3d4"  # programs that differ say nothing
    assert report._engine_reason(data, data["item"]) == "the cost model estimates shift below matmul"
    for row in rows:
        row.pop("program", None)  # runs before digests: as before
    assert report._baseline_reason(data, data["item"]) == "6% apart, within auto's own rounds' spread (11%)"


def test_torch_matmul_and_the_windowed_baselines_are_one_algorithm() -> None:
    report = report_module()
    data = _data(1.11, 1.0, median=1.2, method="matmul", best_engine="matmul")
    data["item"]["best_baseline"] = "einsum-windows"
    assert report._baseline_reason(data, data["item"]).startswith("same algorithm (matmul is einsum-windows): 11% apart")


def test_a_slow_backward_ratio_is_explained_only_when_auto_still_wins_the_backward() -> None:
    report = report_module()

    def data(auto_step: float) -> dict[str, Any]:
        forward = [
            {"shape": "s", "candidate": "auto", "kind": "auto", "seconds": 10e-6},
            {"shape": "s", "candidate": "unfold+bmm", "kind": "baseline", "seconds": 20e-6},
            {"shape": "s", "candidate": "loop", "kind": "baseline", "seconds": 200e-6},
        ]
        step = [
            {"shape": "s", "candidate": "auto", "kind": "auto", "seconds": auto_step},
            {"shape": "s", "candidate": "unfold+bmm", "kind": "baseline", "seconds": 80e-6},
            {"shape": "s", "candidate": "loop", "kind": "baseline", "seconds": 900e-6},
        ]
        item = {"backend": "torch", "shape": "s", "auto_seconds": auto_step, "auto_forward_seconds": 10e-6}
        return {"backends": {"torch": {"rows": forward, "training_rows": step}}, "item": item}

    fast = data(45e-6)  # backward 35 us: 3.5x the forward, yet below unfold+bmm's 60 us
    assert report._backward_reason(fast, fast["item"]) == (
        "auto's backward alone (35.0 us) is faster than every baseline's (best unfold+bmm 60.0 us, 3.0x its forward); "
        "the ratio is high because auto's forward is 10.0 us"
    )
    slow = data(90e-6)  # backward 80 us: slower than unfold+bmm's, no excuse
    assert report._backward_reason(slow, slow["item"]) == ""
    fast["item"]["autodiff_floor_seconds"] = 65e-6  # the run timed PyTorch's own step of x * 2: it says so
    assert report._backward_reason(fast, fast["item"]).endswith(
        "; PyTorch's own training step of one multiplication (x * 2) took 65.0 us in the same rounds, 6.5x auto's forward"
    )


def test_a_step_no_longer_than_the_forward_leaves_the_backward_target_unmeasured() -> None:
    # Run F's JAX README shape: its forward's best round 26.0 us, the whole step's 25.3 us (the
    # run's dispatch noise), a backward of -0.02x the forward, which is no measurement of it.
    report = report_module()

    def line(step: float) -> list[str]:
        item = {"backend": "jax", "shape": "readme", "auto_seconds": step, "auto_forward_seconds": 26.0e-6, "auto_over_best_baseline": 0.7}
        item |= {"best_baseline": "einsum-windows", "best_baseline_seconds": 34.1e-6}
        lines = report.training_targets({"training_summary": [item], "backends": {}})
        return next(row for row in lines if row[0].startswith("training: auto backward"))

    assert line(25.3e-6)[1:] == [
        "-0.03x (f+b 25.3 us, forward 26.0 us)",
        "n/a",
        "not measured: the step's best round took no longer than the forward's",
    ]
    assert line(78.0e-6)[1:] == ["2.00x (f+b 78.0 us, forward 26.0 us)", "met", ""]


def test_a_jax_step_through_two_engines_says_so() -> None:
    # JAX's auto may run one engine's forward and another's derivatives: the summary names both,
    # and a training miss compares the mixed step with each engine's own (engines only, never the
    # baseline that shares the JAX loop engine's name).
    report = report_module()
    steps = [
        {"shape": "s", "candidate": "auto", "kind": "auto", "seconds": 26.5e-3, "seconds_median": 27e-3},
        {"shape": "s", "candidate": "method=loop", "kind": "engine", "seconds": 23.4e-3},
        {"shape": "s", "candidate": "shift", "kind": "engine", "seconds": 24.5e-3},
        {"shape": "s", "candidate": "matmul", "kind": "engine", "seconds": 23.0e-3},
        {"shape": "s", "candidate": "loop", "kind": "baseline", "seconds": 22.9e-3},
    ]
    item = {
        "backend": "jax",
        "shape": "s",
        "auto_method": "loop",
        "auto_derivatives": "shift",
        "auto_seconds": 26.5e-3,
        "best_baseline": "einsum-windows",
        "auto_over_best_baseline": 1.16,
        "best_engine": "matmul",
        "auto_over_best_engine": 1.15,
    }
    data = {"backends": {"jax": {"training_rows": steps}}}
    reason = report._baseline_reason(data, item, training=True)
    assert reason.startswith("auto trains with loop's forward and shift's derivatives")
    assert reason.endswith("26.50 ms against loop 23.40 ms, shift 24.50 ms")
    assert report._trained_with(item) == "loop (derivatives: shift)"
    assert report._trained_with(item | {"auto_derivatives": "loop"}) == "loop"
    assert report._trained_with({"auto_method": "grouped"}) == "grouped"  # runs recorded before the field


def test_a_float64_row_off_the_fold_names_the_charge_for_its_loop() -> None:
    """PyTorch float64: ``auto`` ran ``matmul`` because the fold's loop over the groups is charged; the reason says so.

    Only where the run records the charge: older runs left the fold for other reasons.
    """
    report = report_module()
    data = _data(1.07, 1.0, median=1.2, method="matmul", best_engine="grouped")
    result = data["backends"]["torch"]
    result["shapes"][0]["dtype"] = "float64"
    for kind in ("rows", "training_rows"):
        result[kind] = [*result[kind], {"shape": "s", "candidate": "grouped", "seconds": 1.0, "seconds_median": 1.1}]
    generic = ("7% apart, within auto's own rounds' spread (12%)", "the cost model estimates matmul below grouped")
    assert (report._baseline_reason(data, data["item"]), report._engine_reason(data, data["item"])) == generic  # no charge recorded
    result["machine"] = {"group_loop_seconds": 2e-05}
    for reason in (report._baseline_reason(data, data["item"]), report._engine_reason(data, data["item"])):
        assert reason.startswith("auto runs matmul: it charges the fold's loop over the groups"), reason
        assert "idle speed here (grouped 1.00 s)" in reason
    assert "charges" in report._baseline_reason(data, data["item"], training=True)
    result["shapes"][0]["dtype"] = "float32"  # no loop to charge: the usual reasons
    assert (report._baseline_reason(data, data["item"]), report._engine_reason(data, data["item"])) == generic
