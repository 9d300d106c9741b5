"""Cost-model coefficients (seconds per feature unit), one set per CPU profile, written by ``benchmarks/calibrate.py``."""

from __future__ import annotations

from typing import Final

#: profile -> where and with what its timings were measured.
MACHINES: Final[dict[str, str]] = {
    "GenuineIntel": (
        "Intel(R) Xeon(R) Processor (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2; "
        "timed: jax-training 2026-12-05, jax 2026-12-05, numpy 2026-12-06, torch-training 2026-12-05, torch 2026-12-05"
    ),
    "AuthenticAMD": (
        "AMD EPYC (2 cores), Python 3.11.7, numpy 2.4.6, torch 2.13.0+cpu, jax 0.10.2; "
        "timed: jax 2026-12-03, numpy 2026-12-03, torch 2026-12-03"
    ),
}

#: profile -> backend -> engine -> coefficients of (fixed, calls, products, gemm, copies, wide_copies, elementwise, fft, slow_copies).
COEFFICIENTS: Final[dict[str, dict[str, dict[str, tuple[float, ...]]]]] = {
    "GenuineIntel": {
        "numpy": {
            "einsum": (3.529e-05, 0, 0, 2.812e-12, 2.85e-10, 0, 0, 0, 6.252e-10),
            "shift": (1.509e-06, 1.373e-06, 0, 1.501e-12, 2.415e-10, 0, 2.899e-10, 0, 2.156e-10),
            "matmul": (1.084e-05, 0, 0, 1.501e-12, 2.562e-10, 0, 0, 0, 4.289e-10),
            "fft": (0, 0, 0, 9.786e-13, 1.762e-09, 0, 0, 1.874e-10, 0),
        },
        "torch": {
            "grouped": (2.827e-05, 0, 0, 1.488e-12, 0, 1.466e-09, 0, 0, 5.697e-10),
            "shift": (6.424e-07, 7.854e-06, 0, 2.784e-12, 2.659e-10, 1.129e-09, 0, 0, 0),
            "matmul": (1.803e-05, 3.366e-06, 0, 2.784e-12, 2.637e-10, 2.752e-10, 0, 0, 0),
            "fft": (0.0001772, 0, 0, 4.519e-13, 1.377e-09, 0, 0, 0, 0),
        },
        "jax": {
            "vmap": (0, 0, 2.585e-06, 1.038e-11, 0, 2.215e-09, 0, 0, 0),
            "loop": (4.295e-05, 0, 0, 4.168e-12, 3.851e-10, 4.377e-09, 0, 0, 0),
            "shift": (2.037e-05, 9.247e-08, 7.201e-08, 3.875e-12, 3.396e-10, 1.183e-09, 6.312e-11, 0, 0),
            "matmul": (0, 1.346e-05, 0, 3.875e-12, 5.537e-10, 5.458e-10, 0, 0, 0),
            "fft": (0, 0, 0, 3.558e-12, 3.379e-09, 0, 0, 0, 0),
        },
    },
    "AuthenticAMD": {
        "numpy": {
            "einsum": (7.064e-05, 0, 0, 5.406e-12, 9.438e-10, 0, 0, 0, 1.45e-09),
            "shift": (0, 2.596e-06, 0, 6.736e-12, 3.933e-10, 5.373e-10, 4.334e-10, 0, 2.9e-10),
            "matmul": (0, 2.565e-05, 0, 3.957e-12, 7.522e-10, 0, 0, 0, 8.888e-10),
            "fft": (0, 0, 0, 9.085e-13, 2.332e-09, 0, 0, 4.197e-10, 0),
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
            "grouped": (0.000199, 0, 0, 6.783e-12, 0, 3.485e-09, 0, 0, 1.612e-09),
            "shift": (1.323e-05, 3.619e-05, 0, 8.227e-12, 1.29e-09, 1.356e-09, 7.642e-10, 0, 0),
            "matmul": (2.873e-05, 3.874e-05, 2.824e-06, 8.227e-12, 6.291e-10, 6.484e-10, 0, 0, 0),
            "fft": (0.001171, 0, 0, 2.309e-12, 1.957e-09, 0, 0, 1.468e-10, 0),
        },
        "jax": {
            "shift": (0, 1.516e-05, 0, 0, 2.096e-09, 4.89e-10, 2.291e-09, 0, 0),
            "matmul": (5.011e-05, 0, 0, 0, 5.357e-09, 8.634e-10, 0, 0, 0),
            "loop": (0, 0, 0.0001886, 6.36e-12, 2.591e-09, 0, 0, 0, 0),
            "fft": (0, 0, 1.811e-07, 2.908e-12, 7.878e-09, 0, 0, 0, 0),
        },
    },
}
