"""The one table ``python -m bench`` prints: a row per figure, with the median over the
runs, the min–max, the issue's target and pass/fail."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.common import median


@dataclass
class Row:
    workload: str
    case: str
    metric: str
    values: list[float] = field(default_factory=list)
    fmt: str = "{:,.2f}"
    target: str = ""
    check: Callable[[float], bool] | None = None
    text: str | None = None  # a non-numeric result ("yes", "1013")
    ok: bool | None = None  # verdict for a text result

    @property
    def median(self) -> float:
        return median(self.values)

    @property
    def verdict(self) -> str:
        if self.ok is not None:
            return "pass" if self.ok else "FAIL"
        if self.check is None:
            return ""
        value = self.median
        if math.isnan(value):
            return "FAIL"
        return "pass" if self.check(value) else "FAIL"

    def cells(self) -> list[str]:
        if self.text is not None:
            shown, spread = self.text, ""
        elif not self.values or math.isnan(self.median):
            shown, spread = "n/a", ""
        else:
            shown = self.fmt.format(self.median)
            clean = [v for v in self.values if not math.isnan(v)]
            spread = (
                f"{self.fmt.format(min(clean))}–{self.fmt.format(max(clean))}"
                if len(clean) > 1
                else ""
            )
        return [self.workload, self.case, self.metric, shown, spread, self.target, self.verdict]


HEADER = ["workload", "case", "metric", "median", "min–max", "target", "verdict"]


def render(rows: Sequence[Row]) -> str:
    table = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    right = {3, 4}

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":" if i in right else "-" * (w + 2)) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(HEADER), rule, *(line(row.cells()) for row in rows)])


def failures(rows: Sequence[Row]) -> list[Row]:
    return [row for row in rows if row.verdict == "FAIL"]
