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
        "grouped": (0.0001009, 0, 0, 2.09e-12, 0, 1.13e-09, 0, 0),
        "shift": (1.503e-05, 1.888e-05, 0, 4.992e-12, 3.507e-10, 5.514e-10, 4.08e-11, 0),
        "matmul": (1.349e-05, 1.716e-05, 0, 3.336e-12, 1.883e-10, 2.914e-10, 0, 0),
        "fft": (0.0002349, 0, 0, 7.462e-13, 5.674e-10, 0, 0, 5.539e-11),
    },
    "jax": {
        "vmap": (9.469e-05, 0, 8.635e-07, 1.094e-11, 1.488e-09, 0, 0, 0),
        "shift": (6.532e-05, 0, 0, 3.097e-12, 1.064e-09, 0, 4.184e-11, 0),
        "matmul": (6.687e-05, 0, 0, 3.38e-12, 1.244e-09, 1.003e-09, 0, 0),
        "fft": (8.498e-05, 0, 0, 4.063e-12, 2.838e-09, 4.827e-10, 2.147e-10, 0),
    },
}
