"""Invalid arguments, drawn by Hypothesis, fail in multiconv's own validation.

Every property draws a valid call (1 to 3 spatial dims, every keyword argument of
``ARGUMENT_DEFAULTS`` set to a valid value, any entry point, arrays of the backend
under test with NumPy arrays mixed in) and breaks it: one integer argument, one
string or flag argument, one array, the shapes or dtypes against each other, or
several arguments at once.  Each broken call must raise ``ValueError`` or
``TypeError`` (exactly those, raised inside multiconv with no other error chained
to it) whose message names a broken argument and the value it received.  While
the call runs, the plan cache starts empty and every backend function that would
prepare, move or compute arrays is replaced by one that fails the test, so the
error is proved to come from validation, before any framework call; a valid call
under the same guard must reach it.  One property first makes the valid call, so
that its plan is cached, and checks that the broken call is still validated.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from support import BACKENDS, as_backend, assert_raised_by_multiconv

import multiconv
from multiconv import _api, _dispatch
from multiconv._spec import ARGUMENT_DEFAULTS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

ENTRY_POINTS: Final = {None: multiconv.batch_conv, 1: multiconv.batch_conv1d, 2: multiconv.batch_conv2d, 3: multiconv.batch_conv3d}

#: The contract's valid values (written out here, not read from ``multiconv._spec``).
PADDING_MODES: Final = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS: Final = ("valid", "same", "causal", "full")
LAYOUTS: Final = ("channels_first", "channels_last")
BACKEND_NAMES: Final = ("numpy", "torch", "jax")
DTYPES: Final = {
    "numpy": ("float16", "float32", "float64", "complex64", "complex128"),
    "torch": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
    "jax": ("float16", "bfloat16", "float32", "float64", "complex64", "complex128"),
}
#: Every engine name some backend offers; each is invalid on the backends that lack it.
ALL_METHODS: Final = ("einsum", "grouped", "vmap", "loop", "shift", "matmul", "col2im", "fft")
#: stride, padding, dilation and groups are limited to 32-bit ints (``multiconv._spec.MAX_INT_ARGUMENT``).
LIMIT: Final = 2**31 - 1

#: Integer and bool dtypes, which the contract refuses with a hint to cast.
INTEGER_DTYPES: Final = {
    "numpy": ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"),
    "torch": ("int8", "int16", "int32", "int64", "uint8", "bool"),
    "jax": ("int8", "int16", "int32", "int64", "uint8", "uint32", "bool"),
}
_HAS_ML_DTYPES: Final = importlib.util.find_spec("ml_dtypes") is not None
if _HAS_ML_DTYPES:
    importlib.import_module("ml_dtypes")  # registers bfloat16 and float8 names with NumPy
#: Dtypes no backend supports, by their ``numpy.dtype`` spelling.
ODD_DTYPES: Final = {
    "numpy": ("object", "datetime64[s]", "U1", *(("float8_e4m3fn",) if _HAS_ML_DTYPES else ())),
    "torch": ("float8_e4m3fn", "float8_e5m2"),
    "jax": ("float8_e4m3fn", "float8_e5m2"),
}

ARRAYS: Final = ("x", "w", "bias")
INTEGER_ARGUMENTS: Final = ("stride", "dilation", "padding", "groups", "workspace_limit")
CHOICE_ARGUMENTS: Final = ("padding_mode", "layout", "flip", "method", "backend")

#: Hypothesis checks each example against this; a hang or a slow path shows up as DeadlineExceeded.
DEADLINE: Final = timedelta(seconds=2)
#: Parametrized directly: Hypothesis refuses the function-scoped ``backend`` fixture.
ON_EVERY_BACKEND: Final = pytest.mark.parametrize("backend", BACKENDS)


# -- calls ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arr:
    """An array to build when the example runs."""

    shape: tuple[int, ...]
    dtype: str
    on: str  # "numpy", "torch" or "jax"
    kind: str = "dense"  # or "masked" (NumPy), "sparse", "meta" (PyTorch)

    def build(self) -> Any:
        """The array."""
        if self.on == "jax":
            # device_put of a NumPy array: support.as_backend's astype would compile an XLA
            # conversion for every new shape, about 0.2 s each, far over the time budget.
            jax = importlib.import_module("jax")
            a = jax.device_put(np.zeros(self.shape, self.dtype))
        elif self.on == "numpy" and self.dtype in ODD_DTYPES["numpy"]:
            a = np.zeros(self.shape, self.dtype)
        else:
            a = as_backend(np.zeros(self.shape), self.on, self.dtype)
        if self.kind == "masked":
            return np.ma.masked_array(a)
        if self.kind == "sparse":
            return a.to_sparse()
        if self.kind == "meta":
            return a.to("meta")
        return a


@dataclass(frozen=True)
class Raw:
    """A value passed as-is where an array belongs."""

    value: object


ArraySlot = Arr | Raw | None


def _build(slot: ArraySlot) -> Any:
    return slot.build() if isinstance(slot, Arr) else None if slot is None else slot.value


@dataclass(frozen=True)
class Case:
    """One call of an entry point: ``batch_conv{fn}d(x, w, bias, **kwargs)``."""

    fn: int | None
    x: ArraySlot
    w: ArraySlot
    bias: ArraySlot
    kwargs: Mapping[str, Any]

    def call(self) -> object:
        """Build the arrays and make the call."""
        return ENTRY_POINTS[self.fn](_build(self.x), _build(self.w), _build(self.bias), **self.kwargs)


@dataclass(frozen=True)
class Base:
    """A valid call, in the numbers a corruption needs."""

    owner: str  # the backend under test: the framework of x or w
    target: str  # where the call would compute (backend=)
    fn: int | None
    batch: int
    groups: int
    group_in: int
    group_out: int
    in_size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    layout: str
    weight_kind: str  # "per_sample", "broadcast", "shared"
    bias_kind: str  # "none", "shared", "per_sample", "broadcast"
    dtype: str
    on: Mapping[str, str]  # framework of x, w and bias
    kwargs: Mapping[str, Any]

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
    def arrays(self) -> tuple[str, ...]:
        """The arrays the valid call passes."""
        return ARRAYS if self.bias_kind != "none" else ("x", "w")

    def x_shape(self, channels: int | None = None, size: tuple[int, ...] | None = None) -> tuple[int, ...]:
        c, s = self.in_channels if channels is None else channels, self.in_size if size is None else size
        return (self.batch, *s, c) if self.layout == "channels_last" else (self.batch, c, *s)

    def w_shape(
        self, *, lead: int | None = None, out: int | None = None, inp: int | None = None, kernel: tuple[int, ...] | None = None
    ) -> tuple[int, ...]:
        core = (
            self.out_channels if out is None else out,
            self.group_in if inp is None else inp,
            *(self.kernel if kernel is None else kernel),
        )
        if lead is not None:
            return (lead, *core)
        return {"per_sample": (self.batch, *core), "broadcast": (1, *core), "shared": core}[self.weight_kind]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The valid shape of each array."""
        return {"x": self.x_shape(), "w": self.w_shape(), "bias": self.bias_shape()}

    def bias_shape(self) -> tuple[int, ...]:
        """The valid bias shape (``(C_out,)`` where the valid call has none)."""
        return {"per_sample": (self.batch, self.out_channels), "broadcast": (1, self.out_channels)}.get(
            self.bias_kind, (self.out_channels,)
        )

    def arr(self, name: str, shape: tuple[int, ...], dtype: str | None = None, kind: str = "dense") -> Arr:
        """An array in the place of ``name``, of this call's framework for it and dtype by default."""
        return Arr(shape, dtype or self.dtype, self.on[name], kind)

    def case(self, *bads: Bad) -> Case:
        """This call with the changes of ``bads`` applied."""
        slots: dict[str, ArraySlot] = {
            "x": self.arr("x", self.x_shape()),
            "w": self.arr("w", self.w_shape()),
            "bias": self.arr("bias", self.bias_shape()) if self.bias_kind != "none" else None,
        }
        kwargs = dict(self.kwargs)
        for bad in bads:
            slots.update(bad.arrays)
            kwargs.update(bad.kwargs)
        return Case(self.fn, slots["x"], slots["w"], slots["bias"], kwargs)


