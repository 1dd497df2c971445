"""The report's pictures, drawn with matplotlib (Agg, no display) and embedded as PNG data URIs.

Every figure drawn here is also written as a number next to it: the plots help the eye, the text carries
the numbers. Charts are small (one per figure), on a time axis that spans the runs with a margin, never
matplotlib's default years or an hour either side of a few minutes.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta

from toolkit.glossary import parse_utc

STATUS_COLOUR = {"pass": "#2e7d32", "warn": "#f9a825", "fail": "#c62828", "error": "#6a1b9a"}
LINE = "#1565c0"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    # names come from stored results and nodes: `$\x$` in a host or class name is text, never mathtext
    # (which would fail when the figure is drawn)
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _when(iso: str) -> datetime:
    return parse_utc(iso)


def _time_axis(ax, times: list[datetime]) -> None:
    """The runs' own span with a margin (at least a minute either side), readable tick labels."""
    import matplotlib.dates as mdates

    lo, hi = min(times), max(times)
    pad = max((hi - lo) * 0.08, timedelta(minutes=1))
    ax.set_xlim(lo - pad, hi + pad)
    locator = mdates.AutoDateLocator(minticks=2, maxticks=5)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _plain_numbers(ax) -> None:
    """Tick labels as the numbers themselves, never `1e-5 + 4.999e-1` offsets."""
    from matplotlib.ticker import ScalarFormatter

    fmt = ScalarFormatter(useOffset=False)
    fmt.set_scientific(False)
    ax.yaxis.set_major_formatter(fmt)


def figure_over_time(points: list[tuple[str, float]], unit: str, floor: float | None = None) -> str | None:
    """One figure of one load over the runs: (ISO time, value), the floor dashed when there is one.
    None for fewer than two runs (one point is no history)."""
    if len(points) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 2.2))
    times = [_when(t) for t, _ in points]
    values = [v for _, v in points]
    ax.plot(times, values, marker="o", color=LINE, linewidth=1.5)
    if floor:
        ax.axhline(floor, color="#c62828", linestyle="--", linewidth=1, label="floor")
        ax.legend(fontsize=7, loc="lower left")
    _time_axis(ax, times)
    ax.set_ylim(bottom=0, top=max([*values, floor or 0]) * 1.15 or 1)
    _plain_numbers(ax)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    return _png(fig)


def lines_over_time(series: dict[str, list[tuple[str, float]]], unit: str) -> str | None:
    """One line per series of (ISO time, value): temperature or power per node and sensor."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 2.6))
    times = []
    for name, points in sorted(series.items()):
        when = [_when(t) for t, _ in points]
        times += when
        ax.plot(when, [v for _, v in points], marker="o", label=name, linewidth=1.5)
    _time_axis(ax, times)
    _plain_numbers(ax)
    ax.set_ylabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def loss_curves(curves: dict[str, list[float]]) -> str | None:
    """Training loss per optimizer step, one line per run."""
    curves = {k: v for k, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 2.6))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, marker=".", label=name, linewidth=1.5)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step (warm-up and measured)", fontsize=8)
    ax.set_ylabel("training loss", fontsize=8)
    _plain_numbers(ax)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
