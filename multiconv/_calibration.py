"""Cost-model coefficients (seconds per feature unit), written by ``benchmarks/calibrate.py``.

Measured on Intel(R) Xeon(R) Processor (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2, 2026-12-02.
"""

from __future__ import annotations

from typing import Final

#: backend -> engine -> coefficients of (fixed, calls, products, gemm, copies, wide_copies, elementwise, fft).
COEFFICIENTS: Final[dict[str, dict[str, tuple[float, ...]]]] = {
    "numpy": {
        "einsum": (7.857e-05, 0, 0, 5.831e-12, 4.097e-10, 1.784e-09, 0, 0),
        "shift": (9.484e-06, 1.159e-06, 0, 5.129e-12, 4.448e-10, 0, 5.797e-10, 0),
        "matmul": (1.94e-05, 9.338e-06, 0, 4.025e-12, 4.226e-10, 5.411e-10, 0, 0),
        "fft": (0, 0, 0, 1.128e-12, 3.51e-09, 0, 0, 2.163e-10),
    },
    "torch": {
        "grouped": (0.0001055, 0, 0, 2.304e-12, 0, 1.298e-09, 0, 0),
        "shift": (1.826e-05, 1.615e-05, 0, 5.089e-12, 3.85e-10, 1.055e-09, 0, 0),
        "matmul": (3.092e-05, 8.717e-06, 0, 3.314e-12, 2.855e-10, 0, 0, 0),
        "fft": (0.0002425, 0, 0, 3.913e-13, 1.773e-09, 0, 0, 0),
    },
    "jax": {
        "vmap": (8.133e-05, 0, 1.261e-06, 1.084e-11, 1.009e-09, 1.067e-09, 0, 0),
        "loop": (9.853e-05, 1.557e-06, 0, 5.119e-12, 2.63e-10, 5.283e-09, 0, 0),
        "shift": (4.807e-05, 0, 0, 4.141e-12, 3.657e-10, 1.246e-09, 2.478e-11, 0),
        "matmul": (5.908e-05, 0, 0, 2.795e-12, 9.275e-10, 0, 0, 0),
        "fft": (0, 0, 2.57e-08, 2.157e-12, 2.691e-09, 5.366e-10, 0, 0),
    },
}
