"""Which framework owns an array, and the registry of backends.

Nothing here imports a framework: an array can only be a torch tensor or a JAX
array if the caller has already imported torch or JAX, so looking in
``sys.modules`` is enough and keeps ``import multiconv`` light.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable
    from types import ModuleType

#: Backend name -> module implementing it.  Adding a backend = a module + a line here.
BACKENDS: Final[dict[str, str]] = {
    "numpy": "multiconv.backends.numpy",
    "torch": "multiconv.backends.torch",
    "jax": "multiconv.backends.jax",
}

#: The pip extra that installs each framework, for error messages.
_EXTRAS: Final = {"numpy": "numpy", "torch": "multiconv[torch]", "jax": "multiconv[jax]"}

_TYPE_CACHE: dict[type, str] = {}


def framework_of(obj: object) -> str | None:
    """Name of the framework that owns ``obj`` ("numpy", "torch", "jax"), or ``None``.

    Positive answers are cached per type; JAX tracers count as JAX arrays.
    """
    kind = type(obj)
    cached = _TYPE_CACHE.get(kind)
    if cached is not None:
        return cached
    found = _detect(obj)
    if found is not None:
        _TYPE_CACHE[kind] = found
    return found


def _detect(obj: object) -> str | None:
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return "numpy"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(obj, (jax.Array, jax.core.Tracer)):
        return "jax"
    return None


def _short_repr(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def owner(arrays: dict[str, object]) -> str:
    """The framework that owns a call's arrays (a ``None`` bias is skipped).

    NumPy arrays join whichever other framework is present.  Raises ``TypeError``
    for a non-array (``None`` included, except for the bias) or for arrays of two
    different frameworks.
    """
    found: dict[str, str] = {}
    for name, value in arrays.items():
        if value is None and name == "bias":
            continue
        kind = framework_of(value)
        if kind is None:
            got = "None" if value is None else f"{type(value).__module__}.{type(value).__qualname__} {_short_repr(value)}"
            raise TypeError(
                f"{name} must be a NumPy array, a torch.Tensor or a JAX array; got {got} (convert it first, e.g. with numpy.asarray)"
            )
        found[name] = kind
    others = {kind for kind in found.values() if kind != "numpy"}
    if len(others) > 1:
        listing = ", ".join(f"{name} is a {kind} array" for name, kind in found.items())
        raise TypeError(
            f"arrays of two frameworks were given together ({listing}); pass arrays of one framework (NumPy arrays mix with either)"
        )
    return others.pop() if others else "numpy"


def check_backend_name(backend: object) -> str | None:
    """Validate the ``backend=`` argument."""
    if backend is None:
        return None
    allowed = ", ".join(repr(name) for name in BACKENDS)
    if not isinstance(backend, str):
        raise TypeError(f"backend={backend!r} must be None or a string, one of {allowed}")
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not supported; expected None or one of {allowed}")
    return backend


_LOADED: dict[str, ModuleType] = {}  # framework name -> imported backend module


def load(name: str) -> ModuleType:
    """Import the backend module ``name`` (which imports its framework)."""
    module = _LOADED.get(name)
    if module is not None:
        return module
    try:
        module = _LOADED[name] = importlib.import_module(BACKENDS[name])
    except ImportError as error:
        raise ModuleNotFoundError(
            f"backend {name!r} needs {name}, which could not be imported ({error}); install it with: pip install '{_EXTRAS[name]}'"
        ) from error
    return module


#: Array type -> its backend's ``signature`` (filled by :func:`signature`; the plan cache reads it directly).
SIGNATURE_OF: dict[type, Callable[[object], Hashable]] = {}


def signature(a: object) -> Hashable:
    """Everything validation reads from an array (type, shape, dtype, device), hashable; ``None`` for non-arrays."""
    function = SIGNATURE_OF.get(type(a))
    if function is None:
        kind = framework_of(a)
        if kind is None:
            return None
        function = SIGNATURE_OF[type(a)] = load(kind).signature
    return function(a)


def installed() -> dict[str, bool]:
    """Which frameworks are importable, without importing them."""
    from importlib.util import find_spec  # noqa: PLC0415

    return {name: find_spec(name) is not None for name in BACKENDS}
