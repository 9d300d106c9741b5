"""Helpers shared by the tests: which backends to test, and moving arrays between them."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import multiconv

if TYPE_CHECKING:
    from collections.abc import Iterator

    import pytest

ALL_BACKENDS = ("numpy", "torch", "jax")


def requested_backends() -> tuple[str, ...]:
    """Backends named by ``MULTICONV_TEST_BACKENDS`` (comma-separated; default: all three)."""
    raw = os.environ.get("MULTICONV_TEST_BACKENDS", ",".join(ALL_BACKENDS))
    names = tuple(name.strip() for name in raw.split(",") if name.strip())
    unknown = [name for name in names if name not in ALL_BACKENDS]
    if unknown or not names:
        msg = f"MULTICONV_TEST_BACKENDS={raw!r} must name some of {', '.join(ALL_BACKENDS)}"
        raise ValueError(msg)
    return names


BACKENDS = requested_backends()


def as_backend(a: np.ndarray | None, backend: str, dtype: str | None = None) -> Any:
    """``a`` as an array of ``backend`` with dtype ``dtype`` (default: ``a``'s dtype)."""
    if a is None:
        return None
    dtype = dtype or a.dtype.name
    if backend == "numpy":
        return np.array(a, dtype=dtype)
    if backend == "torch":
        torch = importlib.import_module("torch")
        wide = a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)
        return torch.from_numpy(wide).to(getattr(torch, dtype))
    jnp = importlib.import_module("jax.numpy")
    return jnp.asarray(a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)).astype(dtype)


def to_numpy(a: Any) -> np.ndarray:
    """A host copy of any backend's array, half precision widened to float64."""
    if type(a).__module__.startswith("torch"):
        a = a.detach().cpu()
        wide = a.to(importlib.import_module("torch").complex128) if a.dtype.is_complex else a.double()
        return np.asarray(wide.numpy())
    out = np.asarray(a)
    return out.astype(np.complex128 if np.iscomplexobj(out) else np.float64)


def dtype_name(a: Any) -> str:
    """Dtype name of any backend's array."""
    return str(a.dtype).removeprefix("torch.")


#: The installed package's folder: errors must be raised from a file inside it.
PACKAGE_DIR = Path(multiconv.__file__).resolve().parent


def assert_raised_by_multiconv(excinfo: pytest.ExceptionInfo[Exception]) -> None:
    """The error comes from multiconv itself, with no other error (a framework's) shown chained to it."""
    error = excinfo.value
    assert error.__cause__ is None, f"chained cause: {error.__cause__!r}"
    assert error.__context__ is None or error.__suppress_context__, f"visible context: {error.__context__!r}"
    innermost = Path(str(excinfo.traceback[-1].path)).resolve()
    assert PACKAGE_DIR in innermost.parents, f"raised in {innermost}, outside multiconv"


def jaxprs(jaxpr: Any) -> Iterator[Any]:
    """``jaxpr`` and every jaxpr nested in its equations (jit, custom rules, loops), depth first."""
    yield jaxpr
    for eqn in jaxpr.eqns:
        for value in eqn.params.values():
            for item in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(item, "jaxpr", item)  # a ClosedJaxpr holds its Jaxpr
                if hasattr(inner, "eqns"):
                    yield from jaxprs(inner)
