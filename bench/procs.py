"""Starting the processes of a benchmark: the server under test on core 0 and the load
generator on core 1 (``taskset``), with RLIMIT_NOFILE raised in both."""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

SERVER_CORE = 0
LOADGEN_CORE = 1
TOPICHUB_READY = re.compile(r"ready: WebSocket ws://[^:]+:(\d+) REST http://[^:]+:(\d+)")
BASELINE_READY = re.compile(r"ready: ws://[^:]+:(\d+)")

# Starts topichub exactly as `python -m topichub` does, on uvloop's event loop.
UVLOOP_SHIM = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from topichub.cli import main; sys.exit(main(sys.argv[1:]))"
)


class Pinning:
    """Whether (and how) processes are pinned; off on a 1-core machine or without taskset."""

    def __init__(self, enabled: bool = True) -> None:
        self.taskset = shutil.which("taskset")
        self.enabled = enabled and self.taskset is not None and (os.cpu_count() or 1) >= 2

    def prefix(self, core: int) -> list[str]:
        return [self.taskset or "taskset", "-c", str(core)] if self.enabled else []

    def describe(self) -> str:
        if not self.enabled:
            return "not pinned"
        return f"server pinned to core {SERVER_CORE}, load generator to core {LOADGEN_CORE}"


def raise_nofile() -> None:
    """RLIMIT_NOFILE up to the hard limit (runs in the child, before exec)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class ServerProc:
    """A server under test: topichub or a baseline, started and waited for until ready."""

    def __init__(self, name: str, command: list[str], ready: re.Pattern[str], env: dict[str, str]):
        self.name = name
        self.command = command
        self.ready_re = ready
        self.env = env
        self.output: deque[str] = deque(maxlen=400)
        self.process: subprocess.Popen[str] | None = None
        self.ws_port = 0
        self.api_port = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 60) -> ServerProc:
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            preexec_fn=raise_nofile,
        )
        ready = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                self.output.append(line.rstrip("\n"))
                match = self.ready_re.search(line)
                if match and not ready.is_set():
                    self.ws_port = int(match[1])
                    self.api_port = int(match[2]) if match.lastindex == 2 else 0
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(self.output))
        return self

    def stop(self, timeout: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def notes(self, *words: str) -> str:
        """The server's output lines that mention any of ``words`` (for error reports)."""
        found = [line for line in self.output if any(w in line for w in words)]
        return "\n".join(found[-20:])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def topichub_server(
    pinning: Pinning,
    data_dir: Path,
    secret: str,
    *args: str,
    uvloop: bool = False,
) -> ServerProc:
    entry = ["-c", UVLOOP_SHIM] if uvloop else ["-m", "topichub"]
    command = [
        *pinning.prefix(SERVER_CORE),
        sys.executable,
        *entry,
        "serve",
        "--ws-port",
        "0",
        "--api-port",
        "0",
        "--data-dir",
        str(data_dir),
        "--rate-limit",
        "0",
        "--log-level",
        "warning",
        *args,
    ]
    env = {**os.environ, "TOPICHUB_SECRET": secret}
    return ServerProc("topichub", command, TOPICHUB_READY, env)


BASELINE_MODULES = {
    "picows": "bench.servers.picows_server",
    "websockets": "bench.servers.websockets_server",
    "socketio": "bench.servers.socketio_server",
    "picows-durable": "bench.servers.picows_durable_server",
}


def baseline_server(pinning: Pinning, name: str, *args: str) -> ServerProc:
    module = BASELINE_MODULES[name]
    command = [*pinning.prefix(SERVER_CORE), sys.executable, "-m", module, *args]
    return ServerProc(name, command, BASELINE_READY, dict(os.environ))


class LoadgenError(RuntimeError):
    pass


def run_loadgen(pinning: Pinning, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one job in a fresh load-generator process; its last stdout line is the result."""
    command = [*pinning.prefix(LOADGEN_CORE), sys.executable, "-m", "bench.loadgen"]
    try:
        done = subprocess.run(
            command,
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=raise_nofile,
        )
    except subprocess.TimeoutExpired as exc:
        what = f"load generator timed out after {timeout:.0f} s ({job['kind']})"
        raise LoadgenError(what) from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        notes = [
            line
            for line in done.stderr.splitlines()
            if "disconnect" in line.lower() or "exception" in line.lower()
        ]
        tail = "\n".join(notes[:10] + done.stderr.splitlines()[-30:])
        what = f"load generator failed ({job['kind']}, exit {done.returncode})"
        raise LoadgenError(f"{what}:\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
