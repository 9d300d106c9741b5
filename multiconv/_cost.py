"""The cost model behind ``method="auto"``.

Every engine's time on a backend is modelled as a non-negative combination of nine
features of the convolution (:data:`FEATURES`):

``fixed``
    1: the engine's constant overhead per call.
``calls``
    framework operations the engine issues (one batched matmul per kernel offset
    for ``shift``; for the direct engines, the groups the convolution folds).
``products``
    individual small matrix products inside the batched matmuls (frameworks loop
    over them on a CPU).
``gemm``
    multiply-add work, ``2 m k n`` per matrix product, divided by an efficiency
    ``m/(m+8) * k/(k+8) * n/(n+64)`` that falls for thin matrices (few channels
    per group, few output positions).
``copies``
    elements copied (im2col buffers, gathered windows, accumulation, FFT blocks).
``wide_copies``
    the copies again, times ``itemsize / 4 - 1``: 64-bit and complex copies
    cost more than their size alone says once they leave the caches.
``elementwise``
    elements of broadcast multiply-adds (depthwise ``shift``, depthwise FFT
    products).
``fft``
    ``points * log2(points)`` over every transform of the overlap-save engine.
``slow_copies``
    copies that run below cache speed.  For NumPy's engines, the copies again where
    one sample's workspace exceeds the engine's chunk target (its buffers leave the
    caches: 8 samples of 8 channels, L 16384, 257 taps, ran ``matmul`` at 2.7 times
    the estimate without it); for the frameworks' own convolutions (PyTorch's ``grouped``, JAX's ``vmap`` and
    ``loop``), ``copies`` again where the channels per group do not come in blocks of
    8 (a depthwise convolution with one output channel per input channel excepted):
    measured on PyTorch (oneDNN), such convolutions ran at 2 to 100 GFLOP/s against 100
    to 340 for blocked channels, about 0.4 ns per im2col element (2 channels, 257 taps:
    6.8 ms against 0.7 ms for ``fft``), as if through an im2col buffer.

Work scales with the dtype: float64 counts twice, complex four (complex128 eight)
times for ``gemm`` and ``fft``; ``copies`` and ``elementwise`` scale with the item
size.  Half
precision is computed in float32 and costed so.  NumPy's engines run their batch chunks
side by side (:mod:`multiconv._threads`), and its features say so: work divided over
the threads the chunks keep busy, framework calls counted per chunk (:func:`_side_by_side`).
The Intel profile's NumPy timings were taken so; the AMD profile's predate it (its chunks ran
one after another), so its NumPy estimates are those coefficients over the new features.

The coefficients of each (backend, engine) pair were fitted (non-negative least
squares on relative error, refitted with the wrongly ranked cases weighted up
until every benchmark shape picks within 10% of the fastest engine where that
can be had) to timings of a grid of shapes, the benchmark's shapes among them,
by ``benchmarks/calibrate.py``; they live in
:mod:`multiconv._calibration` together with the machine they were measured on.
There is one set per CPU measured (:func:`cpu_profile`): the same wheels rank the
engines differently on different CPUs (PyTorch's float64 grouped convolution against
its batched matmul, for one, measured 12.0 against 9.3 ms on the Intel machine and 5.1
against 5.6 ms on the first AMD one; JAX's ``col2im``, its whole batch at once, against
its ``loop`` on 256 samples of 16 channels, L 256, 7 taps, 2.3 against 2.5 ms there and
9.0 against 5.9 on an AMD EPYC of family 25, model 17, a Zen 4, whose float32 GEMM ran
at 190 against 490 GFLOP/s).  A profile is named by the CPU's vendor, family and model
(``AuthenticAMD-family25-model17``, :func:`cpu_model`) or, for the first two measured,
whose family and model were not recorded, by the vendor alone (``GenuineIntel``,
``AuthenticAMD``): a CPU uses its own model's profile where one was measured, else its
vendor's, else :data:`DEFAULT_PROFILE`'s; the environment variable
``MULTICONV_CPU_PROFILE`` names a profile to use instead.
A second set of coefficients (``TRAINING_COEFFICIENTS``) fits the same features to
timed training steps (the output and the gradients of ``x`` and ``w``), where a profile
has them: PyTorch ranks its engines for training by it (:func:`estimate_training`; a
profile without timed steps ranks them by their forward estimates), and JAX picks the
engine it differentiates ``auto`` through by it (:func:`choose_tangent`).
Only CPU timings exist: on a GPU, ``auto`` uses the framework's own convolution
(cuDNN) and switches to ``fft`` for kernels of 64 taps and more.

Two guard rails bound the fitted model: ``fft`` is considered only for kernels of
at least :data:`FFT_MIN_TAPS` taps (it turns every rounding error into a normwise
one and lets a NaN or Inf spread over its whole block, so ``auto`` picks it only
when the kernel is long enough to pay, in practice 64 taps or more on a CPU; name
another ``method`` to avoid it altogether), and JAX's ``shift`` only for depthwise
convolutions or kernels of at most :data:`JAX_SHIFT_MAX_TAPS` taps (XLA compiles one
dot per tap), and its ``col2im`` for as many slices (one of the product per tap it sums,
in 2-D and 3-D one per leading offset's window copied too: 7x7 is 14), or up to
:data:`JAX_COL2IM_MAX_SLICES` for groups of many more input than output channels (NumPy's and
PyTorch's ``col2im`` only for those: :data:`COL2IM_NARROW`);
JAX's ``loop`` only without groups, up to :data:`JAX_LOOP_MAX_BATCH`
samples (one compiled convolution per sample: its compile time grows with the
batch) and, with per-sample weights, from :data:`JAX_LOOP_MIN_SAMPLE_MACS`
multiply-adds per sample (each per-sample convolution cost XLA 12 to 40 us on the AMD
CPU whatever its size: 256 samples of 2 channels, 1024 positions and 5 taps took 10.5 ms
against 1.0 for ``matmul``; of the 11 calibration shapes below 2^15 multiply-adds per
sample, ``loop`` was the fastest on none on the AMD CPU and on one, by 4%, on the Intel
one, and up to 17 and 29 times slower); JAX's
``vmap`` never on a CPU (XLA's grouped convolution, which ``vmap`` of a convolution
becomes, was fastest on 4 of 78 calibration shapes on each CPU, and 37 and 38 times
slower than the best engine in float64).  One charge is added to the fit: PyTorch's
float64 and complex128 ``grouped`` forward, which loops over the groups in one parallel
region each, costs :data:`GROUP_LOOP_SECONDS` more per group and loop (:func:`group_loop_risk`):
it took 2 to 5 times its idle time whenever a core was slow to answer.
"""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Final

