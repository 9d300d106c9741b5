"""JAX backend: ``jax.vmap`` over ``jax.lax.conv_general_dilated``.

Engines take ``x`` in the caller's layout and already mode-padded
(``spec.zero_padding`` is left for them), ``w`` as a per-sample
``(B, C_out, C_in // groups, *K)`` or shared ``(C_out, C_in // groups, *K)``
weight (flipped if asked), and return the result in the caller's layout.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from multiconv._spec import HALF_DTYPES, ArrayInfo

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    from multiconv._spec import ConvSpec

_JAX_PAD_MODES: Final = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
_SPATIAL: Final = "DHW"


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


def choose_method(spec: ConvSpec) -> str:  # noqa: ARG001
    """The engine for ``method="auto"``."""
    return "vmap"


def _dimension_numbers(spec: ConvSpec) -> tuple[str, str, str]:
    spatial = _SPATIAL[-spec.ndim :]
    lhs = f"N{spatial}C" if spec.channels_last else f"NC{spatial}"
    return lhs, f"OI{spatial}", lhs


def _conv_kwargs(spec: ConvSpec, compute: Any) -> dict[str, Any]:
    return {
        "window_strides": spec.stride,
        "padding": spec.zero_padding,
        "rhs_dilation": spec.dilation,
        "dimension_numbers": _dimension_numbers(spec),
        "precision": lax.Precision.HIGHEST,
        "preferred_element_type": compute,
    }


def _vmap(spec: ConvSpec, x: jax.Array, w: jax.Array, compute: Any) -> jax.Array:
    """``jax.vmap`` of the framework convolution over the batch (plain call for a shared weight)."""
    kwargs = _conv_kwargs(spec, compute)
    if not spec.per_sample_weight:
        return lax.conv_general_dilated(x, w, feature_group_count=spec.groups, **kwargs)

    def one(xb: jax.Array, wb: jax.Array) -> jax.Array:
        return lax.conv_general_dilated(xb[None], wb, feature_group_count=spec.groups, **kwargs)[0]

    return jax.vmap(one)(x, w)


METHODS: Final[Mapping[str, Callable[[ConvSpec, jax.Array, jax.Array, Any], jax.Array]]] = {"vmap": _vmap}


def _mode_pad(x: jax.Array, spec: ConvSpec) -> jax.Array:
    pairs = spec.mode_padding
    if not any(lo or hi for lo, hi in pairs):
        return x
    widths = ((0, 0), *pairs, (0, 0)) if spec.channels_last else ((0, 0), (0, 0), *pairs)
    return jnp.pad(x, widths, mode=_JAX_PAD_MODES[spec.padding_mode])


def convolve(spec: ConvSpec, x: jax.Array, w: jax.Array, bias: jax.Array | None) -> jax.Array:
    """The whole convolution on JAX arrays; half precision accumulates in float32.

    Compiled once per spec and input signature (the spec is a static argument), so a
    repeated eager call costs one dispatch; inside the caller's ``jit`` it is inlined.
    """
    result: jax.Array = _convolve_jit(spec, x, w, bias)
    return result


def _convolve(spec: ConvSpec, x: jax.Array, w: jax.Array, bias: jax.Array | None) -> jax.Array:
    out_dtype = x.dtype
    compute = jnp.float32 if out_dtype.name in HALF_DTYPES else None
    if spec.weight_kind == "broadcast":
        w = w[0]
    if spec.flip:
        w = jnp.flip(w, axis=tuple(range(-spec.ndim, 0)))
    y = jnp.zeros(spec.out_shape, compute or out_dtype) if spec.batch == 0 else METHODS[spec.method](spec, _mode_pad(x, spec), w, compute)
    if bias is not None:
        y = y + bias.astype(y.dtype).reshape(spec.bias_shape)
    return y.astype(out_dtype)


_convolve_jit = jax.jit(_convolve, static_argnums=0)


def convolve_numpy(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """A convolution of host arrays computed by JAX, with 64-bit types enabled for the call."""
    wide = x.dtype.itemsize == 8 or x.dtype == np.complex128  # noqa: PLR2004
    with jax.enable_x64(True) if wide else contextlib.nullcontext():  # noqa: FBT003
        arrays = [None if a is None else jnp.asarray(a) for a in (x, w, bias)]
        return to_numpy(convolve(spec, *arrays), "x")  # type: ignore[arg-type]
