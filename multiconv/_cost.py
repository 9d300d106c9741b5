"""The cost model behind ``method="auto"`` (placeholder order until calibrated)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiconv._spec import ConvSpec


def choose(backend: str, spec: ConvSpec, methods: tuple[str, ...]) -> str:  # noqa: ARG001
    """The engine with the least estimated time."""
    return methods[0]
