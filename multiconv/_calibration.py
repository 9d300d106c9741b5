"""Cost-model coefficients (seconds per feature unit), written by ``benchmarks/calibrate.py``.

Measured on Intel(R) Xeon(R) Processor (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2, 2026-11-30.
"""

from __future__ import annotations

from typing import Final

#: backend -> engine -> coefficients of (fixed, calls, products, gemm, copies, wide_copies, elementwise, fft).
COEFFICIENTS: Final[dict[str, dict[str, tuple[float, ...]]]] = {
    "numpy": {
        "einsum": (7.626e-05, 0, 0, 5.438e-12, 4.403e-10, 1.73e-09, 0, 0),
        "shift": (1.175e-05, 9.083e-07, 0, 4.838e-12, 4.937e-10, 0, 6.088e-10, 0),
        "matmul": (3.031e-05, 5.335e-06, 0, 3.935e-12, 4.462e-10, 9.508e-10, 0, 0),
        "fft": (9.014e-05, 0, 0, 1.357e-12, 8.314e-10, 0, 0, 3.884e-10),
    },
    "torch": {
        "grouped": (0.0001012, 0, 0, 1.984e-12, 0, 1.193e-09, 0, 0),
        "shift": (1.185e-05, 1.834e-05, 4.342e-08, 4.31e-12, 5.756e-10, 9.36e-11, 0, 0),
        "matmul": (0, 2.228e-05, 3.608e-08, 3.051e-12, 1.581e-10, 2.344e-10, 0, 0),
        "fft": (0.0002143, 0, 0, 7.888e-13, 5.575e-10, 0, 0, 5.9e-11),
    },
    "jax": {
        "vmap": (9.102e-05, 0, 1.309e-06, 1.145e-11, 9.293e-10, 4.264e-10, 0, 0),
        "loop": (9.203e-05, 2.382e-06, 0, 5.377e-12, 2.316e-10, 4.528e-09, 0, 0),
        "shift": (7.735e-05, 0, 0, 6.286e-12, 3.355e-10, 1.349e-09, 3.83e-11, 0),
        "matmul": (8.997e-05, 0, 0, 3.512e-12, 1.132e-09, 1.154e-09, 0, 0),
        "fft": (9.59e-05, 0, 0, 3.652e-12, 2.472e-09, 7.498e-10, 3.868e-10, 0),
    },
}
