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
        "timed: jax-training 2026-12-06, jax 2026-12-06, numpy 2026-12-06, torch-training 2026-12-06, torch 2026-12-06"
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
            "einsum": (2.247e-05, 0, 0, 2.367e-12, 8.681e-11, 0, 0, 0, 3.614e-10),
            "shift": (0, 2.107e-06, 0, 1.911e-12, 7.084e-11, 0, 2.123e-10, 0, 1.672e-10),
            "matmul": (7.868e-06, 0, 3.953e-08, 1.495e-12, 9.484e-11, 1.115e-10, 0, 0, 3.254e-10),
            "fft": (0, 0, 0, 3.818e-13, 3.025e-09, 0, 0, 7.282e-12, 0),
        },
        "torch": {
            "grouped": (1.591e-05, 0, 0, 5.664e-13, 0, 6.523e-10, 0, 0, 3.025e-10),
            "shift": (0, 3.257e-06, 0, 4.117e-12, 1.051e-10, 3.837e-10, 0, 0, 0),
            "matmul": (1.254e-05, 0, 0, 4.117e-12, 7.584e-11, 9.778e-11, 0, 0, 0),
            "fft": (5.833e-05, 0, 0, 3.783e-13, 9.495e-10, 0, 0, 1.108e-11, 0),
        },
        "jax": {
            "vmap": (0, 0, 1.322e-06, 4.8e-12, 0, 1.77e-09, 0, 0, 0),
            "loop": (2.887e-05, 8.801e-08, 0, 3.345e-12, 1.133e-10, 2.747e-09, 0, 0, 1.931e-11),
            "shift": (2.222e-05, 0, 0, 2.126e-12, 2.742e-10, 6.353e-10, 1.417e-11, 0, 0),
            "matmul": (1.904e-05, 0, 1.028e-07, 2.22e-12, 2.114e-10, 1.91e-10, 0, 0, 0),
            "fft": (7.675e-05, 0, 6.442e-08, 8.015e-13, 1.433e-09, 0, 0, 0, 0),
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
    "AuthenticAMD": {
        "torch": {
            "grouped": (0.0001234, 0, 0, 2.143e-12, 0, 1.98e-09, 0, 0, 1.103e-09),
            "shift": (0, 1.631e-05, 0, 8.851e-12, 5.335e-10, 1.541e-09, 0, 0, 0),
            "matmul": (6.959e-05, 0, 1.609e-07, 8.851e-12, 2.715e-10, 7.923e-10, 0, 0, 0),
            "fft": (0.0003542, 0, 0, 1.085e-12, 2.348e-09, 0, 0, 3.353e-11, 0),
        },
        "jax": {
            "shift": (1.868e-05, 1.345e-06, 0, 7.787e-12, 3.465e-10, 1.854e-09, 3.104e-10, 0, 0),
            "matmul": (0, 6.757e-06, 5.831e-07, 6.139e-12, 1.601e-09, 3.887e-09, 0, 0, 0),
            "loop": (0, 0, 7.414e-05, 8.263e-12, 6.335e-10, 1.518e-08, 0, 0, 0),
            "fft": (0, 0, 0, 6.169e-12, 1.874e-09, 0, 0, 0, 0),
        },
    },
}
