"""The one table of bench/RESULTS.md: every figure of a run and its ratio.

A row is a :class:`Row`; the table is made of sections, each a function from the
run's Results to its rows (``report.TABLE_SECTIONS``, in order). To add a figure,
add a row to a section, or a section to that list: a section whose scenario did not
run (``python -m bench --only ...``) returns no rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.results import Measure, Results

HEADER = [
    "| what | figure | p50 | p99 | errors / counts | ratio | target | met |",
    "| --- | ---: | ---: | ---: | --- | --- | --- | --- |",
]


@dataclass
class Row:
    what: str
    figure: str            # the main figure with its unit: "7,176 req/s", "5.3 ms", "71 MB"
    p50: str = "-"
    p99: str = "-"
    counts: str = "-"      # errors / non-2xx for wrk runs; requests, origin GETs, ...
    ratio: str = "-"       # "0.56x bare aiohttp"
    target: str = "-"
    met: bool | None = None

    def line(self) -> str:
        met = {True: "**met**", False: "**not met**", None: "-"}[self.met]
        return (f"| {self.what} | {self.figure} | {self.p50} | {self.p99} | {self.counts} "
                f"| {self.ratio} | {self.target} | {met} |")


Section = Callable[[Results], list[Row]]


def render(results: Results, sections: list[Section]) -> list[str]:
    return HEADER + [row.line() for section in sections for row in section(results)]


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def mb(value: float) -> str:
    return f"{value / 1e6:.0f} MB"


def rps(measure: Measure) -> str:
    text = f"{measure.wrk.rps:,.0f} req/s"
    if len(measure.runs) > 1:
        text += " (" + " / ".join(f"{r.rps:,.0f}" for r in measure.runs) + ")"
    return text


def wrk_row(measure: Measure, ratio: str = "-", target: str = "-",
            met: bool | None = None) -> Row:
    """A wrk scenario: req/s (every round's in brackets), p50, p99, errors / non-2xx."""
    w = measure.wrk
    return Row(measure.title, rps(measure), ms(w.p50_ms), ms(w.p99_ms),
               f"{w.socket_errors} / {w.non_2xx}", ratio, target, met)


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"
