"""glibc's malloc settings for a training run on the CPU: freed large buffers go back to the system at once.

glibc serves a request of M_MMAP_THRESHOLD bytes or more (128 KiB at start) with its own mmap, unmapped on free.
But the threshold is dynamic: each time such a block is freed, it rises to that block's size (up to 32 MiB), so
after the first step's activations and dequantized weights are freed, the next step's come from the heap, and
freed heap memory stays resident (the top is only trimmed past twice the threshold, holes never). A run's
resident memory then grows over its first steps by whatever the heap happens to keep: for an nf4 base, whose CPU
matmuls allocate and free a dequantized weight per layer and pass, by more than the packed weights save. Setting
the threshold fixes it (and turns off the adjustment), so resident memory follows what the tensors hold. Each
large allocation is a fresh mapping then; training speed is unchanged at the sizes measured (README).
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # malloc.h
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def return_freed_memory_promptly() -> bool:
    """Fix glibc's mmap threshold for this process; False where the C library is not glibc (nothing changed)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
