"""Mixed precision: where bf16 autocast pays, and the one context manager that applies it.

bf16 autocast is used only where the hardware computes bf16 natively: CUDA devices, and CPUs
whose oneDNN has bf16 kernels (AVX512-BF16 or AMX). On this project's AVX512-BF16 CPU the frozen
SmolLM2 forward + backward of a Pengi step runs 2.2-2.3x faster under bf16 autocast than in fp32
with SDPA attention, 2.8-3.3x with the eager kernel (``bench/lm_precision.py``, bench/RESULTS.md
section 3b); older CPUs emulate bf16 and get slower, so they stay in fp32.
"""

from __future__ import annotations

import contextlib

import torch


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 matmuls natively (any CUDA device, or a CPU with
    oneDNN bf16 kernels)."""
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast_context(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
