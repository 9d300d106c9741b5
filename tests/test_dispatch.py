"""Which backend computes: ownership of arrays, mixing with NumPy, tracers, ``backend=``."""

from __future__ import annotations

import collections
import importlib
import inspect
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from support import BACKENDS, as_backend, to_numpy

import multiconv
from multiconv import _api, _calibration, _cost, _dispatch
from multiconv.testing import assert_matches_reference

needs_torch = pytest.mark.skipif("torch" not in BACKENDS, reason="torch backend not requested")
needs_jax = pytest.mark.skipif("jax" not in BACKENDS, reason="JAX backend not requested")


def readme_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.standard_normal((32, 4, 16)).astype(np.float32), rng.standard_normal((32, 8, 4, 1)).astype(np.float32)


def test_owner_is_found_without_importing(backend: str) -> None:
    x, w = readme_arrays()
    assert _dispatch.owner({"x": as_backend(x, backend), "w": as_backend(w, backend), "bias": None}) == backend


@pytest.mark.parametrize("other", [b for b in BACKENDS if b != "numpy"])
@pytest.mark.parametrize("numpy_arg", ["x", "w", "bias"])
def test_numpy_arrays_join_the_other_framework(other: str, numpy_arg: str) -> None:
    x, w = readme_arrays()
    bias = np.ones(8, np.float32)
    arrays = {"x": x, "w": w, "bias": bias}
    args = {name: a if name == numpy_arg else as_backend(a, other) for name, a in arrays.items()}
    y = multiconv.batch_conv(args["x"], args["w"], args["bias"])
    assert _dispatch.framework_of(y) == other
    expected = multiconv.batch_conv(x, w, bias)
    np.testing.assert_allclose(to_numpy(y), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source", BACKENDS)
@pytest.mark.parametrize("target", BACKENDS)
def test_backend_override_returns_the_input_type(source: str, target: str) -> None:
    x, w = readme_arrays()
    xs, ws = as_backend(x, source), as_backend(w, source)
    y = multiconv.batch_conv(xs, ws, padding="same", backend=target)
    assert _dispatch.framework_of(y) == source
    assert_matches_reference(y, xs, ws, padding="same")


@needs_torch
def test_override_refuses_tensors_that_require_grad() -> None:
    torch = importlib.import_module("torch")
    x, w = readme_arrays()
    xt = torch.from_numpy(x).requires_grad_()
    other = next((b for b in BACKENDS if b != "torch"), None)
    if other is None:
        pytest.skip("needs a second backend")
    with pytest.raises(TypeError, match="x requires grad"):
        multiconv.batch_conv(xt, torch.from_numpy(w), backend=other)
    with torch.no_grad():
        y = multiconv.batch_conv(xt, torch.from_numpy(w), backend=other)
    assert isinstance(y, torch.Tensor)


@needs_jax
def test_jax_tracers_are_jax_arrays() -> None:
    jax = importlib.import_module("jax")
    x, w = readme_arrays()
    xj, wj = as_backend(x, "jax"), as_backend(w, "jax")
    expected = to_numpy(multiconv.batch_conv(xj, wj))

    seen: list[str | None] = []

    def f(a: object, b: object) -> object:
        seen.append(_dispatch.framework_of(a))
        return multiconv.batch_conv(a, b)

    np.testing.assert_allclose(to_numpy(jax.jit(f)(xj, wj)), expected, rtol=1e-6)
    np.testing.assert_allclose(to_numpy(jax.vmap(f)(xj[None], wj[None])[0]), expected, rtol=1e-6)
    jax.grad(lambda a: f(a, wj).sum())(xj)  # type: ignore[attr-defined]
    jax.jvp(lambda a: f(a, wj), (xj,), (xj,))
    assert seen == ["jax"] * 4


@needs_jax
def test_tracer_with_foreign_backend_is_refused() -> None:
    jax = importlib.import_module("jax")
    other = next((b for b in BACKENDS if b != "jax"), None)
    if other is None:
        pytest.skip("needs a second backend")
    x, w = readme_arrays()
    with pytest.raises(TypeError, match="JAX tracer"):
        jax.jit(lambda a, b: multiconv.batch_conv(a, b, backend=other))(as_backend(x, "jax"), as_backend(w, "jax"))


def test_unknown_objects_are_not_cached_as_arrays() -> None:
    assert _dispatch.framework_of([1.0]) is None
    assert _dispatch.framework_of(np.ones(1)) == "numpy"
    assert list not in _dispatch._TYPE_CACHE


def test_missing_framework_names_the_extra() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["jax"] = None  # as if JAX were not installed
        import numpy as np
        import multiconv
        try:
            multiconv.batch_conv(np.ones((1, 1, 4)), np.ones((1, 1, 1, 2)), backend="jax")
        except ModuleNotFoundError as error:
            print(error)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "pip install 'multiconv[jax]'" in out


def test_numpy_use_leaves_frameworks_unimported() -> None:
    """``import multiconv`` and a NumPy call must not import torch or JAX."""
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import multiconv
        import multiconv.testing
        x = np.ones((32, 4, 16), np.float32)
        w = np.ones((32, 8, 4, 1), np.float32)
        y = multiconv.batch_conv(x, w, padding="same", padding_mode="reflect")
        multiconv.testing.assert_matches_reference(y, x, w, padding="same", padding_mode="reflect")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "jax", "jaxlib"))
        print(",".join(loaded) or "none")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "none"


