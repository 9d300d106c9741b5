"""``torch.compile`` and ``torch.export``: one custom operator, no graph break, no guard on the batch size.

Under tracing, ``batch_conv`` becomes ``torch.ops.multiconv.batch_conv`` (see
``multiconv.backends.torch``): the compiled graph holds no guard on B, an exported
program runs at any B, and both give the eager result and gradients.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
from support import BACKENDS

import multiconv

pytestmark = [
    pytest.mark.skipif("torch" not in BACKENDS, reason="PyTorch backend not requested"),
    # Inductor's own imports use a deprecated torch.jit API (PyTorch's warning, not ours).
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]

torch: Any = importlib.import_module("torch") if "torch" in BACKENDS else None

#: Argument sets exercised under compilation (the eager path is the conformance suite's business).
CASES: dict[str, dict[str, Any]] = {
    "same": {"padding": "same"},
    "reflect-stride-groups-bias": {"padding": 2, "padding_mode": "reflect", "stride": 2, "groups": 2, "bias": "per_sample"},
    "channels-last-shared-bias-flip": {"layout": "channels_last", "padding": ((1, 2),), "flip": True, "bias": "shared"},
    "broadcast-weight-dilated-fft": {"weight": "broadcast", "dilation": 2, "padding": "causal", "method": "fft"},
    "conv2d-circular": {"spatial": 2, "padding": 1, "padding_mode": "circular", "method": "matmul"},
}


def make(batch: int, case: dict[str, Any], *, seed: int = 0) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Tensors (requiring grad) and keyword arguments for one case at batch size ``batch``."""
    case = dict(case)
    spatial, bias_kind, weight_kind = case.pop("spatial", 1), case.pop("bias", None), case.pop("weight", "per_sample")
    groups = case.get("groups", 1)
    rng = np.random.default_rng(seed)
    sizes = (12,) * spatial
    x = rng.standard_normal((batch, 4, *sizes))
    if case.get("layout") == "channels_last":
        x = np.moveaxis(x, 1, -1)
    lead = {"per_sample": (batch,), "broadcast": (1,), "shared": ()}[weight_kind]
    w = rng.standard_normal((*lead, 6, 4 // groups, *(3,) * spatial))
    bias = {None: None, "per_sample": rng.standard_normal((batch, 6)), "shared": rng.standard_normal(6)}[bias_kind]
    tensors = [None if a is None else torch.tensor(a, requires_grad=True) for a in (x, w, bias)]
    return tensors[0], tensors[1], tensors[2], case


def eager_and_grads(fn: Any, x: Any, w: Any, bias: Any, kwargs: dict[str, Any]) -> tuple[Any, list[Any]]:
    """``fn``'s result and the gradients of a fixed scalar function of it."""
    y = fn(x, w, bias, **kwargs)
    inputs = [a for a in (x, w, bias) if a is not None]
    grads = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)).sum(), inputs)
    return y.detach(), list(grads)


