"""Every invalid argument raises the contract's exception, with a message that helps.

The contract (errors section): ``ValueError`` for values and shapes, ``TypeError``
for types and dtypes, raised before any work is done, with a message that names the
argument, the value received and what is allowed; never a framework's internal
error text alone.  Each row of ``ERROR_CASES`` is one bad call, the exact exception
type it must raise and a regex its message must contain.  Rows that need torch or
JAX arrays exist only when ``MULTICONV_TEST_BACKENDS`` requests that backend, so a
run without them deselects those rows instead of passing them silently.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import FunctionType
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from support import BACKENDS, PACKAGE_DIR, as_backend, assert_raised_by_multiconv

import multiconv

if TYPE_CHECKING:
    from collections.abc import Callable

    from _pytest.mark import ParameterSet


def _lit(*parts: str) -> str:
    """A regex matching the literal ``parts`` in this order, anything in between."""
    return ".*".join(re.escape(part) for part in parts)


@dataclass(frozen=True)
class Arr:
    """A description of an array, built only when a test runs."""

    shape: tuple[int, ...]
    dtype: str = "float64"
    on: str = "numpy"
    device: str | None = None
    requires_grad: bool = False
    sparse: bool = False

    def build(self, on: str | None = None) -> Any:
        """The array, in framework ``on`` (default: ``self.on``)."""
        a = as_backend(np.ones(self.shape), on or self.on, self.dtype)
        if self.device is not None:
            a = a.to(self.device)
        if self.sparse:
            a = a.to_sparse()
        if self.requires_grad:
            a = a.requires_grad_(True)  # noqa: FBT003
        return a


def _build(value: object, on: str | None) -> Any:
    return value.build(on) if isinstance(value, Arr) else value


X1, W1 = Arr((2, 4, 8)), Arr((2, 6, 4, 3))  # B=2, C_in=4, L=8; C_out=6, K=3
X2, W2 = Arr((2, 4, 6, 6)), Arr((2, 6, 4, 3, 3))


@dataclass(frozen=True)
class Call:
    """One call of a multiconv entry point; ``on`` moves every ``Arr`` to that framework."""

    x: object
    w: object
    bias: object = None
    fn: Callable[..., Any] = multiconv.batch_conv
    kwargs: tuple[tuple[str, Any], ...] = ()
    on: str | None = None

    def __call__(self) -> object:
        """Run the call (and build its arrays)."""
        return self.fn(_build(self.x, self.on), _build(self.w, self.on), _build(self.bias, self.on), **dict(self.kwargs))

    def on_backend(self, name: str) -> Call:
        """The same call with every array in framework ``name``."""
        return dataclasses.replace(self, on=name)


def call(x: object = X1, w: object = W1, bias: object = None, *, fn: Callable[..., Any] = multiconv.batch_conv, **kwargs: Any) -> Call:
    """A ``Call`` of ``fn(x, w, bias, **kwargs)``."""
    return Call(x, w, bias, fn, tuple(kwargs.items()))


def _under_jit(backend: str) -> Callable[[], object]:
    """Call ``batch_conv`` on a JAX tracer (inside ``jax.jit``), computing on ``backend``."""

    def run() -> object:
        jax = importlib.import_module("jax")
        w = Arr((2, 6, 4, 3), on="jax").build()
        return jax.jit(lambda a: multiconv.batch_conv(a, w, backend=backend))(Arr((2, 4, 8), on="jax").build())

    return run


def _numpy_bfloat16() -> object:
    """NumPy arrays of ml_dtypes' bfloat16 (installed with JAX), which the NumPy backend does not take."""
    bfloat16 = importlib.import_module("ml_dtypes").bfloat16
    return multiconv.batch_conv(np.ones((2, 4, 8), bfloat16), np.ones((2, 6, 4, 3), bfloat16))


_NOT_ARRAY = "must be a NumPy array, a torch.Tensor or a JAX array; got "


