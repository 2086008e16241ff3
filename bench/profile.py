"""Profiling the server under load with py-spy, and a text summary of what it recorded.

``python -m bench fanout --subscribers 1000 --profile DIR`` records every topichub server
of the run with ``py-spy record --format raw`` (collapsed stacks, one file per case) and
prints the top frames; ``python -m bench.profile FILE...`` summarises files again.
"""

from __future__ import annotations

import contextlib
import linecache
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.procs import LOADGEN_CORE, Pinning

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@contextlib.contextmanager
def recording(pinning: Pinning, pid: int, out: Path | None, rate: int = 250) -> Iterator[None]:
    """py-spy samples ``pid`` (all threads, native frames off; idle threads left out) while
    the block runs; the sampler runs on the load generator's core."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if out is None or not Path(py_spy).exists():
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [
        *pinning.prefix(LOADGEN_CORE),
        py_spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(rate),
        "--threads",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


IDLE_CALL = re.compile(r"(\.get\(|\.select\(|\.wait\(|\.acquire\(|\.poll\(|sleep\()")


def _source_line(path: str, line: int) -> str:
    """The source line py-spy names (its paths are relative to a sys.path entry)."""
    for root in sys.path:
        candidate = Path(root) / path
        if candidate.is_file():
            return linecache.getline(str(candidate), line)
    return ""


def parse(frame: str) -> tuple[str, str]:
    """``send (websockets/protocol.py:123)`` -> (``websockets/protocol.py:send``, line)."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), ""
    return f"{match['file']}:{match['func']}", match["line"] or ""


def is_idle(leaf: str) -> bool:
    """A thread blocked in a wait (queue get, selector, lock): py-spy cannot always tell
    on this kernel, so the summary leaves such samples out by their source line."""
    match = FRAME.match(leaf.strip())
    if not match or not match["line"]:
        return False
    return bool(IDLE_CALL.search(_source_line(match["file"], int(match["line"]))))


def summarize(path: Path, top: int = 15) -> str:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = stack.split(";")
        thread = "thread"
        if parts and parts[0].startswith("thread ("):
            thread = parts.pop(0).split(": ", 1)[-1]
        parts = [p for p in parts if p and not p.startswith("process ")]
        if not parts:
            continue
        total += count
        if is_idle(parts[-1]):
            idle += count
            continue
        kind = "event loop" if thread == "MainThread" else "other threads"
        if any("aiosqlite" in p for p in parts):
            kind = "aiosqlite threads"
        threads[kind] += count
        leaf, line_no = parse(parts[-1])
        self_time[f"{leaf}:{line_no}"] += count
        for frame in {parse(p)[0] for p in parts}:
            inclusive[frame] += count
    busy = total - idle
    if not busy:
        return f"{path.name}: no samples"
    lines = [
        f"{path.name}: {total} samples, {busy} busy ({idle} idle waits left out); busy time by"
        " thread: "
        + ", ".join(f"{kind} {100 * n / busy:.0f}%" for kind, n in threads.most_common()),
        "  self time, % of busy samples:",
    ]
    for frame, count in self_time.most_common(top):
        lines.append(f"    {100 * count / busy:5.1f}%  {frame}")
    lines.append("  inclusive time (topichub, websockets, sqlalchemy, asyncio frames):")
    shown = 0
    for frame, count in inclusive.most_common():
        if frame.startswith(("<frozen", "threading.py", "asyncio/runners.py")) or (
            frame.startswith("asyncio/base_events.py:BaseEventLoop.run")
        ):
            continue
        lines.append(f"    {100 * count / busy:5.1f}%  {frame}")
        shown += 1
        if shown >= top + 10:
            break
    return "\n".join(lines)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(summarize(Path(name)))
