"""The load generator's side of ``bench/fanrecv.c``: build it, hand it the subscribers'
sockets, and talk to it over its control socket (the commands are in the C file's header).

The subscribers are connected and subscribed by the load generator's picows clients, as
for every server; only their reading moves to C, so the handshakes, the dialects and the
publisher stay in one place (:mod:`bench.loadgen`).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import cpu_seconds

HERE = Path(__file__).parent
FDS_PER_MESSAGE = 250  # under the kernel's SCM_MAX_FD (253)


def build(directory: Path, name: str = "fanrecv") -> Path:
    """Compile ``bench/<name>.c`` (fanrecv, replayrecv, connopen) into ``directory``; a failure
    stops the benchmark."""
    binary = directory / name
    subprocess.run(
        ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(HERE / f"{name}.c")],
        check=True,
    )
    return binary


def read_int64s(path: str) -> array.array[int]:
    values = array.array("q")
    with open(path, "rb") as f:
        values.frombytes(f.read())
    return values


@dataclass
class Summary:
    """What one subscriber got, as fanrecv counted it."""

    first: int
    last: int
    count: int
    errors: int
    close_code: int  # 0: still open
    anomalies: list[tuple[int, int]]  # (expected seq, received seq), the first few


class FanRecv:
    """A running fanrecv process. ``on_progress(watermark, total)`` is called whenever every
    subscriber has got a higher seq (the watermark) with the receipts counted so far."""

    def __init__(self, binary: str, on_progress: Callable[[int, int], None]) -> None:
        self.binary = binary
        self.on_progress = on_progress
        self.proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._replies: asyncio.Queue[bytes] = asyncio.Queue()
        self._reader_task: asyncio.Task[None] | None = None

    def start(self, fds: Sequence[int]) -> None:
        """Start fanrecv and give it ``fds`` (the caller has stopped reading them); then
        ``await connect()``."""
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [self.binary, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
        )
        theirs.close()
        self._control = ours
        for start in range(0, len(fds), FDS_PER_MESSAGE):
            socket.send_fds(ours, [b"A\n"], list(fds[start : start + FDS_PER_MESSAGE]))
            self._expect(self._read_line_blocking(), b"a")  # one batch per message

    async def connect(self) -> None:
        """Listen for fanrecv's progress reports from now on."""
        reader, self._writer = await asyncio.open_connection(sock=self._control)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    def _read_line_blocking(self) -> bytes:
        assert self._control is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = self._control.recv(1)
            if not chunk:
                raise RuntimeError(f"fanrecv exited ({self._exit_status()})")
            line += chunk
        return line

    @staticmethod
    def _expect(line: bytes, kind: bytes) -> bytes:
        if not line.startswith(kind + b" ") and line.strip() != kind:
            raise RuntimeError(f"fanrecv answered {line!r}, expected {kind!r}")
        return line

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while True:
            line = await reader.readline()
            if not line:
                await self._replies.put(b"")  # gone: whoever waits for an answer fails
                return
            if line.startswith(b"c "):
                _, watermark, total = line.split()
                self.on_progress(int(watermark), int(total))
            else:
                await self._replies.put(line)

    async def _command(self, command: bytes, kind: bytes) -> bytes:
        assert self._writer is not None
        self._writer.write(command)
        line = await self._replies.get()
        if not line:
            raise RuntimeError(f"fanrecv exited ({self._exit_status()})")
        return self._expect(line, kind)

    async def start_latency(self) -> None:
        await self._command(b"L 1\n", b"l")

    async def stop_latency(self) -> list[int]:
        """The publish-to-receive times (ns) recorded since ``start_latency``."""
        fd, path = tempfile.mkstemp(prefix="fanrecv-lat-")
        os.close(fd)
        try:
            line = await self._command(b"L 0 %s\n" % path.encode(), b"l")
            values = read_int64s(path)
        finally:
            os.unlink(path)
        if len(values) != int(line.split()[1]):
            raise RuntimeError("fanrecv's latency file is short")
        return values.tolist()

    async def end(self) -> list[Summary]:
        """Stop fanrecv; what each subscriber got, in the order they were given."""
        assert self._writer is not None
        self._writer.write(b"E\n")
        summaries: list[Summary] = []
        while True:
            line = await self._replies.get()
            if not line:
                raise RuntimeError(f"fanrecv exited ({self._exit_status()})")
            if line.strip() == b"e":
                break
            fields = [int(v) for v in self._expect(line, b"s").split()[1:]]
            pairs = fields[5:]
            summaries.append(
                Summary(*fields[:5], [(pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2)])
            )
        await self.close()
        return summaries

    def cpu_seconds(self) -> float:
        """User + system CPU seconds fanrecv has used (it runs on the load generator's
        core, so it counts as the load generator's)."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        with contextlib.suppress(OSError):
            user, system = cpu_seconds(self.proc.pid)
            return user + system
        return 0.0

    def _exit_status(self) -> str:
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        return "still running" if code is None else f"exit status {code}"

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
