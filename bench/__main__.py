"""``python -m bench [WORKLOAD ...] [options]``: run topichub's benchmarks and print one table.

Workloads: fanout (with the picows, websockets and python-socketio baselines), durable,
replay, connections, slow. Without any, all run. ``--quick`` is a small smoke run (well
under a minute) that exercises every path of the harness. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from bench.common import load_average
from bench.report import Row, failures, render
from bench.workloads import WORKLOADS, Config, Context, cleanup, log

LIBRARIES = [
    "topichub",
    "websockets",
    "picows",
    "uvloop",
    "python-socketio",
    "python-engineio",
    "aiohttp",
    "orjson",
    "SQLAlchemy",
    "aiosqlite",
    "asyncpg",
    "redis",
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("workloads", nargs="*", choices=[[], *WORKLOADS], metavar="WORKLOAD")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one short run (smoke test)")
    p.add_argument("--runs", type=int, help="runs per figure; the table shows the median (3)")
    p.add_argument("--duration", type=float, help="seconds per measured window (3)")
    p.add_argument("--warmup", type=float, help="seconds of load before each window (1)")
    p.add_argument("--subscribers", type=int, nargs="+", help="fan-out sizes (100 1000 5000)")
    p.add_argument(
        "--servers",
        nargs="+",
        choices=["topichub", "picows", "websockets", "socketio"],
        help="fan-out servers (all four)",
    )
    p.add_argument("--window", type=int, help="fan-out messages in flight (max(8, 20000/S))")
    p.add_argument("--backends", nargs="+", choices=["sqlite", "postgres"], help="durable")
    p.add_argument("--postgres-broker", choices=["redis", "memory"], help="with PostgreSQL")
    p.add_argument("--publishers", type=int, help="durable publishers (100)")
    p.add_argument("--topics", type=int, help="durable topics (100)")
    p.add_argument("--replay-messages", type=int, help="pending backlog (100000)")
    p.add_argument("--replay-topics", type=int, help="topics of the backlog (100)")
    p.add_argument(
        "--replay-fill", choices=["store", "ws"], help="backlog via the store (default) or WS"
    )
    p.add_argument("--connections", type=int, help="idle connections (10000)")
    p.add_argument("--connect-concurrency", type=int, help="handshakes in flight (100)")
    p.add_argument("--source-ips", type=int, help="127.0.0.x client addresses (auto)")
    p.add_argument("--slow-subscribers", type=int, help="slow-consumer subscribers (1000)")
    p.add_argument("--slow-buffer", type=int, help="--outbound-buffer-bytes there (65536)")
    p.add_argument(
        "--topichub-uvloop", action="store_true", help="run topichub on uvloop (a what-if)"
    )
    p.add_argument(
        "--python-receiver",
        action="store_true",
        help="read the fan-out's subscribers and the pending replay, and open the idle "
        "connections, with picows in Python, not with bench/fanrecv.c, bench/replayrecv.c "
        "and bench/connopen.c",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    p.add_argument("--profile", type=Path, help="record topichub with py-spy into this directory")
    p.add_argument("--json", type=Path, help="also write the rows and raw numbers here")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    return p


def make_config(args: argparse.Namespace, workdir: Path) -> Config:
    config = Config(workdir=workdir)
    if args.quick:
        config.quick = True
        config.runs = 1
        config.warmup = 0.2
        config.duration = 0.5
        config.subscribers = [20]
        config.backends = ["sqlite"]
        config.durable_publishers = config.durable_topics = 10
        config.replay_messages, config.replay_topics = 2000, 10
        config.connections = 200
        config.slow_subscribers = 20
        config.slow_buffer = 16 * 1024
    overrides = {
        "runs": args.runs,
        "duration": args.duration,
        "warmup": args.warmup,
        "subscribers": args.subscribers,
        "servers": args.servers,
        "window": args.window,
        "backends": args.backends,
        "postgres_broker": args.postgres_broker,
        "durable_publishers": args.publishers,
        "durable_topics": args.topics,
        "replay_messages": args.replay_messages,
        "replay_topics": args.replay_topics,
        "replay_fill": args.replay_fill,
        "connections": args.connections,
        "connect_concurrency": args.connect_concurrency,
        "source_ips": args.source_ips,
        "slow_subscribers": args.slow_subscribers,
        "slow_buffer": args.slow_buffer,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    config.topichub_uvloop = args.topichub_uvloop
    config.c_receiver = not args.python_receiver
    config.profile = args.profile
    config.pin = not args.no_pin
    return config


def machine() -> list[str]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} -")
    return [
        f"machine: {os.cpu_count()} cores ({model}), {memory:.0f} GiB, Linux {platform.release()}",
        f"python: {platform.python_implementation()} {platform.python_version()}",
        "libraries: " + ", ".join(versions),
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    selected = args.workloads or list(WORKLOADS)
    workdir = Path(tempfile.mkdtemp(prefix="topichub-bench-"))
    config = make_config(args, workdir)
    ctx = Context(config)
    if ctx.pinning.enabled:
        os.sched_setaffinity(0, {1})  # the orchestrator stays off the server's core
    header = machine()
    loop = "uvloop (--topichub-uvloop)" if config.topichub_uvloop else "asyncio, as shipped"
    receiver = (
        "in C (bench/fanrecv.c, bench/replayrecv.c, bench/connopen.c)"
        if config.c_receiver
        else "in Python (--python-receiver)"
    )
    header.append(
        f"pinning: {ctx.pinning.describe()}; topichub's event loop: {loop}; baselines and "
        f"load generator on uvloop; fan-out subscribers, the replay and the idle connections "
        f"{receiver}"
    )
    header.append(
        f"runs: {config.runs} (median, min–max), windows: {config.warmup:g} s warm-up + "
        f"{config.duration:g} s measured; load average at start {load_average()}"
    )
    for line in header:
        log(line)
    started = time.monotonic()
    rows: list[Row] = []
    raw: dict[str, object] = {}
    try:
        needed = ctx.needed_users(selected)
        if needed:
            ctx.template(needed)
        for name in selected:
            began = time.monotonic()
            try:
                produced = WORKLOADS[name](ctx)
            except Exception as exc:  # one failed workload must not lose the others' rows
                log(f"{name} failed: {exc}")
                lines = [line for line in str(exc).splitlines() if line.strip()] or [repr(exc)]
                first = next((line for line in lines if "Error:" in line), lines[0])
                produced = [Row(name, "error", "did not complete", text=first[:70], ok=False)]
            log(f"{name} took {time.monotonic() - began:.0f} s")
            rows += produced
            raw[name] = [row.__dict__ | {"check": None} for row in produced]
    finally:
        if not args.keep:
            cleanup(ctx)
    header.append(f"took {time.monotonic() - started:.0f} s; load average at end {load_average()}")
    print()
    print("\n".join(header))
    print()
    print(render(rows))
    failed = failures(rows)
    print()
    if failed:
        print(f"{len(failed)} target(s) not met:")
        for row in failed:
            print(f"  - {row.workload} {row.case}: {row.metric} = {row.cells()[3]} ({row.target})")
    else:
        print("all targets met")
    if ctx.profiles:
        from bench.profile import summarize

        print()
        for path in ctx.profiles:
            if path.exists():
                print(summarize(path))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": raw}, indent=1, default=str))
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