from multiconv._algorithms import (
    CHUNK_TARGET,
    DIRECT_ENGINES,
    NUMPY_CHUNK_TARGETS,
    col2im_slices,
    col2im_split,
    fft_blocks,
    numpy_chunk,
    numpy_lanes,
    phase_elements,
    workspace_elements,
)
from multiconv._calibration import COEFFICIENTS, MACHINES, TRAINING_COEFFICIENTS
from multiconv._spec import BACKEND_METHODS
from multiconv._threads import blas_threads

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from multiconv._spec import ConvSpec

FEATURES: Final = ("fixed", "calls", "products", "gemm", "copies", "wide_copies", "elementwise", "fft", "slow_copies")

#: Flop multiplier of each compute dtype (half precision is computed in float32).
_FLOP_SCALE: Final = {"float16": 1, "bfloat16": 1, "float32": 1, "float64": 2, "complex64": 4, "complex128": 8}
_ITEM_SCALE: Final = {"float16": 1, "bfloat16": 1, "float32": 1, "float64": 2, "complex64": 2, "complex128": 4}

#: On accelerators: kernels at least this long go to ``fft``, the rest to the direct engine.
GPU_FFT_TAPS: Final = 64
#: ``auto`` considers ``fft`` only from this many kernel taps on (NaN locality, elementwise accuracy).
FFT_MIN_TAPS: Final = 32
#: XLA compiles one dot per kernel tap for a non-depthwise ``shift``: beyond this many taps it is not considered.
JAX_SHIFT_MAX_TAPS: Final = 32
#: ``col2im``'s product holds a row per kernel tap and output channel of a group, im2col one per tap and input
#: channel: where groups have at least this many times as many input as output channels, its product is the smaller
#: (a Siamese tracker's cross-correlation, 8 samples of 256 -> 1 channels, 22x22, 6x6, Zen 3 EPYC: NumPy 1.1 ms
#: against 9.6 for its best other engine, PyTorch 1.6 against 10.0, JAX 0.69 against ``loop``'s 8.2).  NumPy's and
#: PyTorch's ``col2im`` is considered only there: elsewhere it ran slower than their other engines (the benchmark's
#: dense64 shape: 9.0 against 5.4 and 23.7 against 5.3 ms), and fitted to every calibration shape their models
#: ranked worse with it (PyTorch's forward: the fastest engine on 54 of 78 shapes, worst 7.1 times, against 64).
COL2IM_NARROW: Final = 4
#: JAX's ``col2im`` compiles one product and a slice of it per tap it sums (:func:`col2im_slices`), which XLA compiles
#: fast (8 samples, 256 -> 1 channels, 26x26, 10x10 taps: 0.17 s; 31x31, 15x15: 0.56 s; 8 -> 8 channels, 257 taps:
#: 0.59 s, where ``matmul`` took 0.7 to 1.5 s).  Beyond :data:`JAX_SHIFT_MAX_TAPS` slices it is considered only for
#: groups of :data:`COL2IM_NARROW` times as many input as output channels, up to this many slices (the Siamese
#: cross-correlation above has 36; 7x7 took 1.1 ms against ``fft``'s 6.8).
JAX_COL2IM_MAX_SLICES: Final = 256
#: (forward engine, derivative engine) pairs JAX's ``auto`` never mixes.  Timed as ``auto`` runs them
#: (``calibrate.py --training --mixed``, Intel, the 16 cases whose forward engine is ``loop``),
#: ``matmul``'s derivatives after ``loop``'s forward gave the fastest step on one (1.19 ms against
#: ``loop``'s own 1.36) and steps 1.5 to 4.4 times those of ``shift``'s derivatives on the other 15;
#: the fit of whole steps, which ranks ``matmul``'s own step, picked them on 5 (2.1 to 2.7 times the fastest).
#: Nor ``col2im``'s derivatives after another engine's forward: timed so (AMD, the 32 such cases), they gave
#: the fastest step on 9 and 1.06 to 40 times the fastest on the others; allowed, the fit picked them on
#: 22 cases, and ``auto``'s steps came within 10% of the fastest on 57 of 78 (geometric mean 1.19), against
#: 67 (1.12) without them.
JAX_UNMIXED: Final = frozenset({("loop", "matmul"), *((forward, "col2im") for forward in BACKEND_METHODS["jax"] if forward != "col2im")})
#: Nor ``shift``'s derivatives of a depthwise convolution with several output channels per input
#: channel from this many kernel taps on.  Its weight derivative sums every tap's product apart
#: (one pass over the input and the gradient per tap), and the input's sums the channels' chains:
#: on every stored profile's mixed steps of such shapes (1-D: 33, 65 and 129 taps, two outputs per
#: channel; 2-D: 7x7), ``fft``'s derivatives (1-D) or ``matmul``'s (2-D) gave steps 1.5 to 14 times
#: faster (16 samples, 1 -> 2 channels, L 16384, 65 taps: 2.1-4.1 ms against 9.2-40), while the
#: forward ``shift`` stayed the fastest.  With one output per channel it was the fastest on some.
JAX_SHIFT_MULTIPLIER_TAPS: Final = FFT_MIN_TAPS
#: JAX's ``loop`` compiles one convolution per sample: beyond this batch it is not considered.
JAX_LOOP_MAX_BATCH: Final = 256
#: Nor for samples of fewer multiply-adds than this: each per-sample convolution costs XLA's CPU
#: runtime tens of microseconds whatever its size.
JAX_LOOP_MIN_SAMPLE_MACS: Final = 2**15


