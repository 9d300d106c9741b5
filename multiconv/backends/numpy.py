"""NumPy backend: the shared engines of :mod:`multiconv._engines` plus ``einsum``.

``einsum`` contracts ``sliding_window_view`` windows with ``numpy.einsum``; the
engines' array conventions are those of :mod:`multiconv._engines`.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.lib.stride_tricks import as_strided

from multiconv import _engines, _threads
from multiconv._algorithms import batch_slices, numpy_chunk, numpy_lanes
from multiconv._cost import choose
from multiconv._engines import group_weight, index, pairwise_sum
from multiconv._spec import HALF_DTYPES, ArrayInfo
from multiconv.backends import spatial_slices

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from multiconv._engines import Engine
    from multiconv._spec import ConvSpec
    from multiconv.backends import Runner

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


class _NumpyOps:
    """:class:`multiconv._engines.Ops` for NumPy."""

    terms_per_sum: Final = 0
    strided_operands_copied: Final = True  # a matrix strided in both dims, or stepping over its rows, is multiplied without BLAS
    total: Final = staticmethod(pairwise_sum)

    @staticmethod
    def windows(x: np.ndarray, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> np.ndarray:
        # The view sliding_window_view gives, sliced to the steps and the dilation, built in one
        # call: sliding_window_view's checks cost 9 us a call, which every batch chunk pays.
        n = len(sizes)
        counts = tuple(max(c, 0) for c in _engines.window_counts(x.shape[-n:], sizes, steps, dilation))
        spatial = x.strides[-n:]
        strides = (
            *x.strides[:-n],
            *(s * t for s, t in zip(spatial, steps, strict=True)),
            *(s * d for s, d in zip(spatial, dilation, strict=True)),
        )
        return as_strided(x, (*x.shape[:-n], *counts, *sizes), strides, writeable=False)

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
    def contiguous(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a)

    @staticmethod
    def stack(arrays: list[np.ndarray], axis: int) -> np.ndarray:
        return np.stack(arrays, axis=axis)

    #: ``np.matmul`` itself: the shift engine calls it once per tap, and a wrapper costs a call.
    matmul: Final = staticmethod(np.matmul)

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


def _einsum(spec: ConvSpec) -> Engine:
    """Contract strided windows of ``x`` with the weight in one ``numpy.einsum``."""
    s, k = _SPATIAL[: spec.ndim], _KERNEL[: spec.ndim]
    subscripts = f"bgc{s}{k},{'b' if spec.per_sample_weight else ''}goc{k}->bgo{s}"
    grouped_tail = (spec.groups, spec.group_in_channels, *spec.out_size, *spec.kernel)
    out_tail = (spec.out_channels, *spec.out_size)

    def run(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        windows = OPS.windows(x, spec.kernel, spec.stride, spec.dilation).reshape(x.shape[0], *grouped_tail)
        y: np.ndarray = np.einsum(subscripts, windows, group_weight(spec, w), optimize=True)
        return y.reshape(x.shape[0], *out_tail)

    return run


#: Engine name -> builder: ``METHODS[name](spec)`` is ``run(x, w)`` (see :mod:`multiconv._engines`).
METHODS: Final[Mapping[str, Callable[[ConvSpec], Engine]]] = {
    "einsum": _einsum,
    "shift": partial(_engines.shift, OPS),
    "matmul": partial(_engines.matmul, OPS),
    "col2im": partial(_engines.col2im, OPS),
    "fft": partial(_engines.fft, OPS),
}


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """Half precision is computed (and accumulated) in float32.

    By name: ``ml_dtypes``' bfloat16 (a JAX or PyTorch array's, moved to NumPy) has kind
    ``"V"``, and ``numpy.einsum`` rejects it.
    """
    return np.dtype(np.float32) if dtype.name in HALF_DTYPES else dtype


def _batched(spec: ConvSpec, compute: np.dtype) -> Engine:
    """The engine on the padded input, in batch chunks where the workspace limit (or the caches) ask for them."""
    engine = METHODS[spec.method](spec)
    padding = ((0, 0), (0, 0), *spec.padding) if any(lo or hi for lo, hi in spec.padding) else None
    pad_mode, per_sample = _NUMPY_PAD_MODES[spec.padding_mode], spec.per_sample_weight

    def pad(x: np.ndarray) -> np.ndarray:
        return x if padding is None else np.pad(x, padding, mode=pad_mode)  # type: ignore[call-overload]

    method, itemsize = spec.method, compute.itemsize
    chunk = numpy_chunk(spec, method, itemsize)
    if spec.batch and chunk >= spec.batch:
        return engine if padding is None else lambda x, w: engine(pad(x), w)
    chunks = tuple(batch_slices(spec, method, itemsize, chunk)) if spec.batch else ()
    lanes = numpy_lanes(spec, method, itemsize)
    out_shape = (spec.batch, spec.out_channels, *spec.out_size)

    if method == "matmul":  # each chunk's matmul writes its part of the result in place
        columns, weight = _engines.im2col(OPS, spec), _engines.columns_weight(spec)
        grouped_tail = (spec.groups, spec.group_out_channels, math.prod(spec.out_size))

        def fill(out: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
            np.matmul(weight(w), columns(x), out=out.reshape((out.shape[0], *grouped_tail)))

    elif method == "shift":  # each chunk's sum runs in its part of the result

        def fill(out: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
            engine(x, w, out=out)  # type: ignore[call-arg]

    else:

        def fill(out: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
            out[...] = engine(x, w)

    def chunked(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        y = np.empty(out_shape, compute)  # every chunk writes its part (np.zeros cost 3-6 ms for 17 MB)

        def task(part: slice) -> Callable[[], None]:
            return lambda: fill(y[part], pad(x[part]), w[part] if per_sample else w)

        # the chunks side by side, one thread per BLAS thread, as many as fit the workspace limit together
        _threads.run_all([task(part) for part in chunks], _threads.blas_threads(), lanes)
        return y

    return chunked


def _aligned(a: np.ndarray) -> np.ndarray:
    """``a``, or an aligned copy of it."""
    return a if a.flags.aligned else a.copy()


@lru_cache(maxsize=1024)
def prepare(spec: ConvSpec) -> Runner:
    """``run(x, w, bias)``: the whole convolution for ``spec``, every decision taken once, here."""
    out_dtype = np.dtype(spec.dtype)
    compute = _compute_dtype(out_dtype)
    engine = _batched(spec, compute)
    narrow = None if compute == out_dtype else out_dtype
    channels_last, broadcast = spec.channels_last, spec.weight_kind == "broadcast"
    flip_axes = tuple(range(-spec.ndim, 0)) if spec.flip else None
    bias_shape = spec.bias_shape

    def run(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        # One memory order in, one summation order out: strided, byte-swapped and unaligned
        # views give bitwise the same result (NumPy sums unaligned operands in another order).
        x, w = np.ascontiguousarray(x, dtype=compute), np.ascontiguousarray(w, dtype=compute)
        if not (x.flags.aligned and w.flags.aligned):
            x, w = _aligned(x), _aligned(w)
        if channels_last:
            x = np.moveaxis(x, -1, 1)
        if broadcast:
            w = w[0]
        if flip_axes is not None:
            w = np.flip(w, axis=flip_axes)
        y = engine(x, w)
        if channels_last:
            y = np.moveaxis(y, 1, -1)
        if bias is not None:
            y = y + bias.astype(compute, copy=False).reshape(bias_shape)
        return np.ascontiguousarray(y if narrow is None else y.astype(narrow))

    return run


def convolve(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """The whole convolution on NumPy arrays; the result has ``x``'s dtype."""
    result: np.ndarray = prepare(spec)(x, w, bias)
    return result


def convolve_numpy(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """Same as :func:`convolve`: NumPy arrays are host arrays."""
    return convolve(spec, x, w, bias)
