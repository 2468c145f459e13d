"""Small bqplot / ipywidgets helpers shared by the explorers (no computation here).

Figures use bqplot's default theme and set no background colour, so they follow the notebook's
theme. Every chart is built once; updates assign new arrays to the existing marks.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

#: Tableau 10, readable on light and dark backgrounds.
PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
]


def colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def figure(
    title: str,
    x_label: str,
    y_label: str,
    *,
    x_scale: Any = None,
    y_scale: Any = None,
    height: str = "300px",
    legend: bool = False,
) -> tuple[bq.Figure, dict[str, Any]]:
    """An empty figure with x/y axes; returns it and its scales ``{"x": ..., "y": ...}``."""
    sx = x_scale if x_scale is not None else bq.LinearScale()
    sy = y_scale if y_scale is not None else bq.LinearScale()
    axes = [
        bq.Axis(scale=sx, label=x_label, grid_lines="none"),
        bq.Axis(scale=sy, label=y_label, side="left", grid_lines="dashed"),
    ]
    fig = bq.Figure(
        title=title,
        axes=axes,
        marks=[],
        fig_margin=dict(top=40, bottom=45, left=60, right=20),
        legend_location="top-right",
        layout=W.Layout(flex="1 1 0", min_width="280px", height=height, min_height=height),  # no squashing in a VBox
    )
    return fig, {"x": sx, "y": sy}


def tooltip(fields: Sequence[str], labels: Sequence[str], formats: Sequence[str] | None = None) -> bq.Tooltip:
    return bq.Tooltip(fields=list(fields), labels=list(labels), formats=list(formats or [""] * len(fields)))


def point_tooltip(x_label: str, y_label: str, y_format: str = ".3g") -> bq.Tooltip:
    """Tooltip for scatter points whose ``names`` carry the series / token text."""
    return tooltip(["name", "x", "y"], ["", x_label, y_label], ["", "", y_format])


def series_points(x: np.ndarray, ys: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Flatten a [n, len(x)] array of lines into scatter-point arrays (x, y, names, per-point colours)."""
    ys = np.atleast_2d(np.asarray(ys, dtype=np.float64))
    x = np.asarray(x)
    n = ys.shape[0]
    return {
        "x": np.tile(x, n),
        "y": ys.reshape(-1),
        "names": [names[i] for i in range(n) for _ in range(len(x))],
        "colors": [PALETTE[i % len(PALETTE)] for i in range(n) for _ in range(len(x))],
    }


def update(mark: Any, **values: Any) -> None:
    """Assign several traits of one mark in a single sync message."""
    with mark.hold_sync(), mark.hold_trait_notifications():  # cross-validation (row vs color shape) at the end
        for k, v in values.items():
            setattr(mark, k, v)


def row_ticks(fig: bq.Figure, rows) -> None:
    """Whole layer rows on the x axis (at most ~12 ticks), not 0.5-steps."""
    rows = np.asarray(rows)
    step = max(1, int(np.ceil(len(rows) / 12)))
    fig.axes[0].tick_values = rows[::step]


def status_line() -> W.HTML:
    return W.HTML("", layout=W.Layout(min_height="1.5em"))


def show_error(status: W.HTML, error: BaseException | None) -> None:
    if error is None:
        status.value = ""
    else:
        status.value = f'<span style="color: var(--jp-error-color1, #c62828)">⚠ {html.escape(str(error))}</span>'


def guarded(status: W.HTML, fn: Callable[[], None]) -> None:
    """Run a UI-triggered update; on error, show it and leave the charts as they were."""
    try:
        fn()
    except (ValueError, TypeError, KeyError) as err:
        show_error(status, err)
    else:
        show_error(status, None)


def table_html(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str = "") -> str:
    """A small HTML table; every cell is escaped (token text is untrusted)."""
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:0 8px'>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table style='border-collapse:collapse;font-family:var(--jp-code-font-family, monospace)'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def prompt_labels(prompts: Any) -> tuple[list[str], list[str]]:
    """A prompt, a list of prompts or a ``{label: prompt}`` mapping -> (labels, prompts)."""
    if isinstance(prompts, str):
        return [_short(prompts)], [prompts]
    if isinstance(prompts, dict):
        return [str(k) for k in prompts], [str(v) for v in prompts.values()]
    prompts = [str(p) for p in prompts]
    return unique([_short(p) for p in prompts]), prompts


def unique(names: Sequence[str]) -> list[str]:
    """Make display names unique (ordinal scales and legends collapse duplicates)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _short(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