#: Dtypes PyTorch's CPU convolution computes with one parallel region per group (:func:`group_loop_risk`).
WIDE_LOOP_DTYPES: Final = frozenset({"float64", "complex128"})
#: What :func:`group_loop_risk` charges per group and loop: what each group took more, (11 - 5.3 ms) / 256, where a core lagged.
GROUP_LOOP_SECONDS: Final = 20e-6
#: Loops a training step is charged (:func:`group_loop_risk`): its loops hold three products per group.
TRAINING_LOOPS: Final = 3
#: Undilated, PyTorch's float64 convolution of this many spatial dims takes every group in one call (``slow_conv3d``).
GROUPED_CALL_NDIM: Final = 3

#: The calibration a CPU of an unmeasured vendor uses.
DEFAULT_PROFILE: Final = "GenuineIntel"


def _cpuinfo() -> dict[str, str]:
    """The first value of each field of ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_info(field: str) -> str:
    """The first value of ``field`` in ``/proc/cpuinfo`` (``"vendor_id"``, ``"model name"``, ``"model"``), or ``""``."""
    return _cpuinfo().get(field, "")


def cpu_vendor() -> str:
    """The CPU vendor (``GenuineIntel``, ``AuthenticAMD``), or ``""`` where ``/proc/cpuinfo`` does not say."""
    return cpu_info("vendor_id")


def cpu_name() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``'s ``model name``, else what :mod:`platform` says)."""
    return cpu_info("model name") or platform.processor() or platform.machine()


