"""A float64 reference for batch-wise convolution, and a strict comparison helper.

This module is the oracle the library is checked against, so it shares no code with
it: it does not import any other part of ``multiconv``, it resolves padding on its own
and it computes the convolution with plain loops over kernel offsets.  Only NumPy is
imported here; PyTorch tensors and JAX arrays are accepted and recognised through
``sys.modules``, so using this module never imports a framework that is not already
loaded.

The public names are

- :func:`reference_conv`: the convolution of the contract, in float64 (complex128 for
  complex inputs), as a NumPy array;
- :func:`reference_conv_vjp`: the gradients ``(grad_x, grad_w, grad_bias)`` of that
  convolution for a cotangent ``grad_y`` (the vector-Jacobian product, no
  conjugation), computed by scattering ``grad_y`` back through every kernel offset
  and folding padded borders back onto the positions they were copied from;
- :func:`error_bound`: the contract's elementwise tolerance
  ``c * n * eps(dtype) * (conv(|x|, |w|) + |bias|) + tiny``;
- :func:`assert_conv_close`: checks array type, device, dtype, shape and then values
  against a bound, in the spirit of SciPy's ``xp_assert_close``;
- :func:`assert_matches_reference`: the three above in one call.
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

__all__ = [
    "assert_conv_close",
    "assert_matches_reference",
    "error_bound",
    "reference_conv",
    "reference_conv_vjp",
]

_PADDING_MODES: dict[str, Literal["constant", "reflect", "edge", "wrap"]] = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}
_MAX_SPATIAL_DIMS = 3
_LAYOUTS = ("channels_first", "channels_last")
_PADDING_STRINGS = ("valid", "same", "causal", "full")

# (machine epsilon, smallest positive normal) of the real dtype underlying each name.
# Written out rather than taken from ``numpy.finfo`` because NumPy has no bfloat16.
_FLOAT_INFO: dict[str, tuple[float, float]] = {
    "float16": (2.0**-10, 2.0**-14),
    "bfloat16": (2.0**-7, 2.0**-126),
    "float32": (2.0**-23, 2.0**-126),
    "float64": (2.0**-52, 2.0**-1022),
}
_COMPLEX_PARTS = {
    "complex32": "float16",
    "chalf": "float16",
    "complex64": "float32",
    "complex128": "float64",
}


# --------------------------------------------------------------------------- arrays


def _array_family(a: Any) -> str:
    """Return which framework owns ``a``: ``"numpy"``, ``"torch"`` or ``"jax"``.

    Frameworks are looked up in ``sys.modules`` and never imported: an object can
    only be a tensor of a framework that is already loaded.

    Raises
    ------
    TypeError
        If ``a`` is not a NumPy array (or NumPy scalar), a torch tensor or a JAX
        array (tracers included).
    """
    if isinstance(a, np.ndarray | np.generic):
        return "numpy"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None:
        if isinstance(a, jax.Array):
            return "jax"
        core = getattr(jax, "core", None)
        tracer = getattr(core, "Tracer", None)
        if isinstance(tracer, type) and isinstance(a, tracer):
            return "jax"
    msg = f"expected a numpy.ndarray, torch.Tensor or jax.Array, got {type(a).__module__}.{type(a).__qualname__}"
    raise TypeError(msg)


def _to_numpy(a: Any) -> npt.NDArray[Any]:
    """Return the values of ``a`` as a NumPy array on the host.

    Torch tensors are detached and moved to the CPU; bfloat16 and complex32 (which
    NumPy lacks) become float32 and complex64, which hold their values exactly.
    Anything else goes through ``numpy.asarray``.  The result may share memory
    with ``a``: callers must copy before writing.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.Tensor):
        t = a.detach().cpu().resolve_conj().resolve_neg()
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        elif t.dtype == torch.complex32:
            t = t.to(torch.complex64)
        return np.asarray(t.numpy())
    out = np.asarray(a)
    if out.dtype.name == "bfloat16":  # JAX arrays convert to ml_dtypes.bfloat16
        out = out.astype(np.float32)
    return out


def _dtype_name(a: Any) -> str:
    """Return the canonical name of a dtype, or of the dtype of an array.

    Accepts a name (``"float32"``, ``"torch.float32"``, ``"f4"``), a NumPy dtype or
    scalar type, a torch dtype, a JAX dtype, or any object with a ``dtype``.
    Torch's ``"torch."`` prefix is stripped, so ``torch.float32`` gives
    ``"float32"``.

    Raises
    ------
    TypeError
        If no dtype can be read from ``a``.
    """
    if isinstance(a, str):
        name = a.removeprefix("torch.")
        try:
            return str(np.dtype(name).name)
        except TypeError:
            return name
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(a, torch.dtype):
        return str(a).removeprefix("torch.")
    if isinstance(a, np.dtype | type):
        try:
            return str(np.dtype(a).name)
        except TypeError:
            pass
    else:
        dtype = getattr(a, "dtype", None)
        if dtype is not None:
            return _dtype_name(dtype)
    msg = f"cannot read a dtype from {a!r} (type {type(a).__qualname__})"
    raise TypeError(msg)


