"""PyTorch backend: the shared engines of :mod:`multiconv._engines` plus ``grouped``.

``grouped`` folds the batch into the channels of one convolution with
``groups = B * groups``.  Engines receive ``x`` channels-first and mode-padded;
``spec.zero_padding`` is left to them (``grouped`` gives it to the convolution,
except where PyTorch's depthwise kernel would be slow with it).
"""

from __future__ import annotations

import ast
import inspect
import itertools
import math
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

import torch
import torch.nn.functional as F  # noqa: N812

from multiconv import _engines
from multiconv._algorithms import CHUNK_TARGET, batch_chunk, uncovered
from multiconv._api import batch_conv
from multiconv._cost import choose
from multiconv._engines import group_weight, index, pairwise_sum, window_counts
from multiconv._spec import ARGUMENT_DEFAULTS, HALF_DTYPES, ArrayInfo
from multiconv.backends import host_array, spatial_slices

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Mapping

    import numpy as np

    from multiconv._engines import Engine
    from multiconv._spec import ConvSpec
    from multiconv.backends import Runner

_CONV: Final = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE: Final = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def signature(a: torch.Tensor) -> Hashable:
    """What validation and ``auto`` read from ``a``, hashable (see ``multiconv._dispatch.signature``)."""
    return (type(a), a.shape, a.dtype, a.device, a.layout, differentiable(a))


def differentiable(a: torch.Tensor) -> bool:
    """Whether autograd will record a call on ``a`` (``method="auto"`` then chooses for training too)."""
    return a.requires_grad and torch.is_grad_enabled()


def info(a: torch.Tensor, name: str) -> ArrayInfo:
    """Shape, dtype name and device of a dense tensor; sparse layouts are refused."""
    if a.layout != torch.strided:
        raise TypeError(f"{name} is a torch tensor with layout={a.layout}; batch_conv needs dense tensors ({name}.to_dense())")
    return ArrayInfo(tuple(a.shape), str(a.dtype).removeprefix("torch."), str(a.device))


def from_numpy(a: np.ndarray, like: torch.Tensor | None = None) -> torch.Tensor:
    """A NumPy array as a tensor on ``like``'s device and with its dtype."""
    a = host_array(a)
    # torch.from_numpy shares memory and warns on read-only arrays; copy those.
    tensor = torch.from_numpy(a if a.flags.writeable else a.copy())
    if like is None:
        return tensor
    return tensor.to(device=like.device, dtype=like.dtype)


def to_numpy(a: torch.Tensor, name: str) -> np.ndarray:
    """A host copy of a tensor; bfloat16 is widened to float32, which NumPy has."""
    if a.requires_grad and torch.is_grad_enabled():
        raise TypeError(
            f"{name} requires grad, but the chosen backend computes outside PyTorch and the result "
            "could not be differentiated; use backend='torch' (or None), or pass a detached tensor"
        )
    if a.device.type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds no data; the chosen backend needs real values")
    a = a.detach().resolve_conj().resolve_neg()
    if a.dtype == torch.bfloat16:
        a = a.float()
    return a.cpu().numpy()


def _on_accelerator(spec: ConvSpec) -> bool:
    return spec.device is not None and not spec.device.startswith("cpu")


def choose_method(spec: ConvSpec) -> str:
    """The engine for ``method="auto"`` (see :mod:`multiconv._cost`)."""
    return choose("torch", spec, tuple(METHODS), accelerator=_on_accelerator(spec))


def _pad(x: torch.Tensor, pairs: tuple[tuple[int, int], ...], mode: str) -> torch.Tensor:
    """``F.pad`` with per-dim ``(lo, hi)`` pairs in the order of ``x``'s spatial dims (callers skip all-zero pairs)."""
    flat = [side for pair in reversed(pairs) for side in pair]
    if mode == "zeros":
        return F.pad(x, flat)
    return F.pad(x, flat, mode=mode)


#: PyTorch's CPU depthwise convolution (float32, one output channel per group, 1-D and 2-D)
#: leaves its fast kernel when its own zero padding reaches the kernel size along any dim,
#: or 5 along the last: it then costs 5-15x as much as padding the input first and
#: convolving without padding (torch 2.13, AMD EPYC, 8192 channels, L 64: K 16 with
#: padding 7, 4.8 against 0.47 ms; K 3 with padding 3, 5.6x; 2-D 3x16 with padding
#: (1, 7), 16x; the 3-D kernel and float64 are not affected).  Below those bounds the
#: convolution's own padding is 20-40% faster than padding the input.
DEPTHWISE_LAST_DIM_PADDING_BOUND: Final = 5
_SLOW_PADDING_DIMS: Final = (1, 2)