def _numpy_cases() -> list[ParameterSet]:
    """Bad calls that need NumPy only: all of the framework-free validation."""
    p = pytest.param
    return [
        # -- ranks -------------------------------------------------------------------------------
        p(call(x=Arr((2, 4))), ValueError, _lit("x must have shape (B, C_in, *spatial)", "got x.shape=(2, 4)"), id="x-2d"),
        p(call(x=Arr((2, 4, 1, 1, 1, 8))), ValueError, _lit("3 to 5 dims", "got x.shape=(2, 4, 1, 1, 1, 8)"), id="x-6d"),
        p(call(x=Arr(())), ValueError, _lit("x must have shape", "got x.shape=()"), id="x-0d"),
        p(
            call(X2, W2, fn=multiconv.batch_conv1d),
            ValueError,
            _lit("batch_conv1d needs x of shape (B, C_in, L)", "got x.shape=(2, 4, 6, 6)"),
            id="conv1d-given-2d-input",
        ),
        p(
            call(fn=multiconv.batch_conv2d),
            ValueError,
            _lit("batch_conv2d needs x of shape (B, C_in, H, W)", "got x.shape=(2, 4, 8)"),
            id="conv2d-given-1d-input",
        ),
        p(
            call(X2, W2, fn=multiconv.batch_conv3d),
            ValueError,
            _lit("batch_conv3d needs x of shape (B, C_in, D, H, W)", "got x.shape=(2, 4, 6, 6)"),
            id="conv3d-given-2d-input",
        ),
        p(call(w=Arr((6, 4))), ValueError, _lit("w.ndim=2 does not fit x with 1 spatial dim(s)", "got w.shape=(6, 4)"), id="w-rank-2"),
        p(
            call(w=Arr((2, 6, 4, 3, 3))),
            ValueError,
            _lit("w.ndim=5 does not fit x with 1 spatial dim(s)", "w.shape=(2, 6, 4, 3, 3)"),
            id="w-rank-5",
        ),
        # -- batch, channels, groups ---------------------------------------------------------------
        p(call(w=Arr((3, 6, 4, 3))), ValueError, _lit("w.shape[0]=3 must equal the batch size B=2 or be 1"), id="w-batch-mismatch"),
        p(
            call(w=Arr((2, 6, 3, 3))),
            ValueError,
            _lit("w has 3 input channels but C_in // groups = 4 // 1 = 4", "w.shape=(2, 6, 3, 3)"),
            id="w-in-channels-mismatch",
        ),
        p(call(w=Arr((6, 3, 3))), ValueError, _lit("w has 3 input channels", "w.shape=(6, 3, 3)"), id="shared-w-in-channels-mismatch"),
        p(call(groups=3), ValueError, _lit("groups=3 must divide C_in=4", "x.shape=(2, 4, 8)"), id="groups-not-dividing-c-in"),
        p(
            call(Arr((2, 8, 4)), groups=3, layout="channels_last"),
            ValueError,
            _lit("groups=3 must divide C_in=4", "layout='channels_last'"),
            id="groups-not-dividing-c-in-channels-last",
        ),
        p(
            call(w=Arr((2, 3, 2, 3)), groups=2),
            ValueError,
            _lit("groups=2 must divide C_out=3", "w.shape=(2, 3, 2, 3)"),
            id="groups-not-dividing-c-out",
        ),
        p(call(groups=0), ValueError, _lit("groups=0 must be a positive int"), id="groups-zero"),
        p(call(groups=-2), ValueError, _lit("groups=-2 must be a positive int"), id="groups-negative"),
        p(call(groups=2.0), TypeError, _lit("groups=2.0 (type float) must be a positive int"), id="groups-float"),
        p(call(groups=True), TypeError, _lit("groups=True must be a positive int, not a bool"), id="groups-bool"),
        # NumPy before 2.3 (Python 3.10's) reads np.True_ as 1 under operator.index, with a DeprecationWarning
        p(call(groups=np.True_), TypeError, _lit("groups=np.True_ must be a positive int, not a bool"), id="groups-numpy-bool"),
        p(
            call(workspace_limit=np.True_),
            TypeError,
            _lit("workspace_limit=np.True_ must be None or a positive number of bytes, not a bool"),
            id="workspace-limit-numpy-bool",
        ),
        p(call(groups="2"), TypeError, _lit("groups='2' (type str) must be a positive int"), id="groups-str"),
        # -- stride, dilation ----------------------------------------------------------------------
        p(call(stride=0), ValueError, _lit("stride=0 must be a positive int or a tuple of 1 positive ints"), id="stride-zero"),
        p(call(stride=-1), ValueError, _lit("stride=-1 must be a positive int"), id="stride-negative"),
        p(call(stride=1.5), TypeError, _lit("stride=1.5 (type float) must be a positive int"), id="stride-float"),
        p(call(stride=(1, 2)), ValueError, _lit("stride=(1, 2) has 2 entries but x has 1 spatial dim(s)"), id="stride-tuple-wrong-length"),
        p(call(stride=True), TypeError, _lit("stride=True must be a positive int", "not a bool"), id="stride-bool"),
        p(call(stride="2"), TypeError, _lit("stride='2' (type str) must be a positive int"), id="stride-str"),
        p(
            call(X2, W2, stride=(1, 0)),
            ValueError,
            _lit("stride=(1, 0) must be a positive int or a tuple of 2 positive ints"),
            id="stride-2d-entry-zero",
        ),
        p(call(dilation=0), ValueError, _lit("dilation=0 must be a positive int"), id="dilation-zero"),
        p(call(dilation="2"), TypeError, _lit("dilation='2' (type str) must be a positive int"), id="dilation-str"),
        p(
            call(X2, W2, dilation=(1, 1, 1)),
            ValueError,
            _lit("dilation=(1, 1, 1) has 3 entries but x has 2 spatial dim(s)"),
            id="dilation-tuple-wrong-length",
        ),
        # -- padding -------------------------------------------------------------------------------
        p(call(padding=-1), ValueError, _lit("padding=-1 must be a non-negative int", "got a negative value"), id="padding-negative"),
        p(call(padding=((1, -1),)), ValueError, _lit("padding=((1, -1),) must be", "got a negative value"), id="padding-pair-negative"),
        p(
            call(padding="bogus"),
            ValueError,
            _lit("padding='bogus' is not supported", "'valid', 'same', 'causal', 'full'"),
            id="padding-bogus-string",
        ),
        p(
            call(padding=(1, 2)),
            ValueError,
            _lit("padding=(1, 2) has 2 entries but x has 1 spatial dim(s)", "for asymmetric padding of a 1-D input write ((1, 2),)"),
            id="padding-1d-pair-hint",
        ),
        p(
            call(X2, W2, padding=(1, 1, 1)),
            ValueError,
            _lit("padding=(1, 1, 1) has 3 entries but x has 2 spatial dim(s)"),
            id="padding-tuple-wrong-length",
        ),
        p(
            call(padding=((1, 2, 3),)),
            ValueError,
            _lit("padding=((1, 2, 3),) has the entry (1, 2, 3)", "(lo, hi) pair"),
            id="padding-pair-with-3-entries",
        ),
        p(call(padding=1.5), TypeError, _lit("padding=1.5 (type float) must be a non-negative int"), id="padding-float"),
        p(call(padding=None), TypeError, _lit("padding=None (type NoneType) must be a non-negative int"), id="padding-none"),
        p(call(padding=True), TypeError, _lit("padding=True must be a non-negative int", "not a bool"), id="padding-bool"),
        p(
            call(padding_mode="mirror"),
            ValueError,
            _lit("padding_mode='mirror' is not supported", "'zeros', 'reflect', 'replicate', 'circular'"),
            id="padding-mode-mirror",
        ),
        p(
            call(padding_mode=None),
            TypeError,
            _lit("padding_mode=None (type NoneType) must be a string", "'zeros'"),
            id="padding-mode-none",
        ),
        p(
            call(padding=8, padding_mode="reflect"),
            ValueError,
            _lit("padding_mode='reflect' needs padding smaller than the input", "size 8", "(lo, hi)=(8, 8)", "x.shape=(2, 4, 8)"),
            id="reflect-padding-equal-to-input",
        ),
        p(
            call(Arr((2, 4, 2)), Arr((2, 6, 4, 5)), padding="same", padding_mode="reflect"),
            ValueError,
            _lit("padding_mode='reflect' needs padding smaller than the input", "size 2", "(lo, hi)=(2, 2)"),
            id="reflect-same-padding-too-large",
        ),
        p(
            call(padding=9, padding_mode="circular"),
            ValueError,
            _lit("padding_mode='circular' needs padding no larger than the input", "size 8", "(lo, hi)=(9, 9)"),
            id="circular-padding-larger-than-input",
        ),
        # -- kernel longer than the padded input ---------------------------------------------------
        p(
            call(w=Arr((2, 6, 4, 9))),
            ValueError,
            _lit("effective kernel is longer than the padded input", "1*(9-1)+1 = 9 > L+lo+hi = 8+0+0 = 8", "w.shape=(2, 6, 4, 9)"),
            id="kernel-longer-than-input",
        ),
        p(
            call(dilation=4),
            ValueError,
            _lit("effective kernel is longer than the padded input", "4*(3-1)+1 = 9 > L+lo+hi = 8+0+0 = 8"),
            id="dilated-kernel-longer-than-input",
        ),
        p(
            call(w=Arr((2, 6, 4, 9)), padding="valid"),
            ValueError,
            _lit("effective kernel is longer than the padded input", "= 9 > L+lo+hi", "padding='valid'"),
            id="valid-kernel-longer-than-input",
        ),
        p(
            call(Arr((2, 4, 6, 2)), W2),
            ValueError,
            _lit("effective kernel is longer than the padded input in spatial dim 1", "= 3 > L+lo+hi = 2+0+0 = 2"),
            id="kernel-longer-than-input-2d-second-dim",
        ),
        # -- dtypes --------------------------------------------------------------------------------
        p(call(Arr((2, 4, 8), "int64")), TypeError, _lit("x has dtype int64", "cast it first"), id="x-int-dtype"),
        p(call(Arr((2, 4, 8), "bool")), TypeError, _lit("x has dtype bool", "cast it first"), id="x-bool-dtype"),
        p(call(w=Arr((2, 6, 4, 3), "int32")), TypeError, _lit("w has dtype int32", "cast it first"), id="w-int-dtype"),
        p(call(bias=Arr((6,), "int64")), TypeError, _lit("bias has dtype int64", "cast it first"), id="bias-int-dtype"),
        p(
            call(Arr((2, 4, 8), "object")),
            TypeError,
            _lit("x has dtype object", "supported: float16, float32, float64"),
            id="x-object-dtype",
        ),
        p(
            call(Arr((2, 4, 8), "float32"), W1, Arr((6,), "float32")),
            TypeError,
            _lit("x.dtype=float32, w.dtype=float64, bias.dtype=float32"),
            id="mixed-dtypes-float32-float64",
        ),
        p(call(Arr((2, 4, 8), "complex128")), TypeError, _lit("x.dtype=complex128, w.dtype=float64"), id="mixed-dtypes-complex-float"),
        p(
            call(bias=Arr((6,), "float32")),
            TypeError,
            _lit("x.dtype=float64, w.dtype=float64, bias.dtype=float32"),
            id="bias-dtype-mismatch",
        ),
        # -- bias shapes ---------------------------------------------------------------------------
        p(call(bias=Arr((5,))), ValueError, _lit("bias.shape=(5,) must be (C_out,)=(6,)"), id="bias-wrong-shape"),
        p(call(bias=Arr((2, 6, 1))), ValueError, _lit("bias.shape=(2, 6, 1) must be (C_out,)=(6,) or (B, C_out)=(2, 6)"), id="bias-rank-3"),
        p(call(bias=Arr((3, 6))), ValueError, _lit("bias.shape=(3, 6) must be", "(B, C_out)=(2, 6)"), id="bias-batch-mismatch"),
        # -- layout, method, backend, flip ---------------------------------------------------------
        p(
            call(layout="NCHW"),
            ValueError,
            _lit("layout='NCHW' is not supported; expected one of 'channels_first', 'channels_last'"),
            id="layout-nchw",
        ),
        p(call(layout=1), TypeError, _lit("layout=1 (type int) must be a string", "'channels_first'"), id="layout-int"),
        p(call(method="bogus"), ValueError, _lit("method='bogus' is not supported; expected one of 'auto', 'einsum'"), id="method-bogus"),
        p(
            call(method="grouped"),
            ValueError,
            _lit(
                "method='grouped' is not supported; expected one of 'auto', 'einsum'",
                "'grouped' is an engine of the torch backend: pass backend='torch'",
            ),
            id="method-grouped-on-numpy",
        ),
        p(
            call(method="loop"),
            ValueError,
            _lit(
                "method='loop' is not supported; expected one of 'auto', 'einsum'",
                "'loop' is an engine of the jax backend: pass backend='jax'",
            ),
            id="method-loop-on-numpy",
        ),
        p(call(method=None), TypeError, _lit("method=None (type NoneType) must be a string"), id="method-none"),
        p(
            call(backend="tensorflow"),
            ValueError,
            _lit("backend='tensorflow' is not supported; expected None or one of 'numpy', 'torch', 'jax'"),
            id="backend-tensorflow",
        ),
        p(call(backend=3), TypeError, _lit("backend=3 must be None or a string", "'numpy'"), id="backend-int"),
        p(call(flip="yes"), TypeError, _lit("flip='yes' (type str) must be a bool"), id="flip-str"),
        p(call(flip=None), TypeError, _lit("flip=None (type NoneType) must be a bool"), id="flip-none"),
        # -- not arrays ----------------------------------------------------------------------------
        p(call([[[1.0] * 8] * 4] * 2), TypeError, _lit("x " + _NOT_ARRAY + "builtins.list"), id="x-python-list"),
        p(call(w=2.0), TypeError, _lit("w " + _NOT_ARRAY + "builtins.float"), id="w-python-scalar"),
        p(call(bias=[0.0] * 6), TypeError, _lit("bias " + _NOT_ARRAY + "builtins.list"), id="bias-python-list"),
        # -- empty dims ----------------------------------------------------------------------------
        p(call(Arr((2, 4, 0))), ValueError, _lit("x has an empty spatial dim (x.shape=(2, 4, 0)"), id="empty-spatial-dim"),
        p(call(Arr((2, 0, 8)), Arr((2, 6, 0, 3))), ValueError, _lit("x has C_in=0 channels", "x.shape=(2, 0, 8)"), id="zero-channels"),
        p(
            call(Arr((2, 8, 0)), Arr((2, 6, 0, 3)), layout="channels_last"),
            ValueError,
            _lit("x has C_in=0 channels (layout='channels_last', x.shape=(2, 8, 0))"),
            id="zero-channels-channels-last",
        ),
        p(
            call(w=Arr((2, 6, 4, 0))),
            ValueError,
            _lit("w.shape=(2, 6, 4, 0) has an empty output-channel or kernel dim"),
            id="w-empty-kernel",
        ),
        p(
            call(w=Arr((2, 0, 4, 3))),
            ValueError,
            _lit("w.shape=(2, 0, 4, 3) has an empty output-channel or kernel dim"),
            id="w-zero-out-channels",
        ),
    ]