def cpu_model() -> str:
    """``<vendor>-family<F>-model<M>`` (``AuthenticAMD-family25-model17``), or ``""`` where ``/proc/cpuinfo`` does not say."""
    fields = _cpuinfo()  # one read for the three fields
    vendor, family, model = (fields.get(name, "") for name in ("vendor_id", "cpu family", "model"))
    return f"{vendor}-family{family}-model{model}" if vendor and family and model else ""


@functools.cache
def cpu_profile() -> str:
    """The calibration ``auto`` uses: ``MULTICONV_CPU_PROFILE``, else :func:`cpu_model`'s, else :func:`cpu_vendor`'s, else the default's."""
    chosen = os.environ.get("MULTICONV_CPU_PROFILE", "")
    if chosen and chosen not in COEFFICIENTS:
        raise ValueError(f"MULTICONV_CPU_PROFILE={chosen!r} names no calibration; measured: {', '.join(MACHINES)}")
    return next((name for name in (chosen, cpu_model(), cpu_vendor()) if name in COEFFICIENTS), DEFAULT_PROFILE)


def _gemm(batch: int, m: int, k: int, n: int) -> float:
    """Flops of ``batch`` products ``(m, k) @ (k, n)`` over an efficiency for thin shapes."""
    efficiency = (m / (m + 8)) * (k / (k + 8)) * (n / (n + 64))
    return 2.0 * batch * m * k * n / efficiency


def features(spec: ConvSpec, method: str, backend: str = "numpy") -> tuple[float, ...]:
    """The features of :data:`FEATURES` for ``method`` on ``spec`` (``backend``: who runs it)."""
    whole = _features(spec, method, backend)
    return _side_by_side(spec, method, whole) if backend == "numpy" else whole


