"""Cost-model coefficients (seconds per feature unit), one set per CPU profile, written by ``benchmarks/calibrate.py``."""

from __future__ import annotations

from typing import Final

#: profile -> where and with what its timings were measured.
MACHINES: Final[dict[str, str]] = {
    "GenuineIntel": (
        "Intel(R) Xeon(R) Processor (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2; "
        "timed: jax-training 2026-12-05, jax 2026-12-02, numpy 2026-12-05, torch-training 2026-12-05, torch 2026-12-05"
    ),
    "AuthenticAMD": (
        "AMD EPYC (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2; "
        "timed: jax 2026-12-03, numpy 2026-12-03, torch 2026-12-03"
    ),
}

#: profile -> backend -> engine -> coefficients of (fixed, calls, products, gemm, copies, wide_copies, elementwise, fft, unblocked_copies).
COEFFICIENTS: Final[dict[str, dict[str, dict[str, tuple[float, ...]]]]] = {
    "GenuineIntel": {
        "numpy": {
            "einsum": (3.996e-05, 0, 0, 5.042e-12, 5.207e-10, 0, 0, 0, 0),
            "shift": (1.905e-06, 8.675e-07, 0, 4.001e-12, 4.924e-10, 5.74e-11, 6.071e-10, 0, 0),
            "matmul": (0, 1.116e-05, 0, 3.497e-12, 4.06e-10, 0, 0, 0, 0),
            "fft": (0, 0, 0, 7.925e-13, 1.826e-09, 0, 0, 3.754e-10, 0),
        },
        "torch": {
            "grouped": (2.585e-05, 0, 0, 1.421e-12, 0, 9.474e-10, 0, 0, 5.214e-10),
            "shift": (0, 7.134e-06, 0, 2.82e-12, 2.43e-10, 7.717e-10, 0, 0, 0),
            "matmul": (2.152e-05, 0, 0, 2.82e-12, 2.74e-10, 0, 0, 0, 0),
            "fft": (0.0001354, 0, 0, 3.673e-13, 9.591e-10, 0, 0, 2.417e-11, 0),
        },
        "jax": {
            "vmap": (8.133e-05, 0, 1.261e-06, 1.084e-11, 1.009e-09, 1.067e-09, 0, 0, 0),
            "loop": (6.734e-05, 5.005e-06, 0, 5.231e-12, 2.236e-10, 5.51e-09, 0, 0, 2.073e-10),
            "shift": (4.971e-05, 0, 0, 3.947e-12, 3.88e-10, 1.235e-09, 2.482e-11, 0, 0),
            "matmul": (4.944e-05, 0, 4.01e-08, 2.984e-12, 8.424e-10, 4.23e-11, 0, 0, 0),
            "fft": (0, 0, 4.951e-08, 1.689e-12, 2.829e-09, 3.399e-10, 0, 0, 0),
        },
    },
    "AuthenticAMD": {
        "numpy": {
            "einsum": (0.0001163, 0, 0, 5.94e-12, 5.034e-10, 6.33e-13, 0, 0, 0),
            "shift": (0, 3.288e-06, 0, 6.146e-12, 4.139e-10, 1.21e-10, 1.196e-10, 0, 0),
            "matmul": (0, 2.385e-05, 0, 5.696e-12, 4.318e-10, 0, 0, 0, 0),
            "fft": (0.0001471, 0, 0, 1.506e-12, 3.85e-09, 0, 0, 2.931e-10, 0),
        },
        "torch": {
            "grouped": (3.794e-05, 0, 0, 1.28e-12, 0, 1.3e-09, 0, 0, 5.614e-10),
            "shift": (0, 5.427e-06, 0, 7.904e-12, 1.77e-10, 9.005e-10, 0, 0, 0),
            "matmul": (3.376e-05, 0, 0, 6.599e-12, 3.085e-10, 5.209e-10, 0, 0, 0),
            "fft": (0.0001267, 0, 0, 6.911e-13, 2.506e-09, 0, 0, 0, 0),
        },
        "jax": {
            "vmap": (0, 0, 9.831e-07, 1.18e-11, 0, 2.78e-09, 0, 0, 4.18e-10),
            "loop": (3.313e-05, 0, 0, 9.24e-12, 3.327e-10, 4.649e-09, 0, 0, 3.853e-11),
            "shift": (0, 0, 2.717e-07, 8.424e-12, 2.396e-10, 1.475e-09, 1.023e-10, 0, 0),
            "matmul": (0, 8.794e-06, 0, 8.424e-12, 4.673e-10, 1.132e-09, 0, 0, 0),
            "fft": (0, 0, 1.712e-07, 4.796e-13, 2.498e-09, 0, 0, 8.415e-11, 0),
        },
    },
}

#: The same for one training step (forward and gradients of x and w), where timed.
TRAINING_COEFFICIENTS: Final[dict[str, dict[str, dict[str, tuple[float, ...]]]]] = {
    "GenuineIntel": {
        "torch": {
            "grouped": (0.000156, 0, 0, 6.073e-12, 0, 4.19e-09, 0, 0, 2.983e-09),
            "shift": (0, 6.291e-05, 0, 1.424e-11, 9.386e-10, 3.191e-09, 1.461e-09, 0, 0),
            "matmul": (0, 0.0001084, 1.167e-06, 1.424e-11, 6.29e-10, 3.009e-10, 0, 0, 0),
            "fft": (0.001403, 0, 0, 4.712e-12, 5.128e-09, 0, 0, 0, 0),
        },
        "jax": {
            "shift": (3.307e-05, 0, 0, 4.265e-12, 2.993e-09, 0, 3.084e-10, 0, 0),
            "matmul": (2.96e-05, 0, 0, 3.016e-12, 6.147e-09, 0, 0, 0, 0),
            "loop": (0, 0.0003942, 0, 1.415e-11, 1.57e-09, 3.844e-09, 0, 0, 0),
            "fft": (0, 0, 0, 1.449e-11, 7.739e-09, 0, 7.362e-10, 0, 0),
        },
    },
}
