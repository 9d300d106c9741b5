"""Engine geometry shared by every backend, free of any framework.

The engines (``shift``, ``matmul``, ``fft`` and each framework's direct one) are
written once per backend, but the numbers they work with (which input window a
kernel offset reads, how overlap-save cuts the input into blocks, how much
workspace a batch chunk needs) are computed here, once.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from multiconv._spec import ConvSpec

#: Engines that are the framework's own convolution (JAX has two: vmap of it, and a loop of it).
DIRECT_ENGINES: Final = ("einsum", "grouped", "vmap", "loop")


@lru_cache(maxsize=512)
def kernel_taps(spec: ConvSpec) -> tuple[tuple[tuple[int, ...], tuple[slice, ...]], ...]:
    """Every kernel offset ``(k_1, ..., k_N)`` (C order) with the input window it reads.

    The window is one slice per spatial dim of the padded input: the positions
    that offset multiplies, for every output position.
    """
    return tuple(
        (
            offset,
            tuple(
                slice(k * d, k * d + (n - 1) * s + 1, s)
                for k, d, n, s in zip(offset, spec.dilation, spec.out_size, spec.stride, strict=True)
            ),
        )
        for offset in itertools.product(*(range(k) for k in spec.kernel))
    )


@dataclass(frozen=True)
class StridePhases:
    """:func:`kernel_taps` regrouped by stride phase (see :func:`stride_phases`).

    ``phases``: each phase's slices of the padded input, every ``stride``-th position
    from its first.  ``taps``: per kernel offset (C order), the phase it reads and its
    window there, one unit-step slice per spatial dim.
    """

    phases: tuple[tuple[slice, ...], ...]
    taps: tuple[tuple[int, tuple[slice, ...]], ...]


@lru_cache(maxsize=512)
def stride_phases(spec: ConvSpec) -> StridePhases:
    """The strided input split into the phases its kernel offsets read, each window a plain slice of one.

    With a stride ``s``, offset ``o`` (``k * dilation``) reads positions ``o, o + s, ...``:
    phase ``o % s`` of the input from its item ``o // s``.  Each phase the offsets read
    spans only the items they read (from the first offset's start to the last one's
    end), so the phases hold about one input's worth together, however many offsets
    share each.
    """
    spans: list[dict[int, tuple[int, int]]] = []
    for k, d, s in zip(spec.kernel, spec.dilation, spec.stride, strict=True):
        span: dict[int, tuple[int, int]] = {}
        for o in range(0, k * d, d):
            low, high = span.get(o % s, (o // s, o // s))
            span[o % s] = (min(low, o // s), max(high, o // s))
        spans.append(span)
    combos: list[tuple[int, ...]] = []
    taps = []
    for offset, _ in kernel_taps(spec):
        combo = tuple(k * d % s for k, d, s in zip(offset, spec.dilation, spec.stride, strict=True))
        if combo not in combos:
            combos.append(combo)
        window = tuple(
            slice(k * d // s - span[p][0], k * d // s - span[p][0] + n)
            for k, d, s, n, p, span in zip(offset, spec.dilation, spec.stride, spec.out_size, combo, spans, strict=True)
        )
        taps.append((combos.index(combo), window))
    phases = tuple(
        tuple(
            slice(p + span[p][0] * s, p + (span[p][1] + n - 1) * s + 1, s)
            for p, s, n, span in zip(combo, spec.stride, spec.out_size, spans, strict=True)
        )
        for combo in combos
    )
    return StridePhases(phases, tuple(taps))


def phase_elements(spec: ConvSpec) -> int:
    """Items of one channel of one sample in :func:`stride_phases`' phases; 0 without a stride (no phases)."""
    if all(step == 1 for step in spec.stride):
        return 0
    return sum(
        math.prod(len(range(*part.indices(size))) for part, size in zip(phase, spec.padded_size, strict=True))
        for phase in stride_phases(spec).phases
    )


@cache
def next_fast_len(n: int) -> int:
    """The smallest ``2**a * 3**b * 5**c`` that is at least ``n`` (fast for every FFT library)."""
    best = 1 << max(n - 1, 0).bit_length()
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            candidate = power35
            while candidate < n:
                candidate *= 2
            best = min(best, candidate)
            power35 *= 3
        power5 *= 5
    return best