def _torch_cases() -> list[ParameterSet]:
    import torch  # only where torch is installed

    p = pytest.param
    xt, wt = Arr((2, 4, 8), on="torch"), Arr((2, 6, 4, 3), on="torch")
    return [
        p(
            call(Arr((2, 4, 8), "int64", "torch"), wt),
            TypeError,
            _lit("x has dtype int64", "cast it first", "supported on torch"),
            id="torch-x-int-dtype",
        ),
        p(call(Arr((2, 4, 8), "bool", "torch"), wt), TypeError, _lit("x has dtype bool", "cast it first"), id="torch-x-bool-dtype"),
        p(
            call(Arr((2, 4, 8), "float8_e4m3fn", "torch"), Arr((2, 6, 4, 3), "float8_e4m3fn", "torch")),
            TypeError,
            _lit("x has dtype float8_e4m3fn, which torch arrays do not support"),
            id="torch-x-float8-dtype",
        ),
        p(call(xt, Arr((2, 6, 4, 3), "int64")), TypeError, _lit("w has dtype int64", "cast it first"), id="torch-x-numpy-int-w"),
        p(
            call(xt, Arr((2, 6, 4, 3), "float32")),
            TypeError,
            _lit("x.dtype=float64, w.dtype=float32, bias.dtype=None"),
            id="torch-x-numpy-float32-w",
        ),
        p(
            call(xt, wt, method="einsum"),
            ValueError,
            _lit("method='einsum' is not supported; expected one of 'auto', 'grouped'"),
            id="method-einsum-on-torch",
        ),
        p(
            call(Arr((2, 4, 8), on="torch", device="meta"), wt),
            ValueError,
            _lit("x, w and bias must be on one device", "x is on meta, w is on cpu"),
            id="torch-x-w-on-different-devices",
        ),
        p(
            call(xt, wt, Arr((6,), on="torch", device="meta")),
            ValueError,
            _lit("must be on one device", "bias is on meta"),
            id="torch-bias-on-other-device",
        ),
        p(
            call(Arr((2, 4, 8), on="torch", requires_grad=True), wt, backend="numpy"),
            TypeError,
            _lit("x requires grad", "backend='torch'"),
            id="torch-requires-grad-on-numpy-backend",
        ),
        # A sparse tensor is a torch.Tensor, but no dense convolution takes it.
        p(call(Arr((2, 4, 8), on="torch", sparse=True), wt), TypeError, r"\bx\b.*sparse", id="torch-x-sparse"),
        p(call(stride=torch.tensor([2])), TypeError, _lit("stride=tensor([2]) (type Tensor)", "not an array"), id="torch-stride-tensor"),
    ]