@dataclass(frozen=True)
class Bad:
    """One corruption of a valid call and the error it must cause."""

    label: str
    error: type[Exception]
    names: tuple[str, ...]  # the message names at least one of these arguments ...
    texts: tuple[str, ...]  # ... and contains one of these (the value received)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, ArraySlot] = field(default_factory=dict)
    relies_on: frozenset[str] = frozenset()  # arguments whose valid values this corruption needs
    also: tuple[str, ...] = ()  # the message contains every one of these too

    @property
    def touches(self) -> frozenset[str]:
        """Arguments no other corruption of the same call may change."""
        return frozenset(self.kwargs) | frozenset(self.arrays) | self.relies_on

    def explains(self, error: BaseException) -> bool:
        """Whether ``error`` is the one this corruption causes."""
        message = str(error)
        named = any(re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) for name in self.names)
        said = any(text in message for text in self.texts) and all(text in message for text in self.also)
        return type(error) is self.error and named and said


def _said(name: str, value: object) -> tuple[str, ...]:
    """How a message may show ``name=value``."""
    return (f"{name}={value!r}", f"{name}={value}")


# -- the guard -----------------------------------------------------------------------------------

REACHED: Final = "reached the backend"


def _reached(where: str) -> Callable[..., Any]:
    def reached(*args: object, **kwargs: object) -> Any:
        raise AssertionError(f"{REACHED}: {where}")

    return reached


def _stand_ins(name: str, module: Any) -> dict[str, Callable[..., Any]]:
    """Stand-ins for everything a backend does once validation is over (it keeps ``signature`` and ``info``).

    Planning may finish, so that a valid call's plan is cached (as in real use), but its runner,
    and every function that moves or computes arrays, fails the test.
    """
    methods = tuple(module.METHODS)
    return {
        "choose_method": lambda _spec: methods[0],
        "choose_tangent_method": lambda _spec: None,
        "prepare": lambda _spec: _reached(f"{name}.prepare(...)(x, w, bias)"),
        **{function: _reached(f"{name}.{function}") for function in ("convolve", "convolve_numpy", "to_numpy", "from_numpy")},
    }


@contextlib.contextmanager
def backends_unreachable() -> Iterator[None]:
    """Give every backend the stand-ins of :func:`_stand_ins`, and the call an empty plan cache."""
    with pytest.MonkeyPatch.context() as patch:
        # A plan cached by an earlier call would skip validation and run the real backend.
        patch.setattr(_api, "_PLAN_CACHE", {})
        for name in {"numpy", *BACKENDS}:
            module = _dispatch.load(name)
            for function, stand_in in _stand_ins(name, module).items():
                if hasattr(module, function):
                    patch.setattr(module, function, stand_in)
        yield


@pytest.fixture(scope="module", autouse=True)
def _warm_up() -> None:
    """Import every backend and build each framework's first array outside the examples' deadline."""
    for name in {"numpy", *BACKENDS}:
        _dispatch.load(name)
        for dtype in DTYPES[name] + INTEGER_DTYPES[name] + ODD_DTYPES[name]:
            Arr((1, 1, 1), dtype, name).build()


def assert_rejected(case: Case, bads: Sequence[Bad], warm: Case | None = None) -> None:
    """``case`` raises the error of one of ``bads``, from multiconv's validation (after the valid call ``warm``)."""
    for bad in bads:
        event(bad.label)
    with backends_unreachable():
        if warm is not None:  # its plan is cached: the broken call must not be taken for it
            with pytest.raises(AssertionError, match=REACHED):
                warm.call()
        with pytest.raises((ValueError, TypeError)) as excinfo:
            case.call()
    error = excinfo.value
    assert type(error) in {ValueError, TypeError}, f"{type(error).__module__}.{type(error).__qualname__}: {error}"
    assert_raised_by_multiconv(excinfo)
    expected = "\n".join(f"  {bad.error.__name__} naming one of {bad.names} with one of {bad.texts} and {bad.also}" for bad in bads)
    assert any(bad.explains(error) for bad in bads), f"got {type(error).__name__}: {error}\nexpected\n{expected}"