def _side_by_side(spec: ConvSpec, method: str, whole: tuple[float, ...]) -> tuple[float, ...]:
    """NumPy's features as its engine runs: in batch chunks side by side (:mod:`multiconv._threads`).

    With ``n`` chunks of ``c`` samples on the BLAS's ``t`` threads, ``w = min(t, n)`` of
    them run at once (fewer where they would not fit the workspace limit together:
    :func:`multiconv._algorithms.numpy_lanes`), each thread working through ``ceil(n / w)``
    of them.  The work (products, copies, elementwise, transforms) divides by ``lanes =
    B / (ceil(n / w) * c)``, the batch over the samples one thread takes; the matrix
    products, which one chunk alone runs on all ``t`` BLAS threads and each of ``w``
    chunks on ``t // w``, by ``lanes * (t // w) / t``; the framework calls, made once per
    chunk under Python's lock, multiply by ``n``.  Where one sample's workspace exceeds
    the engine's chunk target (:data:`multiconv._algorithms.NUMPY_CHUNK_TARGETS`), its
    copies leave the caches: they
    count again as ``slow_copies``.
    """
    itemsize = 4 * _ITEM_SCALE[spec.dtype]
    chunk = numpy_chunk(spec, method, itemsize)
    chunks = -(-spec.batch // chunk) if spec.batch else 1
    threads = blas_threads()
    workers = max(1, min(threads, chunks, numpy_lanes(spec, method, itemsize)))
    share = threads // workers
    lanes = max(spec.batch, 1) / (-(-chunks // workers) * chunk)  # the batch over a thread's share (chunk <= batch)
    fixed, calls, products, gemm, copies, *work, _ = whole
    spilled = workspace_elements(spec, method, 1) * itemsize > NUMPY_CHUNK_TARGETS.get(method, CHUNK_TARGET)
    return (
        fixed,
        calls * chunks,
        products / lanes,
        gemm * threads / (share * lanes),
        copies / lanes,
        *(f / lanes for f in work),
        copies * spilled / lanes,
    )


def _features(spec: ConvSpec, method: str, backend: str) -> tuple[float, ...]:
    """:func:`features` of the whole batch, as if in one chunk."""
    b, g, cg, og = spec.batch, spec.groups, spec.group_in_channels, spec.group_out_channels
    c, o = spec.in_channels, spec.out_channels
    taps, positions = math.prod(spec.kernel), math.prod(spec.out_size)
    flops, items = _FLOP_SCALE[spec.dtype], _ITEM_SCALE[spec.dtype]
    depthwise = cg == 1
    if method == "shift":
        # Windows are copied before a matmul where they are not strided views (always in
        # JAX); XLA fuses a depthwise multiply-add chain into one loop without copies.
        fused = backend == "jax" and depthwise
        gathered = not fused and (backend == "jax" or spec.ndim > 1 or not spec.per_sample_weight)
        copies = (taps * b * c * positions if gathered else 0) + (0 if fused else (taps - 1) * b * o * positions)
        copies += 0 if backend == "jax" else b * c * phase_elements(spec)  # a strided input's phases
        products = 0 if depthwise else taps * b * g
        gemm = 0.0 if depthwise else taps * _gemm(b * g, og, cg, positions)
        elementwise = taps * b * o * positions if depthwise else 0
        return (1.0, float(taps), float(products), flops * gemm, items * copies, (items - 1) * copies, items * elementwise, 0.0, 0.0)
    if method == "col2im":
        # one product of every offset's weight with the whole padded input; each offset's slice of it added
        # (in 2-D and 3-D, the leading dims' windows copied first and the rest along the last dim: col2im_split)
        split = col2im_split(spec)
        inner = split or spec
        summed = math.prod(inner.kernel)
        gemm = _gemm(b * g, og * summed, inner.group_in_channels, math.prod(inner.padded_size))
        windows = b * inner.in_channels * math.prod(inner.in_size) if split else 0
        copies = summed * b * o * positions + windows
        return (1.0, 1.0 + col2im_slices(spec), float(b * g), flops * gemm, items * copies, (items - 1) * copies, 0.0, 0.0, 0.0)
    if method == "matmul":
        gemm = _gemm(b * g, og, cg * taps, positions)
        copies = b * c * taps * positions
        return (1.0, 1.0 + spec.ndim, float(b * g), flops * gemm, items * copies, (items - 1) * copies, 0.0, 0.0, 0.0)
    if method == "fft":
        blocks = fft_blocks(spec)
        points, count = blocks.transform_size, blocks.block_count
        bins = points if spec.dtype.startswith("complex") else blocks.half_spectrum
        weights = (b if spec.per_sample_weight else 1) * o * cg
        transforms = ((b * c + b * o) * count + weights) * points * math.log2(max(points, 2))
        products = 0 if depthwise else b * g * bins
        contraction = 0.0 if depthwise else 4 * _gemm(b * g * bins, og, cg, count)
        elementwise = 2 * b * o * count * bins if depthwise else 0
        copies = b * (c + o) * count * points
        return (
            1.0,
            1.0,
            float(products),
            flops * contraction,
            items * copies,
            (items - 1) * copies,
            items * elementwise,
            flops * transforms,
            0.0,
        )
    # a direct engine: the framework's own convolution, grouped over the batch, or one per sample ("loop")
    samples = b if spec.per_sample_weight else 1
    folded = samples if method == "loop" else samples * g
    gemm = _gemm(b * g, og, cg * taps, positions)
    copies = b * c * taps * positions
    unblocked = backend != "numpy" and bool(cg % 8 or og % 8) and not (depthwise and og == 1)
    return (1.0, float(folded), float(b * g), flops * gemm, items * copies, (items - 1) * copies, 0.0, 0.0, items * copies * unblocked)


def modelled(coefficients: tuple[float, ...], backend: str, spec: ConvSpec, method: str) -> float:
    """Seconds the model with ``coefficients`` gives ``method`` on ``spec``: their sum over :func:`features`."""
    return sum(c * f for c, f in zip(coefficients, features(spec, method, backend), strict=True))


def estimate(backend: str, spec: ConvSpec, method: str) -> float:
    """Modelled seconds of ``method`` on ``spec`` (CPU coefficients of ``backend`` for :func:`cpu_profile`).

    Plus :func:`group_loop_risk` for PyTorch's convolution where it loops over the groups.
    """
    return charged(COEFFICIENTS[cpu_profile()][backend][method], backend, spec, method)


def charged(coefficients: tuple[float, ...], backend: str, spec: ConvSpec, method: str, *, training: bool = False) -> float:
    """:func:`modelled` plus :func:`group_loop_risk` (of :data:`TRAINING_LOOPS` loops for a training step): what ``auto`` ranks."""
    loops = TRAINING_LOOPS if training else 1
    return modelled(coefficients, backend, spec, method) + group_loop_risk(backend, spec, method, loops=loops)


def group_loop_risk(backend: str, spec: ConvSpec, method: str, *, loops: int = 1) -> float:
    """Seconds :func:`estimate` and :func:`estimate_training` add to PyTorch's ``grouped`` where it loops over the groups.

    PyTorch's CPU convolution has no oneDNN kernel for float64: in 1-D and 2-D, and dilated
    in 3-D, it runs one convolution per group (an im2col and a matrix product), each its own
    parallel region that waits for every thread (profiled, torch 2.13: 8 ``thnn_conv2d``
    for 8 groups, one ``slow_conv3d`` for them undilated), and its backward one more per
    group; complex128 is three float64 convolutions, each looping.  Idle, that costs no more
    than one batched matmul; but while a core is slow to answer (another thread or process
    on it, or the benchmark host's own state), every region waits.  2 threads, AMD EPYC,
    256 samples of 16 channels, L 256, K 7 (float64): forward idle 5.0-5.7 ms against
    ``matmul``'s 5.2-6.1, with one other busy process 22-24 against 9.5-11.5; 16 samples
    0.30 against 0.19 idle, 1.3-1.5 against 0.20 busy (each group 44-95 us against 19-22
    idle).  Nothing else need be running: of the processes started one after another, the
    same convolution took 10.6-11.3 ms throughout in none to 5 of every 6, depending on the
    hour, and so did the benchmark's (run H 11.6; a run of 2026-12-06 11.4, with its
    training step 30.1 ms against ``matmul``'s 18.1 and an idle step's 16.4).  Charged
    :data:`GROUP_LOOP_SECONDS` per group and loop (``loops``: 1 for the forward, 3 for a
    training step, whose loops hold three products per group; three times as many for
    complex128), that shape runs ``matmul`` forward and in training: 1.06-1.25x the fold's
    idle time (benchmark run I, four runs of that shape after it, the stored calibration
    timings), about half its time when a core lags.  On average that pays once a core lags in
    more than about one process in five (forward) or four (training): on this host, about one
    in five of some 170 processes that day, in clusters of up to 5 in 6, and 4 of 10 benchmark
    processes.  Beside a busy process (a training loop's data workers are one) the forward
    took 22-24 against 9.5-11.5 ms, the training step 32-68 against 38-48.
    """
    if backend != "torch" or method != "grouped" or spec.dtype not in WIDE_LOOP_DTYPES:
        return 0.0
    if spec.ndim == GROUPED_CALL_NDIM and all(d == 1 for d in spec.dilation):
        return 0.0
    folded = (spec.batch if spec.per_sample_weight else 1) * spec.groups
    convolutions = 3 if spec.dtype == "complex128" else 1
    return GROUP_LOOP_SECONDS * folded * loops * convolutions if folded > 1 else 0.0


def estimate_training(backend: str, spec: ConvSpec, method: str) -> float:
    """Modelled seconds of one training step of ``method``: the output and the gradients of ``x`` and ``w``.

    The fit of timed training steps (``TRAINING_COEFFICIENTS``) where :func:`cpu_profile`
    has one for ``backend`` and ``method`` (:func:`charged`: plus the loops' risk), else the forward's estimate.
    """
    coefficients = TRAINING_COEFFICIENTS.get(cpu_profile(), {}).get(backend, {}).get(method)
    if coefficients is None:
        return estimate(backend, spec, method)
    return charged(coefficients, backend, spec, method, training=True)


def col2im_narrow(group_out_channels: int, group_in_channels: int) -> bool:
    """Whether groups hold :data:`COL2IM_NARROW` times as many input as output channels (``col2im``'s product the smaller)."""
    return group_out_channels * COL2IM_NARROW <= group_in_channels


def eligible(backend: str, spec: ConvSpec, method: str) -> bool:
    """Whether ``auto`` considers ``method`` at all (the guard rails around the fitted model)."""
    taps = math.prod(spec.kernel)
    if method == "fft":
        return taps >= FFT_MIN_TAPS
    if method == "shift" and backend == "jax":
        return spec.group_in_channels == 1 or taps <= JAX_SHIFT_MAX_TAPS
    if method == "col2im":
        narrow = col2im_narrow(spec.group_out_channels, spec.group_in_channels)
        if backend != "jax":
            return narrow
        # XLA compiles a slice of the product per tap it sums, like shift's dots, and one per window copied
        slices = col2im_slices(spec)
        return slices <= JAX_SHIFT_MAX_TAPS or (narrow and slices <= JAX_COL2IM_MAX_SLICES)
    if method == "loop":  # ungrouped only: each sample's convolution must avoid XLA's grouped path
        sample_macs = spec.out_channels * spec.in_channels * taps * math.prod(spec.out_size)
        small = spec.per_sample_weight and sample_macs < JAX_LOOP_MIN_SAMPLE_MACS
        return spec.batch <= JAX_LOOP_MAX_BATCH and spec.groups == 1 and not small
    # XLA's CPU grouped convolution (what vmap of a convolution becomes) was the fastest
    # engine on 4 of 78 calibration shapes on each CPU, and 37-38x slower in float64: never auto on CPU.
    return not (backend == "jax" and method == "vmap")


def _fits(spec: ConvSpec, method: str) -> bool:
    """Whether one sample's workspace (of the compute dtype) fits ``spec.workspace_limit``."""
    return workspace_elements(spec, method, 1) * 4 * _ITEM_SCALE[spec.dtype] <= spec.workspace_limit


def _candidates(backend: str, spec: ConvSpec, methods: Iterable[str]) -> list[str]:
    """The ``methods`` ``auto`` may run on ``spec``: :func:`eligible` ones whose workspace fits, else ``shift``.

    Only engines :func:`cpu_profile`'s calibration timed on ``backend``: one added since
    is not ranked there (JAX's ``col2im`` on the Intel profile).
    """
    timed = COEFFICIENTS[cpu_profile()][backend]
    return [m for m in methods if m in timed and eligible(backend, spec, m) and _fits(spec, m)] or ["shift"]


def tangent_candidates(backend: str, spec: ConvSpec, methods: Iterable[str]) -> list[str]:
    """The ``methods`` JAX may differentiate ``auto``'s forward engine ``spec.method`` through: itself first, then :func:`_candidates`.

    Those ``calibrate.py --training --mixed`` times; :func:`choose_tangent` ranks them less
    the pairs of :data:`JAX_UNMIXED`.
    """
    return list(dict.fromkeys([spec.method, *_candidates(backend, spec, methods)]))


def tangent_allowed(spec: ConvSpec, method: str) -> bool:
    """Whether :func:`choose_tangent` may take the derivatives of ``spec.method``'s forward through ``method``.

    Not the pairs of :data:`JAX_UNMIXED`, nor ``shift``'s derivatives of a depthwise
    ``spec`` with a channel multiplier and :data:`JAX_SHIFT_MULTIPLIER_TAPS` taps or more.
    """
    if (spec.method, method) in JAX_UNMIXED:
        return False
    multiplied = spec.group_in_channels == 1 and spec.group_out_channels > 1
    return not (method == "shift" and multiplied and math.prod(spec.kernel) >= JAX_SHIFT_MULTIPLIER_TAPS)


def pick_tangent(backend: str, spec: ConvSpec, coefficients: Mapping[str, tuple[float, ...]]) -> str:
    """The engine of least modelled training step, by ``coefficients`` (a fit of whole steps, per engine).

    Among :func:`tangent_candidates` of the engines fitted that :func:`tangent_allowed` lets
    follow ``spec.method``'s forward (``spec.method`` itself where none is: a forward engine
    timed since the steps were, until they are timed again).
    """
    options = [m for m in tangent_candidates(backend, spec, coefficients) if m in coefficients and tangent_allowed(spec, m)]
    return min(options, key=lambda m: modelled(coefficients[m], backend, spec, m)) if options else spec.method


def choose(backend: str, spec: ConvSpec, methods: tuple[str, ...], *, accelerator: bool = False) -> str:
    """The engine ``method="auto"`` runs: the least modelled time among those whose workspace fits."""
    direct = next(m for m in methods if m in DIRECT_ENGINES)
    if accelerator:
        return "fft" if math.prod(spec.kernel) >= GPU_FFT_TAPS else direct
    fitting = _candidates(backend, spec, methods)
    if spec.training and backend == "torch":
        return min(fitting, key=lambda m: estimate_training(backend, spec, m))
    return min(fitting, key=lambda m: estimate(backend, spec, m))


def choose_tangent(backend: str, spec: ConvSpec, *, accelerator: bool = False) -> str | None:
    """The engine JAX differentiates ``method="auto"`` through on CPU, when it is not the forward's.

    Where :func:`cpu_profile` has timed JAX training steps (``TRAINING_COEFFICIENTS``):
    the engine whose modelled training step is the least, among those timed that ``auto``
    considers (:func:`eligible`), whose workspace fits and that it may mix with the forward
    engine (:func:`tangent_allowed`).  ``None``: differentiate the
    forward engine itself, as on a profile without timed steps.  The model is of each engine's whole step, its own forward
    included, while ``auto`` runs the forward engine's forward and the tangent engine's
    derivatives (the benchmark's training rows time what ``auto`` runs).  Timed as ``auto``
    runs them (``calibrate.py --training --mixed``: the forward engine's forward with each
    candidate's derivatives, 78 cases on the Intel CPU), the step so picked was the fastest on
    56 and within 10% of it on 59, geometric mean 1.14, worst 2.7x: the derivatives of an
    engine after another's forward cost what its own step does not say (after ``loop``'s
    forward, ``matmul``'s derivatives took 19.0 ms where its own step took 6.4, and
    ``shift``'s 7.0 ms).  A fit of the derivatives alone to those steps picked better on the
    cases it was fitted to (64 of 78 within 10%, 1.07) but not on others: fitted to the
    benchmark's shapes and the even-numbered grid cases and scored on the odd-numbered ones,
    and the other way round, it scored 1.31 and 1.22, the whole-step fit so refitted 1.18
    and 1.28.  So it is not used (the prototype was not kept).  One pair is ruled out instead (:data:`JAX_UNMIXED`: ``matmul``'s
    derivatives after ``loop``'s forward): with it, 64 of 78 within 10%, geometric mean 1.08,
    worst 2.2; and on held-out halves 1.10 and 1.21.
    """
    if backend != "jax" or accelerator:
        return None
    timed = TRAINING_COEFFICIENTS.get(cpu_profile(), {}).get(backend)
    if timed is None:
        return None
    tangent = pick_tangent(backend, spec, timed)
    return None if tangent == spec.method else tangent
