"""One module per framework, all with the same functions (see :class:`Backend`).

A backend receives a resolved :class:`~multiconv._spec.ConvSpec` and only
translates it into its framework's calls; it never validates user arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Hashable, Mapping

    import numpy as np

    from multiconv._spec import ArrayInfo, ConvSpec


#: ``run(x, w, bias) -> y``: the whole convolution of one spec, prepared by a backend.
Runner = Callable[[Any, Any, Any], Any]


class Backend(Protocol):
    """The functions every backend module defines."""

    #: Engine name -> builder: ``METHODS[name](spec)`` is ``run(x, w) -> y`` (see :mod:`multiconv._engines`).
    METHODS: Mapping[str, Callable[[ConvSpec], Callable[[Any, Any], Any]]]

    @staticmethod
    def signature(a: Any) -> Hashable:
        """Everything :func:`info` reads from ``a``, cheap to compute and hashable."""

    @staticmethod
    def info(a: Any, name: str) -> ArrayInfo:
        """Shape, dtype name and device of the array passed as ``name``; ``TypeError`` for unusable kinds."""

    @staticmethod
    def from_numpy(a: np.ndarray, like: Any = None) -> Any:
        """A NumPy array as this framework's array, on ``like``'s device and with its dtype."""

    @staticmethod
    def to_numpy(a: Any, name: str) -> np.ndarray:
        """A host copy of this framework's array (bfloat16 widened to float32)."""

    @staticmethod
    def choose_method(spec: ConvSpec) -> str:
        """The engine ``method="auto"`` uses for ``spec``."""

    @staticmethod
    def prepare(spec: ConvSpec) -> Runner:
        """``run(x, w, bias)`` for this framework's arrays: :func:`convolve` with every decision taken once."""

    @staticmethod
    def convolve(spec: ConvSpec, x: Any, w: Any, bias: Any) -> Any:
        """The whole convolution on this framework's arrays."""

    @staticmethod
    def convolve_numpy(spec: ConvSpec, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        """The convolution of host arrays computed on this framework, returned on the host."""


def host_array(a: np.ndarray) -> np.ndarray:
    """``a`` as every framework can take it: native byte order, C-contiguous, bfloat16 widened to float32."""
    import numpy as np  # noqa: PLC0415  (NumPy is always there; kept out of this module's import time)

    if a.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, which torch cannot read
        a = a.astype(np.float32)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return np.ascontiguousarray(a)


def spatial_slices(steps: tuple[int, ...]) -> tuple[slice, ...]:
    """``slice(None, None, step)`` for each step, to stride or reverse spatial axes."""
    return tuple(slice(None, None, step) for step in steps)