# -- valid calls ---------------------------------------------------------------------------------


def _numpy_ints(values: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    """Python ints and NumPy integer scalars (both valid wherever an int is)."""
    return st.one_of(values, values.map(np.int64), values.map(np.int32))


@st.composite
def _int_form(draw: st.DrawFn, values: tuple[int, ...]) -> object:
    """``values`` (one per spatial dim) as a tuple or list, or as one int where they are equal."""
    entries = [draw(_numpy_ints(st.just(v))) for v in values]
    if len(set(values)) == 1 and draw(st.booleans()):
        return entries[0]
    return draw(st.sampled_from((tuple, list)))(entries)


@st.composite
def _valid_padding(draw: st.DrawFn, ndim: int) -> object:
    """Every padding form, with at most 1 on a side (below every input size of a valid call)."""
    small = st.integers(0, 1)
    entry = st.one_of(_numpy_ints(small), st.tuples(small, small), st.lists(small, min_size=2, max_size=2))
    return draw(
        st.one_of(
            st.sampled_from(PADDING_STRINGS),
            _numpy_ints(small),
            st.tuples(*[small] * ndim),
            st.lists(entry, min_size=ndim, max_size=ndim),
            st.tuples(*[entry] * ndim),
        )
    )


def _methods(target: str) -> tuple[str, ...]:
    return tuple(_dispatch.load(target).METHODS)


@st.composite
def valid_calls(draw: st.DrawFn, owner: str) -> Base:
    """A valid call whose arrays belong to ``owner`` (NumPy arrays may join them)."""
    ndim = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3 if ndim < 3 else 2)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    # Longer than the effective kernel (so at least 2): every padding of at most 1, and every named
    # padding, then stays within the input for reflect and circular padding.
    in_size = tuple(d * (k - 1) + 1 + draw(st.integers(1, 2)) for d, k in zip(dilation, kernel, strict=True))
    dtype = draw(st.sampled_from(DTYPES[owner]))
    on = dict.fromkeys(ARRAYS, owner)
    if owner != "numpy" and dtype in DTYPES["numpy"]:
        # NumPy arrays join the owner's framework; at least one of x and w stays the owner's.
        mixed = draw(st.sampled_from(((), ("x",), ("w",), ("bias",), ("x", "bias"), ("w", "bias"))))
        on.update(dict.fromkeys(mixed, "numpy"))
    backend = draw(st.sampled_from((None, *BACKENDS)))
    target = backend or owner
    groups = draw(st.integers(1, 3))
    kwargs = {
        "stride": draw(_int_form(stride)),
        "padding": draw(_valid_padding(ndim)),
        "dilation": draw(_int_form(dilation)),
        "groups": draw(_numpy_ints(st.just(groups))),
        "padding_mode": draw(st.sampled_from(PADDING_MODES)),
        "layout": draw(st.sampled_from(LAYOUTS)),
        "flip": draw(st.sampled_from((False, True, np.False_, np.True_))),
        "method": draw(st.sampled_from(("auto", *_methods(target)))),
        "backend": backend,
        "workspace_limit": draw(st.one_of(st.none(), st.integers(1, 2**80), st.integers(1, 2**40).map(np.int64))),
    }
    assert set(kwargs) == set(ARGUMENT_DEFAULTS)
    return Base(
        owner=owner,
        target=target,
        fn=draw(st.sampled_from((None, ndim))),
        batch=draw(st.integers(0, 3)),  # B == 0 is valid: an empty result
        groups=groups,
        group_in=draw(st.integers(1, 2)),
        group_out=draw(st.integers(1, 2)),
        in_size=in_size,
        kernel=kernel,
        stride=stride,
        dilation=dilation,
        layout=str(kwargs["layout"]),
        weight_kind=draw(st.sampled_from(("per_sample", "broadcast", "shared"))),
        bias_kind=draw(st.sampled_from(("none", "shared", "per_sample", "broadcast"))),
        dtype=dtype,
        on=on,
        kwargs=kwargs,
    )


# -- invalid values ------------------------------------------------------------------------------

NON_POSITIVE: Final = st.one_of(_numpy_ints(st.integers(-3, 0)), st.integers(-(2**62), 0).map(np.int64), st.integers(-(2**80), 0))
NEGATIVE: Final = st.one_of(_numpy_ints(st.integers(-3, -1)), st.integers(-(2**62), -1).map(np.int64), st.integers(-(2**80), -1))
TOO_LARGE: Final = st.one_of(
    st.sampled_from((LIMIT + 1, 2**32, 2**63, 2**64)),
    st.integers(LIMIT + 1, 2**80),
    st.integers(LIMIT + 1, 2**63 - 1).map(np.int64),
    st.integers(LIMIT + 1, 2**64 - 1).map(np.uint64),
)
#: Values that are no int in any accepted form (no ``__index__``), nor None, a str, a tuple or a list.
NOT_INTS_NOR_NONE: Final = st.one_of(
    st.booleans(),
    st.sampled_from((np.True_, np.False_)),
    st.floats(),
    st.floats(-4, 4).map(np.float64),
    st.floats(-4, 4, width=32).map(np.float32),
    st.complex_numbers(max_magnitude=4, allow_nan=False),
    st.fractions(max_denominator=3),
    st.decimals(-4, 4, allow_nan=False, places=1),
    st.binary(max_size=3),
    st.dictionaries(st.integers(0, 2), st.integers(1, 2), max_size=2),
    st.sets(st.integers(1, 3), max_size=2),
    st.just(range(1, 3)),
    st.integers(1, 3).map(lambda n: np.arange(1, n + 1)),  # 1-d, even of one element
    st.floats(1, 3).map(np.array),  # a 0-d float array
)
NOT_INTS: Final = NOT_INTS_NOR_NONE | st.none()
SEQUENCES: Final = (tuple, list)


