"""The README's code runs as written and its first screen gives (32, 8, 16)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import BACKENDS

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
FRAMEWORK_OF_TAG = {"# PyTorch": "torch", "# JAX": "jax", "# NumPy": "numpy"}


def framework(block: str) -> str:
    return FRAMEWORK_OF_TAG.get(block.splitlines()[0].strip(), "numpy")


def test_readme_has_an_example_per_framework() -> None:
    assert sorted(framework(b) for b in BLOCKS[:3]) == ["jax", "numpy", "torch"]


def test_readme_has_exactly_two_setup_commands() -> None:
    text = README.read_text(encoding="utf-8")
    setup = text.split("## Set-up", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in setup.splitlines() if line.strip()]
    assert len(commands) == 2
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert commands[1].split("#", 1)[0].strip() in ci


@pytest.mark.parametrize("index", range(len(BLOCKS)))
# The torch.compile example imports Inductor, whose own imports use a deprecated torch.jit API.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_readme_block_runs(index: int) -> None:
    block = BLOCKS[index]
    if framework(block) not in BACKENDS:
        pytest.skip(f"{framework(block)} backend not requested")
    namespace: dict[str, object] = {}
    exec(compile(block, f"README block {index}", "exec"), namespace)  # noqa: S102
    if index < 3:
        assert tuple(namespace["y"].shape) == (32, 8, 16)  # type: ignore[attr-defined]
