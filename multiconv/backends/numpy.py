"""NumPy backend: strided windows contracted with ``numpy.einsum``.

Engines take ``x`` channels-first and already padded, ``w`` as a per-sample
``(B, C_out, C_in // groups, *K)`` or shared ``(C_out, C_in // groups, *K)``
weight (flipped if asked), and return ``(B, C_out, *S_out)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from multiconv._spec import ArrayInfo
from multiconv.backends import spatial_slices

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from multiconv._spec import ConvSpec

_NUMPY_PAD_MODES: Final = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}
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


def choose_method(spec: ConvSpec) -> str:  # noqa: ARG001
    """The engine for ``method="auto"``."""
    return "einsum"


def _pad(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Apply all of the padding (mode padding and zero padding) to channels-first ``x``."""
    if not any(lo or hi for lo, hi in spec.padding):
        return x
    widths = ((0, 0), (0, 0), *spec.padding)
    padded: np.ndarray = np.pad(x, widths, mode=_NUMPY_PAD_MODES[spec.padding_mode])  # type: ignore[call-overload]
    return padded


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
    weight = w.reshape(*w.shape[: -2 - spec.ndim], spec.groups, spec.group_out_channels, spec.group_in_channels, *spec.kernel)
    lead = "b" if spec.per_sample_weight else ""
    y: np.ndarray = np.einsum(f"bgc{s}{k},{lead}goc{k}->bgo{s}", _windows(x, spec), weight, optimize=True)
    return y.reshape(x.shape[0], spec.out_channels, *spec.out_size)


METHODS: Final[Mapping[str, Callable[[ConvSpec, np.ndarray, np.ndarray], np.ndarray]]] = {"einsum": _einsum}


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
    y = METHODS[spec.method](spec, _pad(x, spec), w)
    if spec.channels_last:
        y = np.moveaxis(y, 1, -1)
    if bias is not None:
        y = y + bias.astype(compute, copy=False).reshape(spec.bias_shape)
    return np.ascontiguousarray(y.astype(out_dtype, copy=False))


def convolve_numpy(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Same as :func:`convolve`: NumPy arrays are host arrays."""
    return convolve(spec, x, w, bias)