def _unknown(valid: Sequence[str]) -> st.SearchStrategy[str]:
    """Strings outside ``valid``: near misses, other arguments' words, any text."""
    words = {"", "none", "None", "default", *PADDING_MODES, *PADDING_STRINGS, *LAYOUTS, *BACKEND_NAMES, *ALL_METHODS}
    for v in valid:
        words |= {v.upper(), v.title(), f" {v}", f"{v} ", v[:-1], f"{v}s", v.replace("_", "-"), f"{v}\x00"}
    return st.one_of(st.sampled_from(sorted(words - set(valid))), st.text(max_size=8).filter(lambda s: s not in valid))


def _non_strings(valid: Sequence[str], *, none: bool = True) -> st.SearchStrategy[object]:
    """Values that are not ``str`` (nor a str subclass), ``None`` among them if ``none``."""
    choices = tuple(valid)
    values: list[st.SearchStrategy[object]] = [
        st.booleans(),
        st.integers(-2, 2),
        st.floats(),
        st.sampled_from(choices).map(str.encode),
        st.lists(st.sampled_from(choices), max_size=2),
        st.tuples(st.sampled_from(choices)),
        st.sets(st.sampled_from(choices), max_size=1),
    ]
    return st.one_of(*values, *([st.none()] if none else []))


# -- one argument --------------------------------------------------------------------------------


def _bad_scalar(draw: st.DrawFn, name: str, table: Mapping[str, tuple[st.SearchStrategy[Any], type[Exception]]]) -> Bad:
    """``name`` set to one value of a kind in ``table`` (kind -> values, error)."""
    kind = draw(st.sampled_from(tuple(table)))
    values, error = table[kind]
    value = draw(values)
    label = f"{name}: {type(value).__name__}" if kind == "wrong type" else f"{name}: {kind}"
    return Bad(label, error, (name,), _said(name, value), {name: value})


def _sequence(draw: st.DrawFn, entries: Sequence[object]) -> object:
    return draw(st.sampled_from(SEQUENCES))(entries)


@st.composite
def _wrong_length(draw: st.DrawFn, base: Base, name: str, entry: st.SearchStrategy[Any]) -> Bad:
    """A tuple or list of the wrong length, whatever its entries: the length is checked first."""
    size = draw(st.sampled_from([n for n in range(5) if n != base.ndim]))
    value = _sequence(draw, draw(st.lists(entry, min_size=size, max_size=size)))
    return Bad(f"{name}: {size} entries", ValueError, (name,), _said(name, value), {name: value})


BAD_ENTRIES: Final = {
    "not positive": (NON_POSITIVE, ValueError),
    "too large": (TOO_LARGE, ValueError),
    "wrong type": (NOT_INTS | st.text(max_size=3) | st.lists(st.integers(1, 2), max_size=2) | st.tuples(st.integers(1, 2)), TypeError),
}


@st.composite
def bad_positive(draw: st.DrawFn, base: Base, name: str) -> Bad:
    """``stride`` or ``dilation``: a positive int or a tuple of one per spatial dim."""
    kind = draw(st.sampled_from(("scalar", "length", "entry")))
    if kind == "scalar":
        wrong_type = (NOT_INTS | st.text(max_size=3), TypeError)
        return _bad_scalar(
            draw, name, {"not positive": BAD_ENTRIES["not positive"], "too large": BAD_ENTRIES["too large"], "wrong type": wrong_type}
        )
    if kind == "length":
        return draw(_wrong_length(base, name, st.one_of(_numpy_ints(st.integers(1, 3)), NON_POSITIVE, NOT_INTS)))
    # One entry of a tuple of the right length is bad.
    at, flaw = draw(st.integers(0, base.ndim - 1)), draw(st.sampled_from(tuple(BAD_ENTRIES)))
    values, error = BAD_ENTRIES[flaw]
    good: tuple[int, ...] = getattr(base, name)
    item = draw(values)
    value = _sequence(draw, [*good[:at], item, *good[at + 1 :]])
    # A too-large entry is reported alone, the others with the whole tuple.
    texts = _said(name, item) if flaw == "too large" else _said(name, value)
    return Bad(f"{name}: tuple entry {flaw}", error, (name,), texts, {name: value})


PADDING_SCALARS: Final = {
    "negative": (NEGATIVE, ValueError),
    "too large": (TOO_LARGE, ValueError),
    "wrong type": (NOT_INTS, TypeError),
    "unknown string": (_unknown(PADDING_STRINGS), ValueError),
}
PADDING_ENTRIES: Final = {
    "negative": (NEGATIVE, ValueError),
    "too large": (TOO_LARGE, ValueError),
    "wrong type": (NOT_INTS | st.text(max_size=3) | st.lists(st.integers(0, 1), min_size=1, max_size=2), TypeError),
}


@st.composite
def bad_padding(draw: st.DrawFn, base: Base) -> Bad:
    """``padding``: a non-negative int, a tuple of ints or (lo, hi) pairs, or a named form."""
    name, small = "padding", st.integers(0, 1)
    good_entry = st.one_of(small, st.tuples(small, small))
    kind = draw(st.sampled_from(("scalar", "length", "pair length", "entry", "entry")))
    if kind == "scalar":
        return _bad_scalar(draw, name, PADDING_SCALARS)
    if kind == "length":
        return draw(_wrong_length(base, name, st.one_of(good_entry, NEGATIVE, NOT_INTS, st.tuples(small))))
    entries: list[object] = draw(st.lists(good_entry, min_size=base.ndim, max_size=base.ndim))
    at = draw(st.integers(0, base.ndim - 1))
    if kind == "pair length":
        # Found before any entry is converted, so the other entries may be anything.
        size = draw(st.sampled_from((0, 1, 3, 4)))
        entries[at] = _sequence(draw, draw(st.lists(small, min_size=size, max_size=size)))
        value = _sequence(draw, entries)
        return Bad("padding: pair of wrong length", ValueError, (name,), _said(name, value), {name: value})
    flaw = draw(st.sampled_from(tuple(PADDING_ENTRIES)))
    values, error = PADDING_ENTRIES[flaw]
    item = draw(values)
    if isinstance(item, list) or draw(st.booleans()):  # the bad value inside a (lo, hi) pair (a list there is nested too deep)
        pair: list[object] = [draw(small), draw(small)]
        pair[draw(st.integers(0, 1))] = item
        entries[at] = _sequence(draw, pair)
    else:
        entries[at] = item
    value = _sequence(draw, entries)
    texts = _said(name, item) if flaw == "too large" else _said(name, value)
    return Bad(f"padding: entry {flaw}", error, (name,), texts, {name: value})


