"""The cost model behind ``method="auto"``.

Every engine's time on a backend is modelled as a non-negative combination of five
features of the convolution (:data:`FEATURES`):

``fixed``
    1: the engine's constant overhead per call.
``calls``
    framework operations the engine issues (one batched matmul per kernel offset
    for ``shift``; one convolution group per sample and group for the direct
    engines, whose cost grows with the number of groups they fold).
``gemm``
    multiply-add work, ``2 m k n`` per matrix product, divided by an efficiency
    ``m/(m+8) * k/(k+8) * n/(n+64)`` that falls for thin matrices (few channels
    per group, few output positions).
``memory``
    elements copied or streamed (im2col buffers, gathered windows, accumulation,
    depthwise multiply-adds, FFT blocks).
``fft``
    ``points * log2(points)`` over every transform of the overlap-save engine.

Work scales with the dtype: float64 counts twice, complex four (complex128 eight)
times for ``gemm`` and ``fft``; ``memory`` scales with the item size.  Half
precision is computed in float32 and costed so.

The coefficients of each (backend, engine) pair were fitted (non-negative least
squares on relative error) to timings of a grid of shapes, the benchmark's
shapes among them, by ``benchmarks/calibrate.py``; they live in
:mod:`multiconv._calibration` together with the machine they were measured on.
Only CPU timings exist: on a GPU, ``auto`` uses the framework's own convolution
(cuDNN) and switches to ``fft`` for kernels of 64 taps and more.

``fft`` turns every rounding error into a normwise one and lets a NaN or Inf
spread over its whole block, so ``auto`` picks it only when the model says the
kernel is long enough to pay (typically 64 taps or more); name another ``method``
to avoid it altogether.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from multiconv._algorithms import DIRECT_ENGINES, fft_blocks, workspace_elements
from multiconv._calibration import COEFFICIENTS

if TYPE_CHECKING:
    from multiconv._spec import ConvSpec

FEATURES: Final = ("fixed", "calls", "gemm", "memory", "fft")

#: Flop multiplier of each compute dtype (half precision is computed in float32).
_FLOP_SCALE: Final = {"float16": 1, "bfloat16": 1, "float32": 1, "float64": 2, "complex64": 4, "complex128": 8}
_ITEM_SCALE: Final = {"float16": 1, "bfloat16": 1, "float32": 1, "float64": 2, "complex64": 2, "complex128": 4}

#: On accelerators: kernels at least this long go to ``fft``, the rest to the direct engine.
GPU_FFT_TAPS: Final = 64


def _gemm(batch: int, m: int, k: int, n: int) -> float:
    """Flops of ``batch`` products ``(m, k) @ (k, n)`` over an efficiency for thin shapes."""
    efficiency = (m / (m + 8)) * (k / (k + 8)) * (n / (n + 64))
    return 2.0 * batch * m * k * n / efficiency


def features(spec: ConvSpec, method: str) -> tuple[float, float, float, float, float]:
    """The five features of :data:`FEATURES` for ``method`` on ``spec``."""
    b, g, cg, og = spec.batch, spec.groups, spec.group_in_channels, spec.group_out_channels
    c, o = spec.in_channels, spec.out_channels
    taps, positions = math.prod(spec.kernel), math.prod(spec.out_size)
    flops, items = _FLOP_SCALE[spec.dtype], _ITEM_SCALE[spec.dtype]
    depthwise = cg == 1
    if method == "shift":
        gemm = 0.0 if depthwise else taps * _gemm(b * g, og, cg, positions)
        memory = taps * b * (c + 3 * o) * positions
        return (1.0, float(taps), flops * gemm, items * memory, 0.0)
    if method == "matmul":
        gemm = _gemm(b * g, og, cg * taps, positions)
        memory = 2 * b * c * taps * positions + b * o * positions
        return (1.0, 1.0, flops * gemm, items * memory, 0.0)
    if method == "fft":
        blocks = fft_blocks(spec)
        points, count = blocks.transform_size, blocks.block_count
        bins = points if spec.dtype.startswith("complex") else blocks.half_spectrum
        weights = (b if spec.per_sample_weight else 1) * o * cg
        transforms = ((b * c + b * o) * count + weights) * points * math.log2(max(points, 2))
        contraction = 0.0 if depthwise else 4 * _gemm(b * g * bins, og, cg, count)
        memory = 2 * b * (c + o) * count * points + (2 * b * o * count * bins if depthwise else 0)
        return (1.0, 1.0, flops * contraction, items * memory, flops * transforms)
    # a direct engine: the framework's own (grouped) convolution
    folded = b * g if spec.per_sample_weight else g
    gemm = _gemm(b * g, og, cg * taps, positions)
    return (1.0, float(folded), flops * gemm, items * b * c * taps * positions, 0.0)


def estimate(backend: str, spec: ConvSpec, method: str) -> float:
    """Modelled seconds of ``method`` on ``spec`` (CPU coefficients of ``backend``)."""
    coefficients = COEFFICIENTS[backend][method]
    return sum(c * f for c, f in zip(coefficients, features(spec, method), strict=True))


def _fits(spec: ConvSpec, method: str, itemsize: int) -> bool:
    """Whether one sample's workspace fits ``spec.workspace_limit``."""
    return workspace_elements(spec, method, 1) * itemsize <= spec.workspace_limit


def choose(backend: str, spec: ConvSpec, methods: tuple[str, ...], *, accelerator: bool = False) -> str:
    """The engine ``method="auto"`` runs: the least modelled time among those whose workspace fits."""
    direct = next(m for m in methods if m in DIRECT_ENGINES)
    if accelerator:
        return "fft" if math.prod(spec.kernel) >= GPU_FFT_TAPS else direct
    itemsize = 4 * _ITEM_SCALE[spec.dtype]
    fitting = [m for m in methods if _fits(spec, m, itemsize)] or ["shift"]
    return min(fitting, key=lambda m: estimate(backend, spec, m))
