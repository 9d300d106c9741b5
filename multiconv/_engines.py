"""The engines every backend shares, written once against a small set of array operations.

Each engine is built once per :class:`~multiconv._spec.ConvSpec` (all of its
geometry worked out then) and returns ``run(x, w)``, which takes the input ``x`` already
padded and channels-first ``(B, C_in, *S_padded)``, and the weight ``w`` as a
per-sample ``(B, C_out, C_in // groups, *K)`` or shared ``(C_out, C_in // groups, *K)``
array (flipped if asked), and returns ``(B, C_out, *S_out)``.  The few operations
whose spelling differs between NumPy, PyTorch and JAX come from an :class:`Ops`
object each backend defines; everything else (slicing, reshaping, ``@``, ``*``,
``+``) is common to the three.

* ``shift``: one batched matmul per kernel offset, accumulated; no im2col buffer.
  Depthwise convolutions (one input channel per group) become a shifted
  multiply-add.
* ``matmul``: every window copied into an im2col buffer, then one batched matmul.
* ``col2im``: one batched matmul of every kernel offset's weight with the whole
  padded input, then each offset's product added in, shifted onto the outputs it
  reaches (the col2im step of a transposed convolution); in 2-D and 3-D, along the
  last dim, after the leading dims' windows are copied.
* ``fft``: overlap-save; blocks sized from the kernel (see
  :func:`multiconv._algorithms.fft_blocks`), the channel sum done per frequency.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from multiconv._algorithms import col2im_split, fft_blocks, kernel_taps, stride_phases

if TYPE_CHECKING:
    from multiconv._algorithms import FFTBlocks
    from multiconv._spec import ConvSpec

_ALL = slice(None)


class Ops(Protocol):
    """Array operations whose spelling differs between frameworks."""

    @property
    def terms_per_sum(self) -> int:
        """How many terms :func:`shift` adds into one running sum before it starts another.

        0: one running sum, updated in place where the framework allows.
        """

    @property
    def strided_operands_copied(self) -> bool:
        """Whether :meth:`matmul` copies, matrix by matrix, an operand strided in both its matrix dims.

        NumPy's ``matmul`` then multiplies without BLAS, PyTorch's ``bmm`` clones each matrix:
        :func:`shift` stacks each tap's weights contiguously first, and with a stride
        splits the input into its phases (:func:`multiconv._algorithms.stride_phases`), so
        that every tap's window has unit steps.
        """

    def contiguous(self, a: Any) -> Any:
        """``a`` laid out contiguously (a copy where it is not already; JAX: ``a``, XLA lays out its arrays)."""

    def total(self, sums: list[Any]) -> Any:
        """The sum of :func:`shift`'s running sums (:func:`pairwise_sum`, or a framework's variant)."""

    def windows(self, x: Any, sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> Any:
        """``(B, C, *n, *sizes)``: windows of the spatial dims, ``steps`` apart, taps ``dilation`` apart.

        ``n`` is ``(S - dilation * (sizes - 1) - 1) // steps + 1`` per dim.
        """

    def transpose(self, a: Any, axes: tuple[int, ...]) -> Any:
        """``a`` with its axes permuted."""

    def pad_end(self, x: Any, extra: tuple[int, ...]) -> Any:
        """``x`` zero-extended at the high end of its last ``len(extra)`` dims."""

    def dilate(self, w: Any, dilation: tuple[int, ...], sizes: tuple[int, ...]) -> Any:
        """The kernel with ``dilation - 1`` zeros between taps, last dims of extent ``sizes``."""

    def flip(self, a: Any, axes: tuple[int, ...]) -> Any:
        """``a`` reversed along ``axes``."""

    def stack(self, arrays: list[Any], axis: int) -> Any:
        """``arrays`` (of one shape) stacked along a new dim ``axis``."""

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` (batched; each framework's fastest spelling).

        Where a backend passes :func:`shift`'s engine an ``out``, it also takes ``out=``.
        """

    def is_complex(self, a: Any) -> bool:
        """Whether ``a`` holds complex numbers."""

    def fft(self, a: Any, shape: tuple[int, ...], *, real: bool) -> Any:
        """N-d forward transform of the last ``len(shape)`` dims, zero-padded to ``shape``."""

    def ifft(self, a: Any, shape: tuple[int, ...], *, real: bool) -> Any:
        """Inverse of :meth:`fft`; ``shape`` is the signal's shape."""