@st.composite
def bad_groups(draw: st.DrawFn, base: Base) -> Bad:
    """``groups``: a positive int (whether it divides the channels is in ``inconsistent``)."""
    del base  # every corruption takes the valid call
    return _bad_scalar(draw, "groups", BAD_ENTRIES)


@st.composite
def bad_workspace_limit(draw: st.DrawFn, base: Base) -> Bad:
    """``workspace_limit``: None or a positive int, of any size."""
    del base
    wrong_type = NOT_INTS_NOR_NONE | st.text(max_size=3) | st.lists(st.integers(1, 2), max_size=2)
    return _bad_scalar(draw, "workspace_limit", {"not positive": BAD_ENTRIES["not positive"], "wrong type": (wrong_type, TypeError)})


@st.composite
def bad_choice(draw: st.DrawFn, base: Base, name: str) -> Bad:
    """``padding_mode``, ``layout``, ``method`` or ``backend``: one of a few strings."""
    valid = {
        "padding_mode": PADDING_MODES,
        "layout": LAYOUTS,
        "method": ("auto", *_methods(base.target)),
        "backend": BACKEND_NAMES,
    }[name]
    others = tuple(m for m in ALL_METHODS if m not in valid) if name == "method" else ()
    kind = draw(st.sampled_from(("unknown string", "wrong type", *(("another backend's method",) if others else ()))))
    if kind != "wrong type":
        value: object = draw(st.sampled_from(others) if kind == "another backend's method" else _unknown(valid))
        return Bad(f"{name}: {kind}", ValueError, (name,), _said(name, value), {name: value})
    value = draw(_non_strings(valid, none=name != "backend"))  # backend=None is valid
    return Bad(f"{name}: {type(value).__name__}", TypeError, (name,), _said(name, value), {name: value})


@st.composite
def bad_flip(draw: st.DrawFn, base: Base) -> Bad:
    """``flip``: a bool (or a NumPy bool)."""
    del base
    value = draw(
        st.one_of(
            st.integers(-1, 2),
            _numpy_ints(st.integers(0, 1)),
            st.none(),
            st.sampled_from(("True", "False", "", "yes")),
            st.floats(0, 1),
            st.lists(st.booleans(), max_size=1),
            st.booleans().map(np.array),  # a 0-d array is no scalar
            st.binary(max_size=1),
        )
    )
    return Bad(f"flip: {type(value).__name__}", TypeError, ("flip",), _said("flip", value), {"flip": value})


def _can_be_sparse(base: Base) -> bool:
    # A torch tensor beside JAX arrays is a two-framework error, not a sparse one.
    return "torch" in BACKENDS and "jax" not in base.on.values()


@st.composite
def bad_array(draw: st.DrawFn, base: Base, name: str) -> Bad:
    """``x``, ``w`` or ``bias``: an array of a supported dtype, the right rank, dense."""
    kinds = ["not an array", "rank", "integer dtype", "odd dtype", "masked"] + (["sparse"] if _can_be_sparse(base) else [])
    kind = draw(st.sampled_from(kinds))
    on = base.on[name]
    valid_shape = base.shapes[name]
    if kind == "not an array":
        value = draw(
            st.one_of(
                st.recursive(st.floats(-1, 1), lambda inner: st.lists(inner, min_size=1, max_size=3), max_leaves=8),
                st.tuples(st.floats(-1, 1)),
                st.floats(),
                st.integers(),
                st.booleans(),
                st.none() if name != "bias" else st.nothing(),
                st.text(max_size=3),
                st.binary(max_size=3),
                st.dictionaries(st.integers(0, 1), st.floats(-1, 1), max_size=1),
                st.floats(-1, 1).map(np.float64),
                st.complex_numbers(max_magnitude=1, allow_nan=False).map(np.complex128),
            )
        )
        got = "None" if value is None else f"{type(value).__module__}.{type(value).__qualname__}"
        texts = (f"{name} must be a NumPy array, a torch.Tensor or a JAX array; got {got}",)
        return Bad(f"{name}: not an array ({type(value).__name__})", TypeError, (name,), texts, arrays={name: Raw(value)})
    if kind == "rank":
        valid_ranks = {"x": range(3, 6) if base.fn is None else (base.fn + 2,), "w": (base.ndim + 2, base.ndim + 3), "bias": (1, 2)}[name]
        rank = draw(st.sampled_from([r for r in range(7) if r not in valid_ranks]))
        shape = tuple(draw(st.lists(st.integers(1, 2), min_size=rank, max_size=rank)))
        return Bad(f"{name}: rank {rank}", ValueError, (name,), (f"{name}.shape={shape}",), arrays={name: base.arr(name, shape)})
    if kind == "masked":
        arr = Arr(valid_shape, "float64", "numpy", "masked")
        return Bad(f"{name}: masked array", TypeError, (name,), (f"{name} is a numpy masked array",), arrays={name: arr})
    if kind == "sparse":
        arr = Arr(valid_shape, base.dtype, "torch", "sparse")
        return Bad(f"{name}: sparse tensor", TypeError, (name,), ("layout=torch.sparse_coo",), arrays={name: arr})
    dtype = draw(st.sampled_from(INTEGER_DTYPES[on] if kind == "integer dtype" else ODD_DTYPES[on]))
    dtype_name = np.dtype(dtype).name if on == "numpy" else dtype
    texts = (f"{name} has dtype {dtype_name}",)
    also = ("cast",) if kind == "integer dtype" else ()  # the contract: a TypeError "that says to cast"
    return Bad(f"{name}: {kind}", TypeError, (name,), texts, arrays={name: base.arr(name, valid_shape, dtype)}, also=also)