def _float_info(dtype: Any) -> tuple[float, float, bool]:
    """Return ``(eps, smallest normal, is_complex)`` for a floating dtype."""
    name = _dtype_name(dtype)
    real = _COMPLEX_PARTS.get(name, name)
    if real not in _FLOAT_INFO:
        allowed = ", ".join([*_FLOAT_INFO, *_COMPLEX_PARTS])
        msg = f"dtype={name!r} is not a floating dtype; allowed: {allowed}"
        raise TypeError(msg)
    eps, tiny = _FLOAT_INFO[real]
    return eps, tiny, name in _COMPLEX_PARTS


def _device(a: Any, family: str) -> str:
    """Return a printable device of ``a`` (``"cpu"`` for NumPy)."""
    if family == "torch":
        return str(a.device)
    if family == "jax":
        try:
            devices = a.devices()
        except (AttributeError, TypeError, RuntimeError, ValueError):
            return "unknown"  # tracers have no concrete device
        return ",".join(sorted(str(d) for d in devices))
    return "cpu"


# -------------------------------------------------------------------------- padding


def _int_tuple(value: Any, n: int, name: str) -> tuple[int, ...]:
    """Expand an int or an ``n``-tuple of ints into a tuple of positive ints."""
    bad = ValueError(f"{name}={value!r} must be a positive int or a tuple of {n} positive ints")
    try:
        items = (value,) * n if _is_int(value) else tuple(value)
    except TypeError:
        raise bad from None
    if len(items) != n or not all(_is_int(v) and v >= 1 for v in items):
        raise bad
    return tuple(int(v) for v in items)


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _resolve_padding(
    padding: Any,
    spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[int, int]]:
    """Turn any accepted ``padding`` into one ``(lo, hi)`` pair per spatial axis."""
    if not isinstance(padding, str):
        return _explicit_padding(padding, len(spatial))
    _check_choice("padding", padding, _PADDING_STRINGS)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    if padding == "valid":
        return [(0, 0)] * len(spatial)
    if padding == "causal":
        return [(e - 1, 0) for e in extent]
    if padding == "full":
        return [(e - 1, e - 1) for e in extent]
    # "same", as JAX/TF SAME: output ceil(length / s), any odd pad on the high side
    pairs = []
    for length, e, s in zip(spatial, extent, stride, strict=True):
        out = -(-length // s)
        total = max((out - 1) * s + e - length, 0)
        pairs.append((total // 2, total - total // 2))
    return pairs


def _explicit_padding(padding: Any, n: int) -> list[tuple[int, int]]:
    """Turn an int, ``n`` ints or ``n`` ``(lo, hi)`` pairs into ``(lo, hi)`` pairs."""
    bad = ValueError(
        f"padding={padding!r} must be a non-negative int, a tuple of {n} ints, a tuple of {n} (lo, hi) pairs or one of {_PADDING_STRINGS}"
    )
    if _is_int(padding):
        padding = (padding,) * n
    pairs = []
    try:
        for item in padding:
            lo, hi = (item, item) if _is_int(item) else item
            pairs.append((lo, hi))
    except (TypeError, ValueError):  # not iterable, or not a pair
        raise bad from None
    if len(pairs) != n or not all(_is_int(p) and p >= 0 for pair in pairs for p in pair):
        raise bad
    return [(int(lo), int(hi)) for lo, hi in pairs]


# ------------------------------------------------------------------------ reference


def _weights_per_sample(w: npt.NDArray[Any], n: int, batch: int) -> npt.NDArray[Any]:
    """Return ``w`` as ``(B, C_out, C_in // groups, *K)``, broadcasting if needed."""
    if w.ndim == n + 2:
        w = w[np.newaxis]
    elif w.ndim != n + 3:
        msg = f"w.shape={w.shape} must have {n + 2} dims (shared) or {n + 3} dims (per sample) for {n} spatial dims"
        raise ValueError(msg)
    if w.shape[0] not in (1, batch):
        msg = f"w.shape={w.shape} has a batch dim of {w.shape[0]}, expected 1 or B={batch}"
        raise ValueError(msg)
    return np.broadcast_to(w, (batch, *w.shape[1:]))


def _bias_per_sample(bias: npt.NDArray[Any], batch: int, c_out: int) -> npt.NDArray[Any]:
    """Return ``bias`` as ``(B, C_out)``."""
    if bias.shape[-1:] != (c_out,) or bias.shape[:-1] not in ((), (1,), (batch,)):
        msg = f"bias.shape={bias.shape} must be ({c_out},), ({batch}, {c_out}) or (1, {c_out})"
        raise ValueError(msg)
    return np.broadcast_to(bias, (batch, c_out))


def reference_conv(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] | Sequence[tuple[int, int]] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    layout: str = "channels_first",
    flip: bool = False,
) -> npt.NDArray[Any]:
    """Batch-wise convolution computed the slow, obvious way, in float64.

    ``y[b, g*Og + o, t] = bias[b, g*Og + o]
    + sum_{c, k} w[b, g*Og + o, c, k] * xpad[b, g*Cg + c, t*stride + k*dilation]``
    with ``Cg = C_in // groups`` and ``Og = C_out // groups``: one vectorised
    ``einsum`` per group and kernel offset.  Complex inputs are multiplied
    bilinearly, without conjugation.

    Parameters
    ----------
    x : array
        ``(B, C_in, *S)``, or ``(B, *S, C_in)`` with ``layout="channels_last"``;
        ``N = x.ndim - 2`` spatial dims, 1 to 3.  NumPy array, torch tensor (any
        device, bfloat16 included) or JAX array.
    w : array
        ``(B, C_out, C_in // groups, *K)`` per sample, ``(1, C_out, C_in // groups,
        *K)`` broadcast, or ``(C_out, C_in // groups, *K)`` shared.
    bias : array, optional
        ``(C_out,)``, ``(B, C_out)`` or ``(1, C_out)``.
    stride, dilation : int or tuple of int
        Positive, one per spatial dim or one for all.
    padding : int, tuple or str
        An int, ``N`` ints, ``N`` ``(lo, hi)`` pairs, or ``"valid"``, ``"same"``
        (output ``ceil(S / stride)``, the odd element on the high side),
        ``"causal"`` (all on the low side) or ``"full"``.
    groups : int
        Divides ``C_in`` and ``C_out``.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        How padded elements are filled, as in ``torch.nn.Conv1d``.
    layout : {"channels_first", "channels_last"}
        Where the channel axis of ``x`` and of the result is.
    flip : bool
        ``True`` reverses the kernel (true convolution); ``False`` is
        cross-correlation.

    Returns
    -------
    numpy.ndarray
        ``(B, C_out, *S_out)`` (or ``(B, *S_out, C_out)``), float64, or complex128
        if any input is complex, with ``S_out = floor((S + lo + hi - E) / stride)
        + 1`` and ``E = dilation * (K - 1) + 1``.

    Raises
    ------
    ValueError
        For inconsistent shapes, unknown strings, or a kernel longer than the
        padded input.  Validation is light: this is an oracle, not the front door.
    TypeError
        For an input that is not an array.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5.0).reshape(1, 1, 5)
    >>> w = np.array([[[[1.0, 0.0, -1.0]]]])  # (B=1, C_out=1, C_in=1, K=3)
    >>> reference_conv(x, w)
    array([[[-2., -2., -2.]]])
    >>> reference_conv(x, w, padding="same", flip=True)
    array([[[ 1.,  2.,  2.,  2., -3.]]])
    """
    arrays = [_to_numpy(x), _to_numpy(w)] + ([] if bias is None else [_to_numpy(bias)])
    compute = np.complex128 if any(np.iscomplexobj(a) for a in arrays) else np.float64
    xa, wa = (a.astype(compute) for a in arrays[:2])
    n = xa.ndim - 2
    if not 1 <= n <= _MAX_SPATIAL_DIMS:
        msg = f"x.shape={xa.shape} must have 3 to 5 dims (B, C, 1 to 3 spatial dims)"
        raise ValueError(msg)
    _check_choice("layout", layout, _LAYOUTS)
    _check_choice("padding_mode", padding_mode, tuple(_PADDING_MODES))
    if layout == "channels_last":
        xa = np.moveaxis(xa, -1, 1)
    batch, c_in, *spatial = xa.shape
    wa = _weights_per_sample(wa, n, batch)
    _check_groups(groups, c_in, wa.shape)
    strides = _int_tuple(stride, n, "stride")
    dilations = _int_tuple(dilation, n, "dilation")
    pads = _resolve_padding(padding, spatial, wa.shape[3:], strides, dilations)
    if flip:
        wa = np.flip(wa, axis=tuple(range(3, 3 + n)))
    xpad = np.pad(xa, [(0, 0), (0, 0), *pads], mode=_PADDING_MODES[padding_mode])
    y = _correlate(xpad, wa, strides, dilations, groups)
    if bias is not None:
        ba = _bias_per_sample(arrays[2].astype(compute), batch, wa.shape[1])
        y += ba.reshape(*ba.shape, *([1] * n))
    if layout == "channels_last":
        y = np.moveaxis(y, 1, -1)
    return np.ascontiguousarray(y)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        msg = f"{name}={value!r} is not one of {allowed}"
        raise ValueError(msg)


def _check_groups(groups: Any, c_in: int, w_shape: tuple[int, ...]) -> None:
    c_out, c_group = w_shape[1:3]
    if not _is_int(groups) or groups < 1 or c_in % groups or c_out % groups:
        msg = f"groups={groups!r} must be a positive int dividing C_in={c_in} and C_out={c_out}"
        raise ValueError(msg)
    if c_group != c_in // groups:
        msg = f"w.shape={w_shape} needs C_in // groups = {c_in // groups} at dim 2"
        raise ValueError(msg)


def _correlate(
    xpad: npt.NDArray[Any],
    w: npt.NDArray[Any],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    groups: int,
) -> npt.NDArray[Any]:
    """Cross-correlate padded ``(B, C_in, *S)`` with ``(B, C_out, Cg, *K)``, by group.

    One ``einsum`` over batch, channels and output positions per group and kernel
    offset; nothing clever, so that it is easy to check by reading.
    """
    batch, c_out, c_group, *kernel = w.shape
    out_shape = []
    for size, k, s, d in zip(xpad.shape[2:], kernel, strides, dilations, strict=True):
        extent = d * (k - 1) + 1
        if extent > size:
            msg = f"the effective kernel length {extent} (K={k}, dilation={d}) exceeds the padded input length {size}"
            raise ValueError(msg)
        out_shape.append((size - extent) // s + 1)

    y = np.zeros((batch, c_out, *out_shape), dtype=np.result_type(xpad, w))
    o_group = c_out // groups
    every = slice(None)
    for g in range(groups):
        x_g = xpad[:, g * c_group : (g + 1) * c_group]
        w_g = w[:, g * o_group : (g + 1) * o_group]
        y_g = y[:, g * o_group : (g + 1) * o_group]  # a view: updated in place
        for offset in itertools.product(*(range(k) for k in kernel)):
            window = tuple(
                slice(k * d, k * d + (m - 1) * s + 1, s) for k, d, m, s in zip(offset, dilations, out_shape, strides, strict=True)
            )
            x_index: tuple[slice, ...] = (every, every, *window)
            w_index: tuple[slice | int, ...] = (every, every, every, *offset)
            # (B, Og, Cg) x (B, Cg, *S_out) -> (B, Og, *S_out)
            y_g += np.einsum("boc,bc...->bo...", w_g[w_index], x_g[x_index])
    return y


# ------------------------------------------------------------------------------ vjp


def reference_conv_vjp(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    grad_y: Any,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] | Sequence[tuple[int, int]] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    layout: str = "channels_first",
    flip: bool = False,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any] | None]:
    """Gradients of :func:`reference_conv` for a cotangent ``grad_y``, in float64.

    The vector-Jacobian product of ``(x, w, bias) -> y``: the linear transpose of
    the map's derivative at ``(x, w, bias)``, applied to ``grad_y``, without
    conjugation (the convention of ``jax.vjp``).  With ``<a, b> = sum(a * b)``
    (bilinear, also for complex arrays) it satisfies ``<conv(x', w), grad_y> =
    <x', grad_x>`` for every ``x'``, ``<conv(x, w'), grad_y> = <w', grad_w>`` for
    every ``w'`` and ``<bias' broadcast over y, grad_y> = <bias', grad_bias>``.

    It is computed independently of :func:`reference_conv`: for every group and
    kernel offset, ``grad_y`` is scattered into a gradient of the padded input and
    correlated with the window of the padded input that the offset reads.  The
    padding is applied through one index map per axis (``numpy.pad`` of
    ``arange``), so its adjoint adds each padded position's gradient onto the input
    position it was copied from (zeros: dropped).

    ``jax.vjp`` returns this VJP itself.  PyTorch autograd differentiates complex
    tensors with the conjugate Wirtinger convention: for this bilinear map,
    ``tensor.grad`` after ``y.backward(g)`` is ``conj(vjp(conj(g)))`` at the same
    point, which is also the VJP of ``g`` at ``(conj(x), conj(w), conj(bias))``.
    For real inputs the conventions agree.

    Parameters
    ----------
    x, w, bias : array
        As for :func:`reference_conv`: ``x`` is ``(B, C_in, *S)`` (or ``(B, *S,
        C_in)`` with ``layout="channels_last"``), ``w`` per sample ``(B, C_out,
        C_in // groups, *K)``, broadcast ``(1, ...)`` or shared ``(C_out,
        C_in // groups, *K)``; ``bias`` ``None``, ``(C_out,)``, ``(B, C_out)`` or
        ``(1, C_out)``.  NumPy arrays, torch tensors or JAX arrays.
    grad_y : array
        The cotangent, keyword-only: the shape of the convolution's result,
        ``(B, C_out, *S_out)`` (or ``(B, *S_out, C_out)``).
    stride, padding, dilation, groups, padding_mode, layout, flip
        As for :func:`reference_conv`.

    Returns
    -------
    grad_x, grad_w, grad_bias : numpy.ndarray
        float64, or complex128 if any of ``x``, ``w``, ``bias``, ``grad_y`` is
        complex, each with exactly the shape of its input (``grad_x`` in
        ``layout``).  The gradient of a broadcast or shared weight, or of a bias
        without a per-sample batch dim, is summed over the batch; ``grad_bias`` is
        ``None`` when ``bias`` is.  ``B = 0`` gives zeros.

    Raises
    ------
    ValueError
        As :func:`reference_conv`, and when ``grad_y`` does not have the shape of
        the convolution's result.
    TypeError
        For an input that is not an array.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5.0).reshape(1, 1, 5)
    >>> w = np.array([[[[1.0, 0.0, -1.0]]]])  # (B=1, C_out=1, C_in=1, K=3)
    >>> gx, gw, gb = reference_conv_vjp(x, w, np.zeros(1), grad_y=np.ones((1, 1, 3)))
    >>> gx
    array([[[ 1.,  1.,  0., -1., -1.]]])
    >>> gw
    array([[[[3., 6., 9.]]]])
    >>> gb
    array([3.])
    >>> w2 = np.array([[[[1.0, 2.0, 4.0]]]])  # replicated edges pass their gradient back
    >>> reference_conv_vjp(x, w2, grad_y=np.ones((1, 1, 5)), padding=1, padding_mode="replicate")[0]
    array([[[ 4.,  7.,  7.,  7., 10.]]])
    """
    arrays = [_to_numpy(x), _to_numpy(w), _to_numpy(grad_y)] + ([] if bias is None else [_to_numpy(bias)])
    compute = np.complex128 if any(np.iscomplexobj(a) for a in arrays) else np.float64
    xa, wa, gy = (a.astype(compute) for a in arrays[:3])
    n = xa.ndim - 2
    if not 1 <= n <= _MAX_SPATIAL_DIMS:
        msg = f"x.shape={xa.shape} must have 3 to 5 dims (B, C, 1 to 3 spatial dims)"
        raise ValueError(msg)
    _check_choice("layout", layout, _LAYOUTS)
    _check_choice("padding_mode", padding_mode, tuple(_PADDING_MODES))
    channels_last = layout == "channels_last"
    if channels_last:
        xa = np.moveaxis(xa, -1, 1)
    batch, c_in, *spatial = xa.shape
    w_full = _weights_per_sample(wa, n, batch)
    _check_groups(groups, c_in, w_full.shape)
    c_out, kernel = w_full.shape[1], w_full.shape[3:]
    if bias is not None:
        _bias_per_sample(arrays[3], batch, c_out)  # validates the shape
    strides = _int_tuple(stride, n, "stride")
    dilations = _int_tuple(dilation, n, "dilation")
    pads = _resolve_padding(padding, spatial, kernel, strides, dilations)
    index_maps = [_padding_index(length, lo, hi, padding_mode) for length, (lo, hi) in zip(spatial, pads, strict=True)]
    out_shape = _vjp_output_shape(index_maps, kernel, strides, dilations)
    expected = (batch, *out_shape, c_out) if channels_last else (batch, c_out, *out_shape)
    if gy.shape != expected:
        msg = f"grad_y.shape={gy.shape} must be the shape of the convolution's result, {expected}"
        raise ValueError(msg)
    if channels_last:
        gy = np.moveaxis(gy, -1, 1)

    xpad = xa
    for axis, index_map in enumerate(index_maps):
        xpad = _pad_by_index(xpad, index_map, axis + 2)
    kernel_axes = tuple(range(3, 3 + n))
    wk = np.flip(w_full, axis=kernel_axes) if flip else w_full
    grad_xpad, grad_wk = _scatter_offsets(xpad, wk, gy, strides, dilations, groups=groups)
    grad_x = grad_xpad
    for axis, (index_map, length) in enumerate(zip(index_maps, spatial, strict=True)):
        grad_x = _unpad_by_index(grad_x, index_map, length, axis + 2)
    if channels_last:
        grad_x = np.moveaxis(grad_x, 1, -1)
    grad_w = _sum_to_shape(np.flip(grad_wk, axis=kernel_axes) if flip else grad_wk, wa.shape)
    grad_bias = None
    if bias is not None:
        grad_bias = np.ascontiguousarray(_sum_to_shape(gy.sum(axis=tuple(range(2, 2 + n))), arrays[3].shape))
    return np.ascontiguousarray(grad_x), np.ascontiguousarray(grad_w), grad_bias


def _vjp_output_shape(
    index_maps: Sequence[npt.NDArray[np.intp]],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """``S_out`` from the padded lengths, or a ``ValueError`` for a kernel longer than one."""
    out_shape = []
    for index_map, k, s, d in zip(index_maps, kernel, strides, dilations, strict=True):
        extent = d * (k - 1) + 1
        if extent > index_map.size:
            msg = f"the effective kernel length {extent} (K={k}, dilation={d}) exceeds the padded input length {index_map.size}"
            raise ValueError(msg)
        out_shape.append((index_map.size - extent) // s + 1)
    return out_shape


def _scatter_offsets(
    xpad: npt.NDArray[Any],
    wk: npt.NDArray[Any],
    gy: npt.NDArray[Any],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    *,
    groups: int,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    """Gradients of the padded input and of the per-sample kernel, one group and offset at a time.

    ``y[b, o, t] += wk[b, o, c, k] * xpad[b, c, t*stride + k*dilation]`` for every
    offset ``k``, so ``grad_y[b, o, t]`` goes back to ``xpad[b, c, t*stride +
    k*dilation]`` weighted by ``wk[b, o, c, k]``, and to ``wk[b, o, c, k]``
    weighted by that element of ``xpad``.
    """
    _, c_out, c_group, *kernel = wk.shape
    out_shape = gy.shape[2:]
    grad_xpad: npt.NDArray[Any] = np.zeros(xpad.shape, dtype=gy.dtype)
    grad_wk: npt.NDArray[Any] = np.zeros(wk.shape, dtype=gy.dtype)
    o_group = c_out // groups
    every = slice(None)
    pos = "tuv"[: len(kernel)]  # einsum letters of the output positions
    for g in range(groups):
        channels, outs = slice(g * c_group, (g + 1) * c_group), slice(g * o_group, (g + 1) * o_group)
        gy_g = gy[:, outs]
        for offset in itertools.product(*(range(k) for k in kernel)):
            # the padded positions this offset reads, one per output position; they are
            # distinct, so the fancy-indexed += below loses no update
            taps = np.ix_(*(j * d + s * np.arange(m) for j, d, s, m in zip(offset, dilations, strides, out_shape, strict=True)))
            x_index: tuple[slice | npt.NDArray[np.intp], ...] = (every, channels, *taps)
            w_index: tuple[slice | int, ...] = (every, outs, every, *offset)
            grad_xpad[x_index] += np.einsum(f"boc,bo{pos}->bc{pos}", wk[w_index], gy_g)
            grad_wk[w_index] += np.einsum(f"bo{pos},bc{pos}->boc", gy_g, xpad[x_index])
    return grad_xpad, grad_wk


def _padding_index(length: int, lo: int, hi: int, padding_mode: str) -> npt.NDArray[np.intp]:
    """Where each padded position of an axis of ``length`` is copied from; -1 for a zero."""
    positions = np.arange(length, dtype=np.intp)
    if padding_mode == "zeros":
        return np.pad(positions, (lo, hi), mode="constant", constant_values=-1)
    return np.pad(positions, (lo, hi), mode=_PADDING_MODES[padding_mode])


def _pad_by_index(a: npt.NDArray[Any], index_map: npt.NDArray[np.intp], axis: int) -> npt.NDArray[Any]:
    """Pad ``a`` along ``axis`` by copying the positions ``index_map`` names (zeros for -1)."""
    valid = index_map >= 0
    gathered = np.take(a, np.where(valid, index_map, 0), axis=axis)
    shape = [1] * a.ndim
    shape[axis] = index_map.size
    return np.where(valid.reshape(shape), gathered, np.zeros((), dtype=a.dtype))


def _unpad_by_index(grad: npt.NDArray[Any], index_map: npt.NDArray[np.intp], length: int, axis: int) -> npt.NDArray[Any]:
    """The adjoint of :func:`_pad_by_index`: add each padded position onto its source."""
    moved = np.moveaxis(grad, axis, 0)
    out = np.zeros((length, *moved.shape[1:]), dtype=grad.dtype)
    valid = index_map >= 0
    np.add.at(out, index_map[valid], moved[valid])
    return np.moveaxis(out, 0, axis)


def _sum_to_shape(grad: npt.NDArray[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    """Sum a per-sample ``(B, ...)`` gradient down to ``shape``: ``(B, ...)``, ``(1, ...)`` or ``(...)``."""
    if len(shape) == grad.ndim - 1:
        return np.asarray(grad.sum(axis=0))
    if shape[0] == grad.shape[0]:
        return grad
    return np.asarray(grad.sum(axis=0, keepdims=True))


# ---------------------------------------------------------------------- error bound


def error_bound(
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    dtype: Any,
    c: float = 4.0,
    method: str | None = None,
    **conv_kwargs: Any,
) -> npt.NDArray[np.float64]:
    """Elementwise tolerance for a convolution computed in ``dtype``.

    ``c * n * eps * (conv(|x|, |w|) + |bias|) + c * n * tiny``, where
    ``n = (C_in / groups) * prod(K)`` (plus 1 with a bias), ``eps`` is the machine
    epsilon and ``tiny`` the smallest positive normal number of the real dtype
    underlying ``dtype``; doubled for complex dtypes, whose products carry extra
    rounding.

    An FFT spreads every rounding error over its whole transform, so its error is
    bounded normwise, not elementwise: with ``method="fft"`` the bound of output
    channel ``(b, o)`` gains ``c * eps * log2(2 * S * prod(K)) * ||xpad[b, g]|| *
    ||w[b, o]||`` (``S`` the number of input positions, ``xpad[b, g]`` the padded
    input channels of ``o``'s group; Euclidean norms).

    Parameters
    ----------
    x, w, bias : array
        As for :func:`reference_conv`.
    dtype : str or dtype
        The dtype the result under test was computed in: a name (``"float16"``,
        ``"bfloat16"``, ``"complex64"``, ...), or a NumPy, torch or JAX dtype.
        eps is 2**-10 (float16), 2**-7 (bfloat16), 2**-23 (float32, complex64) or
        2**-52 (float64, complex128).
    c : float
        Safety factor.
    method : str, optional
        ``"fft"`` adds the normwise term of FFT-based convolution; other methods
        (or ``None``) use the elementwise bound alone.
    **conv_kwargs
        The keyword arguments of :func:`reference_conv`.

    Returns
    -------
    numpy.ndarray
        float64, the shape of the convolution's result.

    Raises
    ------
    TypeError
        If ``dtype`` is not a floating dtype.
    ValueError
        As :func:`reference_conv`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 2, 4))
    >>> w = np.ones((1, 3, 2, 3))
    >>> b = error_bound(x, w, dtype="float32", c=1.0)
    >>> b.shape
    (1, 3, 2)
    >>> bool(np.allclose(b, 6 * 2.0**-23 * 6))
    True
    """
    eps, tiny, is_complex = _float_info(dtype)
    xa, wa = _to_numpy(x), _to_numpy(w)
    ba = None if bias is None else np.abs(_to_numpy(bias))
    magnitude = reference_conv(np.abs(xa), np.abs(wa), ba, **conv_kwargs)
    n_terms = math.prod(wa.shape[-(xa.ndim - 1) :]) + (bias is not None)
    scale = c * n_terms * (2.0 if is_complex else 1.0)
    bound = np.asarray(scale * (eps * magnitude.real + tiny), dtype=np.float64)
    if method == "fft" and bound.size:
        bound += c * eps * (2.0 if is_complex else 1.0) * _fft_normwise(xa, wa, conv_kwargs)
    return bound


def _fft_normwise(x: npt.NDArray[Any], w: npt.NDArray[Any], conv_kwargs: dict[str, Any]) -> npt.NDArray[np.float64]:
    """``log2(2 S) * ||padded x[b, group of o]|| * ||w[b, o]||``, broadcast over the output positions."""
    n = x.ndim - 2
    channels_last = conv_kwargs.get("layout", "channels_first") == "channels_last"
    xa = np.moveaxis(x, -1, 1) if channels_last else x
    batch, _, *spatial = xa.shape
    wa = _weights_per_sample(w, n, batch)
    c_out, groups = wa.shape[1], conv_kwargs.get("groups", 1)
    strides = _int_tuple(conv_kwargs.get("stride", 1), n, "stride")
    dilations = _int_tuple(conv_kwargs.get("dilation", 1), n, "dilation")
    pads = _resolve_padding(conv_kwargs.get("padding", 0), spatial, wa.shape[3:], strides, dilations)
    mode = _PADDING_MODES[conv_kwargs.get("padding_mode", "zeros")]
    energy = np.pad(np.abs(xa) ** 2, [(0, 0), (0, 0), *pads], mode=mode).reshape(batch, groups, -1).sum(axis=2)  # (B, groups)
    input_norm = np.sqrt(np.repeat(energy, c_out // groups, axis=1))  # (B, C_out)
    filter_norm = np.sqrt(np.sum(np.abs(wa) ** 2, axis=tuple(range(2, 3 + n))))  # (B, C_out)
    scale = input_norm * filter_norm
    shape = (batch, *(1,) * n, c_out) if channels_last else (batch, c_out, *(1,) * n)
    points = math.prod(spatial) * math.prod(wa.shape[3:])
    return np.asarray(math.log2(2 * points) * scale.reshape(shape), dtype=np.float64)


# ----------------------------------------------------------------------- assertions


def _fail(what: str, expected: object, received: object) -> AssertionError:
    return AssertionError(f"{what} mismatch: expected {expected}, received {received}")


def assert_conv_close(
    actual: Any,
    expected: Any,
    *,
    bound: Any,
    like: Any = None,
    dtype: Any = None,
) -> None:
    """Check a convolution's result: array type, device, dtype, shape, then values.

    Parameters
    ----------
    actual : array
        The result under test.
    expected : array
        The reference values (e.g. from :func:`reference_conv`).
    bound : array or float
        Allowed ``|actual - expected|``, broadcast against ``expected``
        (e.g. from :func:`error_bound`).
    like : array, optional
        If given, ``actual`` must be of the same framework (NumPy, torch, JAX),
        on the same device, and of the same dtype unless ``dtype`` is given.
    dtype : str or dtype, optional
        The dtype ``actual`` must have.

    Raises
    ------
    AssertionError
        On the first check that fails, saying what was expected and what was
        received.  A value failure reports the number of violations and the worst
        element: its index, actual, expected, bound and error/bound.  NaN in
        ``actual`` fails unless ``expected`` is NaN at the same place.

    Examples
    --------
    >>> import numpy as np
    >>> assert_conv_close(np.float32([1.0, 2.0]), np.array([1.0, 2.0]), bound=1e-6,
    ...                   dtype="float32")
    >>> assert_conv_close(np.array([1.0, 2.5]), np.array([1.0, 2.0]), bound=0.1)
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    AssertionError: values mismatch: 1 of 2 elements exceed the bound; worst at ...
    """
    if like is not None:
        family = _array_family(like)
        try:
            actual_family = _array_family(actual)
        except TypeError:
            actual_family = f"{type(actual).__module__}.{type(actual).__qualname__}"
        if actual_family != family:
            raise _fail("array type", family, actual_family)
        device, actual_device = _device(like, family), _device(actual, family)
        if actual_device != device:
            raise _fail("device", device, actual_device)
    if dtype is not None or like is not None:
        wanted = _dtype_name(dtype if dtype is not None else like)
        try:
            received = _dtype_name(actual)
        except TypeError:
            received = f"no dtype ({type(actual).__qualname__})"
        if received != wanted:
            raise _fail("dtype", wanted, received)
    exp = np.asarray(_to_numpy(expected))
    shape = tuple(getattr(actual, "shape", np.shape(actual)))
    if shape != exp.shape:
        raise _fail("shape", exp.shape, shape)

    act = _to_numpy(actual)
    is_complex = np.iscomplexobj(act) or np.iscomplexobj(exp)
    compute = np.complex128 if is_complex else np.float64
    act, exp = act.astype(compute), exp.astype(compute)
    tol = np.broadcast_to(np.asarray(bound, dtype=np.float64), exp.shape)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        err = np.abs(act - exp)
        ok = (err <= tol) | (act == exp) | (np.isnan(act) & np.isnan(exp))
        if ok.all():
            return
        ratio = np.where(ok, -np.inf, err / tol)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    worst = np.unravel_index(int(np.argmax(ratio)), exp.shape)
    msg = (
        f"values mismatch: {int((~ok).sum())} of {exp.size} elements exceed the bound; "
        f"worst at index {tuple(int(i) for i in worst)}: actual={act[worst]!r}, "
        f"expected={exp[worst]!r}, |error|={err[worst]!r}, bound={tol[worst]!r}, "
        f"error/bound={ratio[worst]!r}"
    )
    raise AssertionError(msg)


def assert_matches_reference(
    actual: Any,
    x: Any,
    w: Any,
    bias: Any = None,
    *,
    c: float = 4.0,
    dtype: Any = None,
    method: str | None = None,
    **conv_kwargs: Any,
) -> None:
    """Check ``actual`` against :func:`reference_conv` within :func:`error_bound`.

    ``actual`` must have the array type, device and dtype of ``x`` (or ``dtype`` if
    given, which also selects the bound's eps), the reference's shape, and values
    within the bound.

    Parameters
    ----------
    actual : array
        The result under test.
    x, w, bias : array
        The inputs it was computed from.
    c : float
        Safety factor of the bound.
    dtype : str or dtype, optional
        The dtype ``actual`` must have; ``x``'s by default.
    method : str, optional
        The engine that computed ``actual``; ``"fft"`` selects the normwise bound
        (see :func:`error_bound`).
    **conv_kwargs
        The keyword arguments of :func:`reference_conv`.

    Raises
    ------
    AssertionError
        As :func:`assert_conv_close`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((2, 1, 5), dtype=np.float32)
    >>> w = np.ones((2, 1, 1, 3), dtype=np.float32)
    >>> assert_matches_reference(np.full((2, 1, 3), 3.0, np.float32), x, w)
    """
    ref = reference_conv(x, w, bias, **conv_kwargs)
    bound_dtype = dtype if dtype is not None else _dtype_name(x)
    bound = error_bound(x, w, bias, dtype=bound_dtype, c=c, method=method, **conv_kwargs)
    assert_conv_close(actual, ref, bound=bound, like=x, dtype=dtype)