def _jax_cases() -> list[ParameterSet]:
    p = pytest.param
    wj = Arr((2, 6, 4, 3), on="jax")
    return [
        p(
            call(Arr((2, 4, 8), "int32", "jax"), wj),
            TypeError,
            _lit("x has dtype int32", "cast it first", "supported on jax"),
            id="jax-x-int-dtype",
        ),
        p(call(Arr((2, 4, 8), "bool", "jax"), wj), TypeError, _lit("x has dtype bool", "cast it first"), id="jax-x-bool-dtype"),
        p(
            call(Arr((2, 4, 8), on="jax"), wj, method="grouped"),
            ValueError,
            _lit("method='grouped' is not supported; expected one of 'auto', 'vmap'"),
            id="method-grouped-on-jax",
        ),
        p(_under_jit("numpy"), TypeError, _lit("x is a JAX tracer", "backend='jax'"), id="jax-tracer-on-numpy-backend"),
        p(_numpy_bfloat16, TypeError, _lit("x has dtype bfloat16, which numpy arrays do not support"), id="numpy-bfloat16"),
    ]


def _torch_jax_cases() -> list[ParameterSet]:
    p = pytest.param
    return [
        p(
            call(Arr((2, 4, 8), on="torch"), Arr((2, 6, 4, 3), on="jax")),
            TypeError,
            _lit("x is a torch array, w is a jax array"),
            id="mixed-torch-x-jax-w",
        ),
        p(
            call(Arr((2, 4, 8), on="jax"), Arr((2, 6, 4, 3), on="jax"), Arr((6,), on="torch")),
            TypeError,
            _lit("x is a jax array", "bias is a torch array"),
            id="mixed-jax-x-torch-bias",
        ),
        p(_under_jit("torch"), TypeError, _lit("x is a JAX tracer", "backend='jax'"), id="jax-tracer-on-torch-backend"),
    ]