#: One argument -> its corruptions; every argument of batch_conv is here.
LOCAL: Final[dict[str, Callable[[Base], st.SearchStrategy[Bad]]]] = {
    "stride": lambda base: bad_positive(base, "stride"),
    "dilation": lambda base: bad_positive(base, "dilation"),
    "padding": bad_padding,
    "groups": bad_groups,
    "workspace_limit": bad_workspace_limit,
    "padding_mode": lambda base: bad_choice(base, "padding_mode"),
    "layout": lambda base: bad_choice(base, "layout"),
    "method": lambda base: bad_choice(base, "method"),
    "backend": lambda base: bad_choice(base, "backend"),
    "flip": bad_flip,
    "x": lambda base: bad_array(base, "x"),
    "w": lambda base: bad_array(base, "w"),
    "bias": lambda base: bad_array(base, "bias"),
}


# -- arguments inconsistent with each other ------------------------------------------------------


SHAPES: Final = ("x", "w", "groups")


@st.composite
def _w_batch(draw: st.DrawFn, base: Base) -> Bad:
    lead = draw(st.sampled_from([n for n in range(5) if n not in {base.batch, 1}]))
    arrays = {"w": base.arr("w", base.w_shape(lead=lead))}
    return Bad("w batch", ValueError, ("w",), (f"w.shape[0]={lead}",), arrays=arrays, relies_on=frozenset(("x",)))


@st.composite
def _w_channels(draw: st.DrawFn, base: Base) -> Bad:
    shape = base.w_shape(inp=draw(st.sampled_from(sorted({0, base.group_in - 1, base.group_in + 1, 2 * base.group_in} - {base.group_in}))))
    return Bad("w channels", ValueError, ("w",), (f"w.shape={shape}",), arrays={"w": base.arr("w", shape)}, relies_on=frozenset(SHAPES))


@st.composite
def _x_channels(draw: st.DrawFn, base: Base) -> Bad:
    # One more or fewer (groups may then not divide C_in), or a group more or fewer (it does).
    c, g = base.in_channels, base.groups
    shape = base.x_shape(channels=draw(st.sampled_from(sorted({c - 1, c + 1, c - g, c + g} - {0, c}))))
    return Bad("x channels", ValueError, SHAPES, (f"x.shape={shape}",), arrays={"x": base.arr("x", shape)}, relies_on=frozenset(SHAPES))


@st.composite
def _groups_vs_in_channels(draw: st.DrawFn, base: Base) -> Bad:
    groups = draw(st.sampled_from([g for g in range(2, 9) if base.in_channels % g]))
    return Bad("groups vs C_in", ValueError, ("groups",), _said("groups", groups), {"groups": groups}, relies_on=frozenset(("x",)))


@st.composite
def _groups_vs_out_channels(draw: st.DrawFn, base: Base) -> Bad:
    groups, group_in = draw(st.integers(2, 3)), draw(st.integers(1, 2))
    out = draw(st.sampled_from([c for c in range(1, 7) if c % groups]))
    arrays = {"x": base.arr("x", base.x_shape(channels=groups * group_in)), "w": base.arr("w", base.w_shape(out=out, inp=group_in))}
    return Bad("groups vs C_out", ValueError, ("groups",), _said("groups", groups), {"groups": groups}, arrays)


@st.composite
def _bias_shape(draw: st.DrawFn, base: Base) -> Bad:
    b, c = base.batch, base.out_channels
    valid = {(c,), (b, c), (1, c)}
    near = {(c - 1,), (c + 1,), (b + 2, c), (b, c + 1), (b, c - 1), (1, c + 1), (1, c - 1), (c, b), (c, 1), (0, c), (c, c)}
    shape: tuple[int, ...] = draw(st.sampled_from(sorted(s for s in near - valid if min(s) >= 0)))
    arrays = {"bias": Arr(shape, base.dtype, base.on["bias"])}
    return Bad("bias shape", ValueError, ("bias",), (f"bias.shape={shape}",), arrays=arrays, relies_on=frozenset(("x", "w")))


def _small_padding(draw: st.DrawFn, base: Base) -> tuple[object, tuple[tuple[int, int], ...]]:
    """A padding of at most 1 per side, and its ``(lo, hi)`` pairs."""
    form = draw(st.sampled_from(("valid", "int", "ints", "pairs")))
    if form == "valid":
        return "valid", ((0, 0),) * base.ndim
    if form == "int":
        p = draw(st.integers(0, 1))
        return p, ((p, p),) * base.ndim
    if form == "ints":
        ints = tuple(draw(st.integers(0, 1)) for _ in range(base.ndim))
        return ints, tuple((p, p) for p in ints)
    pairs = tuple((draw(st.integers(0, 1)), draw(st.integers(0, 1))) for _ in range(base.ndim))
    return pairs, pairs


def _with(values: tuple[int, ...], at: int, value: int) -> tuple[int, ...]:
    return (*values[:at], value, *values[at + 1 :])