def assert_same(got: tuple[Any, list[Any]], want: tuple[Any, list[Any]]) -> None:
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    for g, e in zip(got[1], want[1], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    if torch is not None:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()


def graphs() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def test_one_graph_for_every_batch_size_with_inductor() -> None:
    """fullgraph=True (no graph break) and dynamic=True: B = 7, then 64 and 3 reuse the graph."""
    compiled = torch.compile(multiconv.batch_conv, fullgraph=True, dynamic=True)
    for batch in (7, 64, 3):
        x, w, bias, kwargs = make(batch, CASES["same"], seed=batch)
        assert_same(eager_and_grads(compiled, x, w, bias, kwargs), eager_and_grads(multiconv.batch_conv, x, w, bias, kwargs))
    assert graphs() == 1


def test_batch_size_one_shares_the_graph_when_sizes_are_not_specialised() -> None:
    """B = 1 is specialised by PyTorch's own 0/1 rule; with size-oblivious sizes 1, 7 and 64 share one graph."""
    config = importlib.import_module("torch.fx.experimental._config")
    with config.patch(backed_size_oblivious=True):
        compiled = torch.compile(multiconv.batch_conv, fullgraph=True, dynamic=True)
        for batch in (1, 7, 64):
            x, w, bias, kwargs = make(batch, CASES["same"], seed=batch)
            assert_same(eager_and_grads(compiled, x, w, bias, kwargs), eager_and_grads(multiconv.batch_conv, x, w, bias, kwargs))
    assert graphs() == 1


@pytest.mark.parametrize("name", CASES)
def test_compiled_arguments_match_eager(name: str) -> None:
    compiled = torch.compile(multiconv.batch_conv, fullgraph=True, dynamic=True, backend="aot_eager")
    for batch in (5, 9):
        x, w, bias, kwargs = make(batch, CASES[name], seed=batch)
        assert_same(eager_and_grads(compiled, x, w, bias, kwargs), eager_and_grads(multiconv.batch_conv, x, w, bias, kwargs))
    assert graphs() == 1


def test_compiled_model_with_a_hypernetwork() -> None:
    """The use case: weights made per sample by a small network, trained through the compiled call."""
    hyper = torch.nn.Linear(3, 8 * 4 * 3, dtype=torch.float64)

    def model(x: Any, z: Any) -> Any:
        return multiconv.batch_conv1d(x, hyper(z).reshape(-1, 8, 4, 3), padding="same").square().mean()

    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for batch in (6, 11):
        x, z = torch.randn(batch, 4, 20, dtype=torch.float64), torch.randn(batch, 3, dtype=torch.float64)
        loss = compiled(x, z)
        got = torch.autograd.grad(loss, list(hyper.parameters()))
        want = torch.autograd.grad(model(x, z), list(hyper.parameters()))
        torch.testing.assert_close(loss, model(x, z))
        for g, e in zip(got, want, strict=True):
            torch.testing.assert_close(g, e)
    assert graphs() == 1


def test_invalid_arguments_fail_when_the_graph_is_traced() -> None:
    compiled = torch.compile(multiconv.batch_conv, fullgraph=True, dynamic=True, backend="aot_eager")
    x, w = torch.randn(4, 4, 10), torch.randn(4, 6, 4, 3)
    with pytest.raises(Exception, match="groups=3") as raised:
        compiled(x, w, groups=3)
    assert isinstance(raised.value, (ValueError, RuntimeError))  # dynamo may wrap the ValueError


class _Module(torch.nn.Module if torch is not None else object):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x: Any, w: Any, bias: Any) -> Any:
        return multiconv.batch_conv(x, w, bias, **self.kwargs)


@pytest.mark.parametrize("name", ["same", "reflect-stride-groups-bias"])
def test_exported_program_runs_at_any_batch_size(name: str) -> None:
    """torch.export with a dynamic batch dim: correct at batch sizes other than the traced one."""
    x, w, bias, kwargs = make(7, CASES[name])
    batch = torch.export.Dim("batch", min=1)
    shapes = ({0: batch}, {0: batch}, None if bias is None or bias.ndim == 1 else {0: batch})
    example = (x.detach(), w.detach(), None if bias is None else bias.detach())
    program = torch.export.export(_Module(**kwargs), example, dynamic_shapes=shapes)
    assert "multiconv.batch_conv" in str(program.graph)
    for size in (1, 5, 33):
        x, w, bias, _ = make(size, CASES[name], seed=size)
        args = [None if a is None else a.detach() for a in (x, w, bias)]
        torch.testing.assert_close(program.module()(*args), multiconv.batch_conv(*args, **kwargs))


def test_custom_op_registrations_pass_opcheck() -> None:
    """Schema, fake kernel, autograd registration and the vjp op, as torch.library.opcheck tests them."""
    from multiconv import _api
    from multiconv.backends import torch as backend

    for name in ("reflect-stride-groups-bias", "channels-last-shared-bias-flip"):
        x, w, bias, kwargs = make(3, CASES[name])
        ints: list[int] = []
        literal = backend._encode((None, *(kwargs.get(key, default) for key, default in _api._DEFAULTS.items())), ints)
        torch.library.opcheck(backend._batch_conv_op, (x, w, bias, literal, ints))
