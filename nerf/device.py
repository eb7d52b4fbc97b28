"""Device, precision and thread settings, resolved once from user strings into checked values."""

from __future__ import annotations

import contextlib
import ctypes
from typing import Literal

import torch

from common.errors import InputError

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
            raise InputError(f"device {name!r} requested but no CUDA GPU is visible; use --device cpu")
        if name != "cuda" and int(name[5:]) >= torch.cuda.device_count():
            raise InputError(f"device {name!r} does not exist; {torch.cuda.device_count()} GPU(s) visible")
        return torch.device(name)
    raise InputError(f"unknown device {name!r}; allowed: auto, cpu, cuda, cuda:N")


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Matrix products in the reduced precision; the encoding, rendering and loss stay float32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


COMPILE_MODES = ("auto", "on", "off")


def compiled_for_training(
    model: torch.nn.Module, device: torch.device, *, mode: str, sampling: str
) -> torch.nn.Module:
    """The module training calls: `model` itself, or a torch.compile'd view of it sharing its weights.

    On a GPU a training step is launch-bound (a 256x256 product over 65k rows takes microseconds, about
    a kernel launch), so 'auto' compiles there: with vanilla sampling every step has the same shapes
    and CUDA graphs replay the MLP's forward and backward as one launch ('reduce-overhead'); with
    occupancy sampling the packed point count changes every step, so the kernels are fused without
    graphs and the point dimension is dynamic. On a CPU inductor made steps slower when measured
    (fp32 dense 2.27 s against 1.61 s eager), so 'auto' keeps eager there. Evaluation always calls the
    eager module: its last chunk of rays has another shape."""
    if mode not in COMPILE_MODES:
        raise InputError(f"unknown compile mode {mode!r}; allowed: {', '.join(COMPILE_MODES)}")
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return model
    if sampling == "vanilla" and device.type == "cuda":
        return torch.compile(model, mode="reduce-overhead", dynamic=False)
    return torch.compile(model, dynamic=sampling != "vanilla")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameter numbers (malloc.h)


def keep_freed_cpu_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the kernel; returns whether it took effect.

    A training step allocates and frees the same few dozen activations of 16-70 MB each. glibc serves
    blocks above 32 MB with a fresh mmap and unmaps them on free, so every step paid for page faults and
    the kernel zero-filling ~2 GB (measured: 40% of an fp32 step, 50% of a bf16 one on 2 cores). Serving
    them from the heap and never trimming it lets the next step reuse the same pages. The process keeps
    its high-water mark of memory, which is what a training process needs anyway. No-op off glibc.
    """
    global _heap_kept
    if _heap_kept is not None:
        return _heap_kept
    _heap_kept = False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _heap_kept = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        pass
    return _heap_kept


_heap_kept: bool | None = None
