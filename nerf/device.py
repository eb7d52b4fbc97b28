"""Device, precision and thread settings, resolved once from user strings into checked values."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from nerf.errors import NerfInputError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str) -> torch.device:
    """'auto' (CUDA if present, else CPU), 'cpu', 'cuda' or 'cuda:N'; anything else is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise NerfInputError(f"device {name!r} requested but no CUDA GPU is visible; use --device cpu")
        if name != "cuda" and int(name[5:]) >= torch.cuda.device_count():
            raise NerfInputError(f"device {name!r} does not exist; {torch.cuda.device_count()} GPU(s) visible")
        return torch.device(name)
    raise NerfInputError(f"unknown device {name!r}; allowed: auto, cpu, cuda, cuda:N")


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): bf16 autocast then pays."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> Precision:
    """'auto' picks bf16 where the hardware runs it natively (Ampere+ GPUs, AVX512-BF16/AMX CPUs)."""
    if name not in PRECISIONS:
        raise NerfInputError(f"unknown precision {name!r}; allowed: {', '.join(PRECISIONS)}")
    if name != "auto":
        return name  # type: ignore[return-value]
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Matrix products in the reduced precision; the encoding, rendering and loss stay float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