def _error_cases() -> list[ParameterSet]:
    """The error table, with framework rows only for the requested backends."""
    cases = _numpy_cases()
    if "torch" in BACKENDS:
        cases += _torch_cases()
    if "jax" in BACKENDS:
        cases += _jax_cases()
    if "torch" in BACKENDS and "jax" in BACKENDS:
        cases += _torch_jax_cases()
    return cases


ERROR_CASES = _error_cases()


@pytest.mark.parametrize(("make", "expected", "pattern"), ERROR_CASES)
def test_bad_input_raises(make: Callable[[], object], expected: type[Exception], pattern: str) -> None:
    with pytest.raises(Exception) as excinfo:  # the exact type is checked below
        make()
    assert type(excinfo.value) is expected, f"{type(excinfo.value).__module__}.{type(excinfo.value).__name__}: {excinfo.value}"
    assert re.search(pattern, str(excinfo.value)), f"{pattern!r} not found in: {excinfo.value}"
    assert_raised_by_multiconv(excinfo)


def test_error_table_is_large_and_well_formed() -> None:
    assert len(ERROR_CASES) >= 40
    ids = [case.id for case in ERROR_CASES]
    assert len(set(ids)) == len(ids), "duplicate row ids"
    for case in ERROR_CASES:
        make, expected, pattern = case.values
        assert isinstance(make, (Call, FunctionType)), case.id
        assert expected in (ValueError, TypeError), case.id
        assert isinstance(pattern, str)
        re.compile(pattern)


