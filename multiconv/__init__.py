"""Batch-wise convolution for NumPy, PyTorch and JAX: every batch element has its own weight."""

from __future__ import annotations

from multiconv._api import batch_conv, batch_conv1d, batch_conv2d, batch_conv3d

__version__ = "0.1.0"

__all__ = ["__version__", "batch_conv", "batch_conv1d", "batch_conv2d", "batch_conv3d"]
