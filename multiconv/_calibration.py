"""Cost-model coefficients (seconds per feature unit), one set per CPU profile, written by ``benchmarks/calibrate.py``."""

from __future__ import annotations

from typing import Final

#: profile -> where and with what its timings were measured.
MACHINES: Final[dict[str, str]] = {
    "GenuineIntel": "Intel(R) Xeon(R) Processor (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2, 2026-12-02",
    "AuthenticAMD": "AMD EPYC (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2, 2026-12-03",
}

#: profile -> backend -> engine -> coefficients of (fixed, calls, products, gemm, copies, wide_copies, elementwise, fft).
COEFFICIENTS: Final[dict[str, dict[str, dict[str, tuple[float, ...]]]]] = {
    "GenuineIntel": {
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
    },
    "AuthenticAMD": {
        "numpy": {
            "einsum": (1.863e-05, 0, 0, 5.821e-12, 1.312e-09, 2.106e-10, 0, 0),
            "shift": (3.299e-07, 2.343e-06, 0, 7.127e-12, 7.04e-10, 8.931e-10, 0, 0),
            "matmul": (0, 1.529e-05, 0, 6.311e-12, 4.25e-10, 1.29e-09, 0, 0),
            "fft": (0, 0, 0, 1.433e-12, 4.442e-09, 0, 0, 2.636e-10),
        },
        "torch": {
            "grouped": (5.105e-05, 0, 0, 1.253e-12, 0, 1.304e-09, 0, 0),
            "shift": (0, 5.427e-06, 0, 7.904e-12, 1.77e-10, 9.005e-10, 0, 0),
            "matmul": (3.376e-05, 0, 0, 6.599e-12, 3.085e-10, 5.209e-10, 0, 0),
            "fft": (0.0001267, 0, 0, 6.911e-13, 2.506e-09, 0, 0, 0),
        },
        "jax": {
            "vmap": (0, 0, 1.019e-06, 1.186e-11, 0, 2.763e-09, 0, 0),
            "loop": (3.51e-05, 0, 0, 7.648e-12, 3.248e-10, 4.284e-09, 0, 0),
            "shift": (6.716e-06, 4.299e-07, 0, 4.147e-12, 9.228e-10, 6.927e-10, 2.588e-11, 0),
            "matmul": (1.246e-05, 0, 0, 5.239e-12, 9.815e-10, 5.341e-10, 0, 0),
            "fft": (0, 0, 0, 4.141e-12, 2.615e-09, 0, 0, 0),
        },
    },
}
