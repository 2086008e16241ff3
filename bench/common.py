"""Helpers shared by the orchestrator and the load generator: /proc readings, the message
content and small statistics."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# The content of every published message: a 20-digit send timestamp (time.monotonic_ns of
# the load generator, which also receives) and padding, 100 characters in all.
CONTENT_CHARS = 100
TIMESTAMP_DIGITS = 20
PADDING = b" " + b"x" * (CONTENT_CHARS - TIMESTAMP_DIGITS - 1)


def content_now() -> bytes:
    return b"%020d" % time.monotonic_ns() + PADDING


def cpu_seconds(pid: int | str = "self") -> tuple[float, float]:
    """(user, system) CPU seconds of a whole process, all threads: /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    fields = data[data.rindex(b")") + 2 :].split()
    # After the command: state is field 3; utime and stime are fields 14 and 15.
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def memory_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB from /proc/<pid>/status."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    return out


def rss_kib(pid: int | str = "self") -> int:
    return memory_kib(pid).get("VmRSS", 0)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return float(sorted_values[index])


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
