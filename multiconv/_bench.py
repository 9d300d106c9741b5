"""The benchmark behind ``multiconv bench``: multiconv against the code users write by hand.

For one backend per process (``python -m multiconv._bench --backend NAME``), every
shape of :data:`SHAPES` is computed by

- multiconv ``method="auto"`` and every engine of the backend's ``METHODS``
  (enumerated at run time), and
- the baselines users write by hand: a Python loop over the batch, the
  ``groups=B`` fold, ``vmap`` of the framework's convolution, im2col/unfold plus
  a batched matmul, and an einsum over sliding windows.

Every candidate is first checked against :func:`multiconv.testing.reference_conv`
(so a wrong candidate cannot win), then timed in interleaved rounds: each round
runs an untimed call and then a block of calls of every candidate, one after the other, together with a
square float32 GEMM of the same framework, so that all of them see the same
machine state.  Where multiconv's engines run threads of their own (NumPy's), the
untimed calls go on for :attr:`Settings.settle_seconds`, until the previous
candidate's BLAS workers have stopped spinning.  The best (minimum) over rounds is reported, as time per call,
GFLOP/s (``2 * MACs / time``) and percentage of the GEMM's best rate: on a shared,
noisy machine the minimum is the stable estimate of what each code path costs.

:func:`command` (``multiconv bench``) runs each backend in its own subprocess,
shows a progress bar, merges the results, prints the tables and writes JSON and a
PNG plot.  Frameworks are imported only inside the functions that use them, so
this module imports with NumPy alone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import math
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import multiconv
from multiconv._api import plan
from multiconv._cost import GROUP_LOOP_SECONDS, cpu_model, cpu_name, cpu_profile
from multiconv._dispatch import BACKENDS, installed, load
from multiconv.testing import reference_conv, reference_conv_vjp

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["QUICK_SHAPES", "SHAPES", "Case", "add_arguments", "command", "main", "run_backend"]

# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Case:
    """One benchmark shape: ``x`` is ``(B, C_in, *S)``, ``w`` is ``(B, C_out, C_in // groups, *K)``.

    Stride and dilation are 1; ``padding`` is ``"valid"`` or ``"same"``.
    """

    name: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    groups: int = 1
    padding: str = "valid"
    dtype: str = "float32"
    description: str = ""

    @property
    def conv_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``batch_conv`` and ``reference_conv`` for this case: those a user would write.

        Only the arguments that differ from the defaults (``padding="valid"`` is the
        default's meaning), so that ``auto`` is timed as called, e.g. the README's
        ``batch_conv(x, w)``.
        """
        given: dict[str, Any] = {"padding": self.padding} if self.padding != "valid" else {}
        return given | ({"groups": self.groups} if self.groups != 1 else {})


def _scaled(case: Case, x_shape: tuple[int, ...], w_shape: tuple[int, ...], groups: int | None = None) -> Case:
    return dataclasses.replace(case, x_shape=x_shape, w_shape=w_shape, groups=case.groups if groups is None else groups)


_README = Case("readme", (32, 4, 16), (32, 8, 4, 1), description="the README's example")
_DENSE64 = Case("dense64", (64, 64, 1024), (64, 64, 64, 3), description="dense 64x64 channels")
_DENSE256 = Case("dense256", (8, 256, 512), (8, 256, 256, 3), description="dense 256x256 channels")
_MANY = Case("many", (256, 16, 256), (256, 16, 16, 7), description="many small samples")
_LONGKERNEL = Case("longkernel", (8, 8, 16384), (8, 8, 8, 257), description="long kernel on a long signal")
_DEPTHWISE = Case("depthwise", (32, 256, 64), (32, 256, 1, 16), groups=256, description="depthwise, 256 channels")
_CONV2D = Case("conv2d", (16, 32, 64, 64), (16, 32, 32, 3, 3), padding="same", description="2-D 64x64, 3x3, padding same")
_FLOAT64 = dataclasses.replace(_MANY, name="float64", dtype="float64", description="'many' in float64")

#: The full benchmark's shapes, by name.
SHAPES: Final[dict[str, Case]] = {c.name: c for c in (_README, _DENSE64, _DENSE256, _MANY, _LONGKERNEL, _DEPTHWISE, _CONV2D, _FLOAT64)}

#: The same shapes scaled down for ``--quick`` (and the tests): same structure, a fraction of the work.
QUICK_SHAPES: Final[dict[str, Case]] = {
    c.name: c
    for c in (
        _README,
        _scaled(_DENSE64, (4, 8, 64), (4, 8, 8, 3)),
        _scaled(_DENSE256, (2, 32, 32), (2, 32, 32, 3)),
        _scaled(_MANY, (16, 4, 32), (16, 4, 4, 7)),
        _scaled(_LONGKERNEL, (2, 2, 512), (2, 2, 2, 33)),
        _scaled(_DEPTHWISE, (4, 16, 32), (4, 16, 1, 16), groups=16),
        _scaled(_CONV2D, (2, 4, 12, 12), (2, 4, 4, 3, 3)),
        _scaled(_FLOAT64, (16, 4, 32), (16, 4, 4, 7)),
    )
}

#: Largest ``max|y - ref| / max|ref|`` that passes the check, per dtype.
TOLERANCES: Final = {"float32": 1e-3, "float64": 1e-9}


@dataclass(frozen=True)
class Settings:
    """How long to measure: rounds, the target length of one block of calls, the slow-candidate cap."""

    rounds: int = 11
    block_seconds: float = 0.05
    time_cap: float = 2.0
    gemm_size: int = 1024
    quick: bool = False
    #: Untimed calls before each timed block of a backend whose engines run threads beside the
    #: framework's own (:attr:`Framework.own_threads`).  OpenBLAS's idle workers spin for about
    #: 2^28 cycles (0.1 s, ``OPENBLAS_THREAD_TIMEOUT``) after each multi-threaded call, so a NumPy
    #: engine's chunks timed right after a baseline or the GEMM shared their two cores with them:
    #: 64 samples of 64 channels, L 1024, K 3 (Intel Xeon, 2 cores) took 16-19 ms within 0.1 s of
    #: a 1024x1024 GEMM and 9.5-10 ms after 0.2 s (8.2 ms right after with the timeout set to 2^4).
    settle_seconds: float = 0.25

    @classmethod
    def make(cls, *, quick: bool, rounds: int | None = None, time_cap: float | None = None) -> Settings:
        """Defaults for a full or a ``--quick`` run, with optional overrides."""
        base = cls(rounds=2, block_seconds=0.002, gemm_size=256, quick=True, settle_seconds=0.0) if quick else cls()
        return dataclasses.replace(
            base,
            rounds=base.rounds if rounds is None else rounds,
            time_cap=base.time_cap if time_cap is None else time_cap,
        )


@dataclass(frozen=True)
class Geometry:
    """The explicit numbers of a case, resolved here (not by multiconv) for the baselines."""

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, case: Case) -> Geometry:
        """Resolve ``case``; ``"same"`` puts an odd remainder on the high side, as JAX/TF ``SAME``."""
        batch, in_channels, *in_size = case.x_shape
        _, out_channels, group_in, *kernel = case.w_shape
        if case.padding == "valid":
            pads = [(0, 0) for _ in kernel]
        elif case.padding == "same":
            pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]
        else:
            raise ValueError(f"case {case.name!r}: padding={case.padding!r} must be 'valid' or 'same'")
        if group_in * case.groups != in_channels or out_channels % case.groups:
            raise ValueError(f"case {case.name!r}: groups={case.groups} does not fit x {case.x_shape} and w {case.w_shape}")
        return cls(batch, in_channels, out_channels, case.groups, tuple(in_size), tuple(kernel), tuple(pads))

    @property
    def ndim(self) -> int:
        """Number of spatial dims."""
        return len(self.in_size)

    @property
    def cg(self) -> int:
        """Input channels per group."""
        return self.in_channels // self.groups

    @property
    def og(self) -> int:
        """Output channels per group."""
        return self.out_channels // self.groups

    @property
    def out_size(self) -> tuple[int, ...]:
        """Spatial size of the result (stride 1, dilation 1)."""
        return tuple(s + lo + hi - k + 1 for s, (lo, hi), k in zip(self.in_size, self.padding, self.kernel, strict=True))

    @property
    def positions(self) -> int:
        """Output positions per channel."""
        return math.prod(self.out_size)

    @property
    def taps(self) -> int:
        """Kernel elements per channel."""
        return math.prod(self.kernel)

    @property
    def macs(self) -> int:
        """Multiply-accumulates: ``B * C_out * prod(S_out) * (C_in / groups) * prod(K)``."""
        return self.batch * self.out_channels * self.positions * self.cg * self.taps

    @property
    def padded(self) -> bool:
        """Whether any padding is applied."""
        return any(lo or hi for lo, hi in self.padding)


