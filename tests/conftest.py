"""Test-session set-up: backend selection, numerics settings, Hypothesis profiles.

Numerics settings (x64 in JAX, no TF32 in PyTorch) belong here, never in the library.
"""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings
from support import BACKENDS

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config: pytest.Config) -> None:
    """Import every requested backend, failing the run when one is missing."""
    for name in BACKENDS:
        try:
            importlib.import_module(name)
        except ImportError as error:
            msg = f"MULTICONV_TEST_BACKENDS requests {name!r}, which cannot be imported: {error}"
            raise pytest.UsageError(msg) from error
    if "jax" in BACKENDS:
        jax = importlib.import_module("jax")
        jax.config.update("jax_enable_x64", True)  # noqa: FBT003
    if "torch" in BACKENDS:
        torch = importlib.import_module("torch")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def pytest_report_header() -> str:
    """Say which backends this run tests."""
    return f"multiconv test backends: {', '.join(BACKENDS)}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each requested backend in turn."""
    return str(request.param)
