"""The six workloads of issue 4: each starts the servers it needs, runs load-generator jobs
against them and turns the results into table rows."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import fanrecv
from bench.accounts import (
    DB_FILE,
    Population,
    copy_sqlite,
    new_secret,
    populate,
    sqlite_url,
    write_tokens,
)
from bench.common import median
from bench.procs import Pinning, ServerProc, baseline_server, run_loadgen, topichub_server
from bench.report import Row
from topichub.auth import TokenSigner

POSTGRES_URL = os.environ.get(
    "TOPICHUB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TOPICHUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
FANOUT_TOPIC = "fan"
PUBLISHER = "pub"


@dataclass
class Config:
    runs: int = 3
    warmup: float = 1.0
    duration: float = 3.0
    subscribers: list[int] = field(default_factory=lambda: [100, 1000, 5000])
    servers: list[str] = field(
        default_factory=lambda: ["topichub", "picows", "websockets", "socketio"]
    )
    lat_fraction: float = 0.2
    window: int = 0  # fan-out messages in flight (0: max(8, 20000 // S))
    backends: list[str] = field(default_factory=lambda: ["sqlite", "postgres"])
    postgres_broker: str = "redis"
    durable_publishers: int = 100
    durable_topics: int = 100
    durable_window: int = 16
    replay_messages: int = 100_000
    replay_topics: int = 100
    replay_fill: str = "store"  # store: appended before the server starts; ws: published
    connections: int = 10_000
    connect_concurrency: int = 100
    source_ips: int = 0  # 0: one per 20,000 connections
    slow_subscribers: int = 1000
    slow_buffer: int = 64 * 1024
    topichub_uvloop: bool = False
    c_receiver: bool = True  # fan-out subscribers and the replay read in C (bench/*recv.c)
    pin: bool = True
    workdir: Path = Path("/tmp")
    quick: bool = False
    profile: Path | None = None  # record topichub with py-spy into this directory


class Context:
    """What the workloads of one ``python -m bench`` invocation share: pinning, the token
    secret, and a template SQLite database of users built once."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pinning = Pinning(config.pin)
        self.secret = new_secret()
        self.signer = TokenSigner(self.secret)
        self.workdir = config.workdir
        self._template: tuple[Path, Population] | None = None
        self._binaries: dict[str, Path] = {}
        self._count = 0
        self.profiles: list[Path] = []

    def profile_to(self, job: dict[str, Any], label: str) -> None:
        """Have the load generator record the server with py-spy over the measured part
        of the job (not the setup), if --profile was given."""
        if self.config.profile is not None:
            out = self.config.profile / f"{label}.txt"
            job["profile"] = str(out)
            self.profiles.append(out)

    def profile_job(self, label: str) -> dict[str, Any]:
        """The job fields that ask for a profile (see ``profile_to``)."""
        job: dict[str, Any] = {}
        self.profile_to(job, label)
        return job

    def fresh_dir(self, label: str) -> Path:
        self._count += 1
        path = self.workdir / f"{self._count:02d}-{label}"
        path.mkdir(parents=True)
        return path

    def template(self, users: int) -> tuple[Path, Population]:
        """u0..u{N-1} plus the publisher ``pub``, who owns the public topic ``fan``."""
        if self._template is None or len(self._template[1].users) < users + 1:
            path = self.fresh_dir("template")
            started = time.monotonic()
            population = populate(
                sqlite_url(path),
                [PUBLISHER, *(f"u{i}" for i in range(users))],
                [(FANOUT_TOPIC, PUBLISHER)],
            )
            log(f"template database: {users + 1} users in {time.monotonic() - started:.1f} s")
            self._template = (path, population)
        return self._template

    def c_client(self, name: str) -> Path:
        """bench/<name>.c (fanrecv, replayrecv, connopen), compiled once per invocation."""
        if name not in self._binaries:
            self._binaries[name] = fanrecv.build(self.workdir, name)
        return self._binaries[name]

    def topichub(self, data_dir: Path, *args: str) -> ServerProc:
        return topichub_server(
            self.pinning, data_dir, self.secret, *args, uvloop=self.config.topichub_uvloop
        )

    def loadgen(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        return run_loadgen(self.pinning, job, timeout)

    def token_file(self, label: str, **lists: list[str] | str) -> str:
        return str(
            write_tokens(self.workdir / f"tokens-{label}-{uuid.uuid4().hex[:6]}.json", **lists)
        )

    def needed_users(self, workloads: list[str]) -> int:
        c = self.config
        needed = 0
        if "fanout" in workloads and "topichub" in c.servers:
            needed = max(needed, *c.subscribers)
        if "slow" in workloads:
            needed = max(needed, c.slow_subscribers)
        if "connections" in workloads:
            needed = max(needed, c.connections)
        return needed


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


@contextmanager
def server_notes(server: ServerProc, *words: str) -> Iterator[None]:
    """On a failure, add what the server said about ``words`` to the error."""
    try:
        yield
    except Exception as exc:
        notes = server.notes(*words)
        if notes:
            raise RuntimeError(f"{exc}\nserver said:\n{notes}") from exc
        raise


# -- 1 and 2: fan-out and its baselines ----------------------------------------------------


def fanout(ctx: Context) -> list[Row]:
    c = ctx.config
    rows: list[Row] = []
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for subscribers in c.subscribers:
        for server_name in c.servers:
            label = f"{server_name} S={subscribers}"
            log(f"fan-out: {label}")
            # picows also runs a latency window at topichub's own rate (topichub runs
            # first): the raw ceiling at the very rate topichub's p99 is measured at.
            ours = results.get(("topichub", subscribers), {}).get("runs", [])
            ref_rates = [run["lat_rate"] for run in ours] if server_name == "picows" else []
            try:
                results[(server_name, subscribers)] = _fanout_one(
                    ctx, server_name, subscribers, ref_rates
                )
            except Exception as exc:  # a baseline that cannot run must not sink the rest
                log(f"fan-out {label} failed: {exc}")
                results[(server_name, subscribers)] = {"runs": [], "error": str(exc)}
    for subscribers in c.subscribers:
        for server_name in c.servers:
            rows += _fanout_rows(server_name, subscribers, results[(server_name, subscribers)])
        rows += _ratio_rows(subscribers, results)
    return rows


def _fanout_one(
    ctx: Context, server_name: str, subscribers: int, ref_rates: list[float]
) -> dict[str, Any]:
    c = ctx.config
    job: dict[str, Any] = {
        "ref_rates": ref_rates,
        "kind": "fanout",
        "label": f"{server_name} S={subscribers}",
        "subscribers": subscribers,
        "topic": FANOUT_TOPIC,
        "runs": c.runs,
        "warmup": c.warmup,
        "duration": c.duration,
        "lat_fraction": c.lat_fraction,
        "window": c.window,
        "dialect": "socketio" if server_name == "socketio" else "topichub",
    }
    if c.c_receiver:
        job["fanrecv"] = str(ctx.c_client("fanrecv"))
    timeout = 180 + subscribers / 20 + c.runs * (c.warmup + 2 * c.duration) * 3
    if server_name == "topichub":
        template, population = ctx.template(subscribers)
        data_dir = ctx.fresh_dir(f"fanout-{subscribers}")
        copy_sqlite(template, data_dir)
        names = [f"u{i}" for i in range(subscribers)]
        job["token_file"] = ctx.token_file(
            "fanout",
            tokens=population.tokens(ctx.signer, names),
            pub_token=population.tokens(ctx.signer, [PUBLISHER])[0],
        )
        server = ctx.topichub(data_dir)
    else:
        job["tokens"] = [f"s{i}" for i in range(subscribers)]
        job["pub_token"] = "pub"
        server = baseline_server(ctx.pinning, server_name)
    with server.start():
        job["url"], job["server_pid"] = server.ws_url, server.pid
        if server_name == "topichub":
            ctx.profile_to(job, f"fanout-topichub-S{subscribers}")
        return ctx.loadgen(job, timeout)


def _values(result: dict[str, Any], key: str) -> list[float]:
    return [float(run[key]) for run in result.get("runs", [])]


def _fanout_rows(server_name: str, subscribers: int, result: dict[str, Any]) -> list[Row]:
    case = f"{server_name} S={subscribers}"
    w = "fan-out"
    if not result.get("runs"):
        return [Row(w, case, "error", text=result.get("error", "no result")[:60], ok=False)]
    primary = server_name == "topichub" and subscribers == 1000
    check = result["exactly_once"]
    rows = [
        Row(w, case, "server CPU µs/delivery", _values(result, "us_per_delivery")),
        Row(w, case, "  of which kernel µs", _values(result, "us_kernel_per_delivery")),
        Row(w, case, "deliveries/s (saturated)", _values(result, "deliveries_per_s"), "{:,.0f}"),
        Row(w, case, "server CPU % (saturated)", _values(result, "server_cpu_pct"), "{:.0f}"),
        Row(w, case, "load generator CPU %", _values(result, "loadgen_cpu_pct"), "{:.0f}"),
        Row(
            w,
            case,
            "other processes on core 0 / 1 %",
            text=f"{median(_values(result, 'others_on_server_core_pct')):.0f} / "
            f"{median(_values(result, 'others_on_loadgen_core_pct')):.0f}",
        ),
        Row(w, case, "CPU µs/delivery at 20% rate", _values(result, "us_per_delivery_at_rate")),
        Row(w, case, "  of which kernel µs", _values(result, "us_kernel_per_delivery_at_rate")),
        Row(
            w, case, "server CPU % at 20% rate", _values(result, "server_cpu_pct_at_rate"), "{:.0f}"
        ),
        Row(
            w,
            case,
            "load generator CPU % at 20% rate",
            _values(result, "loadgen_cpu_pct_at_rate"),
            "{:.0f}",
        ),
        Row(
            w,
            case,
            "steal ms/s on core 0 / 1 at 20% rate",
            text=f"{median(_values(result, 'steal_server_at_rate')):.0f} / "
            f"{median(_values(result, 'steal_loadgen_at_rate')):.0f}",
        ),
        Row(w, case, "p50 ms at 20% rate", _values(result, "p50_ms")),
        Row(
            w,
            case,
            "p99 ms at 20% rate",
            _values(result, "p99_ms"),
            target="≤ 8" if primary else "",
            check=(lambda v: v <= 8.0) if primary else None,
        ),
        *_reference_rows(case, result),
        Row(
            w,
            case,
            "every seq once, every subscriber",
            text=f"{'yes' if check['ok'] else 'NO'} ({check['messages']:,} msgs)",
            target="yes",
            ok=bool(check["ok"]),
        ),
    ]
    return rows


def _reference_rows(case: str, result: dict[str, Any]) -> list[Row]:
    """A baseline's latency window at topichub's rate, when it ran one."""
    if "ref_p99_ms" not in result["runs"][0]:
        return []
    at = "at topichub's 20% rate"
    return [
        Row(
            "fan-out",
            case,
            f"server CPU % {at}",
            _values(result, "ref_server_cpu_pct_at_rate"),
            "{:.0f}",
        ),
        Row(
            "fan-out",
            case,
            f"load generator CPU % {at}",
            _values(result, "ref_loadgen_cpu_pct_at_rate"),
            "{:.0f}",
        ),
        Row("fan-out", case, f"p50 ms {at}", _values(result, "ref_p50_ms")),
        Row("fan-out", case, f"p99 ms {at}", _values(result, "ref_p99_ms")),
    ]


def _ratio_rows(subscribers: int, results: dict[tuple[str, int], dict[str, Any]]) -> list[Row]:
    ours = results.get(("topichub", subscribers))
    if not ours or not ours.get("runs"):
        return []
    mine = median(_values(ours, "us_per_delivery"))
    primary = subscribers == 1000
    rows = []
    for name in ("picows", "websockets", "socketio"):
        other = results.get((name, subscribers))
        if not other or not other.get("runs"):
            continue
        theirs = median(_values(other, "us_per_delivery"))
        if name == "socketio":
            rows.append(
                Row(
                    "fan-out",
                    f"socketio/topichub S={subscribers}",
                    "CPU per delivery ratio",
                    [theirs / mine],
                    "{:.2f}×",
                    target="≥ 20×" if primary else "",
                    check=(lambda v: v >= 20.0) if primary else None,
                )
            )
        else:
            is_bar = primary and name == "picows"
            rows.append(
                Row(
                    "fan-out",
                    f"topichub/{name} S={subscribers}",
                    "CPU per delivery ratio",
                    [mine / theirs],
                    "{:.2f}×",
                    target="≤ 1.0×" if is_bar else "",
                    check=(lambda v: v <= 1.0) if is_bar else None,
                )
            )
    return rows


# -- 3: durable publish ---------------------------------------------------------------------


@contextmanager
def backend_space(ctx: Context, backend: str, label: str) -> Iterator[tuple[Path, str, list[str]]]:
    """A fresh data dir, and a fresh database on the backend: (data dir, URL, extra args)."""
    data_dir = ctx.fresh_dir(label)
    if backend == "sqlite":
        yield data_dir, sqlite_url(data_dir), []
        return
    database = f"topichub_bench_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{database}"')
    url = urlunsplit(urlsplit(POSTGRES_URL)._replace(path="/" + database))
    broker = "memory://"
    if ctx.config.postgres_broker == "redis":
        separator = "&" if "?" in REDIS_URL else "?"
        broker = f"{REDIS_URL}{separator}channel=topichub-bench-{uuid.uuid4().hex[:12]}"
    try:
        yield data_dir, url, ["--database", url, "--broker", broker]
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


DURABLE_TARGETS = {"sqlite": 50_000.0, "postgres": 20_000.0}


def durable(ctx: Context) -> list[Row]:
    """topichub on each backend and, on SQLite, the picows+sqlite3 baseline (the least a
    Python server must do per durable publish on this machine), runs interleaved."""
    c = ctx.config
    rows: list[Row] = []
    for backend in c.backends:
        servers = ["topichub", "picows-durable"] if backend == "sqlite" else ["topichub"]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        errors: dict[str, str] = {}
        for run in range(c.runs):
            for name in servers:
                if name in errors:
                    continue
                log(f"durable publish: {name} on {backend} run {run + 1}")
                try:
                    result = _durable_one(ctx, backend, name)
                    counts = {k: result[k] for k in ("errors", "seq_errors")}
                    runs[name].append({**result["runs"][0], **counts})
                except Exception as exc:
                    log(f"durable publish: {name} on {backend} failed: {exc}")
                    errors[name] = str(exc)
        broker = f"postgres+{c.postgres_broker}" if backend == "postgres" else backend
        shape = f"{c.durable_publishers} publishers, {c.durable_topics} topics"
        for name in servers:
            case = f"{broker}, {shape}" if name == "topichub" else f"{name} baseline, {shape}"
            rows += _durable_rows(case, runs[name], errors.get(name), name == "topichub", backend)
        if all(runs[name] for name in servers) and len(servers) == 2:
            pairs = zip(runs["topichub"], runs["picows-durable"], strict=False)
            rows.append(
                Row(
                    "durable",
                    f"topichub/picows-durable on {backend}",
                    "acknowledged publishes/s ratio",
                    [mine["publishes_per_s"] / theirs["publishes_per_s"] for mine, theirs in pairs],
                    "{:.2f}×",
                )
            )
    return rows


def _durable_rows(
    case: str, per: list[dict[str, Any]], error: str | None, targeted: bool, backend: str
) -> list[Row]:
    if not per:
        return [Row("durable", case, "error", text=(error or "no result")[:60], ok=False)]
    target = DURABLE_TARGETS[backend]
    return [
        Row(
            "durable",
            case,
            "acknowledged publishes/s",
            [p["publishes_per_s"] for p in per],
            "{:,.0f}",
            target=f"≥ {target:,.0f}" if targeted else "",
            check=(lambda v, t=target: v >= t) if targeted else None,
        ),
        Row("durable", case, "server CPU µs/publish", [p["us_per_publish"] for p in per]),
        Row(
            "durable",
            case,
            "  of which kernel µs",
            [p.get("us_kernel_per_publish", float("nan")) for p in per],
        ),
        Row("durable", case, "server CPU %", [p["server_cpu_pct"] for p in per], "{:.0f}"),
        Row("durable", case, "load generator CPU %", [p["loadgen_cpu_pct"] for p in per], "{:.0f}"),
        Row(
            "durable",
            case,
            "errors / seq gaps in acks",
            text=f"{sum(p['errors'] for p in per)} / {sum(p['seq_errors'] for p in per)}",
            target="0 / 0",
            ok=not any(p["errors"] or p["seq_errors"] for p in per) and error is None,
        ),
    ]


def _durable_one(ctx: Context, backend: str, server_name: str = "topichub") -> dict[str, Any]:
    c = ctx.config
    publishers = [f"p{i}" for i in range(c.durable_publishers)]
    topics = [f"d{i}" for i in range(c.durable_topics)]
    with backend_space(ctx, backend, f"durable-{backend}-{server_name}") as (
        data_dir,
        url,
        args,
    ):
        population = populate(
            url,
            publishers,
            [(t, publishers[i % len(publishers)]) for i, t in enumerate(topics)],
            [
                (topics[i % len(topics)], p)
                for i, p in enumerate(publishers)
                if i >= len(topics)  # the first len(topics) publishers own theirs
            ],
        )
        job = {
            "kind": "durable",
            "topics": topics,
            "window": c.durable_window,
            "runs": 1,
            "warmup": c.warmup,
            "duration": c.duration,
            "token_file": ctx.token_file(
                "durable", tokens=population.tokens(ctx.signer, publishers)
            ),
        }
        if server_name == "topichub":
            server = ctx.topichub(data_dir, *args)
        else:  # the same database file, populated the same way
            server = baseline_server(ctx.pinning, server_name, str(data_dir / DB_FILE))
        with server.start():
            job["url"], job["server_pid"] = server.ws_url, server.pid
            if server_name == "topichub":
                ctx.profile_to(job, f"durable-{backend}")
            return ctx.loadgen(job, 120 + 3 * (c.warmup + c.duration))


# -- 4: pending replay ----------------------------------------------------------------------


def replay(ctx: Context) -> list[Row]:
    c = ctx.config
    topics = [f"r{i}" for i in range(c.replay_topics)]
    per_topic = c.replay_messages // c.replay_topics
    publishers = [f"w{i}" for i in range(c.replay_topics)]
    readers = [f"reader{i}" for i in range(c.runs)]
    data_dir = ctx.fresh_dir("replay")
    log(f"pending replay: {per_topic * len(topics):,} messages over {len(topics)} topics")
    started = time.monotonic()
    via_store = c.replay_fill == "store"
    population = populate(
        sqlite_url(data_dir),
        publishers + readers,
        list(zip(topics, publishers, strict=True)),
        [(t, r) for r in readers for t in topics],
        backlog=per_topic if via_store else 0,
    )
    filled = {"messages": per_topic * len(topics), "seconds": time.monotonic() - started}
    runs: list[dict[str, Any]] = []
    with ctx.topichub(data_dir).start() as server:
        if not via_store:
            filled = ctx.loadgen(
                {
                    "kind": "fill",
                    "url": server.ws_url,
                    "topics": topics,
                    "per_topic": per_topic,
                    "token_file": ctx.token_file(
                        "fill", tokens=population.tokens(ctx.signer, publishers)
                    ),
                },
                900,
            )
        log(
            f"pending replay: backlog of {filled['messages']:,} written via {c.replay_fill} in "
            f"{filled['seconds']:.1f} s ({filled['messages'] / filled['seconds']:,.0f}/s)"
        )
        for reader in readers:
            runs.append(
                ctx.loadgen(
                    {
                        "kind": "replay",
                        "url": server.ws_url,
                        "server_pid": server.pid,
                        "token": population.tokens(ctx.signer, [reader])[0],
                        "expected": per_topic * len(topics),
                        "per_topic": per_topic,
                        "topics": len(topics),
                        **({"replayrecv": str(ctx.c_client("replayrecv"))} if c.c_receiver else {}),
                        **ctx.profile_job(f"replay-{reader}"),
                    },
                    300,
                )
            )
            log(
                f"pending replay: {runs[-1]['messages_per_s']:,.0f} messages/s, first after "
                f"{runs[-1]['first_ms']:.1f} ms"
            )
    case = f"{per_topic * len(topics):,} msgs, {len(topics)} topics"
    return [
        Row(
            "replay",
            case,
            "messages/s replayed",
            [r["messages_per_s"] for r in runs],
            "{:,.0f}",
            target="≥ 200,000",
            check=lambda v: v >= 200_000,
        ),
        Row(
            "replay",
            case,
            "ms from connected to 1st message",
            [r["first_ms"] for r in runs],
            target="≤ 50",
            check=lambda v: v <= 50,
        ),
        Row("replay", case, "ms from connect to connected", [r["connect_ms"] for r in runs]),
        Row("replay", case, "server CPU %", [r["server_cpu_pct"] for r in runs], "{:.0f}"),
        *(
            [
                Row("replay", case, "server CPU µs/message", [r["us_per_message"] for r in runs]),
                Row(
                    "replay",
                    case,
                    "  of which kernel µs",
                    [r["us_kernel_per_message"] for r in runs],
                ),
            ]
            if all("us_per_message" in r for r in runs)
            else []
        ),
        Row("replay", case, "load generator CPU %", [r["loadgen_cpu_pct"] for r in runs], "{:.0f}"),
        Row(
            "replay",
            case,
            "every pending seq once, in order",
            text="yes" if all(r["exactly_once"] for r in runs) else "NO",
            target="yes",
            ok=all(r["exactly_once"] for r in runs),
        ),
        Row(
            "replay",
            case,
            f"backlog fill via {c.replay_fill}, msgs/s (info)",
            [filled["messages"] / filled["seconds"]],
            "{:,.0f}",
        ),
    ]


# -- 5: idle connections --------------------------------------------------------------------


def connections(ctx: Context) -> list[Row]:
    c = ctx.config
    template, population = ctx.template(c.connections)
    names = [f"u{i}" for i in range(c.connections)]
    token_file = ctx.token_file("connections", tokens=population.tokens(ctx.signer, names))
    source_ips = c.source_ips or 1 + c.connections // 20_000
    runs = []
    for run in range(c.runs):
        log(f"connections: {c.connections:,} idle, run {run + 1}")
        data_dir = ctx.fresh_dir("connections")
        copy_sqlite(template, data_dir)
        with ctx.topichub(data_dir).start() as server:
            time.sleep(0.5)
            runs.append(
                ctx.loadgen(
                    {
                        "kind": "connections",
                        "url": server.ws_url,
                        "server_pid": server.pid,
                        "connections": c.connections,
                        "concurrency": c.connect_concurrency,
                        "source_ips": source_ips,
                        "token_file": token_file,
                        "settle": 0.5 if c.quick else 2.0,
                        **({"connopen": str(ctx.c_client("connopen"))} if c.c_receiver else {}),
                        **ctx.profile_job(f"connections-run{run + 1}"),
                    },
                    300,
                )
            )
            log(
                f"connections: {runs[-1]['seconds']:.2f} s, "
                f"{runs[-1]['kib_per_connection']:.1f} KiB each"
            )
    case = f"{c.connections:,} idle, authenticated"
    return [
        Row(
            "connections",
            case,
            "server RSS KiB per connection",
            [r["kib_per_connection"] for r in runs],
            "{:.1f}",
            target="≤ 12",
            check=lambda v: v <= 12,
        ),
        Row(
            "connections",
            case,
            f"seconds to accept all {c.connections:,}",
            [r["seconds"] for r in runs],
            target="< 5",
            check=lambda v: v < 5,
        ),
        Row(
            "connections",
            case,
            "server CPU µs/connection",
            [1e6 * (r["server_user_s"] + r["server_system_s"]) / c.connections for r in runs],
            "{:,.0f}",
        ),
        Row(
            "connections",
            case,
            "  of which kernel µs",
            [1e6 * r["server_system_s"] / c.connections for r in runs],
            "{:,.0f}",
        ),
        Row(
            "connections",
            case,
            "server CPU % while accepting",
            [100 * (r["server_user_s"] + r["server_system_s"]) / r["seconds"] for r in runs],
            "{:.0f}",
        ),
        Row(
            "connections",
            case,
            "load generator CPU % while connecting",
            [100 * r["loadgen_cpu_s"] / r["seconds"] for r in runs],
            "{:.0f}",
        ),
        Row(
            "connections",
            case,
            "server RSS MiB with all open",
            [r["rss_after_kib"] / 1024 for r in runs],
            "{:.0f}",
        ),
        Row(
            "connections",
            case,
            "connections still open",
            text=f"{min(r['alive'] for r in runs):,}",
            target=f"{c.connections:,}",
            ok=all(r["alive"] == c.connections for r in runs),
        ),
    ]


# -- 6: slow consumer -----------------------------------------------------------------------


def slow(ctx: Context) -> list[Row]:
    c = ctx.config
    subscribers = c.slow_subscribers
    template, population = ctx.template(subscribers)
    data_dir = ctx.fresh_dir("slow")
    copy_sqlite(template, data_dir)
    names = [f"u{i}" for i in range(subscribers)]
    log(f"slow consumer: 1 of {subscribers} stops reading (outbound buffer {c.slow_buffer:,} B)")
    server = ctx.topichub(
        data_dir, "--outbound-buffer-bytes", str(c.slow_buffer), "--log-level", "info"
    )
    with server.start(), server_notes(server, "slow", "rror", "Traceback", "clos"):
        result = ctx.loadgen(
            {
                "kind": "slow",
                "url": server.ws_url,
                "api_url": server.api_url,
                "server_pid": server.pid,
                "subscribers": subscribers,
                "topic": FANOUT_TOPIC,
                "runs": c.runs,
                "warmup": c.warmup,
                "duration": c.duration,
                "lat_fraction": c.lat_fraction,
                "window": c.window,
                **({"fanrecv": str(ctx.c_client("fanrecv"))} if c.c_receiver else {}),
                "token_file": ctx.token_file(
                    "slow",
                    tokens=population.tokens(ctx.signer, names),
                    pub_token=population.tokens(ctx.signer, [PUBLISHER])[0],
                ),
            },
            300 + c.runs * (200 + 4 * (c.warmup + c.duration)),
        )
    case = f"1 of {subscribers} stalls"
    without, with_slow = result["without"], result["with"]
    rate_ratio = [
        b["deliveries_per_s"] / a["deliveries_per_s"]
        for a, b in zip(without, with_slow, strict=True)
    ]
    p99_ratio = [b["p99_ms"] / a["p99_ms"] for a, b in zip(without, with_slow, strict=True)]
    codes = [o["close_code"] for o in result["slow"]]
    once = result["exactly_once"]
    pending = median([o["pending_on_reconnect"] for o in result["slow"]])
    return [
        Row(
            "slow",
            case,
            "others' deliveries/s, all reading",
            [r["deliveries_per_s"] for r in without],
            "{:,.0f}",
        ),
        Row(
            "slow",
            case,
            "others' deliveries/s, stall→1013→back",
            [r["deliveries_per_s"] for r in with_slow],
            "{:,.0f}",
        ),
        Row(
            "slow",
            case,
            "  seconds of that episode",
            [r["seconds"] for r in with_slow],
            "{:.1f}",
        ),
        Row(
            "slow",
            case,
            "  ratio stalled/all reading",
            rate_ratio,
            "{:.2f}",
            target="≥ 0.90",
            check=lambda v: v >= 0.9,
        ),
        Row("slow", case, "others' p99 ms, all reading", [r["p99_ms"] for r in without]),
        Row("slow", case, "others' p99 ms, one stalled", [r["p99_ms"] for r in with_slow]),
        Row(
            "slow",
            case,
            "  ratio stalled/all reading",
            p99_ratio,
            "{:.2f}",
            target="≤ 1.10",
            check=lambda v: v <= 1.1,
        ),
        Row(
            "slow",
            case,
            "slow client's close code",
            text=f"{codes[0]} ×{len(codes)}"
            if len(set(codes)) == 1
            else ",".join(str(code) for code in codes),
            target="1013",
            ok=all(code == 1013 for code in codes),
        ),
        Row(
            "slow",
            case,
            "s from stall to close",
            [
                o["detected_after_s"] if o["detected_after_s"] is not None else float("nan")
                for o in result["slow"]
            ],
        ),
        Row(
            "slow",
            case,
            "slow user got every seq once",
            text=f"{'yes' if result['slow_exactly_once'] else 'NO'} "
            f"(pending on reconnect {pending:,.0f})",
            target="yes",
            ok=bool(result["slow_exactly_once"]),
        ),
        Row(
            "slow",
            case,
            "others got every seq once",
            text="yes" if once["ok"] else "NO",
            target="yes",
            ok=bool(once["ok"]),
        ),
        Row(
            "slow",
            case,
            "server peak RSS MiB (start)",
            [result["rss_peak_kib"] / 1024],
            "{:.0f}",
            text=f"{result['rss_peak_kib'] / 1024:.0f} ({result['rss_start_kib'] / 1024:.0f})",
        ),
    ]


WORKLOADS: dict[str, Callable[[Context], list[Row]]] = {
    "fanout": fanout,
    "durable": durable,
    "replay": replay,
    "connections": connections,
    "slow": slow,
}


def cleanup(ctx: Context) -> None:
    shutil.rmtree(ctx.workdir, ignore_errors=True)
