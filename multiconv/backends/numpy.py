"""NumPy backend: the shared engines of :mod:`multiconv._engines` plus ``einsum``.

``einsum`` contracts ``sliding_window_view`` windows with ``numpy.einsum``; the
engines' array conventions are those of :mod:`multiconv._engines`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from multiconv import _engines
from multiconv._algorithms import batch_chunk, batch_slices
from multiconv._cost import choose
from multiconv._engines import group_weight, index
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
    return choose("numpy", spec, tuple(METHODS), accelerator=False)


def _pad(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Apply all of the padding (mode padding and zero padding) to channels-first ``x``."""
    if not any(lo or hi for lo, hi in spec.padding):
        return x
    widths = ((0, 0), (0, 0), *spec.padding)
    padded: np.ndarray = np.pad(x, widths, mode=_NUMPY_PAD_MODES[spec.padding_mode])  # type: ignore[call-overload]
    return padded


class _NumpyOps:
    """:class:`multiconv._engines.Ops` for NumPy."""

    @staticmethod
    def windows(x: np.ndarray, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> np.ndarray:
        n = len(sizes)
        extents = tuple(d * (k - 1) + 1 for d, k in zip(dilation, sizes, strict=True))
        view = sliding_window_view(x, extents, axis=tuple(range(x.ndim - n, x.ndim)))
        result: np.ndarray = view[index(*(_ALL,) * (x.ndim - n), *spatial_slices(steps), *spatial_slices(dilation))]
        return result

    @staticmethod
    def transpose(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        result: np.ndarray = a.transpose(axes)
        return result

    @staticmethod
    def pad_end(x: np.ndarray, extra: tuple[int, ...]) -> np.ndarray:
        result: np.ndarray = np.pad(x, [(0, 0)] * (x.ndim - len(extra)) + [(0, e) for e in extra])
        return result

    @staticmethod
    def dilate(w: np.ndarray, dilation: tuple[int, ...], sizes: tuple[int, ...]) -> np.ndarray:
        if all(d == 1 for d in dilation):
            return w
        dilated = np.zeros((*w.shape[: w.ndim - len(sizes)], *sizes), w.dtype)
        dilated[index(Ellipsis, *spatial_slices(dilation))] = w
        return dilated

    @staticmethod
    def flip(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        return np.flip(a, axis=axes)

    @staticmethod
    def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        result: np.ndarray = np.matmul(a, b)
        return result

    @staticmethod
    def is_complex(a: np.ndarray) -> bool:
        return bool(np.iscomplexobj(a))

    @staticmethod
    def fft(a: np.ndarray, shape: tuple[int, ...], *, real: bool) -> np.ndarray:
        axes = tuple(range(-len(shape), 0))
        return np.fft.rfftn(a, s=shape, axes=axes) if real else np.fft.fftn(a, s=shape, axes=axes)

    @staticmethod
    def ifft(a: np.ndarray, shape: tuple[int, ...], *, real: bool) -> np.ndarray:
        axes = tuple(range(-len(shape), 0))
        return np.fft.irfftn(a, s=shape, axes=axes) if real else np.fft.ifftn(a, s=shape, axes=axes)


OPS: Final = _NumpyOps()


def _einsum(spec: ConvSpec, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Contract strided windows of ``x`` with the weight in one ``numpy.einsum``."""
    s, k = _SPATIAL[: spec.ndim], _KERNEL[: spec.ndim]
    lead = "b" if spec.per_sample_weight else ""
    windows = OPS.windows(x, spec.kernel, spec.stride, spec.dilation)
    windows = windows.reshape(x.shape[0], spec.groups, spec.group_in_channels, *spec.out_size, *spec.kernel)
    y: np.ndarray = np.einsum(f"bgc{s}{k},{lead}goc{k}->bgo{s}", windows, group_weight(spec, w), optimize=True)
    return y.reshape(x.shape[0], spec.out_channels, *spec.out_size)


METHODS: Final[Mapping[str, Callable[[ConvSpec, np.ndarray, np.ndarray], np.ndarray]]] = {
    "einsum": _einsum,
    "shift": partial(_engines.shift, OPS),
    "matmul": partial(_engines.matmul, OPS),
    "fft": partial(_engines.fft, OPS),
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