@pytest.mark.parametrize("target", BACKENDS)
def test_override_result_is_a_writable_fresh_array(target: str) -> None:
    x, w = readme_arrays()
    y = multiconv.batch_conv(x, w, backend=target)
    assert y.flags.writeable
    y += 1  # a NumPy user may write into the result


@pytest.mark.parametrize("target", BACKENDS)
def test_non_native_byte_order(target: str) -> None:
    x, w = readme_arrays()
    swapped = x.astype(x.dtype.newbyteorder(">"))
    assert_matches_reference(multiconv.batch_conv(swapped, w, backend=target), swapped, w, dtype="float32")


@needs_torch
def test_lazy_conjugate_and_negative_tensors_leave_torch() -> None:
    torch = importlib.import_module("torch")
    other = next((b for b in BACKENDS if b != "torch"), None)
    if other is None:
        pytest.skip("needs a second backend")
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((2, 3, 7)) + 1j * rng.standard_normal((2, 3, 7)))
    w = torch.from_numpy(rng.standard_normal((2, 4, 3, 3)) + 1j * rng.standard_normal((2, 4, 3, 3)))
    for xs in (x.conj(), -x.conj().imag.to(torch.complex128)):
        y = multiconv.batch_conv(xs, w, backend=other)
        np.testing.assert_allclose(to_numpy(y), to_numpy(multiconv.batch_conv(xs.resolve_conj().resolve_neg(), w)), rtol=1e-12)