@st.composite
def _kernel_too_long(draw: st.DrawFn, base: Base) -> Bad:
    """``dilation * (K - 1) + 1 > L + lo + hi`` in one spatial dim, by a longer kernel, a larger dilation or a shorter input."""
    padding, pads = _small_padding(draw, base)
    dim = draw(st.integers(0, base.ndim - 1))
    padded, k, d = base.in_size[dim] + sum(pads[dim]), base.kernel[dim], base.dilation[dim]
    ways = ["kernel"]
    if k > 1:
        ways.append("dilation")
    if d * (k - 1) - sum(pads[dim]) >= 1:
        ways.append("input")
    way = draw(st.sampled_from(ways))
    x_shape, w_shape, dilation = base.x_shape(), base.w_shape(), base.dilation
    if way == "kernel":
        w_shape = base.w_shape(kernel=_with(base.kernel, dim, (padded - 1) // d + 2 + draw(st.integers(0, 1))))
    elif way == "dilation":
        dilation = _with(base.dilation, dim, (padded - 1) // (k - 1) + 1 + draw(st.integers(0, 1)))
    else:
        x_shape = base.x_shape(size=_with(base.in_size, dim, draw(st.integers(1, d * (k - 1) - sum(pads[dim])))))
    names = ("x", "w", "padding", "dilation")
    return Bad(
        f"kernel too long: {way}",
        ValueError,
        names,
        (f"x.shape={x_shape}", f"w.shape={w_shape}"),
        {"padding": padding, "dilation": dilation},
        {"x": base.arr("x", x_shape), "w": base.arr("w", w_shape)},
        frozenset(names),
    )


@st.composite
def _mode_padding_too_large(draw: st.DrawFn, base: Base) -> Bad:
    """Reflect padding as long as the input, or circular padding longer."""
    mode, dim = draw(st.sampled_from(("reflect", "circular"))), draw(st.integers(0, base.ndim - 1))
    size = base.in_size[dim]
    # Mostly the smallest invalid padding: the boundary is where an off-by-one would hide.
    p = (size if mode == "reflect" else size + 1) + draw(st.sampled_from((0, 0, 1)))
    entry = draw(st.sampled_from((p, (0, p), (p, 0))))
    padding = p if draw(st.booleans()) else tuple(entry if i == dim else 0 for i in range(base.ndim))
    changes = {"padding": padding, "padding_mode": mode}
    return Bad(f"{mode} padding too large", ValueError, ("padding",), (f"padding_mode={mode!r}",), changes, relies_on=frozenset(("x",)))


@st.composite
def _empty_dim(draw: st.DrawFn, base: Base) -> Bad:
    where, dim = draw(st.sampled_from(("C_in", "spatial", "C_out", "kernel"))), draw(st.integers(0, base.ndim - 1))
    if where in {"C_in", "spatial"}:
        shape = base.x_shape(channels=0) if where == "C_in" else base.x_shape(size=_with(base.in_size, dim, 0))
        arrays = {"x": base.arr("x", shape)}
        return Bad(f"empty {where}", ValueError, ("x",), (f"x.shape={shape}",), arrays=arrays, relies_on=frozenset(SHAPES))
    shape = base.w_shape(out=0) if where == "C_out" else base.w_shape(kernel=_with(base.kernel, dim, 0))
    arrays = {"w": base.arr("w", shape)}
    return Bad(f"empty {where}", ValueError, ("w",), (f"w.shape={shape}",), arrays=arrays, relies_on=frozenset(SHAPES))


@st.composite
def _mixed_dtypes(draw: st.DrawFn, base: Base) -> Bad:
    name = draw(st.sampled_from(base.arrays))
    allowed = DTYPES["numpy"] if base.on[name] == "numpy" else DTYPES[base.owner]
    dtype = draw(st.sampled_from(tuple(d for d in allowed if d != base.dtype)))
    dtypes = {a: (dtype if a == name else base.dtype) if a in base.arrays else None for a in ARRAYS}
    texts = (f"x.dtype={dtypes['x']}, w.dtype={dtypes['w']}, bias.dtype={dtypes['bias']}",)
    arrays = {name: base.arr(name, base.shapes[name], dtype)}
    return Bad("mixed dtypes", TypeError, ARRAYS, texts, arrays=arrays, relies_on=frozenset(ARRAYS))


@st.composite
def _two_frameworks(draw: st.DrawFn, base: Base) -> Bad:
    first, second = draw(st.permutations(base.arrays))[:2]
    arrays = {first: Arr(base.shapes[first], base.dtype, "torch"), second: Arr(base.shapes[second], base.dtype, "jax")}
    texts = (f"{first} is a torch array", f"{second} is a jax array")  # the contract: "naming both"
    return Bad("two frameworks", TypeError, (first, second), texts, arrays=arrays, relies_on=frozenset(ARRAYS), also=texts)


@st.composite
def _two_devices(draw: st.DrawFn, base: Base) -> Bad:
    """Torch tensors on the CPU and on the meta device together."""
    on_meta = draw(st.sets(st.sampled_from(base.arrays), min_size=1, max_size=len(base.arrays) - 1))
    arrays = {a: Arr(base.shapes[a], base.dtype, "torch", "meta" if a in on_meta else "dense") for a in base.arrays}
    # Torch arrays may change the backend that computes, and so the methods allowed.
    texts = ("x, w and bias must be on one device",)
    return Bad("devices", ValueError, ARRAYS, texts, {"method": "auto"}, arrays, frozenset(ARRAYS))


#: Arguments valid alone but not together.
INCONSISTENT: Final[dict[str, Callable[[Base], st.SearchStrategy[Bad]]]] = {
    "w batch": _w_batch,
    "w channels": _w_channels,
    "x channels": _x_channels,
    "groups vs C_in": _groups_vs_in_channels,
    "groups vs C_out": _groups_vs_out_channels,
    "bias shape": _bias_shape,
    "kernel too long": _kernel_too_long,
    "padding mode": _mode_padding_too_large,
    "empty dim": _empty_dim,
    "mixed dtypes": _mixed_dtypes,
    **({"devices": _two_devices} if "torch" in BACKENDS else {}),
    **({"two frameworks": _two_frameworks} if "torch" in BACKENDS and "jax" in BACKENDS else {}),
}


def inconsistent(base: Base) -> st.SearchStrategy[Bad]:
    """Shapes, groups, padding, dtypes, frameworks or devices that do not fit together."""
    return st.sampled_from(tuple(INCONSISTENT.values())).flatmap(lambda corrupt: corrupt(base))


# -- the properties ------------------------------------------------------------------------------


@st.composite
def broken_calls(draw: st.DrawFn, owner: str, arguments: Sequence[str]) -> tuple[Case, tuple[Bad, ...]]:
    """A valid call with one of ``arguments`` broken."""
    base = draw(valid_calls(owner))
    bad = draw(LOCAL[draw(st.sampled_from(tuple(arguments)))](base))
    return base.case(bad), (bad,)


@st.composite
def several_broken(draw: st.DrawFn, owner: str) -> tuple[Case, tuple[Bad, ...]]:
    """A valid call with 2 to 4 arguments broken, at most one inconsistency among them."""
    base = draw(valid_calls(owner))
    bads: list[Bad] = []
    if draw(st.booleans()):
        bads.append(draw(inconsistent(base)))
    free = [name for name in LOCAL if not any(name in bad.touches for bad in bads)]
    chosen = draw(st.lists(st.sampled_from(free), min_size=2 - len(bads), max_size=4 - len(bads), unique=True))
    bads += [draw(LOCAL[name](base)) for name in chosen]
    return base.case(*bads), tuple(bads)


@ON_EVERY_BACKEND
@settings(deadline=DEADLINE)
@given(data=st.data())
def test_valid_calls_reach_the_backend(backend: str, data: st.DataObject) -> None:
    """The guard works: a valid call passes validation and is stopped at the backend."""
    base = data.draw(valid_calls(backend))
    event(f"{base.ndim}-d, {'batch_conv' if base.fn is None else f'batch_conv{base.fn}d'}, target {base.target}")
    with backends_unreachable(), pytest.raises(AssertionError, match=REACHED):
        base.case().call()


@ON_EVERY_BACKEND
@settings(deadline=DEADLINE)
@given(data=st.data())
def test_bad_integer_argument(backend: str, data: st.DataObject) -> None:
    """stride, dilation, padding, groups or workspace_limit broken alone."""
    assert_rejected(*data.draw(broken_calls(backend, INTEGER_ARGUMENTS)))


@ON_EVERY_BACKEND
@settings(deadline=DEADLINE)
@given(data=st.data())
def test_bad_string_or_flag_argument(backend: str, data: st.DataObject) -> None:
    """padding_mode, layout, flip, method or backend broken alone."""
    assert_rejected(*data.draw(broken_calls(backend, CHOICE_ARGUMENTS)))


@ON_EVERY_BACKEND
@settings(deadline=DEADLINE)
@given(data=st.data())
def test_bad_array(backend: str, data: st.DataObject) -> None:
    """x, w or bias: not an array, the wrong rank, an integer or unsupported dtype, masked or sparse."""
    assert_rejected(*data.draw(broken_calls(backend, ARRAYS)))


@ON_EVERY_BACKEND
@settings(deadline=DEADLINE)
@given(data=st.data())
def test_inconsistent_arguments(backend: str, data: st.DataObject) -> None:
    """Arguments valid alone but not together."""
    base = data.draw(valid_calls(backend))
    bad = data.draw(inconsistent(base))
    assert_rejected(base.case(bad), (bad,))


@st.composite
def any_corruption(draw: st.DrawFn, base: Base) -> Bad:
    """One corruption of any family: an integer, string or flag argument, an array, an inconsistency."""
    family = draw(st.sampled_from((INTEGER_ARGUMENTS, CHOICE_ARGUMENTS, ARRAYS, None)))
    return draw(inconsistent(base) if family is None else LOCAL[draw(st.sampled_from(family))](base))


@ON_EVERY_BACKEND
@settings(deadline=DEADLINE)
@given(data=st.data())
def test_cached_valid_call_hides_no_error(backend: str, data: st.DataObject) -> None:
    """After the valid call has run (its plan cached), the broken one is still validated."""
    base = data.draw(valid_calls(backend))
    bad = data.draw(any_corruption(base))
    case = base.case(bad)
    # Known: a non-array bias has the plan-cache key of bias=None (test_non_array_bias_after_a_cached_call).
    assume(not (base.bias_kind == "none" and isinstance(case.bias, Raw)))
    assert_rejected(case, (bad,), warm=base.case())


@ON_EVERY_BACKEND
@settings(deadline=DEADLINE)
@given(data=st.data())
def test_several_bad_arguments(backend: str, data: st.DataObject) -> None:
    """Several arguments broken at once: the error is about one of them."""
    assert_rejected(*data.draw(several_broken(backend)))


def test_every_argument_can_be_broken() -> None:
    assert set(LOCAL) == {*ARGUMENT_DEFAULTS, *ARRAYS}
    assert set(INTEGER_ARGUMENTS + CHOICE_ARGUMENTS) == set(ARGUMENT_DEFAULTS)


def test_guard_sees_through_the_plan_cache(backend: str) -> None:
    """A plan cached before the guard does not let a call past it, and the guard leaves nothing behind."""
    case = Case(None, Arr((2, 4, 8), "float64", backend), Arr((2, 6, 4, 3), "float64", backend), None, {})
    x, w = _build(case.x), _build(case.w)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_api, "_PLAN_CACHE", {})  # the suite's cache stays as it was
        expected = multiconv.batch_conv(x, w)
        with backends_unreachable(), pytest.raises(AssertionError, match=REACHED):
            case.call()
        assert tuple(multiconv.batch_conv(x, w).shape) == tuple(expected.shape) == (2, 6, 6)


@pytest.mark.parametrize("name", ["x", "w"])
def test_none_array_is_a_type_error(backend: str, name: str) -> None:
    arrays: dict[str, ArraySlot] = {"x": Arr((2, 4, 8), "float64", backend), "w": Arr((2, 6, 4, 3), "float64", backend)}
    arrays[name] = Raw(None)
    case = Case(None, arrays["x"], arrays["w"], None, {})
    with backends_unreachable(), pytest.raises(TypeError, match=rf"^{name} must be a NumPy array"):
        case.call()


@pytest.mark.parametrize("bias", [[0.0], 1.5, "b"], ids=["list", "float", "str"])
def test_non_array_bias_after_a_cached_call(backend: str, bias: object) -> None:
    """A valid call without bias, then the same call with a non-array bias: that is a TypeError from validation."""
    x, w = Arr((2, 4, 8), "float64", backend).build(), Arr((2, 1, 4, 3), "float64", backend).build()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_api, "_PLAN_CACHE", {})
        multiconv.batch_conv(x, w)
        with pytest.raises(TypeError, match=r"^bias must be a NumPy array"):
            multiconv.batch_conv(x, w, bias)


def test_unhashable_argument_leaves_no_context() -> None:
    """A valid but unhashable argument (a 0-d integer array) must not chain 'unhashable type' to a later error."""
    stride: Any = np.array(2)  # operator.index takes it: a valid stride
    with pytest.raises(ValueError, match="layout='bad'") as excinfo:
        multiconv.batch_conv(np.ones((2, 4, 8)), np.ones((2, 6, 4, 3)), stride=stride, layout="bad")
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__, repr(excinfo.value.__context__)
