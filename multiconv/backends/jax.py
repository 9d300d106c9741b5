"""JAX backend: the shared engines of :mod:`multiconv._engines` plus ``vmap`` and ``loop``.

``vmap`` is ``jax.vmap`` over ``jax.lax.conv_general_dilated``; ``loop`` one such
convolution per sample.  XLA runs ``col2im``'s one product and shifted sums faster than an
im2col buffer (the benchmark's 64 samples of 64 channels, L 1024, K 3, AMD EPYC: 7.2 against
10.8 ms for ``matmul``), where NumPy and PyTorch ran it slower than their other engines (9.0
against 5.4, 23.7 against 5.3 ms; their ``auto`` runs it only for groups of many more input
than output channels, ``multiconv._cost.COL2IM_NARROW``).  The whole
convolution is one jitted function per spec (a static argument), so an eager call
costs one dispatch and, inside the caller's ``jit``, it is inlined.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, Final

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from multiconv import _engines
from multiconv._algorithms import (
    DIRECT_ENGINES,
    DepthwiseAdjoints,
    aimed_chunk,
    batch_chunk,
    col2im_split,
    depthwise_adjoints,
    kernel_taps,
)
from multiconv._cost import choose, choose_tangent
from multiconv._engines import index, pairwise_sum, window_counts
from multiconv._spec import COMPLEX_DTYPES, HALF_DTYPES, ArrayInfo
from multiconv.backends import host_array, spatial_slices

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from multiconv._engines import Engine
    from multiconv._spec import ConvSpec
    from multiconv.backends import Runner

_JAX_PAD_MODES: Final = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_SPATIAL: Final = "DHW"
_ALL: Final = slice(None)


def signature(a: jax.Array) -> Hashable:
    """What validation reads from ``a``, hashable (see ``multiconv._dispatch.signature``)."""
    if isinstance(a, jax.core.Tracer):
        return (type(a), a.shape, a.dtype)
    return (type(a), a.shape, a.dtype, a.sharding)


def info(a: jax.Array, name: str) -> ArrayInfo:  # noqa: ARG001
    """Shape, dtype name and (for a concrete single-device array) device."""
    device = None
    if not isinstance(a, jax.core.Tracer):
        devices = a.devices()
        device = str(next(iter(devices))) if len(devices) == 1 else None
    return ArrayInfo(tuple(a.shape), a.dtype.name, device)


def from_numpy(a: np.ndarray, like: jax.Array | None = None) -> jax.Array:
    """A NumPy array as a JAX array with ``like``'s dtype, on ``like``'s device."""
    a = host_array(a)
    if like is None:
        return jnp.asarray(a)
    array = jnp.asarray(a, dtype=like.dtype)
    if not isinstance(like, jax.core.Tracer) and len(like.devices()) == 1:
        array = jax.device_put(array, next(iter(like.devices())))
    return array


def to_numpy(a: jax.Array, name: str) -> np.ndarray:
    """A host copy of a JAX array; bfloat16 is widened to float32."""
    if isinstance(a, jax.core.Tracer):
        raise TypeError(
            f"{name} is a JAX tracer (inside jit, grad or vmap), but the chosen backend computes outside JAX; "
            "use backend='jax' (or None) under JAX transformations"
        )
    host = np.asarray(a)
    return host.astype(np.float32) if host.dtype.name == "bfloat16" else host


def _on_accelerator(spec: ConvSpec) -> bool:
    if spec.device is None:  # a tracer: it runs where JAX runs by default
        return jax.default_backend() != "cpu"
    return not spec.device.startswith(("cpu", "TFRT_CPU"))


def choose_method(spec: ConvSpec) -> str:
    """The engine for ``method="auto"`` (see :mod:`multiconv._cost`)."""
    return choose("jax", spec, tuple(METHODS), accelerator=_on_accelerator(spec))


def choose_tangent_method(spec: ConvSpec) -> str | None:
    """The engine ``method="auto"`` is differentiated through, if not its own (see :func:`multiconv._cost.choose_tangent`)."""
    return choose_tangent("jax", spec, accelerator=_on_accelerator(spec))


def _conv_kwargs(spec: ConvSpec) -> dict[str, Any]:
    """``lax.conv_general_dilated`` arguments for a mode-padded, channels-first input (zero padding is the conv's)."""
    spatial = _SPATIAL[-spec.ndim :]
    return {
        "window_strides": spec.stride,
        "padding": list(spec.zero_padding),
        "rhs_dilation": spec.dilation,
        "dimension_numbers": (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}"),
        "feature_group_count": spec.groups,
        "precision": lax.Precision.HIGHEST,
    }


def _vmap(spec: ConvSpec) -> Engine:
    """``jax.vmap`` of the framework convolution over the batch (plain call for a shared weight)."""
    kwargs = _conv_kwargs(spec)

    def one(xb: jax.Array, wb: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(xb[None], wb, **kwargs)[0]

    def run(x: jax.Array, w: jax.Array) -> jax.Array:
        if not spec.per_sample_weight:
            return lax.conv_general_dilated(x, w, **kwargs)
        result: jax.Array = jax.vmap(one)(x, w)
        return result

    return run


def _loop(spec: ConvSpec) -> Engine:
    """One framework convolution per sample, unrolled inside the compiled call; derivatives in its layouts (:func:`_loop_adjoints`).

    XLA's CPU convolution is much faster ungrouped than grouped (which ``vmap``
    becomes), at the price of a compile time that grows with the batch.  JAX's own
    derivatives of each sample's convolution are convolutions whose operands'
    dimensions it swaps (``dimension_numbers``), which XLA's CPU backend ran 10 to 30
    times slower than the forward: 256 samples of 16 channels, L 256, 7 taps (AMD EPYC,
    2 threads), the forward 6.5 ms, the input's VJP 176 ms, the weight's 89.  With the
    operands transposed into the forward's layout first (:func:`_loop_adjoints`), 9.8
    and 7.9; the training step 226 -> 22 ms.
    """
    kwargs = _conv_kwargs(spec)

    def run(x: jax.Array, w: jax.Array) -> jax.Array:
        if not spec.per_sample_weight:
            return lax.conv_general_dilated(x, w, **kwargs)
        return jnp.concatenate([lax.conv_general_dilated(x[b : b + 1], w[b], **kwargs) for b in range(x.shape[0])])

    if not spec.per_sample_weight:
        return run
    return _with_adjoints(run, *_loop_adjoints(spec))


#: :func:`_loop`'s derivatives are one product per kernel tap (rather than a convolution per
#: sample) for at most this many taps: strided, both; unstrided, only the weight's, in 2-D and 3-D
#: with at most :data:`LOOP_WEIGHT_TAPS_MAX_POSITIONS` output positions (or one tap); depthwise, neither
#: (``shift``'s depthwise derivatives instead); see :func:`_loop_adjoints`.
LOOP_TAPS_MAX: Final = 64
LOOP_WEIGHT_TAPS_MAX_POSITIONS: Final = 1024


def _loop_adjoints(spec: ConvSpec) -> tuple[Engine, Engine]:
    """``(w, g) -> dx`` and ``(x, g) -> dw`` of :func:`_loop`'s convolution, per sample, in the forward's layouts.

    They are the convolutions of JAX's own transposition rules (``lax.conv_general_dilated``'s
    VJP: the same paddings) with the operands laid out as the forward's (``NC*``, ``OI*``)
    rather than by swapped ``dimension_numbers``, and with ``g`` spread by the stride
    (``stride - 1`` zeros between its entries) rather than dilated by the convolution.  The
    input's: spread ``g`` convolved with the weight flipped and its channels exchanged
    within each group.  The weight's: the input's channels as a batch, each group's as one
    feature of a grouped convolution, with spread ``g`` as its kernel (the dilation as its
    stride), giving ``(C_in / groups, C_out, *K)``, then transposed.  Spread rather than
    dilated, the weight's ran 2.7 times as fast (128 samples of 8 -> 16 channels, L 256,
    7 taps, stride 2, AMD EPYC: 3.9 against 10.6 ms; the forward 1.4), the input's 1.1.

    Up to :data:`LOOP_TAPS_MAX` taps, where the stride spreads ``g``, both are one batched
    product per kernel tap instead: the input's, each tap's weight (transposed) times ``g``,
    padded to where that tap read the input and summed; the weight's, ``g`` times the
    input's slice that tap reads.  Spread, ``g``'s zeros cost ``prod(stride)`` times the
    work in the convolutions: the input's derivative of 16 samples of 8 -> 16 channels,
    32x32, 7x7, stride 2, took 3.9 against 12.8 ms (the forward 0.5); of 256 samples of
    1 -> 2 channels, 32x32, 3x3, stride 2, 1.0 against 11.2; of the case above, 1.4
    against 1.8; unstrided, the convolution kept the lead (16 of 32 channels, 64x64, 3x3:
    20 against 50 ms).  Unstrided, the weight's convolution takes the whole of ``g`` as its
    kernel, which XLA's CPU code also ran slowly in 2-D and 3-D on small outputs: there
    (at most :data:`LOOP_WEIGHT_TAPS_MAX_POSITIONS` output positions, or one tap) the
    weight's derivative is the per-tap products too.  The weight's derivative, per tap
    against the convolution, on the float32 calibration cases of up to 128 samples (AMD
    EPYC, 2 threads): the strided case above, 1.2 against 4.0 ms; 16 samples of 8 -> 16 channels, 32x32, 3x3, 1.1 against 5.2;
    32 samples of 32 channels depthwise, 8x8, 3x3, 0.6 against 3.3.  The convolution kept
    its lead in 1-D unstrided (256 samples of 16 channels, L 256, 7 taps: 4.2 against
    10.9-14.6 ms) and on larger 2-D outputs (16 samples of 32 channels, 64x64, 3x3: 32
    against 70 ms).

    The per-tap forms are what transposing :func:`multiconv._engines.shift` (``jax.linear_transpose``
    on the zero-padded input) would give, written out because they ran faster than that
    transpose on every case timed (float32, AMD EPYC, 2 threads): the input's 2-26% (the strided
    case above, 2.3-2.7 against 2.6-2.9 ms; 256 samples of 1 -> 2 channels, 32x32, 3x3,
    stride 2, 0.9 against 1.1); the weight's up to 4 times (8 samples of 32 channels
    depthwise, 32x32, 3x3: 1.0 against 3.9 ms; 16 samples of 8 -> 16 channels, 32x32, 7x7,
    stride 2: 2.1 against 3.7).

    Depthwise (one input channel per group), both are the ``shift`` engine's depthwise
    derivatives (:func:`_depthwise_input_cotangent`, :func:`_depthwise_weight_cotangent`) on
    the zero-padded input: XLA's CPU code ran the grouped convolutions slowly and the per-tap
    products of ``1 x 1`` outputs too.  Through ``jax.vjp`` (float32, AMD EPYC, 2 threads),
    the input's and the weight's derivatives, before and after: 32 samples of 256 channels,
    L 64, 16 taps, 25.4 -> 0.47 and 10.4 -> 0.36 ms; 64 samples of 8 channels, L 4096, 33
    taps, stride 2, 26.8 -> 2.6 and 60.6 -> 16.2; 16 samples of 16 channels, 64x64, 3x3,
    37.3 -> 1.0 and 24.9 -> 4.8; 256 samples of 1 -> 2 channels, 32x32, 3x3, stride 2,
    1.3 -> 0.4 and 0.8 -> 0.5.  The weight's lost up to 2.4 times where the per-tap products
    or the convolution had run fast: 8 samples of 2 channels, 128x128, 3x3, stride 2,
    dilation 2, 0.45 -> 1.09 ms; 16 samples of 8 -> 64 channels, L 4096, 9 taps,
    6.9 -> 14.4 (its input's 20.4 -> 3.4).  As with ``shift``, a NaN or Inf of the input then
    reaches every tap of its channel's weight gradient where the per-tap sums pad ``g``
    (:func:`_depthwise_weight_cotangent`).
    """
    n, groups, og, cg = spec.ndim, spec.groups, spec.group_out_channels, spec.group_in_channels
    seen = tuple(size + lo + hi for size, (lo, hi) in zip(spec.in_size, spec.mode_padding, strict=True))  # x as the engine gets it
    unpadded = index(_ALL, _ALL, *(slice(lo, lo + size) for (lo, _), size in zip(spec.zero_padding, seen, strict=True)))
    zero_pads = [(0, 0, 0), (0, 0, 0), *((lo, hi, 0) for lo, hi in spec.zero_padding)]

    def zero_padded(x: jax.Array) -> jax.Array:  # x as the shift engine gets it
        return lax.pad(x, jnp.zeros((), x.dtype), zero_pads)

    if cg == 1:
        adjoints = depthwise_adjoints(spec)
        to_input, to_weight = _depthwise_input_cotangent(spec, adjoints), _depthwise_weight_cotangent(spec, adjoints)

        def depthwise_input(w: jax.Array, g: jax.Array) -> jax.Array:
            dx: jax.Array = to_input(w, g)[unpadded]
            return dx

        def depthwise_weight(x: jax.Array, g: jax.Array) -> jax.Array:
            dw: jax.Array = to_weight(zero_padded(x), g)
            return dw

        return depthwise_input, depthwise_weight

    spatial = _SPATIAL[-n:]
    numbers = (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}")
    dilated_kernel, dilated_out = spec.effective_kernel, spec.spread_out_size
    dims = list(zip(seen, dilated_kernel, dilated_out, (lo for lo, _ in spec.zero_padding), strict=True))
    input_padding = [(k - lo - 1, size - out + lo) for size, k, out, lo in dims]  # before + after = size + k - 1 - out
    weight_padding = [(lo, out - size + k - lo - 1) for size, k, out, lo in dims]
    spread_padding = ((0, 0, 0), (0, 0, 0), *((0, 0, step - 1) for step in spec.stride))
    strided = any(step > 1 for step in spec.stride)
    highest = lax.Precision.HIGHEST
    taps, tap_pads = kernel_taps(spec), _window_pads(spec)

    def spread(g: jax.Array) -> jax.Array:
        return lax.pad(g, jnp.zeros((), g.dtype), spread_padding) if strided else g

    def input_cotangent(w: jax.Array, g: jax.Array) -> jax.Array:  # the transpose of dx -> conv(dx, w)
        flipped = jnp.flip(w, axis=tuple(range(3, 3 + n)))  # (B, O, Cg, *K)
        per_group = flipped.reshape(w.shape[0], groups, og, cg, *spec.kernel)
        exchanged = jnp.swapaxes(per_group, 2, 3).reshape(w.shape[0], groups * cg, og, *spec.kernel)  # (B, C_in, Og, *K)
        g = spread(g)
        return jnp.concatenate(
            [
                lax.conv_general_dilated(
                    g[b : b + 1],
                    exchanged[b],
                    window_strides=(1,) * n,
                    padding=input_padding,
                    rhs_dilation=spec.dilation,
                    dimension_numbers=numbers,
                    feature_group_count=groups,
                    precision=highest,
                )
                for b in range(g.shape[0])
            ]
        )

    def input_by_taps(w: jax.Array, g: jax.Array) -> jax.Array:  # the transpose of dx -> conv(dx, w)
        gg = g.reshape(g.shape[0], groups, og, -1)
        per_tap = w.reshape(w.shape[0], groups, og, cg, len(taps))
        zero = jnp.zeros((), g.dtype)
        placed = [
            lax.pad(
                jnp.einsum("bgoc,bgop->bgcp", per_tap[..., number], gg, precision=highest).reshape(g.shape[0], groups * cg, *spec.out_size),
                zero,
                [(0, 0, 0), (0, 0, 0), *pads],
            )
            for number, pads in enumerate(tap_pads)
        ]  # each tap's product where that tap read the zero-padded input
        return sum(placed[1:], placed[0])[unpadded]

    def weight_by_taps(x: jax.Array, g: jax.Array) -> jax.Array:  # the transpose of dw -> conv(x, dw)
        padded = zero_padded(x)
        gg = g.reshape(g.shape[0], groups, og, -1)
        sums = [
            jnp.einsum("bgop,bgcp->bgoc", gg, padded[index(_ALL, _ALL, *window)].reshape(x.shape[0], groups, cg, -1), precision=highest)
            for _, window in taps
        ]  # each (B, groups, Og, Cg)
        return jnp.stack(sums, axis=-1).reshape(g.shape[0], spec.out_channels, cg, *spec.kernel)

    def weight_cotangent(x: jax.Array, g: jax.Array) -> jax.Array:  # the transpose of dw -> conv(x, dw)
        # each sample's channels of a group side by side as one batch: (Cg, groups, *S)
        lhs = jnp.swapaxes(x.reshape(x.shape[0], groups, cg, *seen), 1, 2)
        kernel = spread(g).reshape(g.shape[0], spec.out_channels, 1, *dilated_out)
        per_sample = [
            lax.conv_general_dilated(
                lhs[b],
                kernel[b],
                window_strides=spec.dilation,
                padding=weight_padding,
                dimension_numbers=numbers,
                feature_group_count=groups,
                precision=highest,
            )
            for b in range(x.shape[0])
        ]  # each (Cg, C_out, *K)
        return jnp.swapaxes(jnp.stack(per_sample), 1, 2)

    few_taps, few_positions = len(taps) <= LOOP_TAPS_MAX, len(taps) == 1 or math.prod(spec.out_size) <= LOOP_WEIGHT_TAPS_MAX_POSITIONS
    input_per_tap, weight_per_tap = few_taps and strided, few_taps and (strided or (n > 1 and few_positions))
    return (
        input_by_taps if input_per_tap else input_cotangent,
        weight_by_taps if weight_per_tap else weight_cotangent,
    )


def _with_adjoints(engine: Engine, input_cotangent: Engine, weight_cotangent: Engine) -> Engine:
    """``engine`` differentiated through ``input_cotangent(w, g)`` and ``weight_cotangent(x, g)``.

    The tangent is written as their transposes (``jax.linear_transpose``), so reverse mode,
    which transposes it back, runs them (forward mode runs the transposes).
    """

    @jax.custom_jvp
    def run(x: jax.Array, w: jax.Array) -> jax.Array:
        result: jax.Array = engine(x, w)
        return result

    def tangent(primals: tuple[jax.Array, jax.Array], tangents: tuple[Any, Any]) -> tuple[jax.Array, jax.Array]:
        (x, w), (dx, dw) = primals, tangents
        y = engine(x, w)
        like = jax.ShapeDtypeStruct(y.shape, y.dtype)  # type: ignore[no-untyped-call]
        zero = jax.custom_derivatives.SymbolicZero
        terms = [jax.linear_transpose(partial(input_cotangent, w), like)(dx)[0]] if not isinstance(dx, zero) else []
        if not isinstance(dw, zero):
            terms.append(jax.linear_transpose(partial(weight_cotangent, x), like)(dw)[0])
        return y, _sum(terms, y)

    run.defjvp(tangent, symbolic_zeros=True)
    return run


def _sum(terms: list[jax.Array], like: jax.Array) -> jax.Array:
    """The sum of a tangent's terms (zeros like ``like`` where every input's tangent is a symbolic zero)."""
    return sum(terms[1:], terms[0]) if terms else jnp.zeros_like(like)


#: :func:`_matmul`'s derivative rule is used for products of at most this many multiply-adds.
SMALL_PRODUCT_MACS: Final = 2**18


@jax.custom_jvp
def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """Batched ``a @ b`` whose reverse-mode derivative in ``b`` multiplies by a transposed copy of ``a``.

    JAX transposes ``a @ b`` in ``b`` into ``a^T @ g``, a dot contracting its left
    operand's rows, which XLA's CPU backend runs outside its XNNPACK dot: for the
    README's shape (32 products of 8x4 by 4x16) the whole vjp of one product took
    62 us against 31 us with ``a^T`` copied first (``lax.optimization_barrier`` keeps
    XLA from folding the copy back into the dot).  The tangent is written as the
    transpose of the cotangent maps (as :func:`_shift` does), so reverse mode runs them.
    Only for products of at most :data:`SMALL_PRODUCT_MACS` multiply-adds: measured
    (AMD EPYC, 2 threads) the vjp took 0.42 to 0.86 of the plain one's time up to
    that size, and from 0.75 to 1.33 beyond (the dense64 shape's ``shift``: 64x64 by
    64x1022, 1.25).
    """
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _matmul_tangent(primals: tuple[jax.Array, jax.Array], tangents: tuple[Any, Any]) -> tuple[jax.Array, jax.Array]:
    (a, b), (da, db) = primals, tangents
    y = _matmul(a, b)
    like = jax.ShapeDtypeStruct(y.shape, y.dtype)  # type: ignore[no-untyped-call]
    zero = jax.custom_derivatives.SymbolicZero
    highest = lax.Precision.HIGHEST
    terms = []
    if not isinstance(da, zero):  # the cotangent of a: g @ b^T (a dot XLA runs fast as it is)
        b_t = jnp.swapaxes(b, -1, -2)
        terms.append(jax.linear_transpose(lambda g: jnp.matmul(g, b_t, precision=highest), like)(da)[0])
    if not isinstance(db, zero):  # the cotangent of b: (a^T, copied) @ g
        a_t = lax.optimization_barrier(jnp.swapaxes(a, -1, -2))  # type: ignore[no-untyped-call]
        terms.append(jax.linear_transpose(lambda g: jnp.matmul(a_t, g, precision=highest), like)(db)[0])
    return y, _sum(terms, y)


_matmul.defjvp(_matmul_tangent, symbolic_zeros=True)


def _frames(x: jax.Array, axis: int, *, count: int, size: int, step: int, dilation: int, gather: bool) -> jax.Array:
    """Dim ``axis`` of ``x`` becomes ``(count, size)``: item ``j`` of frame ``i`` is ``x[i * step + j * dilation]``.

    ``gather``: one ``take``; else slices only (whose transposes are pads, not scatter-adds).
    """
    if gather:
        return jnp.take(x, np.arange(count)[:, None] * step + np.arange(size)[None, :] * dilation, axis=axis)
    if dilation == 1 and step > 1:  # rows of ``step`` items: frame i is rows i, i+1, ... laid end to end, cut to ``size``
        rows = -(-size // step)
        length = (count + rows - 1) * step
        extra = length - x.shape[axis]
        x = lax.pad(x, jnp.zeros((), x.dtype), [(0, extra if d == axis else 0, 0) for d in range(x.ndim)])
        x = x.reshape(*x.shape[:axis], count + rows - 1, step, *x.shape[axis + 1 :])
        joined = jnp.concatenate([lax.slice_in_dim(x, j, j + count, axis=axis) for j in range(rows)], axis=axis + 1)
        return lax.slice_in_dim(joined, 0, size, axis=axis + 1)
    items = [lax.slice_in_dim(x, j * dilation, j * dilation + (count - 1) * step + 1, stride=step, axis=axis) for j in range(size)]
    return jnp.stack(items, axis=axis + 1)


def _windows(x: jax.Array, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...], *, gather: bool) -> jax.Array:
    """``(..., *S)`` -> ``(..., *counts, *sizes)``: the windows of the last ``len(sizes)`` dims (see :func:`_frames`)."""
    n = len(sizes)
    first = x.ndim - n
    counts = window_counts(tuple(x.shape[first:]), sizes, steps, dilation)
    for dim, (count, k, step, d) in enumerate(zip(counts, sizes, steps, dilation, strict=True)):
        x = _frames(x, first + 2 * dim, count=count, size=k, step=step, dilation=d, gather=gather)
    order = (*range(first), *range(first, first + 2 * n, 2), *range(first + 1, first + 2 * n, 2))
    return jnp.transpose(x, order)


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _gathered_windows(x: jax.Array, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> jax.Array:
    """The windows by gathers, differentiated through slices.

    JAX transposes a gather into a scatter-add, which XLA's CPU backend runs slowly;
    the slices' transposes are pads and additions.  Measured (AMD EPYC, 2 threads, a
    training step, forward + backward, against the gather differentiated by JAX):
    ``matmul`` on 256 samples of 16 channels, 256 positions and 7 taps 106 -> 58 ms, on
    64 samples of 64 channels and 3 taps 342 -> 142 ms, on 8 samples of 256 channels 63
    -> 41 ms; ``fft`` on the long-kernel shape (257 taps) 47 -> 25 ms.  The forward keeps
    the gather: slices there ran up to twice as slow (``fft``, 7 taps: 21 against 11 ms).
    """
    return _windows(x, sizes, steps, dilation, gather=True)


def _windows_tangent(
    sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...], primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    return _windows(primals[0], sizes, steps, dilation, gather=True), _windows(tangents[0], sizes, steps, dilation, gather=False)


_gathered_windows.defjvp(_windows_tangent)


#: ``shift``'s running sums hold at most this many terms each (:attr:`multiconv._engines.Ops.terms_per_sum`).
#: XLA's CPU backend fuses a chain of multiply-adds into one loop that computes each
#: element's chain one addition after another, so a long chain waits on each addition:
#: the depthwise weight derivative of the benchmark's depthwise shape (32 samples of 256
#: channels, L 64, K 16: 49 multiply-adds of 16 taps) took 226 us as one chain and
#: 128-138 us as chains of 6-12 terms added pairwise (2 threads, Intel Xeon); the
#: forward's 16 taps, 112 us as one chain, 104-107 us as 2 or 4.
JAX_TERMS_PER_SUM: Final = 8


class _JaxOps:
    """:class:`multiconv._engines.Ops` for JAX (windows are gathers: JAX has no strided views)."""

    terms_per_sum: Final = JAX_TERMS_PER_SUM
    strided_operands_copied: Final = False  # XLA lays its operands out itself

    @staticmethod
    def total(sums: list[jax.Array]) -> jax.Array:
        # Each running sum is marked with a copy (free: it lowers to nothing) so that a derivative
        # that transposes this sum twice (the depthwise ``shift``'s) keeps its running sums: a
        # transpose adds up a value's cotangents in one chain, one per use of that value.
        return pairwise_sum([jnp.array(s, copy=True) for s in sums])  # type: ignore[no-any-return]

    windows: Final = staticmethod(_gathered_windows)

    @staticmethod
    def transpose(a: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        return jnp.transpose(a, axes)

    @staticmethod
    def pad_end(x: jax.Array, extra: tuple[int, ...]) -> jax.Array:
        return jnp.pad(x, [(0, 0)] * (x.ndim - len(extra)) + [(0, e) for e in extra])

    @staticmethod
    def dilate(w: jax.Array, dilation: tuple[int, ...], sizes: tuple[int, ...]) -> jax.Array:
        if all(d == 1 for d in dilation):
            return w
        zeros = jnp.zeros((*w.shape[: w.ndim - len(sizes)], *sizes), w.dtype)
        return zeros.at[index(Ellipsis, *spatial_slices(dilation))].set(w)

    @staticmethod
    def flip(a: jax.Array, axes: tuple[int, ...]) -> jax.Array:
        return jnp.flip(a, axis=axes)

    @staticmethod
    def contiguous(a: jax.Array) -> jax.Array:
        return a

    @staticmethod
    def stack(arrays: list[jax.Array], axis: int) -> jax.Array:
        return jnp.stack(arrays, axis=axis)

    @staticmethod
    def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        if a.shape[:-2] == b.shape[:-2] and m * k * n <= SMALL_PRODUCT_MACS:  # derivatives through _matmul's rule
            return _matmul(a, b)
        return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)

    @staticmethod
    def is_complex(a: jax.Array) -> bool:
        return bool(jnp.iscomplexobj(a))

    @staticmethod
    def fft(a: jax.Array, shape: tuple[int, ...], *, real: bool) -> jax.Array:
        axes = tuple(range(-len(shape), 0))
        return jnp.fft.rfftn(a, s=shape, axes=axes) if real else jnp.fft.fftn(a, s=shape, axes=axes)

    @staticmethod
    def ifft(a: jax.Array, shape: tuple[int, ...], *, real: bool) -> jax.Array:
        axes = tuple(range(-len(shape), 0))
        return jnp.fft.irfftn(a, s=shape, axes=axes) if real else jnp.fft.ifftn(a, s=shape, axes=axes)


OPS: Final = _JaxOps()


#: The ``matmul`` engine's forward gathers an im2col buffer of at most this many bytes when the
#: kernel has at least :data:`TAP_GATHER_MIN_TAPS` taps, rather than stacking one slice per tap.
#: XLA's CPU runtime runs a program of more than a few operations on its thread pool, and for
#: a small program the hand-offs cost more than the work: one sample of 2 -> 16 channels, 3
#: outputs, took 17-19 us with up to 9 taps stacked and 104-123 us with 10 (AMD EPYC, 2
#: threads, jax 0.10), 145-209 us with 16-32 taps against 13-17 gathered.  Gathered, which is
#: one operation, the whole forward (float32, minimum of 7 rounds): 16 taps, 6 KiB buffer,
#: 137 -> 24 us; 31 taps, 8 KiB, 203 -> 15; 5x5 taps, 3 KiB, 179 -> 19; 16 taps, 98 KiB, 156
#: -> 106; 31 taps, 131 KiB, 245 -> 130.  For larger buffers stacking was as fast or faster
#: (5x5 taps, 112 KiB: 162 against 169 us; 450 KiB: 197 against 336), and with 9 taps or
#: fewer as well (9 taps, 3 KiB: 20 against 32 us).
TAP_GATHER_MAX_BYTES: Final = 64 * 1024
TAP_GATHER_MIN_TAPS: Final = 10


def _tap_columns(spec: ConvSpec) -> Callable[[jax.Array], jax.Array]:
    """The ``matmul`` engine's im2col buffer: one slice per tap, stacked, unless differentiated.

    Stacking the taps' slices built the buffer faster than gathering the windows and
    transposing them to its layout (2 threads, Intel Xeon, minimum of 7 rounds, the
    whole ``matmul`` forward: the benchmark's ``many`` 4.87 -> 3.76 ms, ``depthwise`` 4.20
    -> 3.01, ``float64`` 10.2 -> 9.1, ``conv2d`` 21.7 -> 19.8, ``dense64`` 16.2 -> 15.3).
    Differentiated, though, XLA's weight derivative of the product with that buffer ran
    slowly: ``depthwise``'s training step took 18-20 ms against 6.4-7.6, with either
    tangent.  So a derivative (the rule below) is the gathered windows' own
    (:func:`_gathered_windows`: their tangent by slices), as before.

    A small buffer of many taps is gathered in the forward too (see
    :data:`TAP_GATHER_MAX_BYTES`).
    """
    stacked, gathered = _engines.tap_columns(OPS, spec), _engines.im2col(OPS, spec)
    taps = math.prod(spec.kernel)
    sample_items = spec.in_channels * taps * math.prod(spec.out_size)  # one sample's share of the buffer

    @jax.custom_jvp
    def columns(x: jax.Array) -> jax.Array:
        small = x.shape[0] * sample_items * x.dtype.itemsize <= TAP_GATHER_MAX_BYTES
        result: jax.Array = gathered(x) if small and taps >= TAP_GATHER_MIN_TAPS else stacked(x)
        return result

    def columns_tangent(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
        result: tuple[jax.Array, jax.Array] = jax.jvp(gathered, primals, tangents)
        return result

    columns.defjvp(columns_tangent)
    return columns


#: The depthwise ``shift`` engine's weight derivative is a multiply-add chain with one term per
#: output position up to this many positions; beyond, one product and sum per kernel tap.
DEPTHWISE_CHAIN_MAX_POSITIONS: Final = 256
#: Beyond it, the per-tap sums pad the gradient onto each window up to this product of the strides
#: (see :func:`_depthwise_weight_cotangent`); the padded product holds that many times the windows' work.
DEPTHWISE_PADDED_MAX_STRIDE: Final = 4


def _shift(spec: ConvSpec) -> Engine:
    """``shift``; depthwise per-sample, with derivatives that are depthwise convolutions too.

    XLA's transpose of the depthwise multiply-add chain pads and sums every tap's
    contribution to the weight (70 to 100 times the forward's time on a CPU).  The
    convolution's derivatives are two more depthwise convolutions
    (:func:`multiconv._algorithms.depthwise_adjoints`): the input's a chain over the kernel
    taps, the weight's a chain over the output positions (or, for many positions, one
    product and sum per tap).  The tangent is written as their transposes
    (``jax.linear_transpose``), so reverse mode, which transposes it back, runs them
    (forward mode runs the transposes).  The forward runs on the whole batch (see
    :func:`chunk_size`), and so do the input's derivative and the weight's chain over the
    positions; the weight's products and sums per tap run in the chunks the other engines
    would (:func:`_sequential_chunk`).  VJPs against every derivative in those chunks,
    float32, AMD EPYC, the benchmark's allocator settings: 256 samples of 256 channels,
    L 256, 7 taps, 40-65 against 535-560 ms; 128 samples of 16 -> 64 channels, L 1024,
    15 taps, 22-23 against 53-55; 64 samples of 32 -> 64 channels, L 4096, 5 taps, 26-28
    against 46-49; no slower on the others timed.  The products per tap whole lost up to
    1.4x (32 samples of 64 channels, L 8192, 33 taps, stride 2: 109-112 against 75-77).
    """
    engine = _engines.shift(OPS, spec)
    if not (spec.per_sample_weight and spec.group_in_channels == 1):
        return engine
    adjoints = depthwise_adjoints(spec)
    return _with_adjoints(engine, _depthwise_input_cotangent(spec, adjoints), _depthwise_weight_cotangent(spec, adjoints))


def _depthwise_input_cotangent(spec: ConvSpec, adjoints: DepthwiseAdjoints) -> Engine:
    """``(w, g) -> dx``: the depthwise ``shift``'s input derivative, a transposed depthwise convolution.

    With several output channels per input channel, it sums them: each one's chain over the
    taps, then a group's channels added one at a time.  The adjoint's own engine, a
    matmul of ``og`` terms per tap, took 61 ms against 1.2 for the forward (64 samples of
    8 -> 16 channels, L 4096, 9 taps; AMD EPYC), and XLA fused a ``jnp.sum`` over the
    channel axis with the chain into a loop 70 times slower than the additions.  The
    channels are taken apart with one ``lax.split``, not ``og`` slices: forward mode runs
    this function's transpose, where a slice becomes a pad to all ``og`` channels (``og``
    squared channels' worth of zeros) and the split one concatenation.  ``jax.jvp`` in
    ``x``, 16 samples of 8 -> 64 channels, L 4096, 9 taps (AMD EPYC): 44-47 ms sliced,
    0.8-8.6 split (forward 0.5-3); with 16 per channel 97-108 -> 4-11; the VJP unchanged
    within this host's noise (7-12 against 7-9 ms).
    """
    spatial, no_pad = tuple(range(-spec.ndim, 0)), ((0, 0, 0), (0, 0, 0))
    groups, og, out_channels = spec.groups, spec.group_out_channels, spec.out_channels
    per_channel = _engines.shift(OPS, dataclasses.replace(adjoints.input, out_channels=out_channels, groups=out_channels))

    def input_cotangent(w: jax.Array, g: jax.Array) -> jax.Array:  # the transpose of dx -> conv(dx, w)
        flipped = jnp.flip(w.reshape(w.shape[0], out_channels, 1, *spec.kernel), axis=spatial)
        each: jax.Array = per_channel(lax.pad(g, jnp.zeros((), g.dtype), (*no_pad, *adjoints.dilate_pad)), flipped)
        if og == 1:
            return each
        per_group = each.reshape(each.shape[0], groups, og, *each.shape[2:])
        channels = lax.split(per_group, (1,) * og, axis=2)
        result: jax.Array = pairwise_sum([channel.reshape(per_group.shape[:2] + per_group.shape[3:]) for channel in channels])
        return result

    return input_cotangent


def _depthwise_weight_cotangent(spec: ConvSpec, adjoints: DepthwiseAdjoints) -> Engine:
    """``(x, g) -> dw``: the depthwise ``shift``'s weight derivative, a depthwise convolution with ``g`` as its kernel.

    A chain over the output positions up to :data:`DEPTHWISE_CHAIN_MAX_POSITIONS`; beyond,
    each tap's sum of ``g`` times the input's window.  With real values, ``g`` is padded
    onto the window (with ``stride - 1`` zeros between its entries) and multiplied with the
    whole input rather than the input sliced to it: XLA's CPU code ran the sliced form up
    to ten times slower (weight derivative, AMD EPYC: 64 samples of 8 channels, L 4096,
    16 taps, 42 -> 4.3 ms; 33 taps, stride 2, 37 -> 6.4; 16 samples of 32 channels, 64x64,
    5x5, stride 2, 14.6 -> 8.0).  Where the slices ran fast, the padded form lost up to 2x
    (16 samples of 32 channels, L 4096, 5 taps, stride 3, dilation 2: 1.1 -> 2.3 ms), and
    its work grows with the product of the strides: beyond :data:`DEPTHWISE_PADDED_MAX_STRIDE`
    (a 3-D stride of 2 would multiply 8 times as many zeros), and for complex values (64
    samples of 1 channel, L 16384, 9 taps, stride 2: 17 -> 41 ms padded), the slices stay.
    A NaN or Inf of the input reaches every tap's gradient of its sample and channel (the
    padded ``g``'s zeros meet it), not only the taps that read it.
    """
    spatial = tuple(range(-spec.ndim, 0))
    groups, og, out_channels = spec.groups, spec.group_out_channels, spec.out_channels
    if math.prod(spec.out_size) <= DEPTHWISE_CHAIN_MAX_POSITIONS:
        to_weight = _engines.shift(OPS, adjoints.weight)
        crop = index(Ellipsis, *(slice(0, n) for n in adjoints.weight.in_size))

        def chained(x: jax.Array, g: jax.Array) -> jax.Array:  # the transpose of dw -> conv(x, dw)
            dw: jax.Array = to_weight(x[crop], g.reshape(g.shape[0], out_channels, 1, *spec.out_size))
            return dw.reshape(g.shape[0], out_channels, 1, *spec.kernel)

        return chained

    if math.prod(spec.stride) <= DEPTHWISE_PADDED_MAX_STRIDE and spec.dtype not in COMPLEX_DTYPES:
        spread = _onto_windows(spec)

        def products(xg: jax.Array, gg: jax.Array) -> list[jax.Array]:
            return [padded * xg for padded in spread(gg)]

    else:
        windows = tuple(index(_ALL, _ALL, _ALL, *window) for _, window in kernel_taps(spec))

        def products(xg: jax.Array, gg: jax.Array) -> list[jax.Array]:
            return [gg * xg[window] for window in windows]

    def summed(x: jax.Array, g: jax.Array) -> jax.Array:
        xg = x.reshape(x.shape[0], groups, 1, *x.shape[2:])
        gg = g.reshape(g.shape[0], groups, og, *spec.out_size)
        sums = [jnp.sum(product, axis=spatial) for product in products(xg, gg)]  # each (B, groups, og)
        return jnp.stack(sums, axis=-1).reshape(g.shape[0], out_channels, 1, *spec.kernel)

    def per_tap(x: jax.Array, g: jax.Array) -> jax.Array:  # the transpose of dw -> conv(x, dw)
        return _in_chunks(summed, x, g, _sequential_chunk(spec, "shift", x.dtype.itemsize), per_sample=True)

    return per_tap


def _window_pads(spec: ConvSpec) -> tuple[tuple[tuple[int, int, int], ...], ...]:
    """Per kernel tap, the ``lax.pad`` of the spatial dims that puts an output-sized array where that tap reads the padded input."""
    return tuple(
        tuple(
            (s.start, size - (s.start + (n - 1) * s.step + 1), s.step - 1)
            for s, size, n in zip(window, spec.padded_size, spec.out_size, strict=True)
        )
        for _, window in kernel_taps(spec)
    )


def _onto_windows(spec: ConvSpec) -> Callable[[jax.Array], list[jax.Array]]:
    """``spread(g)``: ``g`` ``(B, groups, Og, *S_out)`` padded onto each kernel tap's window, one ``(B, groups, Og, *S_padded)`` per tap."""
    pads = tuple(((0, 0, 0),) * 3 + spatial for spatial in _window_pads(spec))

    def spread(g: jax.Array) -> list[jax.Array]:
        zero = jnp.zeros((), g.dtype)
        return [lax.pad(g, zero, pad) for pad in pads]

    return spread


def _col2im_sum(spec: ConvSpec) -> Callable[[jax.Array], jax.Array]:
    """``col2im``'s sum of shifted products (of ``spec``: the split one in 2-D and 3-D), differentiated into one padded copy per kernel tap.

    JAX transposes each tap's slice of the products into a pad to the whole products
    array, so the sum's transpose wrote ``taps`` arrays of ``taps`` times the output's
    size and added them.  Its adjoint is one pad of the cotangent per tap, stacked
    (``taps`` outputs' worth); the tangent is written as that adjoint's transpose
    (``jax.linear_transpose``, as :func:`_matmul` does), so reverse mode runs it.
    """
    plain, spread = _engines.shifted_sum(OPS, spec), _onto_windows(spec)

    def adjoint(g: jax.Array) -> jax.Array:  # (B, groups, Og, *S_out) -> (B, groups, taps, Og, *S_padded)
        return jnp.stack(spread(g), axis=2)

    @jax.custom_jvp
    def add(products: jax.Array) -> jax.Array:
        result: jax.Array = plain(products)
        return result

    def tangent(primals: tuple[jax.Array], tangents: tuple[jax.Array]) -> tuple[jax.Array, jax.Array]:
        y = plain(primals[0])
        like = jax.ShapeDtypeStruct(y.shape, y.dtype)  # type: ignore[no-untyped-call]
        return y, jax.linear_transpose(adjoint, like)(tangents[0])[0]

    add.defjvp(tangent)
    return add


#: Engine name -> builder: ``METHODS[name](spec)`` is ``run(x, w)`` (see :mod:`multiconv._engines`).
METHODS: Final[Mapping[str, Callable[[ConvSpec], Engine]]] = {
    "vmap": _vmap,
    "loop": _loop,
    "shift": _shift,
    "matmul": lambda spec: _engines.matmul(OPS, spec, _tap_columns(spec)),
    "col2im": lambda spec: _engines.col2im(OPS, spec, _col2im_sum),
    "fft": partial(_engines.fft, OPS),
}


def _pad(x: jax.Array, spec: ConvSpec) -> jax.Array:
    """The padding, in ``padding_mode``, on channels-first ``x``.

    All of it for the shared engines; only the mode padding for the framework's own
    convolutions (``vmap``, ``loop``), which pad zeros themselves (cheaper to transpose).
    """
    pairs = spec.mode_padding if spec.method in DIRECT_ENGINES else spec.padding
    if not any(lo or hi for lo, hi in pairs):
        return x
    return jnp.pad(x, ((0, 0), (0, 0), *pairs), mode=_JAX_PAD_MODES[spec.padding_mode])


@lru_cache(maxsize=1024)
def prepare(spec: ConvSpec) -> Runner:
    """``run(x, w, bias)``: the jitted convolution for ``spec`` (see :func:`convolve`)."""
    return partial(_convolve_jit, spec)


def convolve(spec: ConvSpec, x: jax.Array, w: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The whole convolution on JAX arrays; half precision is computed in float32.

    Compiled once per spec and input signature (the spec is a static argument), so a
    repeated eager call costs one dispatch; inside the caller's ``jit`` it is inlined.
    """
    result: jax.Array = _convolve_jit(spec, x, w, bias)
    return result


def _convolve(spec: ConvSpec, x: jax.Array, w: jax.Array, bias: jax.Array | None) -> jax.Array:
    if spec.tangent_method is None:
        return _direct(spec, x, w, bias)
    return _differentiated_elsewhere(spec, x, w, bias)


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _differentiated_elsewhere(spec: ConvSpec, x: jax.Array, w: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The forward with ``spec.method``; derivatives through ``spec.tangent_method``.

    The convolution is bilinear, so its tangent is ``conv(dx, w) + dbias + conv(x, dw)``,
    computed by the other engine; reverse mode transposes those linear maps, so ``grad``
    and ``vjp`` run that engine's transposes (forward mode, ``jacfwd``, works too).
    """
    return _direct(spec, x, w, bias)


def _tangent(spec: ConvSpec, primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[jax.Array, jax.Array]:
    """``conv(dx, w) + dbias + conv(x, dw)`` by ``spec.tangent_method``; zero tangents skip their term.

    Each convolution term is that engine's own tangent (``jax.jvp``), not the engine applied
    to the tangent: so reverse mode runs the derivative rules the engine's products carry
    (:func:`_matmul`'s copied transposes, the depthwise ``shift``'s adjoints).  Applied to
    the tangent, ``shift``'s products were transposed as plain dots that contract the
    weight's rows (the ``many`` shape in float64, after the ``matmul`` forward: 7 of the
    step's 15 products).
    """
    x, w, bias = primals
    dx, dw, dbias = tangents
    y = _direct(spec, x, w, bias)
    other = dataclasses.replace(spec, method=spec.tangent_method or spec.method, tangent_method=None)
    zero = jax.custom_derivatives.SymbolicZero
    terms = []
    if not isinstance(dx, zero):
        terms.append(jax.jvp(lambda a: _direct(other, a, w, None), (x,), (dx,))[1])
    if not isinstance(dw, zero):
        terms.append(jax.jvp(lambda b: _direct(other, x, b, None), (w,), (dw,))[1])
    if bias is not None and not isinstance(dbias, zero):
        terms.append(jnp.broadcast_to(dbias.astype(y.dtype).reshape(spec.bias_shape), y.shape))
    dy = _sum(terms, y)
    return y, dy


_differentiated_elsewhere.defjvp(_tangent, symbolic_zeros=True)


def _direct(spec: ConvSpec, x: jax.Array, w: jax.Array, bias: jax.Array | None) -> jax.Array:
    out_dtype = x.dtype
    compute = jnp.float32 if out_dtype.name in HALF_DTYPES else out_dtype
    x, w = x.astype(compute), w.astype(compute)
    if spec.channels_last:
        x = jnp.moveaxis(x, -1, 1)
    if spec.weight_kind == "broadcast":
        w = w[0]
    if spec.flip:
        w = jnp.flip(w, axis=tuple(range(-spec.ndim, 0)))
    engine = METHODS[spec.method](spec)

    def run(xs: jax.Array, ws: jax.Array) -> jax.Array:
        result: jax.Array = engine(_pad(xs, spec), ws)
        return result

    if spec.batch == 0:
        y = jnp.zeros((0, spec.out_channels, *spec.out_size), compute)
    else:
        y = _in_chunks(run, x, w, chunk_size(spec, np.dtype(compute).itemsize), per_sample=spec.per_sample_weight)
    if spec.channels_last:
        y = jnp.moveaxis(y, 1, -1)
    if bias is not None:
        y = y + bias.astype(compute).reshape(spec.bias_shape)
    return y.astype(out_dtype)


#: Chunked, JAX's batch chunks each aim for this much workspace (see :func:`chunk_size`).
SEQUENTIAL_CHUNK_TARGET: Final = 8 * 2**20
#: JAX's 1-D ``col2im`` aims its chunks at this much workspace, however little the whole batch's (see :func:`chunk_size`).
COL2IM_CHUNK_TARGET: Final = 4 * 2**20


def chunk_size(spec: ConvSpec, itemsize: int) -> int:
    """The batch chunk JAX runs an engine on: the whole batch when its workspace fits, else smaller.

    When the whole batch's workspace exceeds the shared chunk target (or the caller's
    limit: :func:`multiconv._algorithms.batch_chunk`), the chunks run one after another
    in the compiled program and each aims for :data:`SEQUENTIAL_CHUNK_TARGET`: XLA's CPU
    code for an im2col buffer and its dot ran 1.2-2.3x faster so than in unrolled
    32 MiB chunks (``matmul``, float64, 256 samples of 16 channels, L 256, K 7: 28 -> 12 ms;
    float32, 64 samples of 64 channels, L 1024, K 3: 34 -> 22 ms), while below 32 MiB
    one chunk was fastest (Intel Xeon).  ``col2im`` in 2-D and 3-D (:func:`multiconv._algorithms.col2im_split`)
    always aims for it: 8 samples of 16 channels, 16^3, 3x3x3 (28 MiB) took 13.0 ms whole
    and 2.3 in chunks of 2.  In 1-D it always aims for :data:`COL2IM_CHUNK_TARGET`,
    whose chunks' products stay nearer the core: on an AMD EPYC of family 25 (Zen 4, 1
    MiB of L2 a core, an L3 shared with other machines' work), against the whole batch
    (best of 5 blocks, interleaved), 256 samples of 16 channels, L 256, 7 taps (29 MiB)
    took 0.73 of the time (8 MiB chunks: 0.96), in float64 0.84, 64 samples of 64
    channels, L 1024, 3 taps 0.97, 8 samples of 256 channels, L 512, 3 taps 0.83, 64
    samples of 32 channels, L 1024, 5 taps 0.82, 128 samples of 8 -> 16 channels, L
    4096, 9 taps 0.89, 32 samples of 64 channels, L 512, 3 taps, stride 2 1.01; training
    steps (forward and VJP) 0.73, 0.97, 0.99, 0.87 and (L 1024, 5 taps) 0.96.
    ``matmul``'s forward gained from chunks there too (8 MiB: 0.57 to 1.04), but its
    training steps lost up to 1.2x in 8 MiB chunks and 1.8x in 4 MiB: it keeps the rule
    above.  A depthwise ``shift`` chunks only where the limit requires it: XLA fuses its
    multiply-add chain into one loop that writes the output and keeps no product, and a
    loop over chunks kept it from doing so (float32, AMD EPYC, forward: 16 samples of 8
    -> 128 channels, L 4096, 9 taps, 14-22 ms in chunks of 3 against
    0.96-1.0 whole; 256 samples of 256 channels, L 256, 7 taps, 20.9 against 3.7).
    """
    if spec.method == "shift" and spec.group_in_channels == 1:
        return batch_chunk(spec, "shift", itemsize, limit_only=True)
    return _sequential_chunk(spec, spec.method, itemsize)


def _sequential_chunk(spec: ConvSpec, method: str, itemsize: int) -> int:
    """:func:`chunk_size`'s rule for the engines that keep their products: whole, or chunks aimed at :data:`SEQUENTIAL_CHUNK_TARGET`.

    ``col2im`` always aims: in 2-D and 3-D at that target, in 1-D at :data:`COL2IM_CHUNK_TARGET`.
    """
    if method == "col2im":
        return aimed_chunk(spec, method, itemsize, SEQUENTIAL_CHUNK_TARGET if col2im_split(spec) else COL2IM_CHUNK_TARGET)
    chunk = batch_chunk(spec, method, itemsize)
    if chunk >= spec.batch:
        return chunk
    return aimed_chunk(spec, method, itemsize, SEQUENTIAL_CHUNK_TARGET)


def _in_chunks(run: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array, w: jax.Array, chunk: int, *, per_sample: bool) -> jax.Array:
    """``run(x, w)`` over batch chunks of ``chunk`` samples, one after another (``lax.map``).

    Unrolled chunks would be scheduled together, with all their buffers alive at once;
    a loop keeps one chunk's workspace.  A remainder shorter than a chunk runs once more.
    """
    batch = x.shape[0]
    if chunk >= batch:
        return run(x, w)
    full = batch // chunk * chunk
    xs = x[:full].reshape(full // chunk, chunk, *x.shape[1:])
    if per_sample:
        ws = w[:full].reshape(full // chunk, chunk, *w.shape[1:])
        ys = lax.map(lambda part: run(*part), (xs, ws))
    else:
        ys = lax.map(lambda part: run(part, w), xs)
    y: jax.Array = ys.reshape(full, *ys.shape[2:])
    if full == batch:
        return y
    return jnp.concatenate([y, run(x[full:], w[full:] if per_sample else w)])


_convolve_jit = jax.jit(_convolve, static_argnums=0)


def convolve_numpy(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """A convolution of host arrays computed by JAX, with 64-bit types enabled for the call."""
    wide = x.dtype.itemsize == 8 or x.dtype == np.complex128  # noqa: PLR2004
    with jax.enable_x64(True) if wide else contextlib.nullcontext():  # noqa: FBT003
        arrays = [None if a is None else jnp.asarray(host_array(a)) for a in (x, w, bias)]
        return np.array(to_numpy(convolve(spec, *arrays), "x"))  # type: ignore[arg-type]  # a writable copy
