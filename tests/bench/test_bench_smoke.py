"""The benchmark harness itself stays runnable: ``python -m bench --quick`` drives every
workload (fan-out against topichub and the three baselines, durable publish, pending replay,
idle connections, slow consumer) at tiny sizes and prints its table.

Not a performance test: only that the harness works and that the delivery checks it makes
under load (every subscriber got every seq exactly once; the slow consumer is closed with
1013 and gets the rest on reconnect) pass.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH_MODULES = ("picows", "uvloop", "socketio", "aiohttp")


def require_bench_dependencies() -> None:
    """The ``bench`` extra; CI must have it, a developer without it gets a skip."""
    for module in BENCH_MODULES:
        if os.environ.get("CI"):
            __import__(module)
        else:
            pytest.importorskip(module, reason="pip install -e '.[bench]'")


def rows(table: str, metric: str) -> list[list[str]]:
    found = []
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[2] == metric:
            found.append(cells)
    return found


@pytest.mark.timeout(240)
def test_quick_bench_prints_the_table_with_every_check_passing() -> None:
    require_bench_dependencies()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(r"^\| workload +\| case +\| metric +\| +median \|", done.stdout, re.M), output

    # The fan-out's subscribers, the replay and the idle connections were in C
    # (tests/bench/test_fanrecv.py, test_replayrecv.py, test_connopen.py).
    assert (
        "fan-out subscribers, the replay and the idle connections in C (bench/fanrecv.c, "
        "bench/replayrecv.c, bench/connopen.c)" in done.stdout
    ), output
    once = rows(done.stdout, "every seq once, every subscriber")
    cases = {cells[1] for cells in once}
    servers = ("topichub", "picows", "websockets", "socketio")
    assert cases == {f"{server} S=20" for server in servers}
    for cells in once:
        assert cells[3].startswith("yes") and cells[6] == "pass", cells

    # picows also measured its latency at topichub's rate (the same fixed rate).
    (same_rate,) = rows(done.stdout, "p99 ms at topichub's 20% rate")
    assert same_rate[1] == "picows S=20" and float(same_rate[3]) > 0, same_rate

    for metric in (
        "every pending seq once, in order",
        "slow client's close code",
        "slow user got every seq once",
        "others got every seq once",
        "connections still open",
    ):
        (cells,) = rows(done.stdout, metric)
        assert cells[6] == "pass", cells
    # Durable publish: topichub and the picows+sqlite3 baseline, with their ratio.
    acks = rows(done.stdout, "errors / seq gaps in acks")
    assert {cells[1].split(",")[0] for cells in acks} == {"sqlite", "picows-durable baseline"}
    assert all(cells[6] == "pass" for cells in acks), acks
    (ratio,) = rows(done.stdout, "acknowledged publishes/s ratio")
    times = "\u00d7"  # the multiplication sign the table prints after a ratio
    assert ratio[3].endswith(times) and float(ratio[3].rstrip(times)) > 0, ratio

    # Every numeric figure was measured (no n/a), the load generator's CPU is printed.
    for metric in ("server CPU µs/delivery", "deliveries/s (saturated)", "load generator CPU %"):
        for cells in rows(done.stdout, metric):
            assert cells[3] not in ("", "n/a"), cells
    assert rows(done.stdout, "acknowledged publishes/s")[0][3] != "n/a"
    assert rows(done.stdout, "messages/s replayed")[0][3] != "n/a"
    assert rows(done.stdout, "server RSS KiB per connection")[0][3] != "n/a"