# -- the same bad argument fails the same way on every backend ---------------------------------

PORTABLE_CASES = [
    pytest.param(call(groups=3), ValueError, _lit("groups=3 must divide C_in=4"), True, id="groups-not-dividing-c-in"),
    pytest.param(call(stride=0), ValueError, _lit("stride=0 must be a positive int"), True, id="stride-zero"),
    pytest.param(call(stride="2"), TypeError, _lit("stride='2' (type str)"), True, id="stride-str"),
    pytest.param(call(padding="bogus"), ValueError, _lit("padding='bogus' is not supported"), True, id="padding-bogus-string"),
    pytest.param(call(padding=(1, 2)), ValueError, _lit("write ((1, 2),)"), True, id="padding-1d-pair-hint"),
    pytest.param(call(padding_mode="mirror"), ValueError, _lit("padding_mode='mirror' is not supported"), True, id="padding-mode-mirror"),
    pytest.param(call(layout="NCHW"), ValueError, _lit("layout='NCHW' is not supported"), True, id="layout-nchw"),
    pytest.param(call(flip="yes"), TypeError, _lit("flip='yes' (type str) must be a bool"), True, id="flip-str"),
    pytest.param(
        call(Arr((2, 4, 8), "float32"), W1, Arr((6,), "float32")),
        TypeError,
        _lit("x.dtype=float32, w.dtype=float64, bias.dtype=float32"),
        True,
        id="mixed-dtypes",
    ),
    pytest.param(call(w=Arr((3, 6, 4, 3))), ValueError, _lit("w.shape[0]=3 must equal the batch size B=2"), True, id="w-batch-mismatch"),
    pytest.param(call(bias=Arr((5,))), ValueError, _lit("bias.shape=(5,)"), True, id="bias-wrong-shape"),
    pytest.param(call(w=Arr((2, 6, 4, 9))), ValueError, _lit("= 9 > L+lo+hi = 8+0+0 = 8"), True, id="kernel-longer-than-input"),
    pytest.param(
        call(padding=8, padding_mode="reflect"), ValueError, _lit("padding_mode='reflect'", "(8, 8)"), True, id="reflect-too-large"
    ),
    pytest.param(call(Arr((2, 4, 0))), ValueError, _lit("x has an empty spatial dim"), True, id="empty-spatial-dim"),
    # The two below list what the backend supports, so only the pattern is shared.
    pytest.param(call(Arr((2, 4, 8), "int64")), TypeError, _lit("x has dtype int64", "cast it first"), False, id="x-int-dtype"),
    pytest.param(
        call(method="bogus"),
        ValueError,
        r"method='bogus' is not supported; expected one of 'auto', '(einsum|grouped|vmap)'",
        False,
        id="method-bogus",
    ),
]


