"""Hypothesis strategies that draw one consistent batch-conv case at a time.

Validity (output size >= 1, reflect/circular padding limits) is decided here from
the contract's formulas, independently of ``multiconv._spec``, so a validation bug
in the library cannot hide cases from the suite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

REAL_DTYPES = ("float32", "float64")
COMPLEX_DTYPES = ("complex64", "complex128")
HALF_DTYPES = ("float16", "bfloat16")
#: Dtypes each backend supports (bfloat16 only on torch and JAX).
BACKEND_DTYPES = {
    "numpy": ("float16", "float32", "float64", "complex64", "complex128"),
    "torch": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
    "jax": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
}
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@dataclass(frozen=True)
class ConvCase:
    """One batch-conv call: shapes, every argument, and how to draw its arrays."""

    batch: int
    groups: int
    group_in: int
    group_out: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: Any = 1
    dilation: Any = 1
    padding: Any = 0
    padding_mode: str = "zeros"
    weight_kind: str = "per_sample"
    bias_kind: str = "none"
    layout: str = "channels_first"
    flip: bool = False
    dtype: str = "float64"
    seed: int = field(default=0, compare=False)

    @property
    def ndim(self) -> int:
        return len(self.in_size)

    @property
    def in_channels(self) -> int:
        return self.groups * self.group_in

    @property
    def out_channels(self) -> int:
        return self.groups * self.group_out

    @property
    def x_shape(self) -> tuple[int, ...]:
        if self.layout == "channels_last":
            return (self.batch, *self.in_size, self.in_channels)
        return (self.batch, self.in_channels, *self.in_size)

    @property
    def w_shape(self) -> tuple[int, ...]:
        core = (self.out_channels, self.group_in, *self.kernel)
        return {"per_sample": (self.batch, *core), "broadcast": (1, *core), "shared": core}[self.weight_kind]

    @property
    def bias_shape(self) -> tuple[int, ...] | None:
        return {
            "none": None,
            "shared": (self.out_channels,),
            "per_sample": (self.batch, self.out_channels),
            "broadcast": (1, self.out_channels),
        }[self.bias_kind]

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``batch_conv`` (and of the reference)."""
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "padding_mode": self.padding_mode,
            "layout": self.layout,
            "flip": self.flip,
        }

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Random ``x``, ``w``, ``bias`` in float64 (complex128 for complex dtypes)."""
        rng = np.random.default_rng(self.seed)
        complex_ = self.dtype.startswith("complex")

        def draw(shape: tuple[int, ...] | None) -> np.ndarray | None:
            if shape is None:
                return None
            values = rng.standard_normal(shape)
            return values + 1j * rng.standard_normal(shape) if complex_ else values

        x, w = draw(self.x_shape), draw(self.w_shape)
        assert x is not None
        assert w is not None
        return x, w, draw(self.bias_shape)


def _tuple(value: Any, ndim: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple) else (value,) * ndim


def resolve_padding(case: ConvCase) -> list[tuple[int, int]]:
    """The contract's ``(lo, hi)`` per spatial dim for every padding form."""
    stride, dilation = _tuple(case.stride, case.ndim), _tuple(case.dilation, case.ndim)
    effective = [d * (k - 1) + 1 for d, k in zip(dilation, case.kernel, strict=True)]
    padding = case.padding
    if padding == "valid":
        return [(0, 0)] * case.ndim
    if padding == "causal":
        return [(e - 1, 0) for e in effective]
    if padding == "full":
        return [(e - 1, e - 1) for e in effective]
    if padding == "same":
        pairs = []
        for size, e, s in zip(case.in_size, effective, stride, strict=True):
            total = max((math.ceil(size / s) - 1) * s + e - size, 0)
            pairs.append((total // 2, total - total // 2))
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * case.ndim
    return [entry if isinstance(entry, tuple) else (entry, entry) for entry in padding]


def is_valid(case: ConvCase) -> bool:
    """Whether the contract accepts ``case`` (output non-empty, padding-mode limits)."""
    dilation = _tuple(case.dilation, case.ndim)
    for size, (lo, hi), k, d in zip(case.in_size, resolve_padding(case), case.kernel, dilation, strict=True):
        if d * (k - 1) + 1 > size + lo + hi:
            return False
        if case.padding_mode == "reflect" and max(lo, hi) >= size:
            return False
        if case.padding_mode == "circular" and max(lo, hi) > size:
            return False
    return True


def _per_dim(draw: st.DrawFn, values: st.SearchStrategy[int], ndim: int) -> Any:
    """One value for all dims, or a tuple of one per dim."""
    if draw(st.booleans()):
        return draw(values)
    return tuple(draw(values) for _ in range(ndim))


@st.composite
def conv_cases(
    draw: st.DrawFn,
    *,
    dtypes: tuple[str, ...] = ("float32", "float64"),
    ndims: tuple[int, ...] = (1, 2, 3),
    min_batch: int = 0,
    weight_kinds: tuple[str, ...] = ("per_sample", "per_sample", "broadcast", "shared"),
    padding_modes: tuple[str, ...] = PADDING_MODES,
    layouts: tuple[str, ...] = ("channels_first", "channels_last"),
) -> ConvCase:
    """A valid case drawn across every argument of the contract."""
    ndim = draw(st.sampled_from(ndims))
    max_kernel = {1: 5, 2: 3, 3: 3}[ndim]
    batch = draw(st.integers(min_batch, 3 if ndim < 3 else 2))
    groups = draw(st.sampled_from((1, 1, 2, 3)))
    depthwise = draw(st.booleans())
    group_in = 1 if depthwise else draw(st.integers(1, 3))
    group_out = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(ndim))
    stride = _per_dim(draw, st.integers(1, 3), ndim)
    dilation = _per_dim(draw, st.integers(1, 3), ndim)
    effective = [d * (k - 1) + 1 for d, k in zip(_tuple(dilation, ndim), kernel, strict=True)]
    in_size = tuple(draw(st.integers(max(1, e - 3), e + (6 if ndim == 1 else 3))) for e in effective)
    padding = draw(
        st.one_of(
            st.sampled_from(("valid", "same", "causal", "full")),
            st.integers(0, 2),
            st.tuples(*[st.integers(0, 2)] * ndim),
            st.tuples(*[st.tuples(st.integers(0, 3), st.integers(0, 3))] * ndim),
        )
    )
    case = ConvCase(
        batch=batch,
        groups=groups,
        group_in=group_in,
        group_out=group_out,
        in_size=in_size,
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        padding=padding,
        padding_mode=draw(st.sampled_from(padding_modes)),
        weight_kind=draw(st.sampled_from(weight_kinds)),
        bias_kind=draw(st.sampled_from(("none", "shared", "per_sample", "broadcast"))),
        layout=draw(st.sampled_from(layouts)),
        flip=draw(st.booleans()),
        dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**32 - 1)),
    )
    assume(is_valid(case))
    return case


