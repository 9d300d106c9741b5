"""Write ``docs/benchmarks.md`` from ``benchmarks/results.json`` (a ``multiconv bench`` run).

Usage: ``python benchmarks/report.py [results.json] [docs/benchmarks.md]``; without
arguments it also writes ``docs/benchmarks-<name>.md`` for every earlier run kept in
``benchmarks/runs/<name>.json`` (with its ``.png``) and links them.  Every
number in the page comes from the JSON; the targets of the performance issue are
checked against it and marked as met or missed.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from multiconv._cost import COL2IM_NARROW, FFT_MIN_TAPS, WIDE_LOOP_DTYPES, col2im_narrow

ROOT = Path(__file__).resolve().parents[1]


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _memory(size: float | None) -> str:
    if size is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _rows(result: dict[str, Any], shape: str, kind: str = "rows") -> dict[str, dict[str, Any]]:
    """A shape's candidates by name, from the forward ``rows`` or the ``training_rows``."""
    return {row["candidate"]: row for row in result[kind] if row["shape"] == shape}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _mark(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


#: A run whose mmap threshold is at least this kept its buffers in the heap (a "warm" allocator).
WARM_HEAP = 256 * 2**20

#: How a reason names a backend's framework.
_FRAMEWORK_NAMES = {"torch": "PyTorch", "jax": "JAX", "numpy": "NumPy"}

#: The target's slack for ``auto`` against the best multiconv engine (within 10%).
AUTO_ENGINE_SLACK = 0.1

#: (backend, engine) -> the hand-written baselines that run the same algorithm.
SAME_ALGORITHM: dict[tuple[str, str], frozenset[str]] = {
    ("torch", "grouped"): frozenset({"groups=B", "torch.func.vmap"}),  # functorch batches a conv into a grouped one
    # torch.einsum over the unfolded windows copies them (aten::clone) and runs one aten::bmm: an im2col buffer
    # and one batched product, as ``matmul`` (torch 2.13's profiler, the float64 shape)
    ("torch", "matmul"): frozenset({"unfold+bmm", "einsum-windows"}),
    ("jax", "loop"): frozenset({"loop"}),
    ("jax", "vmap"): frozenset({"jax.vmap", "groups=B"}),
}


def _spread(row: dict[str, Any]) -> float:
    """How far the median round of a candidate lies above its best: the run's noise on that row."""
    return row["seconds_median"] / row["seconds"] - 1 if row.get("seconds") and row.get("seconds_median") else 0.0


def _same_program_reason(rows: dict[str, dict[str, Any]], other: str) -> str:
    """Where auto's row and ``other``'s ran one compiled program (runs since 2026-12-07 record JAX's, ``program``)."""
    auto, row = rows["auto"], rows.get(other, {})
    if not (auto.get("program") and auto["program"] == row.get("program")):
        return ""
    return (
        f"auto compiles to the same program as {other} (XLA's optimized HLO, digest {auto['program']}): the rows differ by "
        f"the run's noise alone, auto's own rounds spread {_spread(auto):.0%}"
    )


def _same_code_reason(rows: dict[str, dict[str, Any]], item: dict[str, Any]) -> str:
    """Where auto ran what the best baseline ran: one compiled program, or one algorithm (:data:`SAME_ALGORITHM`)."""
    if same := _same_program_reason(rows, item["best_baseline"]):
        return same
    method, apart, spread = item["auto_method"], item["auto_over_best_baseline"] - 1, _spread(rows["auto"])
    if item["best_baseline"] in SAME_ALGORITHM.get((item["backend"], method), frozenset()):
        return f"same algorithm ({method} is {item['best_baseline']}): {apart:.0%} apart, auto's own rounds spread {spread:.0%}"
    return ""


def _charged_fold_reason(data: dict[str, Any], item: dict[str, Any], *, training: bool = False) -> str:
    """Where PyTorch's ``auto`` left the fold, charged for its loop over the groups, and the fold ran at its idle speed.

    Only for runs that record the charge (``group_loop_seconds``): before it, ``auto`` left
    the fold for other reasons.
    """
    backend, method = item["backend"], item["auto_method"]
    result = data["backends"][backend]
    shape = next(s for s in result["shapes"] if s["name"] == item["shape"])
    fold = _rows(result, item["shape"], "training_rows" if training else "rows").get("grouped", {}).get("seconds")
    charged = backend == "torch" and method != "grouped" and shape.get("dtype") in WIDE_LOOP_DTYPES
    if not (charged and fold and result.get("machine", {}).get("group_loop_seconds")):
        return ""
    return (
        f"auto runs {method}: it charges the fold's loop over the groups (multiconv._cost.group_loop_risk), "
        f"which ran at its idle speed here (grouped {_time(fold)}); where a core lags it takes about twice that"
    )


def _noise_reason(data: dict[str, Any], item: dict[str, Any], *, training: bool) -> str:
    """Where auto and the best baseline are apart by the run's noise: within auto's spread, or behind a baseline's lucky round."""
    rows = _rows(data["backends"][item["backend"]], item["shape"], "training_rows" if training else "rows")
    auto, baseline = rows["auto"], rows.get(item["best_baseline"], {})
    apart, spread = item["auto_over_best_baseline"] - 1, _spread(auto)
    if apart <= spread:
        return f"{apart:.0%} apart, within auto's own rounds' spread ({spread:.0%})"
    if auto.get("seconds_median") and baseline.get("seconds_median") and auto["seconds_median"] <= baseline["seconds_median"]:
        return (
            f"auto's median round ({_time(auto['seconds_median'])}) is below {item['best_baseline']}'s "
            f"({_time(baseline['seconds_median'])}), whose median lies {_spread(baseline):.0%} above its best round"
        )
    return ""


def _baseline_reason(data: dict[str, Any], item: dict[str, Any], *, training: bool = False) -> str:
    """Why auto is above the best baseline, where the data says: the same algorithm, apart by noise, the fold's charge."""
    backend, method = item["backend"], item["auto_method"]
    rows = _rows(data["backends"][backend], item["shape"], "training_rows" if training else "rows")
    if same := _same_code_reason(rows, item):
        return same
    fold_like = item["best_baseline"] in SAME_ALGORITHM[("torch", "grouped")]
    if fold_like and (charged := _charged_fold_reason(data, item, training=training)):
        return charged
    if noise := _noise_reason(data, item, training=training):
        return noise
    derivatives = item.get("auto_derivatives") or method
    if training and derivatives != method:
        steps = _rows(data["backends"][backend], item["shape"], "training_rows")
        engines = {name.removeprefix("method="): row for name, row in steps.items() if row.get("kind") == "engine" and row.get("seconds")}
        own = [f"{m} {_time(engines[m]['seconds'])}" for m in (method, derivatives) if m in engines]
        return (
            f"auto trains with {method}'s forward and {derivatives}'s derivatives, a combination its training model does not "
            f"time (it models each engine's own step): {_time(item['auto_seconds'])} against " + (", ".join(own) or "n/a")
        )
    best = item.get("best_engine", "").removeprefix("method=")
    if training and best and best != method and (item.get("auto_over_best_engine") or 0) > 1:
        return (
            f"auto trains with {method}; {best} trains faster here ({_time(item.get('best_engine_seconds'))}): auto's training model "
            "ranks them the other way"
        )
    return ""


def _kept_out_reason(backend: str, best: str, shape: dict[str, Any]) -> str:
    """Where the best engine is one ``auto`` may not run: NumPy's or PyTorch's ``col2im`` off narrow groups, or ``fft`` below its taps."""
    w_shape, spatial = shape["w_shape"], len(shape["x_shape"]) - 2
    taps = math.prod(w_shape[-spatial:])
    out_channels, group_in_channels = w_shape[-spatial - 2 : -spatial]
    if best == "col2im" and backend != "jax" and not col2im_narrow(out_channels // shape.get("groups", 1), group_in_channels):
        return f"auto considers col2im on {backend} only for groups of {COL2IM_NARROW}x as many input as output channels"
    if best == "fft" and taps < FFT_MIN_TAPS:
        return f"fft is kept out below {FFT_MIN_TAPS} kernel taps ({taps} here): NaN locality and elementwise accuracy"
    return ""


def _engine_reason(data: dict[str, Any], item: dict[str, Any]) -> str:
    """Why auto is more than 10% above the best engine."""
    backend, method, best = item["backend"], item["auto_method"], item["best_engine"]
    if same := _same_program_reason(_rows(data["backends"][backend], item["shape"]), best):
        return same
    if best.removeprefix("method=") == method:
        rows = _rows(data["backends"][backend], item["shape"])
        auto, engine = rows["auto"], rows.get(best, {})
        medians = (
            f"; median rounds {_time(auto['seconds_median'])} against {_time(engine['seconds_median'])}"
            if auto.get("seconds_median") and engine.get("seconds_median")
            else ""
        )
        return f"auto runs {method} itself: the same code path, auto's own rounds spread {_spread(auto):.0%}{medians}"
    rows = _rows(data["backends"][backend], item["shape"])
    picked, fastest = rows.get(method) or rows.get(f"method={method}") or {}, rows.get(best, {})
    if picked.get("seconds") and fastest.get("seconds") and picked["seconds"] <= fastest["seconds"] * (1 + AUTO_ENGINE_SLACK):
        return (
            f"auto runs {method}, whose own row ({_time(picked['seconds'])}) is within {AUTO_ENGINE_SLACK:.0%} of {best} "
            f"({_time(fastest['seconds'])}): auto and the engine it runs are apart by noise, auto's own rounds spread "
            f"{_spread(rows['auto']):.0%}"
        )
    shape = next(s for s in data["backends"][backend]["shapes"] if s["name"] == item["shape"])
    if kept_out := _kept_out_reason(backend, best, shape):
        return kept_out
    if best == "grouped" and (charged := _charged_fold_reason(data, item)):
        return charged
    return f"the cost model estimates {method} below {best}"


def _backward_reason(data: dict[str, Any], item: dict[str, Any]) -> str:
    """Why auto's backward is more than 3x its forward: how its backward compares with the baselines' own."""
    result = data["backends"][item["backend"]]
    forward, step = _rows(result, item["shape"]), _rows(result, item["shape"], "training_rows")
    backwards = {
        name: row["seconds"] - forward[name]["seconds"]
        for name, row in step.items()
        if row.get("kind") == "baseline" and row.get("seconds") and forward.get(name, {}).get("seconds")
    }
    if not backwards:
        return ""
    name = min(backwards, key=backwards.__getitem__)
    own = item["auto_seconds"] - item["auto_forward_seconds"]
    if own > backwards[name]:
        return ""
    ratio = backwards[name] / forward[name]["seconds"]
    reason = (
        f"auto's backward alone ({_time(own)}) is faster than every baseline's (best {name} {_time(backwards[name])}, "
        f"{ratio:.1f}x its forward); the ratio is high because auto's forward is {_time(item['auto_forward_seconds'])}"
    )
    floor = item.get("autodiff_floor_seconds")
    if floor:  # runs since 2026-12-07 time the framework's own step of x * 2 in the training rounds
        reason += (
            f"; {_FRAMEWORK_NAMES.get(item['backend'], item['backend'])}'s own training step of one multiplication "
            f"(x * 2) took {_time(floor)} in the same rounds, {floor / item['auto_forward_seconds']:.1f}x auto's forward"
        )
    return reason


def targets(data: dict[str, Any]) -> list[list[str]]:
    """One line per target of the performance issue: the measured value, met or missed, and why where the data says."""
    lines: list[list[str]] = []
    backends = data["backends"]
    for item in data["summary"]:
        ratio = item["auto_over_best_baseline"]
        met = ratio is not None and ratio <= 1.0
        lines.append(
            [
                f"auto <= best baseline: {item['backend']} {item['shape']}",
                f"{ratio:.2f} (auto {item['auto_method']} {_time(item['auto_seconds'])} vs {item['best_baseline']})",
                _mark(met),
                "" if met else _baseline_reason(data, item),
            ]
        )
    for backend, result in backends.items():
        rows = _rows(result, "longkernel")
        fold = [rows[name]["seconds"] for name in ("groups=B", "torch.func.vmap", "jax.vmap") if name in rows and rows[name]["seconds"]]
        reference = min(fold) if fold else min(r["seconds"] for r in rows.values() if r["kind"] == "baseline" and r["seconds"])
        what = "groups=B fold / vmap" if fold else "best baseline (NumPy has no fold or vmap)"
        speedup = _ratio(reference, rows["auto"]["seconds"])
        met = speedup is not None and speedup >= 5
        lines.append([f"long kernel >= 5x faster than {what}: {backend}", f"{speedup:.1f}x", _mark(met), ""])
    if "jax" in backends:
        rows = _rows(backends["jax"], "depthwise")
        speedup = _ratio(rows["jax.vmap"]["seconds"], rows["auto"]["seconds"])
        lines.append(["JAX depthwise >= 20x faster than jax.vmap", f"{speedup:.1f}x", _mark(speedup is not None and speedup >= 20), ""])
    for backend, baseline, goal in (("torch", "groups=B", 5), ("numpy", "einsum-windows", 10)):
        if backend in backends:
            rows = _rows(backends[backend], "readme")
            speedup = _ratio(rows[baseline]["seconds"], rows["auto"]["seconds"])
            lines.append(
                [
                    f"README shape: {backend} >= {goal}x faster than {baseline}",
                    f"{speedup:.1f}x",
                    _mark(speedup is not None and speedup >= goal),
                    "",
                ]
            )
    for backend, result in backends.items():
        goal = 40 if backend == "jax" else 60
        for shape in ("dense64", "dense256"):
            pct = _rows(result, shape)["auto"]["pct_gemm"]
            lines.append(
                [f"{shape}: {backend} auto >= {goal}% of its own GEMM rate", f"{pct:.0f}%", _mark(pct is not None and pct >= goal), ""]
            )
    for item in data["summary"]:
        ratio = item["auto_over_best_engine"]
        met = ratio is not None and ratio <= 1 + AUTO_ENGINE_SLACK
        lines.append(
            [
                f"auto within {AUTO_ENGINE_SLACK:.0%} of the best engine: {item['backend']} {item['shape']}",
                f"{ratio:.2f} (best {item['best_engine']})",
                _mark(met),
                "" if met else _engine_reason(data, item),
            ]
        )
    return lines


def training_targets(data: dict[str, Any]) -> list[list[str]]:
    """The training targets of the gradients issue: auto's forward + backward against the baselines', backward <= 3x forward."""
    lines: list[list[str]] = []
    for item in data.get("training_summary", []):
        ratio = item["auto_over_best_baseline"]
        met = ratio is not None and ratio <= 1.0
        lines.append(
            [
                f"training: auto f+b <= best baseline f+b: {item['backend']} {item['shape']}",
                f"{ratio:.2f} (auto {_time(item['auto_seconds'])} vs {item['best_baseline']} {_time(item['best_baseline_seconds'])})",
                _mark(met),
                "" if met else _baseline_reason(data, item, training=True),
            ]
        )
    for item in data.get("training_summary", []):
        step, forward = item["auto_seconds"], item["auto_forward_seconds"]
        backward = (step - forward) / forward if step and forward else None
        name = f"training: auto backward <= 3x forward: {item['backend']} {item['shape']}"
        if backward is None:
            lines.append([name, "n/a", _mark(None), ""])
            continue
        measured = f"{backward:.2f}x (f+b {_time(step)}, forward {_time(forward)})"
        if backward <= 0:  # the step's best round no longer than the forward's alone: the run's noise hid the backward
            lines.append([name, measured, _mark(None), "not measured: the step's best round took no longer than the forward's"])
        else:
            lines.append([name, measured, _mark(backward <= 3.0), "" if backward <= 3.0 else _backward_reason(data, item)])
    return lines


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _trained_with(item: dict[str, Any]) -> str:
    """The engine ``auto`` trains with, and that of its derivatives where JAX takes them through another."""
    method, derivatives = item["auto_method"], item.get("auto_derivatives")
    return method if derivatives in (None, method) else f"{method} (derivatives: {derivatives})"


def _summary_cells(item: dict[str, Any], *, forward: bool = False) -> list[str]:
    """A summary line: auto's pick and time (and its forward time), the best baseline and engine, the ratios."""
    return [
        item["shape"],
        item["backend"],
        _trained_with(item),
        *([_time(item["auto_forward_seconds"])] if forward else []),
        _time(item["auto_seconds"]),
        f"{item['best_baseline']} {_time(item['best_baseline_seconds'])}",
        f"{item['auto_over_best_baseline']:.2f}",
        f"{item['best_engine']} {_time(item['best_engine_seconds'])}",
        f"{item['auto_over_best_engine']:.2f}",
    ]


def _candidate_table(rows: list[dict[str, Any]]) -> list[str]:
    cells = [
        [
            row["shape"],
            row["candidate"],
            row["kind"],
            _time(row["seconds"]),
            f"{row['gflops']:.1f}" if row["gflops"] else "n/a",
            f"{row['pct_gemm']:.1f}%" if row["pct_gemm"] else "n/a",
            _memory(row["peak_memory_bytes"]),
            f"{row['rel_error']:.0e}" if row["rel_error"] is not None else "n/a",
            row["note"] or ("auto's pick" if row.get("picked_by_auto") else ""),
        ]
        for row in rows
    ]
    return _table(["shape", "candidate", "kind", "time", "GFLOP/s", "%GEMM", "peak mem", "rel err", "note"], cells)


def _allocator(machine: dict[str, Any], name: str) -> str:
    """One allocator setting of the run, in MiB (or "unset")."""
    value = machine.get("env", {}).get(name)
    return "unset" if value is None else f"{int(value) / 2**20:g} MiB"


def _settle_note(settings: dict[str, Any]) -> str:
    """The sentence on NumPy's settling calls, for runs that made them (older runs' settings lack the field)."""
    seconds = settings.get("settle_seconds")
    if not seconds:
        return ""
    return (
        f" NumPy's untimed calls last at least {seconds * 1e3:.0f} ms: OpenBLAS's workers spin about 0.1 s after a "
        "multi-threaded call (a baseline's, the GEMM's), and multiconv's NumPy chunks, which run on threads of their "
        "own, measured 1.6-1.9x slower in that window."
    )


def _allocator_line(machine: dict[str, Any]) -> str:
    """The Markdown line on the run's allocator settings: the warm heap of today's runs, or the fixed 32 MiB of earlier ones."""
    mmap, trim = _allocator(machine, "MALLOC_MMAP_THRESHOLD_"), _allocator(machine, "MALLOC_TRIM_THRESHOLD_")
    env = machine.get("env", {})
    value = env.get("MALLOC_MMAP_THRESHOLD_")
    if value is not None and int(value) >= WARM_HEAP:
        line = (
            f"- Allocator: every backend's process runs with glibc's mmap threshold at {mmap} and its trim threshold at "
            f"{trim} (`multiconv._bench.ALLOCATOR_ENV`, the setting the README recommends): every buffer up to the "
            "workspace bound stays in the heap. At glibc's 32 MiB / 64 MiB, some processes page-faulted 8 to 21 thousand "
            "pages per call and others none, for the same code (PyTorch and JAX, `dense64`), which decided many rows."
        )
        if env.get("MALLOC_ARENA_MAX") == "1":
            line += (
                " Every thread allocates from the one arena (`MALLOC_ARENA_MAX=1`): a worker thread's own arena caps its "
                "heaps at 64 MiB and trims them, so XLA's buffers of 64 MiB and more were mapped afresh on every call."
            )
        else:
            line += (
                " Threads allocate from arenas of their own (glibc's default): XLA's buffers of 64 MiB and more, beyond "
                "such an arena's heap, fault on every call (multiconv's own stay under it)."
            )
        return line
    return (
        f"- Allocator: every backend's process runs with glibc's mmap threshold fixed at {mmap} and its trim threshold "
        f"at {trim} (`multiconv._bench.ALLOCATOR_ENV`): the values glibc's own dynamic threshold reaches once a 32 MiB "
        "buffer has been freed. Left dynamic, buffers of a few MiB were page-faulted afresh on every call until some larger "
        "buffer had been freed, so a candidate's time depended on which ran before it (PyTorch's depthwise forward: 1.4 ms "
        "in a fresh process, 0.40 ms after one backward)."
    )


def render(data: dict[str, Any], plot: str = "../benchmarks/results.png", notes: tuple[str, ...] = ()) -> str:
    """The Markdown page (``plot``: the PNG's path from the page; ``notes``: paragraphs after the machine list)."""
    first = next(iter(data["backends"].values()))["machine"]
    blas: dict[str, Any] = next((p for p in first.get("threadpools", []) if p.get("user_api") == "blas"), {})
    model = f" ({first['cpu_model']})" if first.get("cpu_model") else ""  # vendor, family and model: recorded since 2026-12-06, late
    out = [
        "# Benchmarks",
        "",
        (
            f"One full run of `{' '.join(data['command'])}` (through `benchmarks/run.sh`, with `OPENBLAS_CORETYPE` and "
            f"`OPENBLAS_L2_SIZE` unset), {data['created']}. Regenerate this page with `python benchmarks/report.py`."
        ),
        "",
        f"- Machine: {first['cpu']}{model}, {first['cpu_count']} cores, {first['platform']}; Python {first['python']}"
        + (f"; `auto`'s calibration: the {first['cpu_profile']} profile." if "cpu_profile" in first else "."),
        f"- Versions: multiconv {first['multiconv']}, "
        + ", ".join(f"{name} {result['machine']['framework_version']}" for name, result in data["backends"].items())
        + ".",
        (
            f"- BLAS (threadpoolctl): {blas.get('internal_api')} {blas.get('version')}, kernel **{blas.get('architecture')}**, "
            f"{blas.get('num_threads')} threads ({blas.get('threading_layer')})."
        ),
        (
            f"- Method: each backend in its own process; every candidate checked against the float64 reference, then "
            f"{data['settings']['rounds']} interleaved rounds (order shuffled per round) of an untimed call and a block of at least "
            f"{data['settings']['block_seconds'] * 1e3:.0f} ms; the time is the best round, per call."
            f"{_settle_note(data['settings'])} GFLOP/s is "
            "`2 * MACs / time`; %GEMM compares it with the framework's own float32 1024x1024 matmul, timed in the same "
            "rounds. JAX candidates (multiconv and baselines alike) run under `jax.jit`. Peak memory: tracemalloc "
            "(NumPy), the profiler's allocation events (PyTorch), XLA's memory analysis (JAX)."
            + (
                " The training rounds also time each framework's own training step of `x * 2` on the shape's input "
                "(what differentiating one operation costs; the backward target's reasons quote it)."
                if any(s.get("autodiff_floor_seconds") for r in data["backends"].values() for s in r["shapes"])
                else ""
            )
            + (
                " Each JAX row records a digest of its compiled program (XLA's optimized HLO without its debug "
                "metadata): rows with one digest ran the same program, and a reason says so."
                if any(row.get("program") for r in data["backends"].values() for row in r["rows"])
                else ""
            )
        ),
        _allocator_line(first),
        (
            "- The machine is a shared 2-core VM: times of one code path vary by 10-30% between runs, and ratios "
            "between identical code paths (auto and the engine it picks) scatter by about as much."
        ),
        *(line for note in notes for line in ("", note)),
        "",
        f"![benchmark plot]({plot})",
        "",
        "## Summary",
        "",
    ]
    header = ["shape", "backend", "auto picks", "auto", "best baseline", "auto / baseline", "best engine", "auto / engine"]
    out += _table(header, [_summary_cells(item) for item in data["summary"]])
    out += ["", "## Targets", ""]
    out += _table(["target", "measured", "status", "reason (where the data gives one)"], targets(data))
    if data.get("training_summary"):
        out += [
            "",
            "## Training (forward + backward)",
            "",
            (
                "One training step: the output `y` and the gradients for `x` and `w` of `sum(y * g)` (PyTorch autograd; "
                "`jax.vjp` under `jax.jit`, the step returning `y` with the gradients), every candidate checked against "
                "`multiconv.testing.reference_conv` and `reference_conv_vjp`; %GEMM counts three convolutions' work."
            ),
            *(() if data["created"] >= _STEP_RETURNS_OUTPUT_SINCE else ("", _BACKWARD_ONLY_NOTE)),
            "",
        ]
        header = ["shape", "backend", "auto picks", "auto forward", "auto f+b", "best baseline f+b", "auto / baseline", "best engine f+b"]
        training = [_summary_cells(item, forward=True) for item in data["training_summary"]]
        out += _table([*header, "auto / engine"], training)
        out += [""]
        out += _table(["target", "measured", "status", "reason (where the data gives one)"], training_targets(data))
    for backend, result in data["backends"].items():
        gemm = result["gemm"]["gflops"]
        out += ["", f"## {backend}", "", f"Own float32 GEMM: {gemm:.0f} GFLOP/s.", ""]
        out += _candidate_table(result["rows"])
        if result.get("training_rows"):
            out += ["", f"{backend}, training (forward + backward):", ""]
            out += _candidate_table(result["training_rows"])
    return "\n".join(out) + "\n"


#: Runs made before this time timed JAX's training step without its output (see :data:`_BACKWARD_ONLY_NOTE`).
_STEP_RETURNS_OUTPUT_SINCE = "2026-12-03T15:00"
_BACKWARD_ONLY_NOTE = (
    "**This run's JAX training rows time the backward alone**: its jitted step returned the gradients only, and as "
    "a bilinear map's gradients do not use `y`, XLA dropped the forward. Steps have returned `y` with the gradients "
    "since 2026-12-03; PyTorch's rows are unaffected (autograd runs the forward)."
)


def _write(source: Path, target: Path, notes: tuple[str, ...] = ()) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    plot = os.path.relpath(source.with_suffix(".png"), target.parent).replace(os.sep, "/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(data, plot, notes), encoding="utf-8")
    print(f"wrote {target}")
    return data


def main() -> int:
    """Read the JSON, write the page; without arguments, also a page per earlier run in ``benchmarks/runs/``."""
    if len(sys.argv) > 1:
        _write(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "docs" / "benchmarks.md")
        return 0
    earlier = []
    for run in sorted((ROOT / "benchmarks" / "runs").glob("*.json")):
        page = ROOT / "docs" / f"benchmarks-{run.stem}.md"
        data = _write(run, page, ("An earlier full run, kept for comparison; the latest is [benchmarks.md](benchmarks.md).",))
        machine = next(iter(data["backends"].values()))["machine"]
        cpu = machine["cpu"] + (f" {machine['cpu_model']}" if machine.get("cpu_model") else "")
        earlier.append(f"[{run.stem}]({page.name}) ({cpu}, {data['created'][:10]})")
    notes = (f"Earlier full runs, on other machines or code: {'; '.join(earlier)}.",) if earlier else ()
    _write(ROOT / "benchmarks" / "results.json", ROOT / "docs" / "benchmarks.md", notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
