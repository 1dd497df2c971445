"""The report's pictures, drawn with matplotlib (Agg, no display) and embedded as PNG data URIs.

Every figure here is also in a table next to it: the plots help the eye, the tables carry the numbers.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime

from toolkit.glossary import parse_utc

STATUS_COLOUR = {"pass": "#2e7d32", "warn": "#f9a825", "fail": "#c62828", "error": "#6a1b9a"}


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
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _when(iso: str) -> datetime:
    return parse_utc(iso)


def _time_axis(ax, times: list[datetime]) -> None:
    """Readable dates; a single run gets an hour either side instead of matplotlib's years."""
    from datetime import timedelta

    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    if times and max(times) - min(times) < timedelta(minutes=2):
        ax.set_xlim(min(times) - timedelta(hours=1), max(times) + timedelta(hours=1))


def expectation_bars(rows: list[tuple[str, float, str]]) -> str | None:
    """Measured over expected (1.0 = exactly the expectation) per checked figure: (label, ratio, status)."""
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    labels = [r[0] for r in rows]
    ratios = [r[1] for r in rows]
    ax.barh(labels, ratios, color=[STATUS_COLOUR.get(r[2], "#607d8b") for r in rows])
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1.2, label="expected (floor)")
    for y, ratio in enumerate(ratios):
        ax.text(ratio, y, f" {ratio:.2f}x", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("measured / expected (log scale; right of the dashed line reaches the expectation)")
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def over_time(series: dict[str, list[tuple[str, float]]], ylabel: str, title: str) -> str | None:
    """One line per series of (ISO time, value)."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for name, points in sorted(series.items()):
        ax.plot([_when(t) for t, _ in points], [v for _, v in points], marker="o", label=name)
    _time_axis(ax, [_when(t) for points in series.values() for t, _ in points])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def small_multiples(
    panels: dict[str, list[tuple[str, float]]], units: dict[str, str], title: str
) -> str | None:
    """One small panel per load (their units differ): its headline figure over time."""
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    plt = _pyplot()
    n = len(panels)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, sorted(panels.items()), strict=False):
        ax.plot([_when(t) for t, _ in points], [v for _, v in points], marker="o")
        _time_axis(ax, [_when(t) for t, _ in points])
        ax.set_title(name, fontsize=9)
        ax.set_ylabel(units.get(name, ""), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def loss_curves(curves: dict[str, list[float]]) -> str | None:
    curves = {k: v for k, v in curves.items() if len(v) > 1}
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, marker=".", label=name)
    ax.set_xlabel("optimizer step (warm-up and measured)")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)