def _pads_depthwise_input(spec: ConvSpec) -> bool:
    """Whether ``grouped`` pads the input itself because the convolution's padding would be slow (see above)."""
    if spec.group_in_channels != 1 or spec.group_out_channels != 1 or spec.ndim not in _SLOW_PADDING_DIMS:
        return False
    if spec.dtype != "float32" or _on_accelerator(spec):
        return False
    last = spec.ndim - 1
    return any(
        max(pair) >= k or (dim == last and max(pair) >= DEPTHWISE_LAST_DIM_PADDING_BOUND)
        for dim, (pair, k) in enumerate(zip(spec.zero_padding, spec.kernel, strict=True))
    )


def _grouped(spec: ConvSpec) -> Engine:
    """Per-sample weights as one convolution with ``groups = B * groups``."""
    pairs, conv = spec.zero_padding, _CONV[spec.ndim]
    conv_pads = all(lo == hi for lo, hi in pairs) and not _pads_depthwise_input(spec)  # else x is padded first
    padding = tuple(lo for lo, _ in pairs) if conv_pads else (0,) * spec.ndim
    per_sample, depthwise = spec.per_sample_weight, spec.group_in_channels == 1

    def run(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if not conv_pads:
            x = _pad(x, pairs, "zeros")
        if not per_sample:
            return conv(x, w, None, spec.stride, padding, spec.dilation, spec.groups)
        if depthwise and (differentiable(x) or differentiable(w)):  # apply() costs ~30 us: only when autograd records
            result: torch.Tensor = _Depthwise.apply(x, w, spec, padding)  # type: ignore[no-untyped-call]
            return result
        return _fold_conv(x, w, spec, padding)

    return run


def _fold(a: torch.Tensor) -> torch.Tensor:
    """``(B, C, *S)`` as one sample of ``B * C`` channels."""
    return a.reshape(1, a.shape[0] * a.shape[1], *a.shape[2:])


def _fold_conv(x: torch.Tensor, w: torch.Tensor, spec: ConvSpec, padding: tuple[int, ...]) -> torch.Tensor:
    """The batch folded into the channels of one convolution with ``groups = B * groups``."""
    batch = x.shape[0]
    folded_w = w.reshape(batch * spec.out_channels, *w.shape[2:])
    y = _CONV[spec.ndim](_fold(x), folded_w, None, spec.stride, padding, spec.dilation, batch * spec.groups)
    return y.reshape(batch, spec.out_channels, *y.shape[2:])


_FunctionT = TypeVar("_FunctionT", bound=type[torch.autograd.Function])


def _signature_kept(function: _FunctionT) -> _FunctionT:
    """``function`` with its ``forward``'s signature worked out once, not on every ``apply``.

    ``Function.apply`` binds its arguments to ``inspect.signature(forward)`` on every call
    of a Function with a ``setup_context`` (the kind ``torch.func`` needs), and working the
    signature out took about 9 of the 26 us of a toy Function's ``apply``.
    ``inspect.signature`` returns a function's ``__signature__`` as it is, so it is set
    here: a depthwise training step of 4 samples of 16 channels, L 32, K 5 (``grouped``,
    2 threads) went from 342-358 to 308-315 us.
    """
    function.forward.__signature__ = inspect.signature(function.forward)  # type: ignore[attr-defined]
    return function


@_signature_kept
class _Depthwise(torch.autograd.Function):
    """:func:`_fold_conv` of a depthwise per-sample weight, with its own backward.

    PyTorch's CPU backward of a depthwise convolution costs about ten times its forward
    (its weight gradient goes through a slow grouped path).  Both derivatives are
    depthwise convolutions themselves: the input's a transposed convolution with the
    weight, the weight's a convolution of the input with the output gradient as kernel
    (stride and dilation trade places).  They are built from differentiable operations,
    so double backward works; ``generate_vmap_rule`` lets ``torch.func`` transform it.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, spec: ConvSpec, padding: tuple[int, ...]) -> torch.Tensor:
        return _fold_conv(x, w, spec, padding)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:  # noqa: ARG004
        x, w, ctx.spec, ctx.padding = inputs
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w = ctx.saved_tensors
        spec, padding = ctx.spec, ctx.padding
        batch, groups = x.shape[0], x.shape[0] * spec.groups
        if x.is_complex():  # autograd's complex gradients are conjugate-linear: y = conv(x, w) pulls back through conj
            x, w = x.conj(), w.conj()
        dx = dw = None
        if ctx.needs_input_grad[0]:
            dx = _depthwise_input_grad(g, w, spec, padding, groups).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            kernel = g.reshape(batch * spec.out_channels, 1, *g.shape[2:])
            full = _CONV[spec.ndim](_fold(x), kernel, None, spec.dilation, padding, spec.stride, groups)
            dw = full[index(Ellipsis, *(slice(0, k) for k in spec.kernel))].reshape(w.shape)
        return dx, dw, None, None


def _depthwise_input_grad(g: torch.Tensor, w: torch.Tensor, spec: ConvSpec, padding: tuple[int, ...], groups: int) -> torch.Tensor:
    """:class:`_Depthwise`'s input derivative, folded: the transposed convolution of ``g`` with the weight.

    Dilated on a CPU, in 1-D or unstrided, as a convolution of ``g`` (spread by the stride, padded by
    the dilated kernel's extent) with the flipped weight: PyTorch's CPU transposed convolution
    takes a slow path when dilated (2 threads, Zen 3 EPYC, 64 samples of 32 channels, L 4096,
    65 taps, dilation 2: 966 ms against 91; stride 2 too, 518 against 96; 2-D, 16 samples of 1
    channel, 64x64, 5x5, dilation 2, 1.52 against 0.30; 32 of 16 channels, 32x32, 3x3,
    padding 2, 4.54 against 0.74).  The training step of the first (``grouped``) went from
    1057 to 94 ms.  Strided in 2-D, the spread gradient's zeros cost more than the slow path
    (16 samples of 2 -> 4 channels, 16x16, 7x7, dilation 2, stride 2: steps of 0.63 ms before,
    0.97 so), and undilated the transposed convolution is the faster (34 against 79 ms).
    """
    skipped = uncovered(spec)  # the transposed convolution's size leaves out what the last stride step skipped
    batch, spatial = w.shape[0], tuple(range(2, 2 + spec.ndim))
    dilated = any(d > 1 for d in spec.dilation) and g.device.type == "cpu"  # measured on CPUs only
    if not dilated or (spec.ndim > 1 and any(s > 1 for s in spec.stride)):
        folded_w = w.reshape(batch * spec.out_channels, *w.shape[2:])
        return _CONV_TRANSPOSE[spec.ndim](_fold(g), folded_w, None, spec.stride, padding, skipped, groups, spec.dilation)
    spread = _TorchOps.dilate(_fold(g), spec.stride, spec.spread_out_size)
    reach = tuple(e - 1 for e in spec.effective_kernel)  # the dilated kernel's extent beyond one tap
    padded = F.pad(spread, [side for e, t in zip(reversed(reach), reversed(skipped), strict=True) for side in (e, e + t)])
    flipped = torch.flip(w.reshape(groups, spec.group_out_channels, *w.shape[3:]), dims=spatial)
    full = _CONV[spec.ndim](padded, flipped, None, 1, 0, spec.dilation, groups)
    return full[index(Ellipsis, *(slice(p, size - p) for p, size in zip(padding, full.shape[2:], strict=True)))]


def _unfold(x: torch.Tensor, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
    """:meth:`_TorchOps.windows` as a view of ``x``."""
    first = x.ndim - len(sizes)
    for dim, (k, step, d) in enumerate(zip(sizes, steps, dilation, strict=True)):
        x = x.unfold(first + dim, d * (k - 1) + 1, step)  # appends the window dim
    if any(d > 1 for d in dilation):
        x = x[index(Ellipsis, *spatial_slices(dilation))]
    return x


#: The windows' own backward adds one strided slice per kernel tap (or per window, if fewer) up to this many.
WINDOW_ADJOINT_MAX_SLICES: Final = 256


@_signature_kept
class _Windows(torch.autograd.Function):
    """:func:`_unfold` with a backward of strided slice additions.

    The windows' adjoint adds every window's gradient back where it was read.  Autograd's
    own, ``unfold_backward`` on the gradient of the im2col copy (whose memory order is
    the transpose of the windows'), cost 4-8x as much as one strided addition per kernel
    tap (float64, 256 samples of 16 channels, L 256, K 7: 20 against 3.2 ms; float32,
    64 of 64 channels, L 1024, K 3: 23 against 2.9 ms).  The additions are
    differentiable (double backward) and ``generate_vmap_rule`` lets ``torch.func``
    transform them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
        return _unfold(x, sizes, steps, dilation)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:  # noqa: ARG004
        x, ctx.sizes, ctx.steps, ctx.dilation = inputs
        ctx.shape = tuple(x.shape)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        sizes, steps, dilation = ctx.sizes, ctx.steps, ctx.dilation
        n = len(sizes)
        counts = tuple(g.shape[g.ndim - 2 * n : g.ndim - n])
        every = (slice(None),) * n
        dx = g.new_zeros(ctx.shape)
        if math.prod(sizes) <= math.prod(counts):  # one strided slice per kernel tap
            for taps in itertools.product(*map(range, sizes)):
                spans = (slice(t * d, t * d + (c - 1) * s + 1, s) for t, d, c, s in zip(taps, dilation, counts, steps, strict=True))
                dx[index(Ellipsis, *spans)] += g[index(Ellipsis, *every, *taps)]
        else:  # one slice per window
            for where in itertools.product(*map(range, counts)):
                spans = (slice(i * s, i * s + (k - 1) * d + 1, d) for i, s, k, d in zip(where, steps, sizes, dilation, strict=True))
                dx[index(Ellipsis, *spans)] += g[index(Ellipsis, *where, *every)]
        return dx, None, None, None


@_signature_kept
class _WindowProduct(torch.autograd.Function):
    """The ``matmul`` engine (stride 1, per-sample weights) with its input's gradient as a convolution.

    Autograd's own pulls the gradient back through the batched matmul into an im2col-sized
    buffer, ``w^T @ g``, whose inner dimension is only ``C_out // groups``, then adds
    its windows back.  The same gradient is a per-sample convolution of ``g`` with the
    weight's channels swapped, flipped, fully padded, which ``batch_conv`` itself
    computes with the engine it picks (256 samples of 16 channels, L 256, K 7: 18.8
    against 6.2 ms in float64, 2.7 against 1.6 ms in float32; 64 of 64 channels, L 1024,
    K 3: 11.9 against 7.8 ms; 8 of 256 channels, L 512, K 3: 6.3 against 6.9 ms).  The
    weight's gradient is one batched matmul with the columns the forward built (built
    again from ``x`` for a double backward).  Both are differentiable (double backward),
    and ``generate_vmap_rule`` lets ``torch.func`` transform them.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, w: torch.Tensor, spec: ConvSpec) -> tuple[torch.Tensor, torch.Tensor]:
        columns, product = _matmul_parts(spec)
        buffer = columns(x)  # saved as the windows' view: a copy (_bmm_ready) lives only while multiplied
        return product(w, _bmm_ready(spec, buffer)), buffer

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, w, ctx.spec = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zeros of the columns' size for their (never used) gradient
        ctx.save_for_backward(x, w, output[1])  # the columns: autograd's own backward kept them too

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor | None, _: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        if g is None:  # the result took no part in what is differentiated
            return None, None, None
        x, w, buffer = ctx.saved_tensors
        spec: ConvSpec = ctx.spec
        batch, groups = x.shape[0], spec.groups
        if torch.is_grad_enabled():  # double backward: the columns again, as a function of x
            buffer = _matmul_parts(spec)[0](x)
        if x.is_complex():  # autograd's complex gradients are conjugate-linear: y = conv(x, w) pulls back through conj
            w, buffer = w.conj(), buffer.conj()
        dx = dw = None
        if ctx.needs_input_grad[0]:
            swapped = group_weight(spec, w).transpose(2, 3).reshape(batch, spec.in_channels, spec.group_out_channels, *spec.kernel)
            dx = batch_conv(g, swapped, padding="full", dilation=spec.dilation, groups=groups, flip=True)
        if ctx.needs_input_grad[1]:
            rows = g.reshape(batch, groups, spec.group_out_channels, -1)
            dw = (rows @ _bmm_ready(spec, buffer).transpose(-1, -2)).reshape(w.shape)
        return dx, dw, None


def _rfftn(a: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    result: torch.Tensor = torch.fft.rfftn(a, s=shape, dim=tuple(range(-len(shape), 0)))
    return result


@_signature_kept
class _RealFFT(torch.autograd.Function):
    """``torch.fft.rfftn`` of the last ``len(shape)`` dims, zero-padded to ``shape``, with a backward of half the work.

    The transform's adjoint is ``prod(shape) * irfftn(G * h)``, where ``h`` halves the bins
    of the halved dim that stand for two (all but the zero and Nyquist frequencies),
    cropped back to the input's size.  Autograd's own builds the full Hermitian spectrum and
    runs a complex transform of it (the overlap-save engine's training step spent more time
    there than in any other operation: 8.7 of 26 ms on the benchmark's long-kernel shape).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(a: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return _rfftn(a, shape)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:  # noqa: ARG004
        a, ctx.shape = inputs
        ctx.sizes = tuple(a.shape[a.ndim - len(ctx.shape) :])

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        shape, sizes = ctx.shape, ctx.sizes
        last = shape[-1]
        halves = torch.full((g.shape[-1],), 0.5, dtype=g.real.dtype, device=g.device)
        halves[0] = 1.0
        if last % 2 == 0:
            halves[-1] = 1.0
        da = torch.fft.irfftn(g * halves, s=shape, dim=tuple(range(-len(shape), 0))) * math.prod(shape)
        return F.pad(da, [side for n, s in zip(reversed(sizes), reversed(shape), strict=True) for side in (0, n - s)]), None


class _TorchOps:
    """:class:`multiconv._engines.Ops` for PyTorch."""

    terms_per_sum: Final = 0
    strided_operands_copied: Final = True  # bmm clones such a matrix per product, and multiplies one stepping over its rows slowly
    total: Final = staticmethod(pairwise_sum)

    @staticmethod
    def windows(x: torch.Tensor, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> torch.Tensor:
        counts = window_counts(tuple(x.shape[x.ndim - len(sizes) :]), sizes, steps, dilation) if differentiable(x) else ()
        if counts and min(math.prod(sizes), math.prod(counts)) <= WINDOW_ADJOINT_MAX_SLICES:
            result: torch.Tensor = _Windows.apply(x, sizes, steps, dilation)  # type: ignore[no-untyped-call]
            return result
        return _unfold(x, sizes, steps, dilation)

    @staticmethod
    def transpose(a: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        return a.permute(axes)

    @staticmethod
    def pad_end(x: torch.Tensor, extra: tuple[int, ...]) -> torch.Tensor:
        return F.pad(x, [side for e in reversed(extra) for side in (0, e)])

    @staticmethod
    def dilate(w: torch.Tensor, dilation: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
        if all(d == 1 for d in dilation):
            return w
        dilated = w.new_zeros((*w.shape[: w.ndim - len(sizes)], *sizes))
        dilated[index(Ellipsis, *spatial_slices(dilation))] = w
        return dilated

    @staticmethod
    def flip(a: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
        return a.flip(axes)

    @staticmethod
    def contiguous(a: torch.Tensor) -> torch.Tensor:
        return a.contiguous()

    @staticmethod
    def stack(arrays: list[torch.Tensor], axis: int) -> torch.Tensor:
        return torch.stack(arrays, dim=axis)

    @staticmethod
    def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.bmm(a, b) if a.ndim == b.ndim == 3 else torch.matmul(a, b)  # noqa: PLR2004

    @staticmethod
    def is_complex(a: torch.Tensor) -> bool:
        return a.is_complex()

    @staticmethod
    def fft(a: torch.Tensor, shape: tuple[int, ...], *, real: bool) -> torch.Tensor:
        if not real:
            result: torch.Tensor = torch.fft.fftn(a, s=shape, dim=tuple(range(-len(shape), 0)))
            return result
        if differentiable(a):
            transformed: torch.Tensor = _RealFFT.apply(a, shape)  # type: ignore[no-untyped-call]
            return transformed
        return _rfftn(a, shape)

    @staticmethod
    def ifft(a: torch.Tensor, shape: tuple[int, ...], *, real: bool) -> torch.Tensor:
        dims = tuple(range(-len(shape), 0))
        result: torch.Tensor = torch.fft.irfftn(a, s=shape, dim=dims) if real else torch.fft.ifftn(a, s=shape, dim=dims)
        return result


OPS: Final = _TorchOps()


def _shared(engine: Callable[[Any, ConvSpec], Engine]) -> Callable[[ConvSpec], Engine]:
    """A shared engine on the zero-padded input (only ``grouped`` pads inside the convolution)."""

    def build(spec: ConvSpec) -> Engine:
        run, pairs = engine(OPS, spec), spec.zero_padding
        if not any(lo or hi for lo, hi in pairs):
            return run
        return lambda x, w: run(_pad(x, pairs, "zeros"), w)

    return build


#: :func:`_columns_copied`: the columns of a whole batch are copied up to this many bytes, and beyond it
#: those of one sample and group up to :data:`MATMUL_COPY_MAX_ELEMENTS` elements.
MATMUL_COPY_MAX_BYTES: Final = CHUNK_TARGET
MATMUL_COPY_MAX_ELEMENTS: Final = 4096


@lru_cache(maxsize=256)
def _matmul_parts(spec: ConvSpec) -> tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """The ``matmul`` engine's ``columns(x)`` and ``product(w, columns)``.

    The columns are the windows' view, copied before their product where they are small
    (:func:`_columns_copied`; :class:`_WindowProduct` keeps the view for its backward and
    copies it again there, rather than holding the copy).  Where the windows' view reshapes to
    the buffer's layout without a copy (1-D, one input channel per group), ``torch.bmm``
    gets overlapping rows, which its CPU code multiplies one sample and group at a time,
    cloning each: a few microseconds a matrix, which the copy saves, at the price of
    writing the whole buffer out and reading it back, where the clones stay in the cache.
    View against copy (float32, AMD EPYC, 2 threads, interleaved; the columns of one
    sample and group, and of the batch):

    * up to :data:`MATMUL_COPY_MAX_ELEMENTS` a sample and group, the copy won: 128
      samples of 1 -> 8 channels, L 16, 7 taps (112 elements, 57 KB), 466 against 104 us;
      32 samples of 256 channels depthwise, L 64, 16 taps (784, 26 MB), 23-34 against
      1.7-3.3 ms; 512 samples of 64 channels depthwise, L 128, 9 taps (1080, 142 MB),
      91 against 19 ms; 64 of 64, L 1024, 3 taps (3066, 50 MB), 15.4 against 5.6; 256
      of 256, L 256, 7 taps (1750, 459 MB), 244 against 226;
    * beyond, up to :data:`MATMUL_COPY_MAX_BYTES` a batch, the copy won too: 128 samples
      of 1 -> 4 channels, L 2048, 15 taps (30 thousand, 16 MB), 2.3 against 1.2 ms; 64
      samples of 1 channel, L 16384, 9 taps, stride 2 (74 thousand, 19 MB), 4.9-5.1
      against 3.4-4.3;
    * beyond both, the clones won: 64 samples of 32 channels depthwise, L 4096, 9 taps
      (37 thousand, 301 MB), 25 against 121 ms; with 65 taps, dilation 2 (258 thousand,
      2.1 GB), 91 against 855; 16 samples of 1 -> 2 channels, L 16384, 65 taps (a million,
      68 MB), 4.9-5.5 against 8.2-8.4; 16 samples of 64 channels depthwise, L 512, 31
      taps (15 thousand, 61 MB), 5.8-6.8 against 6.7-7.3.
    """
    return _engines.im2col(OPS, spec), _engines.columns_product(OPS, spec)


@lru_cache(maxsize=256)
def _columns_copied(spec: ConvSpec) -> bool:
    """Whether :func:`_matmul_parts`'s columns are copied before their product (the rule there).

    The whole batch's columns are counted: up to :data:`MATMUL_COPY_MAX_BYTES`, the batch is one chunk.
    """
    each = spec.group_in_channels * math.prod(spec.kernel) * math.prod(spec.out_size)
    whole = spec.batch * spec.groups * each * _compute_itemsize(spec)
    return each <= MATMUL_COPY_MAX_ELEMENTS or whole <= MATMUL_COPY_MAX_BYTES


def _bmm_ready(spec: ConvSpec, columns: torch.Tensor) -> torch.Tensor:
    """``columns`` as ``torch.bmm`` gets them: copied where :func:`_columns_copied`."""
    return columns.contiguous() if _columns_copied(spec) else columns


def _compute_itemsize(spec: ConvSpec) -> int:
    """Bytes per element as the engines compute: half precision widened to float32 on the CPU (and for ``fft``)."""
    widen = spec.dtype in HALF_DTYPES and (not _on_accelerator(spec) or spec.method == "fft")
    return 4 if widen else int(getattr(torch, spec.dtype).itemsize)


def _matmul(ops: _TorchOps, spec: ConvSpec) -> Engine:
    """The shared ``matmul`` engine; with stride 1 and per-sample weights, :class:`_WindowProduct` where autograd records."""
    columns = _matmul_parts(spec)[0]
    run = _engines.matmul(ops, spec, lambda x: _bmm_ready(spec, columns(x)))
    if not (spec.per_sample_weight and all(s == 1 for s in spec.stride)):
        return run

    def engine(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if differentiable(x) or differentiable(w):
            result: torch.Tensor = _WindowProduct.apply(x, w, spec)[0]  # type: ignore[no-untyped-call]
        else:
            result = run(x, w)
        return result

    return engine


#: Engine name -> builder: ``METHODS[name](spec)`` is ``run(x, w)`` (see :mod:`multiconv._engines`).
METHODS: Final[Mapping[str, Callable[[ConvSpec], Engine]]] = {
    "grouped": _grouped,
    "shift": _shared(_engines.shift),
    "matmul": _shared(_matmul),
    "col2im": _shared(_engines.col2im),
    "fft": _shared(_engines.fft),
}


def _empty_result(spec: ConvSpec, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The ``B == 0`` result, still connected to ``x`` and ``w`` so gradients come back as zeros."""
    shape = (0, spec.out_channels, *spec.out_size)
    return x.new_zeros(shape) + 0 * (x.sum() + w.sum())


def _batched(spec: ConvSpec, itemsize: int) -> Engine:
    """The engine on the mode-padded input, in batch chunks where the workspace limit asks for them."""
    engine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = METHODS[spec.method](spec)
    mode_padding, padding_mode = spec.mode_padding, spec.padding_mode
    mode_padded = any(lo or hi for lo, hi in mode_padding)
    batch, per_sample = spec.batch, spec.per_sample_weight
    chunk = batch_chunk(spec, spec.method, itemsize)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return _pad(x, mode_padding, padding_mode) if mode_padded else x

    if batch == 0:
        return partial(_empty_result, spec)
    if chunk >= batch:
        return engine if not mode_padded else lambda x, w: engine(pad(x), w)

    def chunked(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # split, not slicing: autograd pulls the chunks' gradients back with one concatenation,
        # where each slice's backward fills a zero tensor of the whole input's size and adds it
        # up, n times for n chunks (float64, 256 samples of 16 channels, L 256, K 7, matmul in
        # two chunks, profiled per training step: fills and additions 2.0 ms against 1.4 now)
        parts = torch.split(x, chunk)
        weights = torch.split(w, chunk) if per_sample else (w,) * len(parts)
        return torch.cat([engine(pad(part), weight) for part, weight in zip(parts, weights, strict=True)])

    return chunked


@lru_cache(maxsize=1024)
def prepare(spec: ConvSpec) -> Runner:
    """``run(x, w, bias)``: the whole convolution for ``spec``, every decision taken once, here.

    The result has ``x``'s dtype and device.  CPU kernels would accumulate half
    precision in half, and cuFFT takes half only at power-of-two sizes: there the
    work is done in float32.
    """
    widen = spec.dtype in HALF_DTYPES and (not _on_accelerator(spec) or spec.method == "fft")
    itemsize = _compute_itemsize(spec)
    engine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = _batched(spec, itemsize)
    channels_last, broadcast = spec.channels_last, spec.weight_kind == "broadcast"
    flip_dims = tuple(range(-spec.ndim, 0)) if spec.flip else None
    ones = (1,) * spec.ndim  # the bias broadcast against the channels-first result
    lead = spec.batch if spec.bias_kind == "per_sample" else 1
    bias_shape = (spec.out_channels, *ones) if spec.bias_kind == "shared" else (lead, spec.out_channels, *ones)

    def run(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        out_dtype = x.dtype
        if widen:
            x, w = x.float(), w.float()
        if channels_last:
            x = x.movedim(-1, 1)
        if broadcast:
            w = w[0]
        if flip_dims is not None:
            w = w.flip(flip_dims)
        y = engine(x, w)
        if bias is not None:
            y = y + bias.to(y.dtype).reshape(bias_shape)
        if channels_last:
            y = y.movedim(1, -1).contiguous()  # channels last in memory too, as NumPy's result
        return y.to(out_dtype) if widen else y

    return run


def convolve(spec: ConvSpec, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The whole convolution on tensors; the result has ``x``'s dtype and device."""
    result: torch.Tensor = prepare(spec)(x, w, bias)
    return result


def convolve_numpy(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """A convolution of host arrays computed by PyTorch on the CPU."""
    tensors = [None if a is None else from_numpy(a) for a in (x, w, bias)]
    return to_numpy(convolve(spec, *tensors), "x")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- torch.compile and torch.export
#
# Under ``torch.compile`` and ``torch.export`` the call becomes one custom operator,
# ``multiconv::batch_conv``: the tracer sees its output shape (the fake kernel below)
# and never the plan caches and engines behind it, so a graph holds no guard on the
# batch size (no recompilation when only B changes, and an exported program runs at
# any B).  Arguments are validated when the graph is traced; the operator's real
# kernel is the eager call, which plans (and picks the engine) for the batch it gets.


_TRACING: Final = "under torch.compile/torch.export"


def traced(x: torch.Tensor, w: Any, bias: Any, spatial_dims: int | None, arguments: tuple[Any, ...]) -> torch.Tensor:
    """``batch_conv`` while ``torch.compile``/``torch.export`` trace: one custom op.

    The arguments travel as a Python literal whose ints are passed beside it (they may be
    symbolic while tracing); the op's fake kernel validates them when the graph is traced,
    the real kernel is the eager call.
    """
    for name, value in (("w", w), ("bias", bias)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor when x is one {_TRACING}; got {type(value).__name__}")
    ints: list[int] = []
    literal = _encode((spatial_dims, *arguments), ints)
    return _batch_conv_op(x, w, bias, literal, ints)  # type: ignore[no-any-return]


_INT: Final = "\x00"  # where an int of the literal goes (repr never writes this character raw)


def _encode(value: Any, ints: list[int]) -> str:
    """A Python literal for ``value`` with every int taken out into ``ints`` (traceable by dynamo)."""
    if value is None or isinstance(value, (bool, str, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        items = "".join(_encode(item, ints) + "," for item in value)
        return f"({items})" if isinstance(value, tuple) else f"[{items}]"
    if isinstance(value, (int, torch.SymInt)):
        ints.append(value)  # type: ignore[arg-type]
        return _INT
    raise TypeError(f"{_TRACING} the arguments of batch_conv must be ints, strings, bools, None or tuples; got {type(value).__name__}")


def _decode(literal: str, ints: list[int]) -> tuple[int | None, dict[str, Any]]:
    """``spatial_dims`` and the keyword arguments of ``batch_conv`` back from :func:`_encode`."""
    pieces = literal.split(_INT)
    text = pieces[0] + "".join(str(int(number)) + piece for number, piece in zip(ints, pieces[1:], strict=True))
    spatial_dims, *values = ast.literal_eval(text)
    named = dict(zip(ARGUMENT_DEFAULTS, values, strict=True))
    if named["backend"] not in (None, "torch"):
        raise ValueError(f"backend={named['backend']!r}: {_TRACING} batch_conv computes with PyTorch (backend=None or 'torch')")
    return spatial_dims, named


def _stand_in(a: torch.Tensor, *, batched: bool) -> ArrayInfo:
    """What validation needs of a (fake) tensor; a symbolic batch size stands in as 2, valid for any B."""
    sizes: tuple[Any, ...] = tuple(a.shape)
    shape = tuple(2 if dim == 0 and batched and isinstance(size, torch.SymInt) else int(size) for dim, size in enumerate(sizes))
    return ArrayInfo(shape, str(a.dtype).removeprefix("torch."), str(a.device))


@torch.library.custom_op("multiconv::batch_conv", mutates_args=())
def _batch_conv_op(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, literal: str, ints: list[int]) -> torch.Tensor:
    """The eager ``batch_conv`` (``spatial_dims`` and the keyword arguments encoded by :func:`_encode`)."""
    from multiconv._api import convolve as eager  # noqa: PLC0415  (the front end imports the backends, not the reverse)

    spatial_dims, named = _decode(literal, ints)
    y: torch.Tensor = eager(x, w, bias, spatial_dims=spatial_dims, **named)
    return y.contiguous()  # the layout the fake kernel promises


@_batch_conv_op.register_fake
def _(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, literal: str, ints: list[int]) -> torch.Tensor:
    from multiconv._spec import make_spec  # noqa: PLC0415

    spatial_dims, named = _decode(literal, ints)
    del named["backend"]
    infos = (
        _stand_in(x, batched=True),
        _stand_in(w, batched=w.ndim > x.ndim),
        None if bias is None else _stand_in(bias, batched=bias.ndim > 1),
    )
    spec = make_spec(*infos, framework="torch", methods=tuple(METHODS), spatial_dims=spatial_dims, **named)
    shape = (x.shape[0], *spec.out_shape[1:])
    return x.new_empty(shape)


@torch.library.custom_op("multiconv::batch_conv_vjp", mutates_args=())
def _batch_conv_vjp_op(  # noqa: PLR0917 (the op's schema: the forward's inputs after the gradient)
    grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, literal: str, ints: list[int]
) -> list[torch.Tensor]:
    """Gradients of ``multiconv::batch_conv`` for x, w and bias (an empty tensor without bias)."""
    from multiconv._api import convolve  # noqa: PLC0415

    spatial_dims, named = _decode(literal, ints)
    inputs = [a for a in (x, w, bias) if a is not None]

    def forward(*arrays: torch.Tensor) -> torch.Tensor:
        return convolve(arrays[0], arrays[1], arrays[2] if len(arrays) > 2 else None, spatial_dims=spatial_dims, **named)  # noqa: PLR2004

    pullback = torch.func.vjp(forward, *inputs)[1]
    grads: tuple[torch.Tensor, ...] = tuple(pullback(grad))
    return [g.contiguous() for g in grads] + ([] if bias is not None else [x.new_empty(0)])  # the layout the fake kernel promises


@_batch_conv_vjp_op.register_fake
def _(grad: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, *_: Any) -> list[torch.Tensor]:  # noqa: ARG001
    return [x.new_empty(x.shape), w.new_empty(w.shape), x.new_empty(0) if bias is None else bias.new_empty(bias.shape)]


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:  # noqa: ARG001
    x, w, bias, *arguments = inputs
    ctx.save_for_backward(x, w, *([] if bias is None else [bias]))
    ctx.has_bias, ctx.arguments = bias is not None, arguments


def _backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    x, w, *rest = ctx.saved_tensors
    grad_x, grad_w, grad_bias = _batch_conv_vjp_op(grad.contiguous(), x, w, rest[0] if ctx.has_bias else None, *ctx.arguments)
    return grad_x, grad_w, grad_bias if ctx.has_bias else None, None, None


_batch_conv_op.register_autograd(_backward, setup_context=_setup_context)