#: Known trouble spots, pinned as explicit examples of the properties.
TROUBLE_SPOTS: dict[str, ConvCase] = {
    "even-kernel-same": ConvCase(batch=3, groups=1, group_in=2, group_out=3, in_size=(9,), kernel=(4,), padding="same"),
    "even-kernel-same-2d": ConvCase(
        batch=2, groups=2, group_in=1, group_out=2, in_size=(6, 7), kernel=(2, 4), padding="same", dilation=(1, 2)
    ),
    "same-stride-2": ConvCase(batch=2, groups=1, group_in=2, group_out=2, in_size=(10,), kernel=(3,), stride=2, padding="same"),
    "same-stride-3-even": ConvCase(
        batch=2, groups=1, group_in=1, group_out=2, in_size=(7, 8), kernel=(2, 3), stride=(3, 2), padding="same"
    ),
    "groups-24": ConvCase(batch=2, groups=24, group_in=1, group_out=2, in_size=(11,), kernel=(3,), padding=1),
    "groups-48-depthwise": ConvCase(batch=3, groups=48, group_in=1, group_out=1, in_size=(5, 5), kernel=(3, 3), padding="same"),
    "float64-reflect": ConvCase(
        batch=2, groups=1, group_in=3, group_out=2, in_size=(8,), kernel=(3,), padding=2, padding_mode="reflect", bias_kind="per_sample"
    ),
    "batch-1": ConvCase(batch=1, groups=1, group_in=2, group_out=3, in_size=(6, 5), kernel=(3, 2), bias_kind="shared"),
    "batch-0": ConvCase(batch=0, groups=1, group_in=2, group_out=3, in_size=(6,), kernel=(3,), bias_kind="per_sample"),
    "batch-0-shared-3d": ConvCase(batch=0, groups=2, group_in=1, group_out=1, in_size=(3, 3, 3), kernel=(2, 2, 2), weight_kind="shared"),
    "dilated-just-fits": ConvCase(batch=2, groups=1, group_in=2, group_out=2, in_size=(7,), kernel=(4,), dilation=2),
    "dilated-just-fits-padded": ConvCase(
        batch=2, groups=1, group_in=1, group_out=2, in_size=(4, 5), kernel=(3, 2), dilation=(2, 4), padding=((1, 0), (0, 0))
    ),
    "circular-full-wrap": ConvCase(
        batch=2, groups=1, group_in=1, group_out=1, in_size=(4,), kernel=(5,), padding=((4, 4),), padding_mode="circular"
    ),
    "channels-last-3d-flip": ConvCase(
        batch=2, groups=2, group_in=2, group_out=1, in_size=(4, 3, 5), kernel=(2, 3, 2), layout="channels_last", flip=True, padding="full"
    ),
}