@pytest.mark.parametrize(("make", "expected", "pattern", "same_text"), PORTABLE_CASES)
def test_same_error_on_every_backend(backend: str, make: Call, expected: type[Exception], pattern: str, same_text: bool) -> None:
    with pytest.raises(expected) as on_numpy:
        make.on_backend("numpy")()
    with pytest.raises(Exception) as excinfo:  # the exact type is checked below
        make.on_backend(backend)()
    assert type(excinfo.value) is expected, f"{type(excinfo.value).__name__}: {excinfo.value}"
    assert re.search(pattern, str(excinfo.value)), f"{pattern!r} not found in: {excinfo.value}"
    if same_text:
        assert str(excinfo.value) == str(on_numpy.value)
    assert_raised_by_multiconv(excinfo)


# -- no framework error leaks through ----------------------------------------------------------

LEAKY_ARGUMENTS = [
    pytest.param("stride", "2", id="stride-str"),
    pytest.param("stride", (1.5,), id="stride-tuple-of-float"),
    pytest.param("dilation", None, id="dilation-none"),
    pytest.param("padding", 1.5, id="padding-float"),
    pytest.param("padding", ((0, "1"),), id="padding-pair-of-str"),
    pytest.param("groups", 2.0, id="groups-float"),
    pytest.param("stride", np.array([1, 2]), id="stride-numpy-array"),
]


