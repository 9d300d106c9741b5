"""Argument normalisation, validation and output-shape math, free of any framework.

Everything a backend needs to know about a call is resolved here into a frozen
:class:`ConvSpec` of plain Python numbers.  Backends never look at the user's raw
arguments, so every rule of the contract (and every error message) lives once.
"""

from __future__ import annotations

import dataclasses
import operator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Final, NamedTuple, Union

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

PADDING_MODES: Final = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS: Final = ("valid", "same", "causal", "full")
LAYOUTS: Final = ("channels_first", "channels_last")
#: Every backend's engines by name (its ``METHODS``, which a test checks), to name the backend of a method another lacks.
BACKEND_METHODS: Final = {
    "numpy": ("einsum", "shift", "matmul", "col2im", "fft"),
    "torch": ("grouped", "shift", "matmul", "col2im", "fft"),
    "jax": ("vmap", "loop", "shift", "matmul", "col2im", "fft"),
}

FLOAT_DTYPES: Final = ("float16", "bfloat16", "float32", "float64")
COMPLEX_DTYPES: Final = ("complex64", "complex128")
HALF_DTYPES: Final = ("float16", "bfloat16")

#: The dtypes each framework's arrays may have (the contract's table).
SUPPORTED_DTYPES: Final[dict[str, tuple[str, ...]]] = {
    "numpy": ("float16", "float32", "float64", "complex64", "complex128"),
    "torch": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
    "jax": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
}

_INTEGER_PREFIXES: Final = ("int", "uint", "bool")
#: Frameworks take stride, padding, dilation and groups as 32-bit ints at best.
MAX_INT_ARGUMENT: Final = 2**31 - 1
_PAIR: Final = 2
#: What ``padding`` may be (see the contract).
Padding = Union[int, str, "Sequence[int]", "Sequence[tuple[int, int]]", "Sequence[int | tuple[int, int]]"]


class Arguments(NamedTuple):
    """The keyword arguments of ``batch_conv`` after the arrays, in order, with their defaults."""

    stride: int | Sequence[int] = 1
    padding: Padding = 0
    dilation: int | Sequence[int] = 1
    groups: int = 1
    padding_mode: str = "zeros"
    layout: str = "channels_first"
    flip: bool = False
    method: str = "auto"
    backend: str | None = None
    workspace_limit: int | None = None


#: The default objects themselves (``multiconv._api`` knows a call that gave no argument by them).
DEFAULT_ARGUMENTS: Final = Arguments()
#: The same by name.
ARGUMENT_DEFAULTS: Final[dict[str, object]] = DEFAULT_ARGUMENTS._asdict()

#: Default bound on an engine's scratch memory (bytes), on top of inputs and output.
DEFAULT_WORKSPACE_LIMIT: Final = 256 * 2**20


@dataclass(frozen=True)
class ArrayInfo:
    """What validation needs to know of one array: shape, dtype name and device.

    ``device`` is ``None`` where the array's framework places it for us (NumPy
    arrays, JAX tracers).
    """

    shape: tuple[int, ...]
    dtype: str
    device: str | None = None

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)


