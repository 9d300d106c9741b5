#!/usr/bin/env python3
# /// script
# dependencies = ["nox>=2025.10.14"]
# ///
"""Development sessions: ``nox`` runs lint, typecheck, repo_review, tests, slow and lite.

``tests`` runs the suite on every backend and fails under 95% branch coverage; ``slow`` runs
the tests marked ``slow`` (large arrays); ``lite`` runs on NumPy alone. ``nox -s demo`` runs
the demo on every backend. Environments pin torch/JAX and the tools through ``constraints.txt``;
torch's local CPU wheel exists for Python 3.11 only, so the sessions that need it run on 3.11
with nox's default virtualenv + pip.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

nox.needs_version = ">=2025.10.14"
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
CONSTRAINTS = ("-c", "constraints.txt")
FULL_PYTHON = "3.11"
LITE_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
ALL_BACKENDS = {"MULTICONV_TEST_BACKENDS": "numpy,torch,jax"}


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


def _hook_versions() -> dict[str, str]:
    """Version of each pre-commit hook repository (``{"ruff-pre-commit": "0.17.6", ...}``).

    The hook repositories live on GitHub, which CI cannot reach, so ``lint`` installs the
    same tools from PyPI at the versions ``.pre-commit-config.yaml`` pins: one place to bump.
    """
    text = (ROOT / ".pre-commit-config.yaml").read_text(encoding="utf-8")
    pattern = r"repo: https://github\.com/[\w.-]+/([\w.-]+)\s+rev: [\"']?v?([\w.]+)"
    return dict(re.findall(pattern, text))


@nox.session(python=FULL_PYTHON, default=False)
def demo(session: nox.Session) -> None:
    """Run the README example on every backend, timed against a Python loop."""
    session.install(*CONSTRAINTS, ".[all]")
    session.run("multiconv", "demo", *session.posargs)


@nox.session(python=FULL_PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check, codespell, validate-pyproject (the pre-commit hooks' tools and versions)."""
    hooks = _hook_versions()
    session.install(
        *CONSTRAINTS,
        f"ruff=={hooks['ruff-pre-commit']}",
        f"codespell=={hooks['codespell']}",
        f"validate-pyproject=={hooks['validate-pyproject']}",
        "validate-pyproject-schema-store[all]",
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("codespell")
    session.run("validate-pyproject", "pyproject.toml")


@nox.session(python=FULL_PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy in strict mode over the package, the tests, the benchmarks and this file."""
    session.install(*CONSTRAINTS, ".[all,bench]", *nox.project.dependency_groups(PYPROJECT, "typecheck"))
    session.run("mypy")


@nox.session(python=FULL_PYTHON)
def repo_review(session: nox.Session) -> None:
    """Scientific Python's repo-review; the checks that do not apply are ignored, with reasons, in pyproject.toml."""
    session.install(*CONSTRAINTS, "sp-repo-review[cli,pyproject]")
    session.run("sp-repo-review", ".")


#: pytest-xdist workers for the full suite: CI's two cores (most of the suite's time is JAX
#: compiling and Python, one core each: 21 min in one process on CI, 6.5 in two on a 2-core VM).
TEST_WORKERS = "2"


@nox.session(python=FULL_PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on NumPy, PyTorch and JAX (a missing backend fails the run), with branch coverage >= 95%."""
    session.install(*CONSTRAINTS, ".[all,bench]", *nox.project.dependency_groups(PYPROJECT, "test", "coverage"))
    # xdist_group marks keep a module's shared fixture on one worker; `-- -p no:xdist` runs one
    # process (-n needs the plugin); otherwise `-- -n N` overrides TEST_WORKERS
    serial = any("no:xdist" in arg for arg in session.posargs)
    workers = () if serial else ("-n", TEST_WORKERS, "--dist", "loadgroup")
    session.run("pytest", "-m", "not slow", *workers, "--cov", "--cov-report=term", *session.posargs, env=ALL_BACKENDS)


@nox.session(python=FULL_PYTHON)
def slow(session: nox.Session) -> None:
    """The tests marked ``slow`` (large arrays, several GiB of memory) on every backend."""
    session.install(*CONSTRAINTS, ".[all]", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run("pytest", "-m", "slow", *session.posargs, env=ALL_BACKENDS)


@nox.session(python=LITE_PYTHONS)
def lite(session: nox.Session) -> None:
    """NumPy only: the package imports and works with neither torch nor JAX installed."""
    session.install(*CONSTRAINTS, ".", *nox.project.dependency_groups(PYPROJECT, "test"))
    session.run(
        "python",
        "-c",
        "import importlib.util as u; missing = [m for m in ('torch', 'jax') if u.find_spec(m)]; assert not missing, missing",
    )
    session.run("pytest", "-m", "not slow", *session.posargs, env={"MULTICONV_TEST_BACKENDS": "numpy"})


if __name__ == "__main__":
    nox.main()