def _letters(geo: Geometry) -> tuple[str, str]:
    """Einsum letters for the spatial and the kernel axes."""
    return "xyz"[: geo.ndim], "ijk"[: geo.ndim]


# --------------------------------------------------------------------------- candidates


class NotApplicableError(Exception):
    """A baseline that cannot express this case; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """One way to compute the convolution: ``fn(x, w)`` on the framework's arrays."""

    name: str
    kind: str  # "auto", "engine" or "baseline"
    fn: Callable[[Any, Any], Any] | None
    reason: str = ""  # why it is "n/a" (fn is None)


@dataclass(frozen=True, eq=False)
class _BoundStep:
    """A compiled training step ``step(x, w, g)`` with its cotangent bound: called and lowered as ``(x, w)``.

    The cotangent stays an argument of the compiled program (see the JAX framework's ``train``),
    and ``lower`` lets the harness read the program's memory analysis and digest.
    """

    step: Any
    cotangent: Any

    def __call__(self, x: Any, w: Any) -> Any:
        return self.step(x, w, self.cotangent)

    def lower(self, x: Any, w: Any) -> Any:
        return self.step.lower(x, w, self.cotangent)


#: What :func:`program_digest` drops from XLA's HLO text: debug metadata (source lines, op names of the
#: Python functions traced; quoted strings may hold braces), the module's name and the tables of file
#: and function names.
_HLO_NOISE: Final = (
    re.compile(r', metadata=\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}'),
    re.compile(r"^HloModule \S+", re.MULTILINE),
    re.compile(r"^(?:FileNames|FunctionNames|FileLocations|StackFrames)\n(?:\d+ .*\n)*", re.MULTILINE),
)
#: Instruction, parameter and computation names with XLA's numeric suffix (``%dot.5``, ``param_0.6``), which
#: count the instructions created while tracing: :func:`program_digest` renumbers them in order of appearance.
_HLO_NAME: Final = re.compile(r"(?<![\w.])(%?[A-Za-z_][\w-]*)\.(\d+)\b")


def program_digest(hlo_text: str) -> str:
    """A short digest of a compiled program's HLO text, blind to where in Python it was traced from.

    Two candidates whose digests match run the same program: the same operations on the same
    layouts, whichever engine or baseline traced them.
    """
    for pattern in _HLO_NOISE:
        hlo_text = pattern.sub("", hlo_text)
    names: dict[str, str] = {}

    def renumbered(match: re.Match[str]) -> str:
        return names.setdefault(match.group(0), f"{match.group(1)}.{len(names)}")

    return hashlib.sha256(_HLO_NAME.sub(renumbered, hlo_text).encode()).hexdigest()[:16]


def _xla_program(fn: Callable[[Any, Any], Any], x: Any, w: Any) -> str | None:
    """:func:`program_digest` of what a jitted ``fn`` (or a :class:`_BoundStep`) compiles for ``(x, w)``; None if it cannot be lowered."""
    try:
        text = fn.lower(x, w).compile().as_text()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001  (no compiled text: no digest)
        return None
    return program_digest(text) if text else None


def _as_is(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """``fn`` itself: how NumPy and PyTorch candidates are timed (JAX's are jitted)."""
    return fn


def _multiconv_candidates(
    backend: str, case: Case, wrap: Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]
) -> list[Candidate]:
    """``auto`` and one candidate per engine of ``backend``'s ``METHODS``."""

    def call(method: str) -> Callable[[Any, Any], Any]:
        kwargs = case.conv_kwargs if method == "auto" else {**case.conv_kwargs, "method": method}
        return wrap(lambda x, w: multiconv.batch_conv(x, w, **kwargs))

    found = [Candidate("auto", "auto", call("auto"))]
    found += [Candidate(str(method), "engine", call(str(method))) for method in load(backend).METHODS]
    return found


def _with_baselines(engines: list[Candidate], baselines: dict[str, Callable[[], Callable[[Any, Any], Any]]]) -> list[Candidate]:
    """Engines then baselines; a baseline that cannot express the case becomes an "n/a" row.

    An engine whose name is also a baseline's is labelled ``method=NAME``.
    """
    found = [dataclasses.replace(c, name=f"method={c.name}") if c.kind == "engine" and c.name in baselines else c for c in engines]
    for name, build in baselines.items():
        try:
            found.append(Candidate(name, "baseline", build()))
        except NotApplicableError as why:  # noqa: PERF203  (a handful of baselines, built once)
            found.append(Candidate(name, "baseline", None, str(why)))
    return found


# ----- NumPy baselines


def _np_pad(x: np.ndarray, geo: Geometry) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), *geo.padding)) if geo.padded else x


def _np_loop(x: np.ndarray, w: np.ndarray, geo: Geometry) -> np.ndarray:
    """A Python loop over the batch: per sample, one ``tensordot`` per kernel offset.

    With groups, the per-offset product is a ``matmul`` batched over the groups
    (a ``tensordot`` per group and offset would only add a Python loop).
    """
    xp = _np_pad(x, geo)
    y = np.empty((geo.batch, geo.out_channels, *geo.out_size), dtype=x.dtype)
    offsets = list(itertools.product(*(range(k) for k in geo.kernel)))
    for b in range(geo.batch):
        acc = np.zeros((geo.out_channels, *geo.out_size), dtype=x.dtype)
        for offset in offsets:
            window_index: tuple[int | slice, ...] = (b, slice(None), *(slice(o, o + n) for o, n in zip(offset, geo.out_size, strict=True)))
            tap_index: tuple[int | slice, ...] = (b, slice(None), slice(None), *offset)
            window, tap = xp[window_index], w[tap_index]  # (C_in, *S_out), (C_out, C_in // groups)
            if geo.groups == 1:
                acc += np.tensordot(tap, window, axes=1)
            else:
                grouped = np.matmul(tap.reshape(geo.groups, geo.og, geo.cg), window.reshape(geo.groups, geo.cg, geo.positions))
                acc += grouped.reshape(acc.shape)
        y[b] = acc
    return y


def _np_windows(x: np.ndarray, geo: Geometry) -> np.ndarray:
    """``(B, groups, C_in // groups, *S_out, *K)`` view of padded ``x``."""
    view = sliding_window_view(_np_pad(x, geo), geo.kernel, axis=tuple(range(2, 2 + geo.ndim)))
    return view.reshape(geo.batch, geo.groups, geo.cg, *geo.out_size, *geo.kernel)


def _np_einsum_windows(x: np.ndarray, w: np.ndarray, geo: Geometry) -> np.ndarray:
    s, k = _letters(geo)
    weight = w.reshape(geo.batch, geo.groups, geo.og, geo.cg, *geo.kernel)
    y = np.einsum(f"bgc{s}{k},bgoc{k}->bgo{s}", _np_windows(x, geo), weight, optimize=True)
    return np.asarray(y).reshape(geo.batch, geo.out_channels, *geo.out_size)


def _np_im2col(x: np.ndarray, w: np.ndarray, geo: Geometry) -> np.ndarray:
    """Windows copied to a ``(B, groups, P, C_in // groups * prod(K))`` buffer, then ``np.matmul``."""
    n = geo.ndim
    order = (0, 1, *range(3, 3 + n), 2, *range(3 + n, 3 + 2 * n))  # (B, G, *S_out, Cg, *K)
    columns = np.ascontiguousarray(_np_windows(x, geo).transpose(order)).reshape(geo.batch, geo.groups, geo.positions, geo.cg * geo.taps)
    weight = w.reshape(geo.batch, geo.groups, geo.og, geo.cg * geo.taps).transpose(0, 1, 3, 2)
    y = np.matmul(columns, weight)  # (B, G, P, Og)
    return np.ascontiguousarray(y.transpose(0, 1, 3, 2)).reshape(geo.batch, geo.out_channels, *geo.out_size)


def _numpy_candidates(case: Case, geo: Geometry) -> list[Candidate]:
    baselines: dict[str, Callable[[], Callable[[Any, Any], Any]]] = {
        "loop": lambda: functools.partial(_np_loop, geo=geo),
        "einsum-windows": lambda: functools.partial(_np_einsum_windows, geo=geo),
        "im2col-matmul": lambda: functools.partial(_np_im2col, geo=geo),
    }
    return _with_baselines(_multiconv_candidates("numpy", case, _as_is), baselines)


# ----- PyTorch baselines


