"""Cost-model coefficients (seconds per feature unit), written by ``benchmarks/calibrate.py``.

Measured on Intel(R) Xeon(R) Processor (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2, 2026-11-30.
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
        "vmap": (8.192e-05, 0, 1.258e-06, 1.065e-11, 1.086e-09, 1.058e-09, 0, 0),
        "loop": (9.705e-05, 1.62e-06, 0, 5.136e-12, 2.609e-10, 5.281e-09, 0, 0),
        "shift": (7.871e-05, 0, 0, 4.536e-12, 6.388e-10, 5.197e-10, 3.629e-11, 0),
        "matmul": (7.212e-05, 0, 0, 3.653e-12, 1.054e-09, 1.754e-09, 0, 0),
        "fft": (0.000113, 0, 2.333e-08, 2.769e-12, 2.897e-09, 0, 1.807e-10, 0),
    },
}
