"""Helpers for end-to-end tests: a real ``topichub serve`` process on free ports, and a
small WebSocket client that pairs replies with requests by ``ref``.

Shipped with the package so other projects can test against a real node too. Timeouts scale
with ``TOPICHUB_TEST_TIMEOUT_FACTOR`` (default 1) for slow machines.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

TIMEOUT_FACTOR = float(os.environ.get("TOPICHUB_TEST_TIMEOUT_FACTOR", "1"))
READY = re.compile(r"ready: WebSocket ws://[^:]+:(\d+) REST http://[^:]+:(\d+)")


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


class ServerProcess:
    """``python -m topichub serve`` in a subprocess, ports picked by the OS."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.env = {**os.environ, "TOPICHUB_SECRET": "", **(env or {})}
        self.process: subprocess.Popen[str] | None = None
        self.ws_port = 0
        self.api_port = 0
        self.output: deque[str] = deque(maxlen=2000)
        self._reader: threading.Thread | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run another ``topichub`` command against the same data dir and database."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "topichub",
                *args,
                "--data-dir",
                str(self.data_dir),
                *self._database_args(),
            ],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout(60),
        )

    def _database_args(self) -> list[str]:
        if "--database" in self.args:
            index = self.args.index("--database")
            return self.args[index : index + 2]
        return []

    def start(self) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "topichub",
            "serve",
            "--ws-port",
            "0",
            "--api-port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]
        self.process = subprocess.Popen(
            command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line.rstrip("\n"))
                match = READY.search(line)
                if match:
                    self.ws_port, self.api_port = int(match[1]), int(match[2])
                    ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout(60)
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("topichub did not start:\n" + "\n".join(self.output))
        return self

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, seconds: float = 30) -> int:
        assert self.process is not None
        code = self.process.wait(timeout(seconds))
        if self._reader is not None:
            self._reader.join(timeout(5))
        return code

    def stop(self) -> int:
        """SIGTERM and wait: the graceful path."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def text(self) -> str:
        return "\n".join(self.output)


class WsClient:
    """A test client: ``request`` sends an action and returns its reply; everything else
    that arrives meanwhile waits in order for ``next_event``."""

    _refs = itertools.count(1)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.inbox: deque[dict[str, Any]] = deque()

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WsClient:
        ws = await connect(url, open_timeout=timeout(10), max_size=2**24, **kwargs)
        return cls(ws)

    async def recv(self, seconds: float = 5) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout(seconds))
        data = orjson.loads(frame)
        assert isinstance(data, dict)
        return data

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        if isinstance(frame, dict):
            frame = orjson.dumps(frame).decode()
        await self.ws.send(frame)

    async def request(self, action: str, seconds: float = 5, **fields: Any) -> dict[str, Any]:
        ref = f"r{next(self._refs)}"
        await self.send({"action": action, "ref": ref, **fields})
        return await self.reply(ref, seconds)

    async def reply(self, ref: str | int, seconds: float = 5) -> dict[str, Any]:
        while True:
            frame = await self.recv(seconds)
            if "result" in frame and frame.get("ref") == ref:
                return frame
            self.inbox.append(frame)

    async def next_event(self, seconds: float = 5) -> dict[str, Any]:
        if self.inbox:
            return self.inbox.popleft()
        return await self.recv(seconds)

    async def events(self, count: int, seconds: float = 5) -> list[dict[str, Any]]:
        return [await self.next_event(seconds) for _ in range(count)]

    async def close(self) -> None:
        await self.ws.close()
