"""Development sessions: ``nox`` runs lint, typecheck, tests (all backends) and lite (NumPy only).

``nox -s demo`` runs the demo on every backend.  Environments pin torch/JAX through
``constraints.txt``; torch's local CPU wheel exists for Python 3.11 only, so the
sessions that need it run on 3.11 with nox's default virtualenv + pip.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "virtualenv"
nox.options.sessions = ["lint", "typecheck", "tests", "lite"]
nox.options.error_on_missing_interpreters = True

CONSTRAINTS = ("-c", "constraints.txt")
FULL_PYTHON = "3.11"
LITE_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _expose_pyenv_interpreters() -> None:
    """Put pyenv's installed interpreters on PATH so that ``python3.X`` resolves.

    pyenv's shims only answer for the selected version; nox looks for ``python3.10``
    etc. on PATH, so each installed version's own ``bin`` goes in front.
    """
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = []
    for wanted in LITE_PYTHONS:
        matches = [p for p in versions.glob(f"{wanted}.*") if p.name.count(".") == 2 and p.name.split(".")[2].isdigit()]  # noqa: PLR2004
        if matches:
            best = max(matches, key=lambda p: int(p.name.split(".")[2]))
            found.append(str(best / "bin"))
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_expose_pyenv_interpreters()


@nox.session(python=FULL_PYTHON)
def demo(session: nox.Session) -> None:
    """Run the README example on every backend, timed against a Python loop."""
    session.install(*CONSTRAINTS, ".[all]")
    session.run("multiconv", "demo", *session.posargs)


@nox.session(python=FULL_PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite on NumPy, PyTorch and JAX (a missing backend fails the run)."""
    session.install(*CONSTRAINTS, ".[all,test]")
    session.run("pytest", *session.posargs, env={"MULTICONV_TEST_BACKENDS": "numpy,torch,jax"})


@nox.session(python=LITE_PYTHONS)
def lite(session: nox.Session) -> None:
    """NumPy only: the package imports and works with neither torch nor JAX installed."""
    session.install(*CONSTRAINTS, ".[test]")
    session.run(
        "python",
        "-c",
        "import importlib.util as u; missing = [m for m in ('torch', 'jax') if u.find_spec(m)]; assert not missing, missing",
    )
    session.run("pytest", *session.posargs, env={"MULTICONV_TEST_BACKENDS": "numpy"})


@nox.session(python=FULL_PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=FULL_PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy in strict mode over the package, the tests and this file."""
    session.install(*CONSTRAINTS, ".[all,test,bench]", "mypy>=1.10", "nox")
    session.run("mypy")