@dataclass(frozen=True)
class ConvSpec:
    """A fully resolved batch-wise convolution, in plain numbers.

    Shapes are given channels-first; ``layout`` says how ``x`` and the result are
    laid out in memory.  ``padding`` holds the resolved ``(lo, hi)`` pair of every
    spatial dim, whatever form the caller used.
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    padding_mode: str
    layout: str
    flip: bool
    weight_kind: str  # "per_sample", "broadcast" (leading dim 1) or "shared" (no batch dim)
    bias_kind: str  # "none", "shared" (C_out,), "per_sample" (B, C_out), "broadcast" (1, C_out)
    dtype: str
    method: str
    out_size: tuple[int, ...]
    workspace_limit: int = DEFAULT_WORKSPACE_LIMIT
    device: str | None = None  # x's device where its framework reports one
    #: With ``method="auto"``, the engine derivatives are taken through where the backend
    #: knows a faster one than ``method``'s own (JAX: XLA transposes some engines slowly).
    tangent_method: str | None = None
    #: With ``method="auto"``: a gradient will be taken (PyTorch: an input requires grad under grad
    #: mode), so the engine is chosen for forward plus backward.
    training: bool = False

    def __hash__(self) -> int:
        """Hash once: specs key the engines' caches on every call."""
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash(tuple(getattr(self, field.name) for field in dataclasses.fields(self)))

    @cached_property
    def ndim(self) -> int:
        """Number of spatial dims (1, 2 or 3)."""
        return len(self.in_size)

    @cached_property
    def channels_last(self) -> bool:
        """Whether ``x`` and the result put channels last."""
        return self.layout == "channels_last"

    @cached_property
    def group_in_channels(self) -> int:
        """Input channels seen by each group (``C_in // groups``)."""
        return self.in_channels // self.groups

    @cached_property
    def group_out_channels(self) -> int:
        """Output channels made by each group (``C_out // groups``)."""
        return self.out_channels // self.groups

    @cached_property
    def per_sample_weight(self) -> bool:
        """Whether every batch element has its own weight."""
        return self.weight_kind == "per_sample"

    @cached_property
    def effective_kernel(self) -> tuple[int, ...]:
        """Extent of the dilated kernel, ``dilation * (K - 1) + 1``, per spatial dim."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel, strict=True))

    @cached_property
    def spread_out_size(self) -> tuple[int, ...]:
        """Extent of the output spread by the stride, ``stride * (out - 1) + 1``, per spatial dim (the adjoints' ``g``)."""
        return tuple(s * (n - 1) + 1 for s, n in zip(self.stride, self.out_size, strict=True))

    @cached_property
    def padded_size(self) -> tuple[int, ...]:
        """Spatial size of the padded input."""
        return tuple(s + lo + hi for s, (lo, hi) in zip(self.in_size, self.padding, strict=True))

    @cached_property
    def mode_padding(self) -> tuple[tuple[int, int], ...]:
        """Padding to apply explicitly with ``padding_mode`` before the convolution."""
        if self.padding_mode == "zeros":
            return tuple((0, 0) for _ in self.padding)
        return self.padding

    @cached_property
    def zero_padding(self) -> tuple[tuple[int, int], ...]:
        """Zero padding left for the convolution itself once ``mode_padding`` is applied."""
        if self.padding_mode == "zeros":
            return self.padding
        return tuple((0, 0) for _ in self.padding)

    @cached_property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the result, in the caller's layout."""
        if self.channels_last:
            return (self.batch, *self.out_size, self.out_channels)
        return (self.batch, self.out_channels, *self.out_size)

    @cached_property
    def bias_shape(self) -> tuple[int, ...]:
        """Shape that broadcasts the bias against the result, in the caller's layout."""
        ones = (1,) * self.ndim
        if self.bias_kind == "shared":
            return (self.out_channels,) if self.channels_last else (self.out_channels, *ones)
        lead = self.batch if self.bias_kind == "per_sample" else 1
        return (lead, *ones, self.out_channels) if self.channels_last else (lead, self.out_channels, *ones)


def _describe(value: object) -> str:
    return f"{value!r} (type {type(value).__name__})"


def _is_numpy_bool(value: object) -> bool:
    """Whether ``value`` is a NumPy bool scalar, without importing NumPy.

    NumPy before 2.3 (the last for Python 3.10 is 2.2) lets ``operator.index`` read one as
    0 or 1, with a ``DeprecationWarning``; later versions refuse it.
    """
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in {"bool", "bool_"}


def _as_int(name: str, value: object, allowed: str, maximum: int | None = MAX_INT_ARGUMENT) -> int:
    """``operator.index`` that refuses bools (NumPy's too) and names the argument on failure."""
    if isinstance(value, bool) or _is_numpy_bool(value):
        raise TypeError(f"{name}={value!r} must be {allowed}, not a bool")
    if getattr(value, "ndim", 0):  # a one-element tensor has __index__; NumPy refuses its arrays: refuse both
        raise TypeError(f"{name}={_describe(value)} must be {allowed}, not an array (give a tuple of ints)") from None
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name}={_describe(value)} must be {allowed}") from None
    if maximum is not None and number > maximum:
        raise ValueError(f"{name}={value!r} is too large: the limit is {maximum} (2**31 - 1)")
    return number


def _positive_tuple(name: str, value: object, ndim: int) -> tuple[int, ...]:
    """Normalise ``stride``/``dilation``: a positive int or a tuple of ``ndim`` of them."""
    allowed = f"a positive int or a tuple of {ndim} positive ints"
    items: Sequence[object]
    if isinstance(value, (tuple, list)):
        if len(value) != ndim:
            raise ValueError(f"{name}={value!r} has {len(value)} entries but x has {ndim} spatial dim(s); expected {allowed}")
        items = value
    else:
        items = [value] * ndim
    try:
        ints = tuple(_as_int(name, v, allowed) for v in items)
    except TypeError as error:
        if not isinstance(value, (tuple, list)):
            raise
        raise TypeError(f"{name}={_describe(value)} must be {allowed}") from error.__cause__
    if any(v < 1 for v in ints):
        raise ValueError(f"{name}={value!r} must be {allowed}; got a value < 1")
    return ints