@pytest.mark.parametrize(("name", "value"), LEAKY_ARGUMENTS)
def test_type_errors_come_from_multiconv(backend: str, name: str, value: object) -> None:
    """Where ``operator.index`` (or a framework) would fail, multiconv raises its own error ``from None``."""
    kwargs: dict[str, Any] = {name: value}
    with pytest.raises(TypeError) as excinfo:
        call(**kwargs).on_backend(backend)()
    assert type(excinfo.value) is TypeError
    message = str(excinfo.value)
    assert f"{name}=" in message
    assert "cannot be interpreted as an integer" not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__suppress_context__
    assert Path(str(excinfo.traceback[-1].path)).resolve() == PACKAGE_DIR / "_spec.py"


def test_oversized_stride_gives_a_result_or_a_multiconv_error(backend: str) -> None:
    """A stride beyond int64 is still a positive int: compute (one output position) or say why not."""
    huge = 2**63
    make = call(stride=huge).on_backend(backend)
    outcome: object
    try:
        outcome = make()
    except Exception as error:  # noqa: BLE001  (any framework error type here is the bug this test catches)
        outcome = error
    if isinstance(outcome, Exception):
        assert type(outcome) in (ValueError, TypeError), f"{type(outcome).__module__}.{type(outcome).__name__}: {outcome}"
        assert f"stride={huge}" in str(outcome), str(outcome)
    else:
        expected = multiconv.batch_conv(X1.build(), W1.build(), stride=8)
        assert tuple(outcome.shape) == expected.shape  # type: ignore[attr-defined]
