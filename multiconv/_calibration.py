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
            "einsum": (2.286e-05, 0, 0, 2.211e-12, 6.928e-11, 0, 0, 0, 2.674e-10),
            "shift": (1.396e-07, 1.552e-06, 0, 1.761e-12, 0, 0, 2.682e-10, 0, 2.114e-10),
            "matmul": (8.075e-06, 0, 1.496e-08, 1.288e-12, 1.264e-10, 2.448e-11, 0, 0, 2.571e-10),
            "fft": (0, 0, 0, 3.454e-13, 2.09e-09, 0, 0, 7.146e-11, 0),
        },
        "torch": {
            "grouped": (1.549e-05, 0, 0, 5.854e-13, 0, 6.297e-10, 0, 0, 2.941e-10),
            "shift": (0, 2.92e-06, 0, 4.028e-12, 9.356e-11, 3.92e-10, 0, 0, 0),
            "matmul": (9.48e-06, 1.239e-06, 0, 4.028e-12, 6.08e-11, 8.024e-11, 0, 0, 0),
            "fft": (4.779e-05, 0, 0, 3.188e-13, 9.466e-10, 0, 0, 7.768e-12, 0),
        },
        "jax": {
            "vmap": (0, 0, 1.391e-06, 5.195e-12, 0, 1.782e-09, 0, 0, 0),
            "loop": (2.925e-05, 6.118e-07, 0, 3.215e-12, 8.474e-11, 3.025e-09, 0, 0, 1.155e-11),
            "shift": (1.632e-05, 5.223e-09, 0, 1.938e-12, 2.578e-10, 8.743e-10, 1.89e-11, 0, 0),
            "matmul": (1.281e-05, 0, 8.068e-08, 1.938e-12, 2.017e-10, 4.937e-10, 0, 0, 0),
            "fft": (0, 0, 7.071e-08, 1.028e-12, 1.233e-09, 0, 0, 1.051e-11, 0),
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
            "grouped": (0.0001222, 0, 0, 2.633e-12, 0, 3.958e-09, 0, 0, 1.186e-09),
            "shift": (0, 1.837e-05, 0, 1.047e-11, 6.313e-10, 2.92e-09, 4.39e-11, 0, 0),
            "matmul": (7.103e-05, 2.682e-06, 0, 1.047e-11, 2.559e-10, 1.08e-09, 0, 0, 0),
            "fft": (0.0006108, 0, 0, 1.49e-12, 1.338e-09, 0, 0, 7.981e-11, 0),
        },
        "jax": {
            "shift": (1.917e-05, 1.884e-06, 0, 5.384e-12, 5.093e-10, 1.381e-09, 1.793e-10, 0, 0),
            "matmul": (1.93e-05, 0, 0, 5.689e-12, 1.983e-09, 2.649e-09, 0, 0, 0),
            "loop": (0, 3.558e-05, 0, 8.705e-12, 6.267e-10, 5.125e-09, 0, 0, 8.865e-11),
            "fft": (0, 0, 8.1e-09, 4.401e-12, 2.209e-09, 0, 0, 0, 0),
        },
    },
}