def _check_method(method: object, methods: Collection[str]) -> str:
    """``method``: ``"auto"`` or one of ``methods``; another backend's engine is named as such."""
    try:
        return _check_choice("method", method, ("auto", *methods))
    except ValueError as error:
        owners = [backend for backend, names in BACKEND_METHODS.items() if method in names]
        if not owners:
            raise
        hint = f"{method!r} is an engine of the {' and '.join(owners)} backend: pass backend={owners[0]!r} to compute with it"
        raise ValueError(f"{error}. {hint}") from None


def _check_choice(name: str, value: object, choices: Collection[str]) -> str:
    allowed = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name}={_describe(value)} must be a string, one of {allowed}")
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; expected one of {allowed}")
    return value


def _check_dtypes(x: ArrayInfo, w: ArrayInfo, bias: ArrayInfo | None, framework: str) -> str:
    supported = SUPPORTED_DTYPES[framework]
    for name, info in (("x", x), ("w", w), ("bias", bias)):
        if info is None:
            continue
        if info.dtype.startswith(_INTEGER_PREFIXES):
            raise TypeError(
                f"{name} has dtype {info.dtype}; batch_conv needs floating-point or complex arrays: "
                f"cast it first, e.g. to float32 (supported on {framework}: {', '.join(supported)})"
            )
        if info.dtype not in supported:
            raise TypeError(
                f"{name} has dtype {info.dtype}, which {framework} arrays do not support here; supported: {', '.join(supported)}"
            )
    dtypes = {x.dtype, w.dtype} | ({bias.dtype} if bias is not None else set())
    if len(dtypes) > 1:
        bias_dtype = bias.dtype if bias is not None else None
        raise TypeError(
            f"x, w and bias must share one dtype; got x.dtype={x.dtype}, w.dtype={w.dtype}, bias.dtype={bias_dtype} "
            "(cast them to one dtype first)"
        )
    return x.dtype


def _check_devices(x: ArrayInfo, w: ArrayInfo, bias: ArrayInfo | None) -> None:
    placed = {name: info.device for name, info in (("x", x), ("w", w), ("bias", bias)) if info is not None and info.device is not None}
    if len(set(placed.values())) > 1:
        listing = ", ".join(f"{name} is on {device}" for name, device in placed.items())
        raise ValueError(f"x, w and bias must be on one device; {listing}")