@dataclass(frozen=True)
class FFTBlocks:
    """Overlap-save geometry, per spatial dim.

    The stride-1 correlation of the padded input (``full`` outputs) is computed in
    ``blocks`` transforms of length ``nfft``, each yielding ``step`` outputs; the
    input is zero-extended to ``extent`` so every block is complete.  Outputs of a
    block are the circular convolution's entries ``[effective - 1, nfft)``.
    """

    nfft: tuple[int, ...]
    step: tuple[int, ...]
    blocks: tuple[int, ...]
    full: tuple[int, ...]
    extent: tuple[int, ...]
    effective: tuple[int, ...]

    @property
    def block_count(self) -> int:
        """Blocks in all."""
        return math.prod(self.blocks)

    @property
    def transform_size(self) -> int:
        """Points of one N-d transform."""
        return math.prod(self.nfft)

    @property
    def half_spectrum(self) -> int:
        """Complex bins of one real N-d transform (last dim halved)."""
        return math.prod(self.nfft[:-1]) * (self.nfft[-1] // 2 + 1)


def _block_length(padded: int, effective: int) -> int:
    """The transform length with the least work per output for one dim."""
    full = padded - effective + 1
    single = next_fast_len(padded)
    candidates = {single} | {next_fast_len(factor * effective) for factor in (2, 3, 4, 6, 8, 12, 16)}

    def work(nfft: int) -> float:
        step = nfft - effective + 1
        return math.ceil(full / step) * nfft * math.log2(max(nfft, 2))

    return min((n for n in candidates if n >= effective and n <= single), key=work)


@lru_cache(maxsize=512)
def fft_blocks(spec: ConvSpec) -> FFTBlocks:
    """Overlap-save blocks sized from the kernel: never one full-length transform of every weight."""
    effective = spec.effective_kernel
    padded = spec.padded_size
    nfft = tuple(_block_length(p, e) for p, e in zip(padded, effective, strict=True))
    step = tuple(n - e + 1 for n, e in zip(nfft, effective, strict=True))
    full = tuple(p - e + 1 for p, e in zip(padded, effective, strict=True))
    blocks = tuple(math.ceil(f / s) for f, s in zip(full, step, strict=True))
    extent = tuple((b - 1) * s + n for b, s, n in zip(blocks, step, nfft, strict=True))
    return FFTBlocks(nfft, step, blocks, full, extent, effective)


@lru_cache(maxsize=512)
def col2im_split(spec: ConvSpec) -> ConvSpec | None:
    """The convolution ``col2im`` runs on after gathering windows along every spatial dim but the last, or ``None``.

    In 2-D and 3-D, ``col2im`` copies the input's windows along the leading dims (an
    im2col of those taps: ``K_1 * ... * K_{N-1}`` shifted copies of the input, each
    cut to the output's rows), which become input channels, and runs its product and
    shifted sum along the last dim only: a kernel ``(1, ..., 1, K_N)`` whose stride and
    dilation are the last dim's.  The product holds ``K_N`` instead of every tap's
    contribution, over the output's rows instead of the padded input's, and its inner
    dimension grows by the leading taps.  JAX, AMD EPYC (float32, batch chunks of about
    8 MiB): 16 samples of 32 channels, 64x64, 3x3 took 5.8 against 7.3 ms whole; 4 samples
    of 32 channels, 64x64, 5x5, 2.6 against 2.8; 2 samples of 256 -> 512 channels, 32x32,
    3x3, 11.7 against 23.8; 8 samples of 16 channels, 16^3, 3x3x3, 2.3 against 4.6;
    with a stride of 2 (256 samples of 4 -> 8 channels, 32x32, 3x3) 1.9 against 6.8,
    since the leading dims' stride is applied by the copies.  ``None`` (the whole
    ``col2im``) in 1-D, for kernels with one tap on the leading dims, for one input
    channel per group, where the copies cost more than they save (depthwise 3x3: 256
    samples of 8 channels, 16x16, 0.54 against 0.12 ms), and where the copies and the
    product would take more memory than every offset's product (many more input than
    output channels: 256 -> 8 channels, 32x32, 3x3, ten times as much).
    """
    lead = math.prod(spec.kernel[:-1])
    if spec.ndim == 1 or lead == 1 or spec.group_in_channels == 1:
        return None
    ones = (1,) * (spec.ndim - 1)
    split = replace(
        spec,
        in_channels=spec.in_channels * lead,
        in_size=(*spec.out_size[:-1], spec.padded_size[-1]),
        kernel=(*ones, spec.kernel[-1]),
        stride=(*ones, spec.stride[-1]),
        dilation=(*ones, spec.dilation[-1]),
        padding=((0, 0),) * spec.ndim,
        padding_mode="zeros",
    )
    return split if _split_elements(split) <= _product_elements(spec) else None


def _product_elements(spec: ConvSpec) -> int:
    """One sample's ``col2im`` product: every kernel offset's contribution over the whole padded input."""
    return math.prod(spec.kernel) * spec.out_channels * math.prod(spec.padded_size)


def _split_elements(split: ConvSpec) -> int:
    """One sample's workspace of :func:`col2im_split`'s ``col2im``: the leading dims' windows and the last dim's products."""
    return split.in_channels * math.prod(split.in_size) + _product_elements(split)


def col2im_slices(spec: ConvSpec) -> int:
    """The slices ``col2im`` compiles: one of the product per offset it sums, and one per leading offset's window (split)."""
    split = col2im_split(spec)
    summed = math.prod((split or spec).kernel)
    return summed if split is None else summed + math.prod(spec.kernel) // summed


def workspace_elements(spec: ConvSpec, method: str, batch: int) -> int:
    """Scratch elements (of the compute dtype; complex counts double) an engine needs for ``batch`` samples.

    Inputs, the output and the padded copy of one chunk of the input are not counted.
    """
    positions = math.prod(spec.out_size)
    taps = math.prod(spec.kernel)
    if method == "shift":
        # one product and one gathered window per kernel offset, reused; with a stride, the
        # input's phases (NumPy and PyTorch copy them: multiconv._engines.shift; counted on JAX
        # too, which does not, so its chunks are bounded as they were timed)
        return batch * ((spec.out_channels + spec.in_channels) * positions + spec.in_channels * phase_elements(spec))
    if method == "col2im":
        # every kernel offset's product over the whole padded input, or the leading dims' windows
        # and the last dim's offsets' products over them (col2im_split)
        split = col2im_split(spec)
        return batch * (_product_elements(spec) if split is None else _split_elements(split))
    if method == "fft":
        blocks = fft_blocks(spec)
        bins = 2 * blocks.half_spectrum * blocks.block_count
        per_sample = (spec.in_channels + 2 * spec.out_channels) * bins + spec.out_channels * blocks.transform_size * blocks.block_count
        weight = 2 * spec.out_channels * spec.group_in_channels * blocks.half_spectrum
        return batch * (per_sample + (weight if spec.per_sample_weight else 0)) + (0 if spec.per_sample_weight else weight)
    # matmul and the direct engines: an im2col buffer of every window
    return batch * spec.in_channels * taps * positions


#: Scratch per batch chunk the shared engines aim for (under ``workspace_limit``): buffers
#: this size stay in the allocator's heap and near the caches; a 60 MiB im2col buffer was
#: measured up to 2.5x slower per element than 32 MiB chunks of it.
CHUNK_TARGET: Final = 32 * 2**20


#: Elements one framework call may touch in any one array: kernels with 32-bit indexing
#: (CUDA convolutions, some XLA paths) fail or overflow past it.
INDEX_LIMIT: Final = 2**31 - 1


def sample_elements(spec: ConvSpec, method: str) -> int:
    """The most elements one sample puts in any array of an engine call: input, weight, output or workspace."""
    weight = spec.out_channels * spec.group_in_channels * math.prod(spec.kernel) if spec.per_sample_weight else 0
    return max(
        spec.in_channels * math.prod(spec.padded_size),
        spec.out_channels * math.prod(spec.out_size),
        weight,
        workspace_elements(spec, method, 1),
        1,
    )


@lru_cache(maxsize=512)
def batch_chunk(spec: ConvSpec, method: str, itemsize: int, *, limit_only: bool = False) -> int:
    """The batch chunk an engine works on: its workspace fits ``spec.workspace_limit``.

    The shared engines also keep a chunk's workspace near :data:`CHUNK_TARGET`; the
    framework's own convolutions (and, with ``limit_only``, a backend's engine whose
    buffers that target does not describe) chunk only when the limit requires it.  Every
    array of a chunk also stays within :data:`INDEX_LIMIT` elements (one sample larger
    than that goes alone: it cannot be cut along the batch).
    """
    if spec.batch == 0:
        return 1
    budget = spec.workspace_limit if limit_only or method in DIRECT_ENGINES else min(spec.workspace_limit, CHUNK_TARGET)
    per_sample = max(workspace_elements(spec, method, 1) * itemsize, 1)
    indexable = INDEX_LIMIT // sample_elements(spec, method)
    return max(1, min(spec.batch, budget // per_sample, indexable))


def aimed_chunk(spec: ConvSpec, method: str, itemsize: int, target: int) -> int:
    """:func:`batch_chunk`, smaller where a backend's engine runs faster on chunks of about ``target`` bytes of workspace."""
    per_sample = max(workspace_elements(spec, method, 1) * itemsize, 1)
    return max(1, min(batch_chunk(spec, method, itemsize), target // per_sample))


#: NumPy's window engines (im2col, shifted products, einsum) work on batch chunks of about
#: this much workspace each, under :func:`batch_chunk`'s, so that a
#: chunk's buffers stay in one core's cache while that core works on it (the chunks run
#: side by side, see :mod:`multiconv._threads`).  Measured with OpenBLAS: ``matmul``, 256
#: samples of 16 channels, L 256, K 7 (AMD EPYC, 2 threads, one chunk after another):
#: float32 7.9 -> 5.2 ms at 4 MiB, float64 16.4 -> 11.2.  ``shift`` keeps a product and a
#: window per tap, re-read K times: it aims lower (Intel Xeon, 2 chunks side by side,
#: 512 KiB against 4 MiB: that shape 2.5 -> 1.8 ms, in float64 5.6 -> 4.1; 32 samples of
#: 256 channels depthwise, K 16, 5.5 -> 2.4; on one thread 5.7 -> 3.4, 10.8 -> 6.6 and
#: 7.1 -> 5.4).  ``col2im``'s product, re-read by its shifted sums, aims at 4 MiB too (AMD EPYC, 2
#: threads, against the whole batch: 64 samples of 64 channels, L 1024, K 3, 30.4 -> 15.3 ms; 256
#: samples of 16 channels, L 256, K 7, 13.5 -> 5.1; 32 samples of 256 -> 1 channels, 22x22, 6x6, 5.1 -> 4.5).
#: ``fft`` keeps the shared target.
NUMPY_CHUNK_TARGETS: Final[Mapping[str, int]] = {"einsum": 4 * 2**20, "matmul": 4 * 2**20, "col2im": 4 * 2**20, "shift": 2**19}


#: Multiply-adds a NumPy chunk carries at least, where the workspace limit allows: each chunk
#: costs a few framework calls and a hand-off between threads (5-20 us), which small samples
#: do not pay for (128 samples of 4 -> 8 channels, 16x16, 1x1, ``shift``: 46 us whole, 144 us
#: in 4 chunks side by side).
NUMPY_MIN_CHUNK_MACS: Final = 2**20


def numpy_chunk(spec: ConvSpec, method: str, itemsize: int) -> int:
    """The batch chunk NumPy's ``method`` works on.

    Aimed at :data:`NUMPY_CHUNK_TARGETS` of workspace (else :func:`batch_chunk`'s), with
    :data:`NUMPY_MIN_CHUNK_MACS` at least, within :func:`batch_chunk`'s.
    """
    target, limit = NUMPY_CHUNK_TARGETS.get(method), batch_chunk(spec, method, itemsize)
    aimed = limit if target is None else aimed_chunk(spec, method, itemsize, target)
    sample_macs = spec.out_channels * spec.group_in_channels * math.prod(spec.kernel) * math.prod(spec.out_size)
    return min(limit, max(aimed, -(-NUMPY_MIN_CHUNK_MACS // max(sample_macs, 1))))


def numpy_lanes(spec: ConvSpec, method: str, itemsize: int) -> int:
    """The most of NumPy's chunks (:func:`numpy_chunk`) that may run at once (at least 1).

    As many as fit ``spec.workspace_limit`` together, each with its workspace, its padded
    copy of the input and its output.
    """
    chunk = numpy_chunk(spec, method, itemsize)
    padded = spec.in_channels * math.prod(spec.padded_size)
    output = spec.out_channels * math.prod(spec.out_size)
    each = (workspace_elements(spec, method, chunk) + chunk * (padded + output)) * itemsize
    return max(1, spec.workspace_limit // max(each, 1))


def batch_slices(spec: ConvSpec, method: str, itemsize: int, chunk: int | None = None) -> Iterator[slice]:
    """Consecutive batch slices of ``chunk`` samples (default: :func:`batch_chunk`'s), each within the workspace limit."""
    chunk = batch_chunk(spec, method, itemsize) if chunk is None else chunk
    for start in range(0, max(spec.batch, 1), chunk):
        yield slice(start, min(start + chunk, spec.batch))


@dataclass(frozen=True)
class DepthwiseAdjoints:
    """The derivatives of a depthwise per-sample convolution, as two more depthwise convolutions.

    For ``y = conv(xp, w)`` on the padded input ``xp`` (``C_in // groups == 1``, weight
    ``(B, C_out, 1, *K)``) and a cotangent ``g`` shaped like ``y``:

    * ``dxp = conv(dilate(g), flip(w))`` under :attr:`input`: ``g`` gets ``stride - 1``
      zeros between its entries and the zero padding :attr:`dilate_pad` (``(lo, hi,
      interior)`` per spatial dim), the weight is read as ``(B, groups, C_out // groups,
      *K)`` and flipped; the result has the padded input's shape.
    * ``dw = conv(xp[crop], g)`` under :attr:`weight`: ``g`` is the kernel
      ``(B, C_out, 1, *S_out)``, ``dilation`` becomes the stride and ``stride`` the
      dilation, and ``xp`` is cut to :attr:`weight`'s ``in_size`` so that exactly ``K``
      positions come out.

    Both are cross-correlations of per-sample weights with zero padding, channels first.
    """

    input: ConvSpec
    dilate_pad: tuple[tuple[int, int, int], ...]
    weight: ConvSpec


def uncovered(spec: ConvSpec) -> tuple[int, ...]:
    """Positions of the padded input past the last window, per spatial dim (``(S - extent) % stride``).

    A transposed convolution of the result comes out this much shorter than the input.
    """
    return tuple((p - e) % s for p, e, s in zip(spec.padded_size, spec.effective_kernel, spec.stride, strict=True))


def depthwise_adjoints(spec: ConvSpec) -> DepthwiseAdjoints:
    """:class:`DepthwiseAdjoints` for a per-sample depthwise ``spec`` (its engine's geometry)."""
    zeros = tuple((0, 0) for _ in spec.kernel)

    def plain(**geometry: tuple[int, ...] | int) -> ConvSpec:  # a per-sample cross-correlation, zero padding, channels first
        return replace(
            spec,
            padding=zeros,
            padding_mode="zeros",
            layout="channels_first",
            flip=False,
            weight_kind="per_sample",
            bias_kind="none",
            method="shift",
            tangent_method=None,
            training=False,
            **geometry,  # type: ignore[arg-type]
        )

    reach = spec.spread_out_size  # dilated g's extent
    tails = uncovered(spec)
    dilate_pad = tuple((e - 1, e - 1 + t, s - 1) for e, t, s in zip(spec.effective_kernel, tails, spec.stride, strict=True))
    input_spec = plain(
        in_channels=spec.out_channels,
        out_channels=spec.in_channels,
        in_size=tuple(r + 2 * (e - 1) + t for r, e, t in zip(reach, spec.effective_kernel, tails, strict=True)),
        stride=(1,) * spec.ndim,
        out_size=spec.padded_size,
    )
    weight_spec = plain(
        in_size=tuple(r + e - 1 for r, e in zip(reach, spec.effective_kernel, strict=True)),
        kernel=spec.out_size,
        stride=spec.dilation,
        dilation=spec.stride,
        out_size=spec.kernel,
    )
    return DepthwiseAdjoints(input_spec, dilate_pad, weight_spec)