def _torch_candidates(case: Case, geo: Geometry) -> list[Candidate]:  # noqa: C901  (one small closure per baseline)
    import torch  # noqa: PLC0415  (frameworks are imported only where they are used)
    import torch.nn.functional as F  # noqa: N812, PLC0415

    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[geo.ndim]
    symmetric = all(lo == hi for lo, hi in geo.padding)
    # What a user passes as ``padding=``: symmetric pads directly, otherwise F.pad first.
    pad_arg = [lo for lo, _ in geo.padding] if symmetric else [0] * geo.ndim
    flat = [side for pair in reversed(geo.padding) for side in pair]

    def pre(x: torch.Tensor) -> torch.Tensor:
        return x if symmetric else F.pad(x, flat)

    def padded(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, flat) if geo.padded else x

    def loop(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = pre(x)
        return torch.cat([conv(x[b : b + 1], w[b], None, 1, pad_arg, 1, geo.groups) for b in range(geo.batch)])

    def fold(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = pre(x)
        folded = conv(
            x.reshape(1, geo.batch * geo.in_channels, *x.shape[2:]),
            w.reshape(geo.batch * geo.out_channels, *w.shape[2:]),
            None,
            1,
            pad_arg,
            1,
            geo.batch * geo.groups,
        )
        return folded.reshape(geo.batch, geo.out_channels, *folded.shape[2:])

    def one(xb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
        return conv(xb.unsqueeze(0), wb, None, 1, pad_arg, 1, geo.groups).squeeze(0)

    vmapped = torch.func.vmap(one)

    def func_vmap(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return vmapped(pre(x), w)

    def windows(x: torch.Tensor) -> torch.Tensor:
        """``(B, groups, C_in // groups, *S_out, *K)`` view made by ``Tensor.unfold``."""
        view = padded(x)
        for dim, k in enumerate(geo.kernel):
            view = view.unfold(2 + dim, k, 1)
        return view.reshape(geo.batch, geo.groups, geo.cg, *geo.out_size, *geo.kernel)

    n = geo.ndim
    order = (0, 1, *range(3, 3 + n), 2, *range(3 + n, 3 + 2 * n))

    def unfold_bmm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        columns = windows(x).permute(order).reshape(geo.batch * geo.groups, geo.positions, geo.cg * geo.taps)
        weight = w.reshape(geo.batch * geo.groups, geo.og, geo.cg * geo.taps).transpose(1, 2)
        y = torch.bmm(columns, weight)  # (B * G, P, Og)
        return (
            y.reshape(geo.batch, geo.groups, geo.positions, geo.og).permute(0, 1, 3, 2).reshape(geo.batch, geo.out_channels, *geo.out_size)
        )

    s, k = _letters(geo)

    def einsum_windows(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        weight = w.reshape(geo.batch, geo.groups, geo.og, geo.cg, *geo.kernel)
        y = torch.einsum(f"bgc{s}{k},bgoc{k}->bgo{s}", windows(x), weight)
        return y.reshape(geo.batch, geo.out_channels, *geo.out_size)

    baselines: dict[str, Callable[[], Callable[[Any, Any], Any]]] = {
        "loop": lambda: loop,
        "groups=B": lambda: fold,
        "torch.func.vmap": lambda: func_vmap,
        "unfold+bmm": lambda: unfold_bmm,
        "einsum-windows": lambda: einsum_windows,
    }
    return _with_baselines(_multiconv_candidates("torch", case, _as_is), baselines)


# ----- JAX baselines


def _jax_candidates(case: Case, geo: Geometry) -> list[Candidate]:
    import jax  # noqa: PLC0415  (frameworks are imported only where they are used)
    import jax.numpy as jnp  # noqa: PLC0415
    from jax import lax  # noqa: PLC0415

    highest = lax.Precision.HIGHEST  # float32 stays float32 on every device (no TF32)
    ones = (1,) * geo.ndim

    def conv(lhs: jax.Array, rhs: jax.Array, groups: int) -> jax.Array:
        return lax.conv_general_dilated(lhs, rhs, ones, geo.padding, feature_group_count=groups, precision=highest)

    def loop(x: jax.Array, w: jax.Array) -> jax.Array:
        return jnp.concatenate([conv(x[b : b + 1], w[b], geo.groups) for b in range(geo.batch)])

    def fold(x: jax.Array, w: jax.Array) -> jax.Array:
        folded = conv(
            x.reshape(1, geo.batch * geo.in_channels, *geo.in_size),
            w.reshape(geo.batch * geo.out_channels, *w.shape[2:]),
            geo.batch * geo.groups,
        )
        return folded.reshape(geo.batch, geo.out_channels, *geo.out_size)

    def vmapped(x: jax.Array, w: jax.Array) -> jax.Array:
        return jax.vmap(lambda xb, wb: conv(xb[None], wb, geo.groups)[0])(x, w)

    def im2col(x: jax.Array, w: jax.Array) -> jax.Array:
        # Patches come channel-major: feature c * prod(K) + kernel offset.
        patches = lax.conv_general_dilated_patches(x, geo.kernel, ones, geo.padding, precision=highest)
        columns = patches.reshape(geo.batch, geo.groups, geo.cg * geo.taps, geo.positions)
        weight = w.reshape(geo.batch, geo.groups, geo.og, geo.cg * geo.taps)
        y = jnp.matmul(weight, columns, precision=highest)  # (B, G, Og, P)
        return y.reshape(geo.batch, geo.out_channels, *geo.out_size)

    s, k = _letters(geo)
    gathers = [np.arange(o)[:, None] + np.arange(kk)[None, :] for o, kk in zip(geo.out_size, geo.kernel, strict=True)]
    n = geo.ndim
    order = (0, 1, *range(2, 2 + 2 * n, 2), *range(3, 3 + 2 * n, 2))  # (B, C, O1, K1, O2, K2) -> (B, C, O1, O2, K1, K2)

    def einsum_windows(x: jax.Array, w: jax.Array) -> jax.Array:
        view = jnp.pad(x, ((0, 0), (0, 0), *geo.padding)) if geo.padded else x
        for dim, index in enumerate(gathers):
            view = jnp.take(view, index, axis=2 + 2 * dim)  # spatial axis -> (S_out, K)
        windows = view.transpose(order).reshape(geo.batch, geo.groups, geo.cg, *geo.out_size, *geo.kernel)
        weight = w.reshape(geo.batch, geo.groups, geo.og, geo.cg, *geo.kernel)
        y = jnp.einsum(f"bgc{s}{k},bgoc{k}->bgo{s}", windows, weight, precision=highest)
        return y.reshape(geo.batch, geo.out_channels, *geo.out_size)

    def jit(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return jax.jit(fn)

    baselines: dict[str, Callable[[], Callable[[Any, Any], Any]]] = {
        "loop": lambda: jit(loop),
        "groups=B": lambda: jit(fold),
        "jax.vmap": lambda: jit(vmapped),
        "im2col-matmul": lambda: jit(im2col),
        "einsum-windows": lambda: jit(einsum_windows),
    }
    return _with_baselines(_multiconv_candidates("jax", case, jit), baselines)


# --------------------------------------------------------------------------- frameworks


@dataclass(frozen=True)
class Framework:
    """What the harness needs of one framework: conversion, sync, GEMM, memory, candidates."""

    name: str
    version: str
    device: str
    convert: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    sync: Callable[[Any], object]
    candidates: Callable[[Case, Geometry], list[Candidate]]
    gemm: Callable[[Any, Any], Any]
    peak_memory: Callable[[Callable[[Any, Any], Any], Any, Any], tuple[int | None, str]]
    dtype_context: Callable[[str], contextlib.AbstractContextManager[object]]
    details: dict[str, Any]
    #: ``train(fn, g)``: a training step, forward and backward: ``(y, grad_x, grad_w)`` of ``sum(y * g)``; None without autodiff.
    train: Callable[[Callable[[Any, Any], Any], Any], Callable[[Any, Any], Any]] | None = None
    #: ``compile(fn)``: ``fn`` as the harness times it (``jax.jit`` for JAX, ``fn`` itself elsewhere).
    compile: Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]] = _as_is
    #: ``trainable(x)``: ``x`` as a training step passes it (a PyTorch leaf that requires grad), for ``auto``'s training plan.
    trainable: Callable[[Any], Any] = _as_is
    #: ``autodiff_floor(x)``: a thunk running the framework's own training step of ``x * 2`` (the output and the
    #: gradient of ``x``), as :attr:`train` wraps a candidate: what differentiating one operation of this input costs.
    autodiff_floor: Callable[[Any], Callable[[], Any]] | None = None
    #: ``program(fn, x, w)``: a digest of the compiled program ``fn`` runs on ``(x, w)`` (JAX: XLA's optimized HLO,
    #: :func:`program_digest`), or None where the framework compiles none: two candidates with one digest run the same
    #: program, so their times differ by the run's noise alone.
    program: Callable[[Callable[[Any, Any], Any], Any, Any], str | None] = lambda *_: None
    #: Whether multiconv's engines run threads of their own beside the framework's pool (NumPy's chunks run side
    #: by side beside OpenBLAS's workers: :mod:`multiconv._threads`): its blocks then wait out :attr:`Settings.settle_seconds`.
    own_threads: bool = False


def _no_sync(_: object) -> None:
    return None


def _no_context(_: str) -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext()


def _tracemalloc_peak(fn: Callable[[Any, Any], Any], x: Any, w: Any) -> tuple[int | None, str]:
    """Peak bytes NumPy allocates during one call (NumPy reports its buffers to tracemalloc)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn(x, w)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if started:
            tracemalloc.stop()
    return max(peak - before, 0), "tracemalloc peak"


def _numpy_framework() -> Framework:
    return Framework(
        name="numpy",
        version=np.__version__,
        device="cpu",
        convert=np.array,
        to_numpy=np.asarray,
        sync=_no_sync,
        candidates=_numpy_candidates,
        gemm=np.matmul,
        peak_memory=_tracemalloc_peak,
        dtype_context=_no_context,
        details={},
        own_threads=True,
    )


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ start/stop lines), not Python's warnings machinery."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr: nothing to silence
        yield
        return
    try:
        with Path(os.devnull).open("w", encoding="utf-8") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _torch_framework() -> Framework:
    import torch  # noqa: PLC0415  (frameworks are imported only where they are used)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def sync(_: object) -> None:
        if device.type == "cuda":  # pragma: no cover (CUDA only)
            torch.cuda.synchronize(device)

    def peak_memory(fn: Callable[[Any, Any], Any], x: Any, w: Any) -> tuple[int | None, str]:
        if device.type == "cuda":  # pragma: no cover (CUDA only)
            sync(None)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            fn(x, w)
            sync(None)
            return torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated"
        return _torch_profiler_peak(fn, x, w)

    details: dict[str, Any] = {
        "num_threads": torch.get_num_threads(),
        "parallel_info": torch.__config__.parallel_info().strip().splitlines()[:8],
    }
    if device.type == "cuda":  # pragma: no cover (CUDA only)
        details |= {
            "cuda_device": torch.cuda.get_device_name(device),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }

    def train(fn: Callable[[Any, Any], Any], cotangent: Any) -> Callable[[Any, Any], Any]:
        def step(x: Any, w: Any) -> Any:
            x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
            y = fn(x, w)
            return (y.detach(), *torch.autograd.grad(y, (x, w), cotangent))

        return step

    def trainable(a: Any) -> Any:
        return a.detach().requires_grad_()

    return Framework(
        name="torch",
        version=torch.__version__,
        device=str(device),
        convert=lambda a: torch.from_numpy(np.array(a)).to(device),
        to_numpy=lambda t: t.detach().cpu().numpy(),
        sync=sync,
        candidates=_torch_candidates,
        train=train,
        trainable=trainable,
        autodiff_floor=_torch_autodiff_floor,
        gemm=torch.matmul,
        peak_memory=peak_memory,
        dtype_context=_no_context,
        details=details,
    )


def _torch_autodiff_floor(x: Any) -> Callable[[], Any]:
    """:attr:`Framework.autodiff_floor` for PyTorch: a step as :attr:`Framework.train` runs one, of ``x * 2``."""
    import torch  # noqa: PLC0415

    def step() -> Any:
        leaf = x.detach().requires_grad_()
        y = leaf * 2
        return (y.detach(), *torch.autograd.grad(y, (leaf,), x))

    return step


def _torch_profiler_peak(fn: Callable[[Any, Any], Any], x: Any, w: Any) -> tuple[int | None, str]:
    """Peak of live CPU allocations during one call, from ``torch.profiler``'s allocation events."""
    import torch  # noqa: PLC0415

    try:
        from torch._C._profiler import _EventType  # noqa: PLC0415  (the profiler's event tree has no public type)

        with _quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn(x, w)
        sizes: list[tuple[int, int]] = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation:
                sizes.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
            stack.extend(node.children)
    except Exception as error:  # noqa: BLE001  (a private API: report n/a rather than fail the run)
        return None, f"torch.profiler unavailable ({type(error).__name__})"
    live = peak = 0
    for _, size in sorted(sizes):
        live += size
        peak = max(peak, live)
    return peak, "torch.profiler allocation peak"


def _jax_framework() -> Framework:
    import jax  # noqa: PLC0415  (frameworks are imported only where they are used)
    import jax.numpy as jnp  # noqa: PLC0415
    from jax import lax  # noqa: PLC0415

    device = jax.devices()[0]

    def peak_memory(fn: Callable[[Any, Any], Any], x: Any, w: Any) -> tuple[int | None, str]:
        try:
            stats = fn.lower(x, w).compile().memory_analysis()  # type: ignore[attr-defined]
        except Exception as error:  # noqa: BLE001  (not every JAX backend reports it)
            return None, f"memory_analysis unavailable ({type(error).__name__})"
        if stats is None:
            return None, "memory_analysis unavailable"
        return int(stats.temp_size_in_bytes + stats.output_size_in_bytes), "XLA temp + output bytes"

    def dtype_context(dtype: str) -> contextlib.AbstractContextManager[object]:
        # float64 needs x64 for this case only; the harness never flips it globally.
        return jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()  # noqa: FBT003

    gemm = jax.jit(functools.partial(jnp.matmul, precision=lax.Precision.HIGHEST))

    def train(fn: Callable[[Any, Any], Any], cotangent: Any) -> Callable[[Any, Any], Any]:
        # The cotangent is an argument, as in a training step where it comes from the loss: closed
        # over, it is a literal of the compiled program, which XLA fuses differently (the depthwise
        # shape's backward measured 1.0 ms that way against 0.57 ms).  The output is returned with
        # the gradients, as a step needs it for its loss: the gradients of a bilinear map do not use
        # it, so without it XLA drops the forward and times the backward alone.
        def step(x: Any, w: Any, g: Any) -> Any:
            y, pullback = jax.vjp(fn, x, w)
            return (y, *pullback(g))

        return _BoundStep(jax.jit(step), cotangent)

    def floor_step(x: Any, g: Any) -> Any:
        y, pullback = jax.vjp(lambda a: a * 2, x)
        return (y, *pullback(g))

    floor_compiled = jax.jit(floor_step)

    def autodiff_floor(x: Any) -> Callable[[], Any]:
        return lambda: floor_compiled(x, x)

    return Framework(
        name="jax",
        version=jax.__version__,
        device=f"{device.platform}:{device.id}" + ("" if device.device_kind == device.platform else f" ({device.device_kind})"),
        convert=jnp.asarray,
        to_numpy=np.asarray,
        sync=jax.block_until_ready,
        candidates=_jax_candidates,
        train=train,
        autodiff_floor=autodiff_floor,
        compile=jax.jit,
        gemm=gemm,
        peak_memory=peak_memory,
        program=_xla_program,
        dtype_context=dtype_context,
        details={"devices": [str(d) for d in jax.devices()], "XLA_FLAGS": os.environ.get("XLA_FLAGS")},
    )


_FRAMEWORKS: Final[dict[str, Callable[[], Framework]]] = {"numpy": _numpy_framework, "torch": _torch_framework, "jax": _jax_framework}


def framework(name: str) -> Framework:
    """The harness's view of the framework ``name`` (``benchmarks/calibrate.py`` times training steps with it too)."""
    if name not in _FRAMEWORKS:
        raise ValueError(f"backend={name!r} is not one of {', '.join(_FRAMEWORKS)}")
    return _FRAMEWORKS[name]()


#: glibc's allocator for every backend's process, unless the caller's environment sets it:
#: the warm heap the README recommends for large convolutions (its "Allocator" paragraph).
#: glibc serves a buffer above its mmap threshold with fresh pages (a page fault per
#: 4 KiB, on every call), and it returns free memory above its trim threshold at the top
#: of the heap, to be faulted in again by the next call.  Left dynamic, the threshold
#: depends on what ran before (PyTorch's depthwise forward: 1.4 ms in a fresh process,
#: 0.40 ms after one backward); fixed at the 32 MiB / 64 MiB it reaches on its own, one
#: process still faulted 16-17 thousand pages per call and the next none (PyTorch,
#: 64 samples of 64 channels, L 1024, K 3, training step: 35.6 against 19-20 ms, the same
#: code).  With both above the 256 MiB workspace bound every buffer stays in the heap:
#: the median call faulted no page (PyTorch: dense64 forward and training, conv2d,
#: float64; 3 processes each) or under 40 (JAX's dense64 training step, where the fixed
#: setting faulted 14-21 thousand in 3 of 3), so candidates are timed at their steady
#: state, not at what glibc's history left them.  That holds in the main thread's arena:
#: a thread that allocates gets an arena of its own, whose heaps glibc caps at 64 MiB,
#: so XLA's buffers (allocated by its worker threads) of 64 MiB and more are mapped
#: afresh on every call whatever the thresholds (JAX, ``x * 2 + 1`` on 2**24 float32:
#: 16.6-17.7 ms and 16,385 faults a call, against 2.8 ms for 1,024 elements fewer).  One
#: arena for every thread (``MALLOC_ARENA_MAX=1``) keeps them in the heap (2.8-3.1 ms),
#: but its one heap fragments, and over the benchmark's shapes (multiconv's buffers stay
#: under 64 MiB) it lost: run G (one arena) against run H (threads' own arenas), same code, AMD EPYC,
#: JAX's rows took a median 0.92 (forward) and 0.94 (training) of run G's time in run H,
#: ``many``'s training step 8.4 against 14.9 ms; NumPy and PyTorch did not move (0.98-1.00).
#: So the benchmark keeps glibc's arenas; the README describes the trade.
ALLOCATOR_ENV: Final = {"MALLOC_MMAP_THRESHOLD_": str(256 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(512 * 2**20)}


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages, where the platform has them."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine_info(framework: Framework | None = None) -> dict[str, Any]:
    """Platform, CPU, cores, Python, the framework, NumPy's BLAS (threadpoolctl) and BLAS environment variables."""
    from threadpoolctl import threadpool_info  # noqa: PLC0415 (a dependency; scanning the loaded libraries costs ms)

    pools: list[dict[str, Any]] = threadpool_info()
    affinity = getattr(os, "sched_getaffinity", None)
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_model": cpu_model(),  # vendor, family and model: which calibration auto would use, if measured
        "cpu_count": os.cpu_count(),
        "cpu_profile": cpu_profile(),  # the calibration method="auto" used
        "group_loop_seconds": GROUP_LOOP_SECONDS,  # and its charge on PyTorch's float64 fold (multiconv._cost.group_loop_risk)
        "cpus_usable": len(affinity(0)) if affinity is not None else os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "multiconv": multiconv.__version__,
        "threadpools": pools,
        "env": {
            name: os.environ.get(name)
            for name in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                *ALLOCATOR_ENV,
                "MALLOC_ARENA_MAX",
            )
        },
        # Other work on the machine distorts every number (threaded kernels most): say how busy it was.
        "load_average": _load_average(),
    }
    if framework is not None:
        info |= {"framework": framework.name, "framework_version": framework.version, "device": framework.device, **framework.details}
    return info


# --------------------------------------------------------------------------- measuring


#: Progress callback: ``(done, total, label)``.
Progress = Callable[[int, int, str], None]


def _inputs(case: Case, index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1234 + index)
    x = rng.standard_normal(case.x_shape).astype(case.dtype)
    fan_in = math.prod(case.w_shape[2:])
    w = (rng.standard_normal(case.w_shape) / math.sqrt(fan_in)).astype(case.dtype)
    return x, w


@dataclass
class _Trial:
    """The state of one candidate while a case is measured."""

    candidate: Candidate
    status: str = "ok"  # "ok", "wrong", "error", "n/a", "skipped"
    note: str = ""
    rel_error: float | None = None
    first_call_seconds: float | None = None
    calls: int = 0
    samples: list[float] = dataclasses.field(default_factory=list)
    peak_memory: int | None = None
    memory_method: str = ""
    program: str | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def _time_block(fn: Callable[[], Any], sync: Callable[[Any], object], calls: int) -> float:
    """Seconds per call over ``calls`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(calls):
        sync(fn())
    return (time.perf_counter() - start) / calls


def _settle(fn: Callable[[], Any], sync: Callable[[Any], object], seconds: float) -> int:
    """Untimed calls, at least one and for at least ``seconds``; returns how many.

    The first call after another candidate refills caches and the allocator; the
    rest let the other candidate's threads go idle (see :attr:`Settings.settle_seconds`).
    """
    calls, deadline = 0, time.perf_counter() + seconds
    while calls == 0 or time.perf_counter() < deadline:
        sync(fn())
        calls += 1
    return calls


def _calls_per_block(fn: Callable[[], Any], sync: Callable[[Any], object], once: float, settings: Settings) -> int:
    """Calls that make a block last about ``settings.block_seconds``.

    ``once`` may be inflated (a first call after profiling or an idle spell wakes
    thread pools), so a few more single calls are timed and the fastest is used.
    """
    if once < settings.block_seconds:
        once = min([once, *(_time_block(fn, sync, 1) for _ in range(3))])
    estimate = once
    if once < settings.block_seconds / 10:
        probe = max(2, math.ceil(settings.block_seconds / 10 / max(once, 1e-7)))
        estimate = _time_block(fn, sync, min(probe, 100_000))
    return max(1, min(100_000, round(settings.block_seconds / max(estimate, 1e-9))))


def _short(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."  # noqa: PLR2004


def _prepare(
    trial: _Trial, fw: Framework, *, x: Any, w: Any, ref: np.ndarray | tuple[np.ndarray, ...], case: Case, settings: Settings
) -> None:
    """Check the candidate against the reference (a tuple: output and gradients), then calibrate its block and measure memory."""
    fn = trial.candidate.fn
    if fn is None:
        trial.status, trial.note = "n/a", trial.candidate.reason
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            start = time.perf_counter()
            y = fn(x, w)
            fw.sync(y)
            trial.first_call_seconds = time.perf_counter() - start
            trial.rel_error = 0.0
            for got, want in zip(y if isinstance(y, (tuple, list)) else (y,), ref if isinstance(ref, tuple) else (ref,), strict=True):
                host = np.asarray(fw.to_numpy(got), dtype=np.float64)
                if host.shape != want.shape:
                    trial.status, trial.note = "wrong", f"shape {host.shape}, expected {want.shape}"
                    return
                scale = max(float(np.max(np.abs(want))), float(np.finfo(np.float64).tiny))
                # np.maximum keeps a NaN (the builtin max may drop it): a NaN result must fail below
                trial.rel_error = float(np.maximum(trial.rel_error, np.max(np.abs(host - want)) / scale))
            if not trial.rel_error <= TOLERANCES[case.dtype]:  # NaN fails too
                trial.status, trial.note = "wrong", f"max|y - ref| / max|ref| = {trial.rel_error:.1e} > {TOLERANCES[case.dtype]:.0e}"
                return
            once = _time_block(lambda: fn(x, w), fw.sync, 1)
            if once > settings.time_cap:
                trial.status, trial.note = "skipped", f"slow: {once:.2f} s/call > cap {settings.time_cap:g} s"
                return
            trial.calls = _calls_per_block(lambda: fn(x, w), fw.sync, once, settings)
            trial.peak_memory, trial.memory_method = fw.peak_memory(fn, x, w)
            trial.program = fw.program(fn, x, w)
        except Exception as error:  # noqa: BLE001  (one failing candidate must not stop the benchmark)
            trial.status, trial.note = "error", _short(error)
        finally:
            for message in dict.fromkeys(f"{w_.category.__name__}: {str(w_.message).splitlines()[0][:120]}" for w_ in caught):
                trial.notes.append(message)


def _summary(case_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Auto against the best baseline and the best engine of one case."""

    def best(kind: str) -> dict[str, Any] | None:
        rows = [r for r in case_rows if r["kind"] == kind and r["status"] == "ok"]
        return min(rows, key=lambda r: r["seconds"]) if rows else None

    auto, baseline, engine = best("auto"), best("baseline"), best("engine")

    def ratio(row: dict[str, Any] | None) -> float | None:
        return auto["seconds"] / row["seconds"] if auto is not None and row is not None else None

    return {
        "shape": case_rows[0]["shape"],
        "auto_method": case_rows[0]["auto_method"],
        "auto_seconds": auto["seconds"] if auto else None,
        "best_baseline": baseline["candidate"] if baseline else None,
        "best_baseline_seconds": baseline["seconds"] if baseline else None,
        "auto_over_best_baseline": ratio(baseline),
        "best_engine": engine["candidate"] if engine else None,
        "best_engine_seconds": engine["seconds"] if engine else None,
        "auto_over_best_engine": ratio(engine),
    }


def _gemm_thunk(fw: Framework, size: int) -> tuple[Callable[[], Any], int]:
    rng = np.random.default_rng(0)
    a, b = (fw.convert(rng.standard_normal((size, size)).astype(np.float32)) for _ in range(2))
    return (lambda: fw.gemm(a, b)), 2 * size**3


def _run_rounds(
    fw: Framework,
    ready: list[_Trial],
    x: Any,
    w: Any,
    *,
    settings: Settings,
    tick: Callable[[str], None],
    label: str,
    floor: Callable[[], Any] | None = None,
) -> tuple[list[float], int, list[float]]:
    """Interleaved rounds: every ready candidate, the GEMM and ``floor`` (if any) once per round.

    Returns the GEMM's samples and FLOP, and ``floor``'s samples.
    """
    gemm, gemm_flop = _gemm_thunk(fw, settings.gemm_size)
    settle = settings.settle_seconds if fw.own_threads else 0.0
    references: dict[str, tuple[Callable[[], Any], int, list[float]]] = {}
    for name, thunk in (("gemm", gemm), ("floor", floor)):
        if thunk is not None:
            fw.sync(thunk())
            references[name] = (thunk, _calls_per_block(thunk, fw.sync, _time_block(thunk, fw.sync, 1), settings), [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported once by the check already
        shuffler = random.Random(0)  # noqa: S311 (an order, not a secret)
        for round_ in range(settings.rounds):
            # A fresh (seeded) order every round: no candidate always runs first, or always right
            # after the GEMM, whose AVX-512 load can slow the next few milliseconds down.
            order: list[_Trial | str] = [*ready, *references]
            shuffler.shuffle(order)
            for trial in order:
                if isinstance(trial, str):
                    thunk, calls, samples = references[trial]
                    _settle(thunk, fw.sync, settle)
                    samples.append(_time_block(thunk, fw.sync, calls))
                    continue
                tick(f"{label} {trial.candidate.name} (round {round_ + 1}/{settings.rounds})")
                fn = trial.candidate.fn
                if trial.status != "ok" or fn is None:
                    continue
                try:
                    call = functools.partial(fn, x, w)
                    _settle(call, fw.sync, settle)
                    trial.samples.append(_time_block(call, fw.sync, trial.calls))
                except Exception as error:  # noqa: BLE001  (one failing candidate must not stop the benchmark)
                    trial.status, trial.note = "error", _short(error)
    return references["gemm"][2], gemm_flop, references["floor"][2] if floor is not None else []


def _row(trial: _Trial, case: Case, geo: Geometry, auto_method: str, gemm_gflops: float | None) -> dict[str, Any]:
    seconds = min(trial.samples) if trial.status == "ok" and trial.samples else None
    gflops = 2 * geo.macs / seconds / 1e9 if seconds else None
    return {
        "shape": case.name,
        "candidate": trial.candidate.name,
        "kind": trial.candidate.kind,
        "auto_method": auto_method,
        "picked_by_auto": trial.candidate.kind == "engine" and trial.candidate.name.removeprefix("method=") == auto_method,
        "status": trial.status,
        "note": "; ".join(filter(None, [trial.note, *trial.notes])),
        "seconds": seconds,
        "seconds_median": statistics.median(trial.samples) if seconds else None,
        "seconds_rounds": trial.samples,
        "calls_per_round": trial.calls,
        "first_call_seconds": trial.first_call_seconds,
        "gflops": gflops,
        "pct_gemm": 100 * gflops / gemm_gflops if gflops and gemm_gflops else None,
        "peak_memory_bytes": trial.peak_memory,
        "memory_method": trial.memory_method,
        "program": trial.program,
        "rel_error": trial.rel_error,
    }


def _measure_case(
    fw: Framework,
    case: Case,
    *,
    index: int,
    candidates: list[Candidate],
    settings: Settings,
    tick: Callable[[str], None],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Check, calibrate and time every candidate of one case, forward and (with autodiff) forward + backward.

    Returns the case's description, its forward rows and its training rows.
    """
    geo = Geometry.of(case)
    x_np, w_np = _inputs(case, index)
    ref = reference_conv(x_np, w_np, **case.conv_kwargs)
    x, w = fw.convert(x_np), fw.convert(w_np)
    auto_method = plan(x, w, **case.conv_kwargs).spec.method
    label = f"{fw.name} {case.name}"

    def measure(
        trials: list[_Trial], ref: np.ndarray | tuple[np.ndarray, ...], label: str, floor: Callable[[], Any] | None = None
    ) -> tuple[list[float], int, list[float]]:
        for trial in trials:
            tick(f"{label} {trial.candidate.name} (check)")
            _prepare(trial, fw, x=x, w=w, ref=ref, case=case, settings=settings)
        ready = [t for t in trials if t.status == "ok"]
        for trial in trials:
            for _ in range(settings.rounds if trial not in ready else 0):
                tick(f"{label} {trial.candidate.name} ({trial.status})")
        return _run_rounds(fw, ready, x, w, settings=settings, tick=tick, label=label, floor=floor)

    trials = [_Trial(c) for c in candidates]
    gemm_samples, gemm_flop, _ = measure(trials, ref, label)
    gemm_gflops = gemm_flop / min(gemm_samples) / 1e9 if gemm_samples else None
    training_rows, train_method, derivatives = [], None, None
    floor_samples: list[float] = []
    if fw.train is not None:
        # What auto trains with: PyTorch plans a call autograd records apart (its training model), and
        # JAX differentiates auto through the engine of spec.tangent_method where that is not the forward's.
        trained = plan(fw.trainable(x), w, **case.conv_kwargs).spec
        train_method, derivatives = trained.method, trained.tangent_method or trained.method
        # The output and the gradients of sum(y * g) for x and w, checked against the reference and its independent VJP.
        g_np = np.random.default_rng(index + 1000).standard_normal(ref.shape).astype(case.dtype)
        grad_x, grad_w, _ = reference_conv_vjp(x_np, w_np, grad_y=g_np, **case.conv_kwargs)
        cotangent, train = fw.convert(g_np), fw.train
        training = [_Trial(dataclasses.replace(c, fn=None if c.fn is None else train(c.fn, cotangent))) for c in candidates]
        floor = fw.autodiff_floor(x) if fw.autodiff_floor is not None else None
        _, _, floor_samples = measure(training, (ref, grad_x, grad_w), f"{label} training", floor)
        # %GEMM of a training step counts the three convolutions' worth of work it does.
        training_rows = [_row(t, case, geo, train_method, gemm_gflops and gemm_gflops / 3) for t in training]
    shape_info = {
        "name": case.name,
        "description": case.description,
        "x_shape": list(case.x_shape),
        "w_shape": list(case.w_shape),
        "groups": case.groups,
        "padding": case.padding,
        "dtype": case.dtype,
        "out_shape": list(ref.shape),
        "macs": geo.macs,
        "auto_method": auto_method,
        "auto_training_method": train_method,
        "auto_derivatives": derivatives,
        "tolerance": TOLERANCES[case.dtype],
        "gemm_gflops": gemm_gflops,
        "gemm_seconds_rounds": gemm_samples,
        # the framework's own training step of x * 2, timed in the training rounds (None without autodiff)
        "autodiff_floor_seconds": min(floor_samples) if floor_samples else None,
        "autodiff_floor_seconds_rounds": floor_samples,
    }
    return shape_info, [_row(trial, case, geo, auto_method, gemm_gflops) for trial in trials], training_rows


def run_backend(
    name: str,
    shapes: Sequence[str] | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Benchmark one backend in this process.

    Parameters
    ----------
    name : {"numpy", "torch", "jax"}
        The backend (its framework is imported here).
    shapes : sequence of str, optional
        Names from :data:`SHAPES` (default: all).
    settings : Settings, optional
        Rounds, block length, time cap, GEMM size and quick mode (default: a full run).
    progress : callable, optional
        Called as ``progress(done, total, label)`` before each step.

    Returns
    -------
    dict
        ``machine``, ``settings``, ``gemm`` (float32 GEMM rate measured in the same
        rounds), ``shapes``, ``rows`` (one per shape and candidate), ``summary``
        (auto against the best baseline and the best engine, per shape),
        ``all_correct`` and ``wall_seconds``.

    Raises
    ------
    ValueError
        For an unknown backend or shape name.
    """
    started = time.perf_counter()
    settings = settings or Settings()
    fw = framework(name)
    table = QUICK_SHAPES if settings.quick else SHAPES
    names = list(shapes) if shapes else list(table)
    unknown = [s for s in names if s not in table]
    if unknown:
        raise ValueError(f"unknown shape(s) {', '.join(unknown)}; expected some of {', '.join(table)}")
    machine = machine_info(fw)
    cases = [table[s] for s in names]
    candidate_lists = [fw.candidates(case, Geometry.of(case)) for case in cases]
    total = sum(len(c) * (1 + settings.rounds) for c in candidate_lists) * (1 if fw.train is None else 2)
    done = 0

    def tick(label: str) -> None:
        nonlocal done
        if progress is not None:
            progress(done, total, label)
        done += 1

    shape_infos, rows, summary, training_rows, training_summary = [], [], [], [], []
    for index, (case, candidates) in enumerate(zip(cases, candidate_lists, strict=True)):
        with fw.dtype_context(case.dtype):
            info, case_rows, case_training = _measure_case(fw, case, index=index, candidates=candidates, settings=settings, tick=tick)
        shape_infos.append(info)
        rows += case_rows
        summary.append(_summary(case_rows))
        if case_training:
            training_rows += case_training
            # auto_derivatives: the engine auto's derivatives run through (JAX: not always its forward's)
            extra = {
                "auto_forward_seconds": summary[-1]["auto_seconds"],
                "auto_derivatives": info["auto_derivatives"],
                "autodiff_floor_seconds": info["autodiff_floor_seconds"],
            }
            training_summary.append(_summary(case_training) | extra)
    if progress is not None:
        progress(total, total, f"{name} done")
    rates = [s["gemm_gflops"] for s in shape_infos if s["gemm_gflops"]]
    return {
        "backend": name,
        "machine": machine | {"load_average_end": _load_average()},
        "settings": dataclasses.asdict(settings),
        "gemm": {
            "dtype": "float32",
            "size": settings.gemm_size,
            "gflops": statistics.median(rates) if rates else None,
            "gflops_per_shape": {s["name"]: s["gemm_gflops"] for s in shape_infos},
        },
        "shapes": shape_infos,
        "rows": rows,
        "summary": summary,
        "training_rows": training_rows,
        "training_summary": training_summary,
        "all_correct": all(r["status"] in ("ok", "n/a", "skipped") for r in rows + training_rows),
        "wall_seconds": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------- progress bar

#: A child process reports progress on stderr as this prefix + JSON ``[done, total, label]``.
PROGRESS_PREFIX: Final = "@@multiconv-bench-progress "


class ProgressBar:
    """``[#####.....] 12/40 torch dense64 shift`` on a stream.

    On a terminal the line is redrawn in place; elsewhere (logs, pipes) a line is
    printed at every tenth of the way, so that captured output stays short.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 20) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._shown = 0
        self._last_draw = 0.0
        self._last_tenth = -1
        self._line = ""

    def update(self, done: int, total: int, label: str) -> None:
        """Show ``done`` of ``total`` steps, now at ``label``."""
        fraction = done / total if total else 1.0
        filled = min(self.width, round(self.width * fraction))
        self._line = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {label}"
        now = time.monotonic()
        if self.tty:
            if now - self._last_draw >= 0.05 or done >= total:  # noqa: PLR2004
                self._draw()
                self._last_draw = now
        elif int(10 * fraction) > self._last_tenth:
            self._last_tenth = int(10 * fraction)
            self.stream.write(self._line + "\n")
            self.stream.flush()

    def _draw(self) -> None:
        self.stream.write("\r" + self._line.ljust(self._shown))
        self._shown = len(self._line)
        self.stream.flush()

    def message(self, text: str) -> None:
        """Print ``text`` on its own line above the bar."""
        self.clear()
        self.stream.write(text.rstrip("\n") + "\n")
        if self.tty and self._line:
            self._draw()
        self.stream.flush()

    def clear(self) -> None:
        """Remove the bar from a terminal line."""
        if self.tty and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self._shown = 0
            self.stream.flush()

    def reset(self) -> None:
        """Start a new bar (next backend)."""
        self.clear()
        self._last_tenth = -1
        self._line = ""


def _protocol_progress(done: int, total: int, label: str) -> None:
    sys.stderr.write(PROGRESS_PREFIX + json.dumps([done, total, label]) + "\n")
    sys.stderr.flush()


# --------------------------------------------------------------------------- running every backend


def _run_child(name: str, shapes: Sequence[str] | None, settings: Settings, bar: ProgressBar) -> tuple[dict[str, Any] | None, str | None]:
    """Run one backend in a subprocess; return its result or why it failed."""
    with tempfile.TemporaryDirectory(prefix="multiconv-bench-") as tmp:
        out = Path(tmp) / f"{name}.json"
        command = [
            sys.executable,
            "-m",
            "multiconv._bench",
            "--backend",
            name,
            "--json",
            str(out),
            "--rounds",
            str(settings.rounds),
            "--time-cap",
            str(settings.time_cap),
            "--progress",
            "protocol",
        ]
        if shapes:
            command += ["--shapes", ",".join(shapes)]
        if settings.quick:
            command.append("--quick")
        # The child must import this very package, installed or not.
        root = str(Path(multiconv.__file__).resolve().parents[1])
        env = {**ALLOCATOR_ENV, **os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        tail: list[str] = []
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1) as child:  # noqa: S603
            assert child.stdout is not None  # noqa: S101  (stdout=PIPE)
            for line in child.stdout:
                if line.startswith(PROGRESS_PREFIX):
                    done, total, label = json.loads(line[len(PROGRESS_PREFIX) :])
                    bar.update(done, total, label)
                elif line.strip():
                    bar.message(f"  [{name}] {line.rstrip()}")
                    tail = [*tail[-19:], line.rstrip()]
        bar.reset()
        if child.returncode != 0 or not out.exists():
            return None, f"the {name} benchmark process exited with status {child.returncode}: " + " | ".join(tail[-5:])
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return result, None


def _emit(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def _format_bytes(size: float | None) -> str:
    if size is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":  # noqa: PLR2004
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def _format_time(seconds: float | None) -> str:
    from multiconv.cli import _format_seconds  # noqa: PLC0415  (cli imports this module)

    return "-" if seconds is None else _format_seconds(seconds)


def _format_ratio(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}"


def _backend_header(result: dict[str, Any]) -> str:
    machine = result["machine"]
    pools = machine.get("threadpools")
    blas = ""
    if isinstance(pools, list):
        blas = ", ".join(
            " ".join(str(p[key]) for key in ("internal_api", "version", "architecture") if p.get(key)) + f" x{p.get('num_threads')}"
            for p in pools
        )
    gemm = result["gemm"]
    rate = f"{gemm['gflops']:.1f} GFLOP/s" if gemm["gflops"] else "n/a"
    averages = machine.get("load_average")
    busy = f"; load average {averages[0]:.1f} at the start" if averages else ""
    return (
        f"{result['backend']} {machine.get('framework_version')} on {machine.get('device')} "
        f"({machine.get('cpu')}, {machine.get('cpus_usable')} CPUs; {blas or 'BLAS unknown'}{busy}); "
        f"float32 GEMM {gemm['size']}x{gemm['size']}: {rate}"
    )


def _marks(row: dict[str, Any], best_baselines: set[tuple[str, str | None]]) -> str:
    """The note column: auto's pick, the best baseline, a failed status and its note."""
    marks = []
    if row["kind"] == "auto":
        marks.append(f"auto -> {row['auto_method']}")
    if row["picked_by_auto"]:
        marks.append("<- auto's pick")
    if (row["shape"], row["candidate"]) in best_baselines:
        marks.append("* best baseline")
    if row["status"] != "ok":
        marks.append(row["status"])
    if row["note"]:
        marks.append(row["note"])
    return "; ".join(marks)


def _backend_table(result: dict[str, Any]) -> list[list[str]]:
    best_baselines = {(s["shape"], s["best_baseline"]) for s in result["summary"]}
    return [
        [
            row["shape"],
            row["candidate"],
            row["kind"],
            _format_time(row["seconds"]),
            "-" if row["gflops"] is None else f"{row['gflops']:.2f}",
            "-" if row["pct_gemm"] is None else f"{row['pct_gemm']:.1f}%",
            _format_bytes(row["peak_memory_bytes"]),
            "-" if row["rel_error"] is None else f"{row['rel_error']:.0e}",
            _marks(row, best_baselines),
        ]
        for row in result["rows"]
    ]


def _summary_table(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    cells = [
        [
            s["shape"],
            backend,
            s["auto_method"],
            _format_time(s["auto_seconds"]),
            s["best_baseline"] or "-",
            _format_time(s["best_baseline_seconds"]),
            _format_ratio(s["auto_over_best_baseline"]),
            s["best_engine"] or "-",
            _format_time(s["best_engine_seconds"]),
            _format_ratio(s["auto_over_best_engine"]),
        ]
        for backend, result in results.items()
        for s in result["summary"]
    ]
    shape_order = {name: i for i, name in enumerate(SHAPES)}
    backend_order = {name: i for i, name in enumerate(results)}
    cells.sort(key=lambda c: (shape_order.get(c[0], len(shape_order)), backend_order[c[1]]))
    return cells


def print_tables(results: dict[str, dict[str, Any]]) -> None:
    """One table per backend, then the summary: auto against the best baseline and the best engine."""
    from multiconv.cli import _table  # noqa: PLC0415  (cli imports this module)

    for result in results.values():
        _emit(_backend_header(result))
        header = ["shape", "candidate", "kind", "time", "GFLOP/s", "%GEMM", "peak mem", "rel err", "note"]
        for line in _table(header, _backend_table(result), right={3, 4, 5, 6, 7}):
            _emit(line)
        _emit()
        if result.get("training_rows"):
            _emit(f"{result['backend']} training: forward + backward (gradients for x and w; %GEMM of 3 convolutions' work)")
            training = {**result, "rows": result["training_rows"], "summary": result["training_summary"]}
            for line in _table(header, _backend_table(training), right={3, 4, 5, 6, 7}):
                _emit(line)
            _emit()
    header = [
        "shape",
        "backend",
        "auto (method)",
        "auto time",
        "best baseline",
        "time",
        "auto/baseline",
        "best engine",
        "time",
        "auto/engine",
    ]
    _emit("summary (ratio < 1: auto is faster)")
    for line in _table(header, _summary_table(results), right={3, 5, 6, 8, 9}):
        _emit(line)
    training = {name: {**r, "summary": r["training_summary"]} for name, r in results.items() if r.get("training_summary")}
    if training:
        _emit()
        _emit("training summary: forward + backward (backward/forward: auto's backward over its forward)")
        cells = _summary_table(training)
        forward = {(s["shape"], name): s["auto_forward_seconds"] for name, r in training.items() for s in r["summary"]}
        step = {(s["shape"], name): s["auto_seconds"] for name, r in training.items() for s in r["summary"]}
        for cell in cells:
            key = (cell[0], cell[1])
            both, alone = step.get(key), forward.get(key)
            cell.append(_format_ratio((both - alone) / alone if both and alone else None))
        for line in _table([*header, "backward/forward"], cells, right={3, 5, 6, 8, 9, 10}):
            _emit(line)


def _plot_panel(ax: Any, backend: str, result: dict[str, Any]) -> None:
    """Grouped bars per shape, one per candidate; auto red with a black edge, engines hatched blue, untimed ones marked x."""
    import matplotlib.pyplot as plt  # noqa: PLC0415  (optional; imported by write_plot first)

    shapes = [s["name"] for s in result["shapes"]]
    names = list(dict.fromkeys(r["candidate"] for r in result["rows"]))
    kinds = {r["candidate"]: r["kind"] for r in result["rows"]}
    seconds = {(r["shape"], r["candidate"]): r["seconds"] for r in result["rows"]}
    width = 0.85 / max(len(names), 1)
    engines = [n for n in names if kinds[n] == "engine"]
    baselines = [n for n in names if kinds[n] == "baseline"]
    colors = {n: plt.get_cmap("Blues")(0.45 + 0.5 * i / max(len(engines), 1)) for i, n in enumerate(engines)}
    palette = ["tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:gray", "tab:olive", "tab:cyan", "tab:pink"]
    colors |= {n: palette[i % len(palette)] for i, n in enumerate(baselines)}
    untimed: list[float] = []
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(shapes))]
        ys = [seconds.get((shape, name)) or np.nan for shape in shapes]
        untimed += [x for x, y in zip(xs, ys, strict=True) if np.isnan(y)]
        auto = kinds[name] == "auto"
        ax.bar(
            xs,
            ys,
            width,
            label=f"{name} ({kinds[name]})",
            color="crimson" if auto else colors[name],
            edgecolor="black" if auto else "none",
            linewidth=1.5 if auto else 0,
            hatch="//" if kinds[name] == "engine" else None,
            zorder=3 if auto else 2,
        )
    ax.set_yscale("log")
    bottom = ax.get_ylim()[0]
    for x in untimed:
        ax.text(x, bottom * 1.3, "x", ha="center", va="bottom", fontsize=8, color="dimgray")
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes)
    ax.set_ylabel("seconds per call (log)")
    ax.set_xlabel("x: not timed (skipped as slow, wrong, failed or n/a; see the table)" if untimed else "")
    machine = result["machine"]
    ax.set_title(f"{backend} {machine.get('framework_version')} on {machine.get('device')}: best of {result['settings']['rounds']} rounds")
    ax.grid(axis="y", which="both", alpha=0.3, zorder=0)
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def write_plot(results: dict[str, dict[str, Any]], path: Path) -> str:
    """One panel per backend, grouped bars per shape (log time), auto highlighted; returns a status line."""
    try:
        import matplotlib as mpl  # noqa: PLC0415  (optional)

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return f"no plot: matplotlib is not installed (pip install matplotlib), so {path} was not written"

    panels = list(results.items())
    fig, axes = plt.subplots(len(panels), 1, figsize=(13, 4.2 * len(panels)), squeeze=False)
    for ax, (backend, result) in zip(axes[:, 0], panels, strict=True):
        _plot_panel(ax, backend, result)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot written to {path}"


def _default_json() -> Path:
    """``benchmarks/results.json`` inside a checkout of the repository, else a file in the working directory."""
    cwd = Path.cwd()
    if (cwd / "benchmarks").is_dir() and (cwd / "multiconv" / "__init__.py").is_file():
        return cwd / "benchmarks" / "results.json"
    return cwd / "multiconv-bench.json"


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def positive_int(text: str) -> int:
    """An argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``multiconv bench``."""
    parser.add_argument(
        "--backends", type=_names, default=None, metavar="LIST", help="comma-separated backends (default: the installed ones)"
    )
    parser.add_argument(
        "--shapes", type=_names, default=None, metavar="LIST", help=f"comma-separated shapes (default: all of {', '.join(SHAPES)})"
    )
    parser.add_argument(
        "--rounds", type=positive_int, default=None, metavar="N", help="interleaved timing rounds (default: 11; 2 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="scaled-down shapes and short blocks (for tests and smoke runs)")
    parser.add_argument(
        "--time-cap", type=_positive_float, default=None, metavar="SECONDS", help="skip candidates slower than this per call (default: 2)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="JSON results (default: benchmarks/results.json in the repository, else ./multiconv-bench.json)",
    )
    parser.add_argument(
        "--plot", type=Path, default=None, metavar="PATH", help="PNG plot (default: the JSON path with .png; needs matplotlib)"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write the plot")


def command(args: argparse.Namespace) -> int:
    """Run ``multiconv bench``: each backend in its own process, then tables, JSON and plot.

    Returns 0 when every candidate agreed with the reference, 1 when one was wrong
    or failed (or a backend's process failed), 2 for an unknown backend or shape.
    """
    found = installed()
    backends = args.backends or [name for name in BACKENDS if found[name]]
    bad = [name for name in backends if name not in BACKENDS]
    missing = [name for name in backends if name in BACKENDS and not found[name]]
    table = QUICK_SHAPES if args.quick else SHAPES
    unknown = [name for name in args.shapes or [] if name not in table]
    for problem, names, allowed in (
        ("unknown backend", bad, BACKENDS),
        ("not installed", missing, BACKENDS),
        ("unknown shape", unknown, table),
    ):
        if names:
            sys.stderr.write(f"multiconv bench: {problem}: {', '.join(names)} (choose from {', '.join(allowed)})\n")
            return 2
    settings = Settings.make(quick=args.quick, rounds=args.rounds, time_cap=args.time_cap)
    json_path: Path = args.json or _default_json()
    plot_path: Path | None = None if args.no_plot else (args.plot or json_path.with_suffix(".png"))

    bar = ProgressBar()
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for name in backends:
        result, failure = _run_child(name, args.shapes, settings, bar)
        if result is not None:
            results[name] = result
            _emit(f"{name}: {len(result['rows'])} rows in {result['wall_seconds']:.0f} s")
        if failure is not None:
            failures[name] = failure
    bar.clear()
    _emit()
    print_tables(results)
    wrong = [
        f"{b} {r['shape']} {r['candidate']}: {r['status']} ({r['note']})"
        for b, res in results.items()
        for r in res["rows"]
        if r["status"] in ("wrong", "error")
    ]
    for line in [*wrong, *failures.values()]:
        _emit(f"FAILED: {line}")

    report = {
        "multiconv": multiconv.__version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": ["multiconv", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else None,
        "settings": dataclasses.asdict(settings),
        "backends": results,
        "summary": [{"backend": b, **s} for b, res in results.items() for s in res["summary"]],
        "training_summary": [{"backend": b, **s} for b, res in results.items() for s in res.get("training_summary", [])],
        "failures": failures,
        "all_correct": not wrong and not failures,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    _emit()
    _emit(f"results written to {json_path}")
    if plot_path is not None and results:
        _emit(write_plot(results, plot_path))
    return 0 if report["all_correct"] else 1


# --------------------------------------------------------------------------- one backend, as a process


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m multiconv._bench --backend NAME``: one backend in this process, JSON to ``--json``."""
    parser = argparse.ArgumentParser(
        prog="python -m multiconv._bench", description="Benchmark one multiconv backend (used by `multiconv bench`)."
    )
    parser.add_argument("--backend", required=True, choices=list(_FRAMEWORKS))
    parser.add_argument("--shapes", type=_names, default=None, metavar="LIST")
    parser.add_argument("--rounds", type=positive_int, default=None, metavar="N")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--time-cap", type=_positive_float, default=None, metavar="SECONDS")
    parser.add_argument("--json", type=Path, required=True, metavar="PATH")
    parser.add_argument("--progress", choices=["bar", "protocol", "none"], default="bar")
    args = parser.parse_args(argv)
    settings = Settings.make(quick=args.quick, rounds=args.rounds, time_cap=args.time_cap)
    if args.backend == "torch":
        # float32 means float32 for every candidate and the GEMM, as JAX's Precision.HIGHEST: no TF32 on CUDA
        # (cuDNN convolutions allow it by default).  This process runs the benchmark only, so the switch is ours.
        import torch  # noqa: PLC0415

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    progress: Progress | None = {"bar": ProgressBar().update, "protocol": _protocol_progress, "none": None}[args.progress]
    result = run_backend(args.backend, args.shapes, settings, progress)
    if args.progress == "bar":
        sys.stderr.write("\n")
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