def _multiply(a: Any, b: Any) -> Any:
    return a * b


def _product_into(ops: Ops, a: Any, b: Any, out: Any, *, depthwise: bool) -> Any:
    """:func:`shift`'s product of ``a`` and ``b`` written into ``out``; returns the view of ``out`` shaped like it."""
    into = out.reshape((*b.shape[:-2], a.shape[-2], b.shape[-1]))
    if depthwise:
        into[...] = _multiply(a, b)
        return into
    return ops.matmul(a, b, out=into)  # type: ignore[call-arg]


def pairwise_sum(terms: list[Any]) -> Any:
    """``terms[0] + terms[1] + ...``, added in pairs (a balanced tree of additions)."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def window_counts(spatial: tuple[int, ...], sizes: tuple[int, ...], steps: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[int, ...]:
    """Windows per spatial dim (the ``n`` of :meth:`Ops.windows`)."""
    return tuple((size - d * (k - 1) - 1) // step + 1 for size, k, step, d in zip(spatial, sizes, steps, dilation, strict=True))


def index(*parts: Any) -> tuple[Any, ...]:
    """An index tuple, spelled as a call (``a[i, *rest]`` needs Python 3.11)."""
    return parts


def group_weight(spec: ConvSpec, w: Any) -> Any:
    """``w`` as ``([B,] groups, C_out // groups, C_in // groups, *K)``."""
    lead = tuple(w.shape[: w.ndim - spec.ndim - 2])
    return w.reshape(*lead, spec.groups, spec.group_out_channels, spec.group_in_channels, *spec.kernel)


def _terms_per_running_sum(ops: Ops, terms: int) -> int:
    """How many of ``terms`` terms go into each running sum: spread evenly over as few as ``ops.terms_per_sum`` allows."""
    sums = -(-terms // ops.terms_per_sum) if ops.terms_per_sum else 1
    return -(-terms // sums)


#: ``run(x, w) -> y`` for one spec: an engine built by :func:`shift`, :func:`matmul` or :func:`fft`.
Engine = Callable[[Any, Any], Any]


def shift(ops: Ops, spec: ConvSpec) -> Engine:
    """One batched matmul per kernel offset, accumulated; a multiply-add when depthwise.

    Per-sample weights fold batch and groups into one matmul batch dim (``B * groups``);
    a shared weight broadcasts over the batch.  With one running sum
    (``ops.terms_per_sum`` 0: NumPy), the engine also takes ``out``, a contiguous array
    of the result's shape (NumPy's batch chunks, parts of one result): the first product
    is written there (``ops.matmul(..., out=)``) and the sum runs in it, instead of in a
    buffer copied over at the end.
    """
    groups, cg, og = spec.groups, spec.group_in_channels, spec.group_out_channels
    positions, taps_count, padded = math.prod(spec.out_size), math.prod(spec.kernel), spec.padded_size
    per_sample, depthwise, flatten = spec.per_sample_weight, cg == 1, spec.ndim > 1 or not spec.per_sample_weight
    product = _multiply if depthwise else ops.matmul
    out_tail = (spec.out_channels, *spec.out_size)
    lead = (_ALL, _ALL) if per_sample else (_ALL, _ALL, _ALL)
    whole = tuple(slice(0, size, 1) for size in padded)  # a window that is the whole input needs no slicing
    windows = tuple(None if window == whole else index(*lead, *window) for _, window in kernel_taps(spec))
    tap_windows = _tap_windows(ops, spec, lead, windows)
    # Per sample, batch and groups share the leading dim: ``x`` (B * G, Cg, *S), ``w`` (B * G, Og, Cg, taps);
    # shared, ``x`` keeps a groups dim that ``w`` (G, Og, Cg, taps) broadcasts against.
    x_tail, taps_tail = ((cg, *padded), (cg, positions)) if per_sample else ((groups, cg, *padded), (groups, cg, positions))
    # Reshapes that would not change a shape are skipped (each costs a framework call); shapes go as one
    # tuple (NumPy parses separate sizes at about twice the cost).
    same_x = per_sample and groups == 1 and spec.ndim == 1  # (B, C_in, L) is already (B * groups, Cg, L)
    per_sum = _terms_per_running_sum(ops, taps_count)

    def first(a: Any, b: Any, out: Any) -> Any:
        return product(a, b) if out is None else _product_into(ops, a, b, out, depthwise=depthwise)

    if windows == (None,):  # a pointwise kernel over the whole input: one product

        def pointwise(x: Any, w: Any, out: Any = None) -> Any:
            batch = x.shape[0]
            rows = batch * groups if per_sample else batch
            xg = x if same_x else x.reshape((rows, *taps_tail))
            y = first(w.reshape((rows if per_sample else groups, og, cg)), xg, out)
            return y if same_x else y.reshape((batch, *out_tail))

        return pointwise

    def run(x: Any, w: Any, out: Any = None) -> Any:
        batch = x.shape[0]
        rows = batch * groups if per_sample else batch
        xg = x if same_x else x.reshape((rows, *x_tail))
        w_rows = rows if per_sample else groups
        stacked = w.reshape((w_rows, og, cg, taps_count))
        weights = tuple(stacked[..., number] for number in range(taps_count))  # strided by the taps
        if not depthwise and ops.strided_operands_copied:
            contiguous = ops.stack(list(weights), axis=0)
            weights = tuple(contiguous[number] for number in range(taps_count))
        sums: list[Any] = []
        for number, (window, weight) in enumerate(zip(tap_windows(xg), weights, strict=True)):
            taps = window.reshape((rows, *taps_tail)) if flatten else window
            if number == 0:
                sums.append(first(weight, taps, out))
            elif number % per_sum == 0:
                sums.append(product(weight, taps))
            else:
                sums[-1] += product(weight, taps)  # in place where the framework allows (JAX rebinds)
        y = sums[0] if len(sums) == 1 else ops.total(sums)
        return y if same_x else y.reshape((batch, *out_tail))

    return run


def _tap_windows(
    ops: Ops, spec: ConvSpec, lead: tuple[slice, ...], windows: tuple[tuple[slice, ...] | None, ...]
) -> Callable[[Any], list[Any]]:
    """``taps(x)``: :func:`shift`'s window of the padded ``x`` per kernel tap (``windows``; ``None``: all of ``x``).

    With a stride, a window steps over the input.  Where the product would copy such an
    operand or multiply it without BLAS (:attr:`Ops.strided_operands_copied`), ``x`` is
    split into its phases once (:func:`multiconv._algorithms.stride_phases`: about one
    input's worth copied) and each tap reads a unit-step window of one.
    """
    if not (ops.strided_operands_copied and any(step > 1 for step in spec.stride)):
        return lambda x: [x if window is None else x[window] for window in windows]
    split = stride_phases(spec)
    phases = tuple(index(*lead, *phase) for phase in split.phases)
    taps = tuple((part, index(*lead, *window)) for part, window in split.taps)

    def phased(x: Any) -> list[Any]:
        parts = [ops.contiguous(x[phase]) for phase in phases]
        return [parts[part][window] for part, window in taps]

    return phased


def im2col(ops: Ops, spec: ConvSpec) -> Callable[[Any], Any]:
    """``columns(x)``: the :func:`matmul` engine's im2col buffer ``(B, groups, C_in // groups * taps, positions)``.

    Row ``c * taps + t`` holds input channel ``c`` of the group at kernel tap ``t`` (taps
    in row-major order), the layout of ``w.reshape(..., C_in // groups * taps)``.
    """
    positions, taps, n = math.prod(spec.out_size), math.prod(spec.kernel), spec.ndim
    groups, cg = spec.groups, spec.group_in_channels
    order = (0, 1, 2, *range(3 + n, 3 + 2 * n), *range(3, 3 + n))
    grouped_tail = (groups, cg, *spec.out_size, *spec.kernel)

    def columns(x: Any) -> Any:
        batch = x.shape[0]
        windows = ops.windows(x, spec.kernel, spec.stride, spec.dilation).reshape(batch, *grouped_tail)
        return ops.transpose(windows, order).reshape(batch, groups, cg * taps, positions)

    return columns


def tap_columns(ops: Ops, spec: ConvSpec) -> Callable[[Any], Any]:
    """:func:`im2col`'s ``columns(x)``, built as one slice of ``x`` per kernel tap, stacked.

    Same buffer, same layout (row ``c * taps + t``); it needs neither a strided view
    nor a gather, so it is the spelling for JAX, whose windows are gathers.
    """
    positions, taps = math.prod(spec.out_size), math.prod(spec.kernel)
    windows = tuple(index(_ALL, _ALL, *window) for _, window in kernel_taps(spec))
    tail = (spec.groups, spec.group_in_channels * taps, positions)

    def columns(x: Any) -> Any:
        return ops.stack([x[window] for window in windows], axis=2).reshape((x.shape[0], *tail))  # (B, C, taps, *S_out)

    return columns


def columns_weight(spec: ConvSpec) -> Callable[[Any], Any]:
    """``weight(w)``: ``w`` as the stack of ``(C_out // groups, C_in // groups * taps)`` matrices that multiply :func:`im2col`'s buffer."""
    n, rows = spec.ndim, spec.group_in_channels * math.prod(spec.kernel)

    def weight(w: Any) -> Any:
        grouped = group_weight(spec, w)
        return grouped.reshape(*grouped.shape[: -1 - n], rows)

    return weight


def columns_product(ops: Ops, spec: ConvSpec) -> Callable[[Any, Any], Any]:
    """``product(w, columns)``: the :func:`matmul` engine's one batched matmul of the weight with :func:`im2col`'s buffer."""
    weight, out_tail = columns_weight(spec), (spec.out_channels, *spec.out_size)

    def product(w: Any, columns: Any) -> Any:
        return ops.matmul(weight(w), columns).reshape(columns.shape[0], *out_tail)

    return product


def matmul(ops: Ops, spec: ConvSpec, columns: Callable[[Any], Any] | None = None) -> Engine:
    """Copy every window into an im2col buffer (:func:`im2col`, or ``columns``), then one batched matmul."""
    columns, product = columns or im2col(ops, spec), columns_product(ops, spec)

    def run(x: Any, w: Any) -> Any:
        return product(w, columns(x))

    return run


def shifted_sum(ops: Ops, spec: ConvSpec) -> Callable[[Any], Any]:
    """``add(products)``: :func:`col2im`'s sum, ``(B, groups, taps, Og, *S_padded)`` -> ``(B, groups, Og, *S_out)``.

    Tap ``t``'s slice of the products is the one its window reads
    (:func:`multiconv._algorithms.kernel_taps`); running sums as in :func:`shift`
    (``ops.terms_per_sum``).
    """
    windows = tuple(index(_ALL, _ALL, number, _ALL, *window) for number, (_, window) in enumerate(kernel_taps(spec)))
    per_sum = _terms_per_running_sum(ops, len(windows))

    def add(products: Any) -> Any:
        sums: list[Any] = []
        for number, window in enumerate(windows):
            if number % per_sum == 0:
                sums.append(products[window])
            else:
                sums[-1] = sums[-1] + products[window]
        return sums[0] if len(sums) == 1 else ops.total(sums)

    return add


def col2im(ops: Ops, spec: ConvSpec, sum_for: Callable[[ConvSpec], Callable[[Any], Any]] | None = None) -> Engine:
    """One batched matmul of every kernel offset's weight with the whole padded input; the products added, shifted.

    The weight ``(Og, Cg, *K)`` of a group becomes one ``(taps * Og, Cg)`` matrix, so
    the product with the padded input ``(Cg, *S_padded)`` holds, for every kernel offset,
    that offset's contribution at every input position; the output sums, per offset, the
    slice of it that offset's window reads (:func:`shifted_sum`, or ``sum_for(spec)``, a
    backend's spelling of the same sum).  No window is copied; the product, ``taps`` times
    the output's channels over the whole padded input, is the workspace (with a stride,
    the positions between outputs are computed too).  In 2-D and 3-D the windows along the
    leading dims are copied first and the product and sum run along the last dim
    (:func:`multiconv._algorithms.col2im_split`): the weight ``(Og, Cg, *K)`` is then
    ``(Og, Cg * K_lead, K_N)``, and each leading offset's window a block of input channels.
    """
    split = col2im_split(spec)
    inner = split or spec
    groups, cg, og = inner.groups, inner.group_in_channels, inner.group_out_channels
    taps_count, padded = math.prod(inner.kernel), inner.padded_size
    per_sample = spec.per_sample_weight
    add = (sum_for or partial(shifted_sum, ops))(inner)
    # the leading dims' windows, one per leading offset (C order, as the weight's (Cg, *K_lead) flatten)
    lead = [index(_ALL, _ALL, *window[:-1], _ALL) for offset, window in kernel_taps(spec) if offset[-1] == 0] if split else []
    out_tail = (spec.out_channels, *spec.out_size)

    def run(x: Any, w: Any) -> Any:
        batch = x.shape[0]
        if lead:  # (B, C, T_lead, *S_lead_out, S_last) -> (B, C * T_lead, ...): a leading offset per channel block
            x = ops.stack([x[window] for window in lead], 2).reshape((batch, inner.in_channels, *inner.in_size))
        w_rows = batch * groups if per_sample else groups
        # (rows, Og, Cg, taps) -> (rows, taps, Og, Cg) -> (rows, taps * Og, Cg)
        stacked = ops.transpose(w.reshape((w_rows, og, cg, taps_count)), (0, 3, 1, 2)).reshape((w_rows, taps_count * og, cg))
        if per_sample:
            products = ops.matmul(stacked, x.reshape((w_rows, cg, -1)))
        else:  # the shared weight broadcasts over the batch
            products = ops.matmul(stacked, x.reshape((batch, groups, cg, -1)))
        return add(products.reshape((batch, groups, taps_count, og, *padded))).reshape((batch, *out_tail))

    return run


def fft(ops: Ops, spec: ConvSpec) -> Engine:
    """Overlap-save: input blocks and the dilated kernel transformed, multiplied, summed over channels."""
    blocks, n = fft_blocks(spec), spec.ndim

    def run(x: Any, w: Any) -> Any:
        batch = x.shape[0]
        real = not (ops.is_complex(x) or ops.is_complex(w))

        extra = tuple(e - s for e, s in zip(blocks.extent, x.shape[2:], strict=True))
        if any(extra):
            x = ops.pad_end(x, extra)
        pieces = ops.windows(x, blocks.nfft, blocks.step, (1,) * n)  # (B, C, *blocks, *nfft)
        spectrum = ops.fft(pieces, blocks.nfft, real=real)
        bins = tuple(spectrum.shape[-n:])
        xs = spectrum.reshape(batch, spec.groups, spec.group_in_channels, blocks.block_count, math.prod(bins))

        wg = group_weight(spec, w)
        kernel = ops.fft(ops.flip(ops.dilate(wg, spec.dilation, blocks.effective), tuple(range(-n, 0))), blocks.nfft, real=real)
        ws = kernel.reshape(*kernel.shape[:-n], math.prod(bins))  # ([B,] G, Og, Cg, F)

        if spec.group_in_channels == 1:
            ys = ws[index(Ellipsis, 0, None, _ALL)] * xs[:, :, 0, None]  # (B, G, Og, blocks, F)
        else:
            lead = ws.ndim - 3
            w_f = ops.transpose(ws, (*range(lead), lead + 2, lead, lead + 1))  # ([B,] G, F, Og, Cg)
            x_f = ops.transpose(xs, (0, 1, 4, 2, 3))  # (B, G, F, Cg, blocks)
            ys = ops.transpose(ops.matmul(w_f, x_f), (0, 1, 3, 4, 2))  # (B, G, Og, blocks, F)
        ys = ys.reshape(batch, spec.out_channels, *blocks.blocks, *bins)
        return _assemble(ops, spec, blocks, ops.ifft(ys, blocks.nfft, real=real))

    return run


def _assemble(ops: Ops, spec: ConvSpec, blocks: FFTBlocks, transformed: Any) -> Any:
    """Cut the valid part of every block, lay the blocks end to end, apply the stride."""
    n = spec.ndim
    valid = tuple(slice(e - 1, e - 1 + st) for e, st in zip(blocks.effective, blocks.step, strict=True))
    kept = transformed[index(*(_ALL,) * (transformed.ndim - n), *valid)]
    interleave = (0, 1, *(i for d in range(n) for i in (2 + d, 2 + n + d)))
    joined = tuple(b * st for b, st in zip(blocks.blocks, blocks.step, strict=True))
    assembled = ops.transpose(kept, interleave).reshape(transformed.shape[0], spec.out_channels, *joined)
    return assembled[index(_ALL, _ALL, *(slice(0, f, s) for f, s in zip(blocks.full, spec.stride, strict=True)))]