@needs_torch
def test_numpy_big_endian_and_bfloat16_join_torch() -> None:
    torch = importlib.import_module("torch")
    x, w = readme_arrays()
    y = multiconv.batch_conv(x.astype(">f4"), torch.from_numpy(w))
    assert_matches_reference(y, torch.from_numpy(x), w)
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes arrives with JAX")
    yb = multiconv.batch_conv(x.astype(ml_dtypes.bfloat16), torch.from_numpy(w).to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16


def test_plan_defaults_match_the_entry_points() -> None:
    """The fast path passes the keyword arguments positionally, in the order of ``_api._DEFAULTS``."""
    for entry in (multiconv.batch_conv, multiconv.batch_conv1d, multiconv.batch_conv2d, multiconv.batch_conv3d):
        keyword_only = [p for p in inspect.signature(entry).parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        assert [(p.name, p.default) for p in keyword_only] == list(_api._DEFAULTS.items())
        # the very objects: a call that gives no argument is recognised by identity
        assert all(p.default is _api._DEFAULTS[p.name] for p in keyword_only)


@pytest.mark.parametrize(
    ("name", "valid", "invalid"),
    [
        ("stride", 1, True),
        ("stride", 1, 1.0),
        ("flip", True, 1),
        ("groups", 1, True),
        ("padding", ((1, 1),), ((1, True),)),
        ("dilation", (1,), (1.0,)),
    ],
)
def test_cached_plans_do_not_accept_equal_values_of_another_type(name: str, valid: Any, invalid: Any) -> None:
    """``True == 1 == 1.0``, but only one of them is a valid argument: the plan cache keys by type too."""
    x, w = readme_arrays()
    multiconv.batch_conv(x, w, **{name: valid})  # cached now
    with pytest.raises(TypeError, match=name):
        multiconv.batch_conv(x, w, **{name: invalid})


def test_cached_plans_tell_namedtuple_items_of_another_type_apart() -> None:
    """A tuple subclass keys the cache by its items' types too: ``P(1)`` cached must not pass ``P(True)``."""
    pair = collections.namedtuple("pair", "lo hi")  # noqa: PYI024  (a plain namedtuple is what users pass)
    x, w = readme_arrays()
    multiconv.batch_conv(x, w, padding=(pair(1, 1),))  # cached now
    with pytest.raises(TypeError, match="padding"):
        multiconv.batch_conv(x, w, padding=(pair(lo=1, hi=True),))


@pytest.mark.parametrize(
    "arguments",
    [{}, {"stride": 1, "flip": False}, {"padding": "valid", "method": "auto"}],
    ids=["none", "defaults-given", "others"],
)
def test_a_repeated_call_finds_its_plan_without_planning(monkeypatch: pytest.MonkeyPatch, arguments: dict[str, Any]) -> None:
    """The entry points' own lookup and the planner's key plans alike: a second call never plans again."""
    x, w = readme_arrays()
    multiconv.batch_conv(x, w, **arguments)
    first = _api.plan(x, w, **arguments)

    def planned(*args: object) -> None:
        raise AssertionError(f"planned again: {args}")

    monkeypatch.setattr(_api, "_resolve", planned)
    assert np.array_equal(multiconv.batch_conv(x, w, **arguments), first.run(x, w, None))


def test_arguments_equal_to_the_defaults_but_of_another_type_never_find_the_defaults_plan() -> None:
    """A call with no arguments keys by its arrays alone; ``stride=True`` or ``flip=0`` must not find that plan."""
    x, w = readme_arrays()
    multiconv.batch_conv(x, w)
    assert (None, (_dispatch.signature(x), _dispatch.signature(w), None)) in _api._PLAN_CACHE
    wrongs: list[dict[str, Any]] = [{"stride": True}, {"flip": 0}, {"groups": 1.0}, {"padding": False}]
    for wrong in wrongs:
        with pytest.raises(TypeError):
            multiconv.batch_conv(x, w, **wrong)


def test_a_repeated_call_reuses_its_plan() -> None:
    x, w = readme_arrays()
    multiconv.batch_conv(x, w, padding=[0])
    first = _api.plan(x, w, padding=(0,))
    assert _api.plan(x, w, padding=(0,)) is first
    assert _api.plan(x, w, padding=(0,), method="shift").spec.method == "shift"


@needs_torch
def test_torch_auto_chooses_for_training_when_autograd_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """float64, 64 -> 64 channels, L 1024, K 3: training ranks the engines by their modelled training steps.

    Whichever engine the calibration picks for the forward, a training model (the fit of
    timed steps) that made it train at a hundred times the cost of the others sends training
    to another engine.
    """
    torch = importlib.import_module("torch")
    monkeypatch.setattr(_api, "_PLAN_CACHE", {})  # plans made under the patched model stay here
    x = torch.zeros(64, 64, 1024, dtype=torch.float64)
    w = torch.zeros(64, 64, 64, 3, dtype=torch.float64)
    forward = _api.plan(x, w, padding="same").spec.method
    profile = _cost.cpu_profile()
    model = _calibration.TRAINING_COEFFICIENTS[profile]["torch"]
    monkeypatch.setitem(model, forward, tuple(100 * c for c in model[forward]))
    monkeypatch.setattr(_api, "_PLAN_CACHE", {})
    assert _api.plan(x, w, padding="same").spec.method == forward
    trained = _api.plan(x.requires_grad_(), w, padding="same").spec
    assert trained.training
    assert trained.method != forward
    with torch.no_grad():  # nothing is recorded: the forward choice again
        assert _api.plan(x, w, padding="same").spec.method == forward
    assert _api.plan(x.detach(), w.requires_grad_(), padding="same").spec.method == trained.method
    y = multiconv.batch_conv(x, w, padding="same")
    y.sum().backward()
    assert x.grad is not None
    assert w.grad is not None
    with torch.no_grad():
        assert _api.plan(x, w, padding="same", method="matmul").spec.training is False
