"""Cost-model coefficients (seconds per feature unit), written by ``benchmarks/calibrate.py``.

Measured on Intel(R) Xeon(R) Processor (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2, 2026-11-30.
"""

from __future__ import annotations

from typing import Final

#: backend -> engine -> coefficients of (fixed, calls, gemm, memory, fft).
COEFFICIENTS: Final[dict[str, dict[str, tuple[float, float, float, float, float]]]] = {
    "numpy": {
        "einsum": (7.985e-05, 0, 0, 1.163e-09, 0),
        "shift": (1.195e-05, 0, 4.771e-12, 2.692e-10, 0),
        "matmul": (3.925e-05, 0, 5.379e-12, 2.013e-10, 0),
        "fft": (0.0001317, 0, 9.349e-12, 4.388e-10, 4.14e-10),
    },
    "torch": {
        "grouped": (2e-05, 2e-06, 6.667e-12, 2e-10, 0),
        "shift": (1e-05, 5e-06, 1e-11, 1e-09, 0),
        "matmul": (2e-05, 5e-06, 8.333e-12, 1e-09, 0),
        "fft": (0.0002, 5e-06, 1.667e-11, 1e-09, 1e-09),
    },
    "jax": {
        "vmap": (2e-05, 5e-06, 2.5e-11, 2e-10, 0),
        "shift": (1e-05, 2e-06, 1.667e-11, 5e-10, 0),
        "matmul": (1e-05, 2e-06, 1.667e-11, 5e-10, 0),
        "fft": (5e-05, 2e-06, 1.667e-11, 5e-10, 5e-10),
    },
}
