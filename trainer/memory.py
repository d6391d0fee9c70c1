"""What a training run's memory really costs: its peak, and the part of it the model brought.

    peak_memory_bytes   the process's peak since the run started: resident memory (RSS) on a CPU, memory
                        allocated by torch on a CUDA device (what the estimate must fit on the GPU; the caching
                        allocator's reserved-but-free blocks are left out)
    model_memory_bytes  that peak minus the memory in use just before the model was loaded: weights, adapter,
                        optimizer state and activations, without the interpreter, torch's libraries or the data

On Linux the CPU peak is the kernel's high-water mark (VmHWM in /proc/self/status), reset at the start of the run
by writing 5 to /proc/self/clear_refs, so a worker process that trained a bigger job earlier reports this run's
peak, not its lifetime's. Where that file cannot be written (or read), the lifetime peak of getrusage is used.

The CPU's model share leaves out the resident pages of executable files (the interpreter's and the shared
libraries' code and read-only data, as /proc/self/smaps lists them), before and after: the kernel maps those pages
in when the run first executes them (torch's backward and optimizer kernels only run after the mark) and drops
them again under memory pressure, so how many of them count depends on the machine's other work, not on the
model. Pressure before the mark once made the same tiny run's share 18 % larger than on a quiet machine.
"""
from __future__ import annotations

import re
import resource
import sys
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
SMAPS = Path("/proc/self/smaps")
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \d+ *(\S.*)?$")  # address perms offset dev inode path
RESET_PEAK_RSS = "5"  # see proc(5), /proc/pid/clear_refs: "reset the peak resident set size"


class MemoryMeter:
    """Started at the beginning of a run; `mark_before_model()` just before the model loads; `figures()` at the
    end gives {peak_memory_bytes, model_memory_bytes}."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"
        self.before_model = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            _reset_peak_rss()

    def mark_before_model(self) -> None:
        self.before_model = torch.cuda.memory_allocated() if self.cuda else _status_bytes("VmRSS") - code_bytes()

    def peak(self) -> int:
        if self.cuda:
            return torch.cuda.max_memory_allocated()
        return _status_bytes("VmHWM") or _lifetime_peak_rss()

    def figures(self) -> dict:
        peak = self.peak()
        # Code pages only accumulate over a run, so those resident now are at least those resident at the peak.
        held = peak if self.cuda else peak - code_bytes()
        return {"peak_memory_bytes": peak, "model_memory_bytes": max(0, held - self.before_model)}


def _reset_peak_rss() -> None:
    try:
        CLEAR_REFS.write_text(RESET_PEAK_RSS)
    except OSError:  # not Linux, or not allowed: peak() falls back to the lifetime peak
        pass


def _status_bytes(key: str) -> int:
    """A "kB" line of /proc/self/status in bytes; 0 where there is no such file (not Linux)."""
    try:
        found = re.search(rf"^{key}:\s+(\d+) kB", STATUS.read_text(), re.M)
    except OSError:
        return 0
    return int(found.group(1)) * 1024 if found else 0


def code_bytes() -> int:
    """Resident bytes of the mappings of executable files (every mapping of a file that has an executable one:
    the interpreter and shared libraries); 0 where /proc/self/smaps cannot be read (not Linux)."""
    try:
        text = SMAPS.read_text()
    except OSError:
        return 0
    resident: dict[str, int] = {}
    executable = set()
    path = None
    for line in text.splitlines():
        mapping = MAPPING.match(line)
        if mapping:
            perms, path = mapping.group(1), mapping.group(2)
            if path and "x" in perms:
                executable.add(path)
        elif path and line.startswith("Rss:"):
            resident[path] = resident.get(path, 0) + int(line.split()[1]) * 1024
    return sum(resident.get(name, 0) for name in executable)


def _lifetime_peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux
