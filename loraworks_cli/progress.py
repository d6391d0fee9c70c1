"""Drawing a job's progress for `jobs watch`: one redrawn line on a terminal, one line per change otherwise."""
from __future__ import annotations

import sys

WIDTH = 30


def describe(job: dict) -> str:
    progress = job.get("progress") or {}
    step, total = progress.get("step") or 0, progress.get("total_steps") or 0
    fraction = 1.0 if job["status"] == "succeeded" else (min(step / total, 1.0) if total else 0.0)
    filled = int(round(fraction * WIDTH))
    parts = [f"[{'#' * filled}{'.' * (WIDTH - filled)}] {fraction * 100:5.1f}%", job["status"]]
    if total:
        parts.append(f"step {step}/{total}")
    if progress.get("loss") is not None:
        parts.append(f"loss {progress['loss']:.4f}")
    if progress.get("tokens_per_s"):
        parts.append(f"{progress['tokens_per_s']:.0f} tok/s")
    if progress.get("eta_s") is not None and job["status"] == "running":
        parts.append(f"eta {format_seconds(progress['eta_s'])}")
    return "  ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Bar:
    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.last = None

    def show(self, line: str) -> None:
        if line == self.last:
            return
        if self.live:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.last = line

    def note(self, text: str) -> None:
        """A line above the bar (a state change, a log line)."""
        if self.live and self.last is not None:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        if self.live and self.last is not None:
            self.stream.write(self.last)
        self.stream.flush()

    def close(self) -> None:
        if self.live and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()