def _string_padding(
    padding: str,
    in_size: tuple[int, ...],
    effective: list[int],
    stride: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """``(lo, hi)`` per spatial dim for the named padding forms."""
    if padding == "valid":
        return tuple((0, 0) for _ in in_size)
    if padding == "causal":
        return tuple((e - 1, 0) for e in effective)
    if padding == "full":
        return tuple((e - 1, e - 1) for e in effective)
    if padding == "same":
        pairs = []
        for size, e, s in zip(in_size, effective, stride, strict=True):
            out = -(-size // s)
            total = max((out - 1) * s + e - size, 0)
            pairs.append((total // 2, total - total // 2))
        return tuple((lo, hi) for lo, hi in pairs)
    choices = ", ".join(repr(c) for c in PADDING_STRINGS)
    raise ValueError(f"padding={padding!r} is not supported; expected an int, a tuple, or one of {choices}")


def _resolve_padding(
    padding: object,
    in_size: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, int], ...]:
    """Turn every accepted padding form into one ``(lo, hi)`` pair per spatial dim."""
    ndim = len(in_size)
    if isinstance(padding, str):
        effective = [d * (k - 1) + 1 for d, k in zip(dilation, kernel, strict=True)]
        return _string_padding(padding, in_size, effective, stride)

    allowed = f"a non-negative int, a tuple of {ndim} ints, a tuple of {ndim} (lo, hi) pairs, or one of {', '.join(PADDING_STRINGS)}"
    if isinstance(padding, (tuple, list)):
        if len(padding) != ndim:
            hint = ""
            if ndim == 1 and len(padding) == _PAIR:
                hint = f"; for asymmetric padding of a 1-D input write (({padding[0]!r}, {padding[1]!r}),)"
            raise ValueError(f"padding={padding!r} has {len(padding)} entries but x has {ndim} spatial dim(s); expected {allowed}{hint}")
        bad = next((entry for entry in padding if isinstance(entry, (tuple, list)) and len(entry) != _PAIR), None)
        if bad is not None:
            raise ValueError(f"padding={padding!r} has the entry {bad!r}; a per-dim entry must be an int or a (lo, hi) pair")
        try:
            pairs = [
                tuple(_as_int("padding", v, allowed) for v in entry)
                if isinstance(entry, (tuple, list))
                else (_as_int("padding", entry, allowed),) * 2
                for entry in padding
            ]
        except TypeError:
            raise TypeError(f"padding={_describe(padding)} must be {allowed}") from None
    else:
        pad = _as_int("padding", padding, allowed)
        pairs = [(pad, pad)] * ndim
    if any(lo < 0 or hi < 0 for lo, hi in pairs):
        raise ValueError(f"padding={padding!r} must be {allowed}; got a negative value")
    return tuple((lo, hi) for lo, hi in pairs)


def _check_mode_padding(mode: str, padding: tuple[tuple[int, int], ...], in_size: tuple[int, ...], x: ArrayInfo) -> None:
    for dim, ((lo, hi), size) in enumerate(zip(padding, in_size, strict=True)):
        if mode == "reflect" and max(lo, hi) >= size:
            raise ValueError(
                f"padding_mode='reflect' needs padding smaller than the input: spatial dim {dim} has size {size} "
                f"but padding (lo, hi)=({lo}, {hi}) (x.shape={x.shape})"
            )
        if mode == "circular" and max(lo, hi) > size:
            raise ValueError(
                f"padding_mode='circular' needs padding no larger than the input: spatial dim {dim} has size {size} "
                f"but padding (lo, hi)=({lo}, {hi}) (x.shape={x.shape})"
            )


def _weight_kind(w: ArrayInfo, x: ArrayInfo, batch: int, ndim: int) -> str:
    if w.ndim == ndim + 3:
        if w.shape[0] == batch:
            return "per_sample"
        if w.shape[0] == 1:
            return "broadcast"
        raise ValueError(f"w.shape[0]={w.shape[0]} must equal the batch size B={batch} or be 1 (w.shape={w.shape}, x.shape={x.shape})")
    if w.ndim == ndim + 2:
        return "shared"
    raise ValueError(
        f"w.ndim={w.ndim} does not fit x with {ndim} spatial dim(s): expected a per-sample weight "
        f"(B, C_out, C_in // groups, *K) with {ndim + 3} dims or a shared weight (C_out, C_in // groups, *K) "
        f"with {ndim + 2} dims; got w.shape={w.shape}"
    )


def _bias_kind(bias: ArrayInfo | None, batch: int, out_channels: int) -> str:
    if bias is None:
        return "none"
    if bias.shape == (out_channels,):
        return "shared"
    if bias.ndim == 2 and bias.shape[1] == out_channels and bias.shape[0] in (batch, 1):  # noqa: PLR2004
        return "per_sample" if bias.shape[0] == batch else "broadcast"
    raise ValueError(
        f"bias.shape={bias.shape} must be (C_out,)=({out_channels},) or (B, C_out)=({batch}, {out_channels}) or (1, {out_channels})"
    )


def _check_flip(flip: object) -> bool:
    if type(flip).__module__ == "numpy" and type(flip).__name__ in ("bool", "bool_"):
        flip = bool(flip)
    if not isinstance(flip, bool):
        raise TypeError(f"flip={_describe(flip)} must be a bool (False: cross-correlation, True: true convolution)")
    return flip


def _check_rank(x: ArrayInfo, spatial_dims: int | None) -> int:
    """The number of spatial dims of ``x``, checked against ``batch_conv{N}d``."""
    if spatial_dims is not None and x.ndim != spatial_dims + 2:
        names = {1: "(B, C_in, L)", 2: "(B, C_in, H, W)", 3: "(B, C_in, D, H, W)"}
        raise ValueError(
            f"batch_conv{spatial_dims}d needs x of shape {names[spatial_dims]} ({spatial_dims + 2} dims); got x.shape={x.shape}"
        )
    if not 3 <= x.ndim <= 5:  # noqa: PLR2004
        raise ValueError(f"x must have shape (B, C_in, *spatial) with 1 to 3 spatial dims (3 to 5 dims in all); got x.shape={x.shape}")
    return x.ndim - 2


def _workspace_limit(value: object) -> int:
    if value is None:
        return DEFAULT_WORKSPACE_LIMIT
    limit = _as_int("workspace_limit", value, "None or a positive number of bytes", maximum=None)
    if limit < 1:
        raise ValueError(f"workspace_limit={value!r} must be None or a positive number of bytes")
    return limit


def make_spec(  # noqa: C901
    x: ArrayInfo,
    w: ArrayInfo,
    bias: ArrayInfo | None,
    *,
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    padding_mode: object,
    layout: object,
    flip: object,
    method: object,
    framework: str,
    methods: Collection[str],
    spatial_dims: int | None = None,
    workspace_limit: object = None,
) -> ConvSpec:
    """Validate every argument of ``batch_conv`` and resolve it into a :class:`ConvSpec`.

    ``framework`` names the framework that owns the arrays (it decides which dtypes
    are allowed); ``methods`` are the method names the computing backend offers;
    ``spatial_dims`` is set by ``batch_conv1d/2d/3d``.  Raises ``TypeError`` for
    wrong types and dtypes and ``ValueError`` for wrong values and shapes.
    """
    layout = _check_choice("layout", layout, LAYOUTS)
    padding_mode = _check_choice("padding_mode", padding_mode, PADDING_MODES)
    method = _check_method(method, methods)
    limit = _workspace_limit(workspace_limit)
    flip = _check_flip(flip)
    ndim = _check_rank(x, spatial_dims)
    dtype = _check_dtypes(x, w, bias, framework)
    _check_devices(x, w, bias)

    stride_t = _positive_tuple("stride", stride, ndim)
    dilation_t = _positive_tuple("dilation", dilation, ndim)
    groups_i = _as_int("groups", groups, "a positive int")
    if groups_i < 1:
        raise ValueError(f"groups={groups_i} must be a positive int")

    batch = x.shape[0]
    if layout == "channels_last":
        in_channels, in_size = x.shape[-1], x.shape[1:-1]
    else:
        in_channels, in_size = x.shape[1], x.shape[2:]
    if in_channels < 1:
        raise ValueError(f"x has C_in={in_channels} channels (layout={layout!r}, x.shape={x.shape}); at least one is needed")
    if any(s < 1 for s in in_size):
        raise ValueError(f"x has an empty spatial dim (x.shape={x.shape}, layout={layout!r}); every spatial size must be >= 1")
    if in_channels % groups_i:
        raise ValueError(f"groups={groups_i} must divide C_in={in_channels} (x.shape={x.shape}, layout={layout!r})")

    weight_kind = _weight_kind(w, x, batch, ndim)
    out_channels, w_in, kernel = w.shape[-ndim - 2], w.shape[-ndim - 1], w.shape[-ndim:]
    if out_channels < 1 or any(k < 1 for k in kernel):
        raise ValueError(f"w.shape={w.shape} has an empty output-channel or kernel dim; every one must be >= 1")
    if w_in != in_channels // groups_i:
        raise ValueError(
            f"w has {w_in} input channels but C_in // groups = {in_channels} // {groups_i} = {in_channels // groups_i} "
            f"(w.shape={w.shape}, x.shape={x.shape}, groups={groups_i})"
        )
    if out_channels % groups_i:
        raise ValueError(f"groups={groups_i} must divide C_out={out_channels} (w.shape={w.shape})")
    bias_kind = _bias_kind(bias, batch, out_channels)

    pads = _resolve_padding(padding, in_size, kernel, stride_t, dilation_t)
    _check_mode_padding(padding_mode, pads, in_size, x)
    out_size = []
    for dim, (size, (lo, hi), k, d, s) in enumerate(zip(in_size, pads, kernel, dilation_t, stride_t, strict=True)):
        effective, padded = d * (k - 1) + 1, size + lo + hi
        if effective > padded:
            raise ValueError(
                f"the effective kernel is longer than the padded input in spatial dim {dim}: "
                f"dilation*(K-1)+1 = {d}*({k}-1)+1 = {effective} > L+lo+hi = {size}+{lo}+{hi} = {padded} "
                f"(x.shape={x.shape}, w.shape={w.shape}, padding={padding!r})"
            )
        out_size.append((padded - effective) // s + 1)

    return ConvSpec(
        batch=batch,
        in_channels=in_channels,
        out_channels=out_channels,
        groups=groups_i,
        in_size=tuple(in_size),
        kernel=tuple(kernel),
        stride=stride_t,
        dilation=dilation_t,
        padding=pads,
        padding_mode=padding_mode,
        layout=layout,
        flip=flip,
        weight_kind=weight_kind,
        bias_kind=bias_kind,
        dtype=dtype,
        method=method,
        out_size=tuple(out_size),
        workspace_limit=limit,
        device=x.device,
    )
