"""NumPy backend: strided windows, batched matmuls and overlap-save FFTs.

Engines take ``x`` channels-first and already padded, ``w`` as a per-sample
``(B, C_out, C_in // groups, *K)`` or shared ``(C_out, C_in // groups, *K)``
weight (flipped if asked), and return ``(B, C_out, *S_out)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from multiconv._algorithms import FFTBlocks, batch_chunk, batch_slices, fft_blocks, kernel_taps
from multiconv._cost import choose
from multiconv._spec import ArrayInfo
from multiconv.backends import spatial_slices

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from multiconv._spec import ConvSpec

_NUMPY_PAD_MODES: Final = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_ALL: Final = slice(None)
_SPATIAL: Final = "xyz"
_KERNEL: Final = "ijk"


def signature(a: np.ndarray) -> Hashable:
    """What validation reads from ``a``, hashable (see ``multiconv._dispatch.signature``)."""
    return (type(a), a.shape, a.dtype)


def info(a: np.ndarray, name: str) -> ArrayInfo:
    """Shape and dtype name of a NumPy array; masked arrays are refused."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a numpy masked array, whose mask batch_conv would ignore; pass {name}.filled(0) or its data")
    return ArrayInfo(tuple(a.shape), a.dtype.name)


def from_numpy(a: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """``a`` itself, cast to ``like``'s dtype if given."""
    return a if like is None else a.astype(like.dtype, copy=False)


def to_numpy(a: np.ndarray, name: str) -> np.ndarray:  # noqa: ARG001
    """``a`` itself."""
    return a


def choose_method(spec: ConvSpec) -> str:
    """The engine for ``method="auto"`` (see :mod:`multiconv._cost`)."""
    return choose("numpy", spec, tuple(METHODS))


def _index(*parts: Any) -> tuple[Any, ...]:
    """An index tuple (spelled as a call: ``a[i, *rest]`` needs Python 3.11)."""
    return parts


def _pad(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Apply all of the padding (mode padding and zero padding) to channels-first ``x``."""
    if not any(lo or hi for lo, hi in spec.padding):
        return x
    widths = ((0, 0), (0, 0), *spec.padding)
    padded: np.ndarray = np.pad(x, widths, mode=_NUMPY_PAD_MODES[spec.padding_mode])  # type: ignore[call-overload]
    return padded


def _group_weight(spec: ConvSpec, w: np.ndarray) -> np.ndarray:
    """``w`` as ``([B,] groups, C_out // groups, C_in // groups, *K)``."""
    lead = w.shape[: w.ndim - spec.ndim - 2]
    return w.reshape(*lead, spec.groups, spec.group_out_channels, spec.group_in_channels, *spec.kernel)


def _windows(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """View of padded ``x`` as ``(B, groups, C_in // groups, *S_out, *K)``, without copying."""
    spatial_axes = tuple(range(2, 2 + spec.ndim))
    view = sliding_window_view(x, spec.effective_kernel, axis=spatial_axes)
    index = (slice(None), slice(None), *spatial_slices(spec.stride), *spatial_slices(spec.dilation))
    view = view[index]
    return view.reshape(x.shape[0], spec.groups, spec.group_in_channels, *spec.out_size, *spec.kernel)


def _einsum(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Contract strided windows of ``x`` with the weight in one ``numpy.einsum``."""
    s, k = _SPATIAL[: spec.ndim], _KERNEL[: spec.ndim]
    lead = "b" if spec.per_sample_weight else ""
    y: np.ndarray = np.einsum(f"bgc{s}{k},{lead}goc{k}->bgo{s}", _windows(x, spec), _group_weight(spec, w), optimize=True)
    return y.reshape(x.shape[0], spec.out_channels, *spec.out_size)


def _shift(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One batched matmul per kernel offset, accumulated; a multiply-add when depthwise."""
    batch, positions = x.shape[0], math.prod(spec.out_size)
    xg = x.reshape(batch, spec.groups, spec.group_in_channels, *x.shape[2:])
    wg = _group_weight(spec, w)
    product = np.multiply if spec.group_in_channels == 1 else np.matmul
    y = term = None
    for offset, window in kernel_taps(spec):
        taps = xg[_index(_ALL, _ALL, _ALL, *window)].reshape(batch, spec.groups, spec.group_in_channels, positions)
        weight = wg[_index(Ellipsis, *offset)]  # ([B,] groups, C_out // groups, C_in // groups)
        if y is None:
            y = product(weight, taps)
        else:
            term = product(weight, taps, out=term)
            y += term
    return cast("np.ndarray", y).reshape(batch, spec.out_channels, *spec.out_size)


def _matmul(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Copy every window into an im2col buffer, then one batched matmul."""
    batch, positions, taps = x.shape[0], math.prod(spec.out_size), math.prod(spec.kernel)
    windows = _windows(x, spec)  # (B, G, Cg, *S_out, *K)
    n = spec.ndim
    order = (0, 1, 2, *range(3 + n, 3 + 2 * n), *range(3, 3 + n))
    columns = windows.transpose(order).reshape(batch, spec.groups, spec.group_in_channels * taps, positions)
    weight = _group_weight(spec, w)
    weight = weight.reshape(*weight.shape[: -1 - n], spec.group_in_channels * taps)
    y: np.ndarray = np.matmul(weight, columns)
    return y.reshape(batch, spec.out_channels, *spec.out_size)


def _fft(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Overlap-save: blocks of the input and the dilated kernel transformed, multiplied, summed over channels."""
    blocks = fft_blocks(spec)
    batch, n = x.shape[0], spec.ndim
    axes = tuple(range(-n, 0))
    real = not (np.iscomplexobj(x) or np.iscomplexobj(w))
    forward, inverse = (np.fft.rfftn, np.fft.irfftn) if real else (np.fft.fftn, np.fft.ifftn)

    extend = [(0, e - p) for e, p in zip(blocks.extent, x.shape[2:], strict=True)]
    xe = np.pad(x, ((0, 0), (0, 0), *extend)) if any(hi for _, hi in extend) else x
    view = sliding_window_view(xe, blocks.nfft, axis=tuple(range(2, 2 + n)))
    view = view[_index(_ALL, _ALL, *spatial_slices(blocks.step))]  # (B, C, *blocks, *nfft)
    spectrum = forward(view, axes=axes)
    bins = spectrum.shape[-n:]
    xs = spectrum.reshape(batch, spec.groups, spec.group_in_channels, blocks.block_count, math.prod(bins))

    wg = _group_weight(spec, w)
    dilated = np.zeros((*wg.shape[:-n], *blocks.effective), wg.dtype)
    dilated[_index(Ellipsis, *spatial_slices(spec.dilation))] = wg
    kernel = forward(np.flip(dilated, axis=axes), s=blocks.nfft, axes=axes)
    ws = kernel.reshape(*kernel.shape[:-n], math.prod(bins))  # ([B,] G, Og, Cg, F)

    if spec.group_in_channels == 1:
        ys = ws[..., 0, None, :] * xs[:, :, 0, None]  # (B, G, Og, blocks, F)
    else:
        product = np.matmul(np.moveaxis(ws, -1, -3), np.moveaxis(xs, -1, -3))  # (B, G, F, Og, blocks)
        ys = np.moveaxis(product, -3, -1)
    ys = ys.reshape(batch, spec.out_channels, *blocks.blocks, *bins)
    return _assemble(spec, blocks, inverse(ys, s=blocks.nfft, axes=axes))


def _assemble(spec: ConvSpec, blocks: FFTBlocks, transformed: np.ndarray) -> np.ndarray:
    """Cut the valid part of every block, lay the blocks end to end, apply the stride."""
    n = spec.ndim
    valid: tuple[slice, ...] = tuple(slice(e - 1, e - 1 + st) for e, st in zip(blocks.effective, blocks.step, strict=True))
    index: tuple[slice, ...] = (*(_ALL,) * (transformed.ndim - n), *valid)
    kept = transformed[index]
    interleave = (0, 1, *(i for d in range(n) for i in (2 + d, 2 + n + d)))
    joined = tuple(b * st for b, st in zip(blocks.blocks, blocks.step, strict=True))
    assembled = kept.transpose(interleave).reshape(transformed.shape[0], spec.out_channels, *joined)
    strided: tuple[slice, ...] = (_ALL, _ALL, *(slice(0, f, s) for f, s in zip(blocks.full, spec.stride, strict=True)))
    result: np.ndarray = assembled[strided]
    return result


METHODS: Final[Mapping[str, Callable[[ConvSpec, np.ndarray, np.ndarray], np.ndarray]]] = {
    "einsum": _einsum,
    "shift": _shift,
    "matmul": _matmul,
    "fft": _fft,
}


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """Half precision is computed (and accumulated) in float32."""
    return np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize < 4 else dtype  # noqa: PLR2004


def convolve(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """The whole convolution on NumPy arrays; the result has ``x``'s dtype."""
    out_dtype = x.dtype
    compute = _compute_dtype(out_dtype)
    # One memory order in, one summation order out: strided views give bitwise the same result.
    x, w = np.ascontiguousarray(x, dtype=compute), np.ascontiguousarray(w, dtype=compute)
    if spec.channels_last:
        x = np.moveaxis(x, -1, 1)
    if spec.weight_kind == "broadcast":
        w = w[0]
    if spec.flip:
        w = np.flip(w, axis=tuple(range(-spec.ndim, 0)))
    engine = METHODS[spec.method]
    if spec.batch and batch_chunk(spec, spec.method, compute.itemsize) >= spec.batch:
        y = engine(spec, _pad(x, spec), w)
    else:
        y = np.zeros((spec.batch, spec.out_channels, *spec.out_size), np.result_type(x, w))
        for part in batch_slices(spec, spec.method, compute.itemsize) if spec.batch else ():
            y[part] = engine(spec, _pad(x[part], spec), w[part] if spec.per_sample_weight else w)
    if spec.channels_last:
        y = np.moveaxis(y, 1, -1)
    if bias is not None:
        y = y + bias.astype(compute, copy=False).reshape(spec.bias_shape)
    return np.ascontiguousarray(y.astype(out_dtype, copy=False))


def convolve_numpy(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Same as :func:`convolve`: NumPy arrays are host arrays."""
    return convolve(spec, x, w, bias)
