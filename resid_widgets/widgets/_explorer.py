"""The explorers' shared base: layout, charts sized to the output width, legends and titles outside the plot.

Every explorer is an ``Explorer`` (an ipywidgets ``VBox``) of ``Chart``s. A ``Chart`` is a bqplot ``Figure``
with its title and legend in HTML above it (so a title wraps instead of overflowing, and a legend never
covers the plotted marks), axes whose ticks read (whole layer rows; 1, 10, 100 on log axes), and one
``Scatter`` per series whose single colour is the series' colour (so the markers keep their colour
through any update). Charts sit in wrapping rows with a flexible basis: three fit side by side in a
~950 px output area, and they shrink and wrap instead of scrolling. Colours in HTML come from JupyterLab's
``--jp-*`` variables (light and dark themes); bqplot follows the theme by itself. Nothing is computed here.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Iterable, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.rows import ROW_AXIS, row_label, row_name

#: Tableau 10, readable on light and dark backgrounds.
PALETTE = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
]
#: bqplot line styles cycled with the colours, so many series stay apart (and SVG dash arrays for the legend)
DASHES = ["solid", "dashed", "dotted", "dash_dotted"]
_DASH_SVG = {"solid": "", "dashed": "6,3", "dotted": "1.5,2.5", "dash_dotted": "6,2,1.5,2"}
#: the x-axis title of every chart over residual rows (``analyses.rows``: the one layer numbering)
ROW_LABEL = ROW_AXIS
#: a chart's flexible width: three in a row fit a ~950 px output area, narrower outputs wrap them
CHART_BASIS, CHART_MIN = "300px", "260px"


def colors(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def dashes(n: int) -> list[str]:
    """One line style per series: solid for the first colour cycle, then dashed, dotted..."""
    return [DASHES[(i // 2) % len(DASHES)] if n > 2 else "solid" for i in range(n)]


# ---- HTML pieces ------------------------------------------------------------------------------------


def legend_html(items: Iterable[tuple[str, str, str, str]]) -> str:
    """A wrapping legend: (label, colour, line style, kind) with kind ``line``, ``dot``, ``bar`` or ``band``."""
    parts = []
    for label, color, dash, kind in items:
        c = html.escape(color, quote=True)
        if kind == "dot":
            swatch = f'<circle cx="9" cy="6" r="4" fill="{c}"/>'
        elif kind == "bar":
            swatch = f'<rect x="3" y="1" width="12" height="10" fill="{c}"/>'
        elif kind == "band":
            swatch = f'<rect x="1" y="2" width="18" height="8" fill="{c}" fill-opacity="0.3"/><line x1="1" y1="6" x2="19" y2="6" stroke="{c}" stroke-width="2.5"/>'
        else:
            da = _DASH_SVG.get(dash, "")
            swatch = (
                f'<line x1="1" y1="6" x2="21" y2="6" stroke="{c}" stroke-width="2.5"'
                + (f' stroke-dasharray="{da}"' if da else "")
                + f'/><circle cx="11" cy="6" r="2.5" fill="{c}"/>'
            )
        parts.append(
            '<span style="display:inline-flex;align-items:center;gap:4px;white-space:nowrap;max-width:100%;overflow:hidden;text-overflow:ellipsis">'
            f'<svg width="22" height="12" style="flex:none">{swatch}</svg><span>{html.escape(label)}</span></span>'
        )
    return (
        '<div style="display:flex;flex-wrap:wrap;gap:2px 14px;justify-content:center;font-size:11px;'
        'line-height:1.5;color:var(--jp-ui-font-color1)">' + "".join(parts) + "</div>"
    )


def title_html(title: str) -> str:
    return (
        '<div style="text-align:center;font-weight:600;font-size:13px;line-height:1.3;overflow-wrap:anywhere;'
        f'color:var(--jp-ui-font-color0)">{html.escape(title)}</div>'
    )


# ---- ticks ------------------------------------------------------------------------------------------


def int_ticks(axis: bq.Axis, values: Sequence[int], max_ticks: int = 12) -> None:
    """Whole-number ticks (layer rows, positions), thinned to at most ``max_ticks``."""
    values = np.asarray(values)
    need = max(1, int(np.ceil(len(values) / max_ticks)))
    step = next(s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, need) if s >= need)  # round steps
    axis.tick_values = values[values % step == 0] if np.issubdtype(values.dtype, np.integer) else values[::step]
    axis.tick_format = "d"


def row_ticks(axis: bq.Axis, rows: Sequence[int], max_ticks: int = 12) -> None:
    """Ticks of a residual-row axis, labelled with the one layer numbering (``embed, 0, 1, ...``)."""
    int_ticks(axis, rows, max_ticks)
    axis.tick_labels = {int(r): row_label(int(r)) for r in rows}


def nice_ticks(lo: float, hi: float, n: int = 5) -> np.ndarray:
    """About ``n`` round ticks inside [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    lo, hi = float(min(lo, hi)), float(max(lo, hi))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 0:
        return np.asarray([lo])
    raw = (hi - lo) / max(1, n)
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks = np.arange(np.ceil(lo / step) * step, hi + step * 1e-9, step)
    return np.round(ticks / step) * step + 0.0  # no -0.30000000000000004, no -0


def log_ticks(lo: float, hi: float) -> np.ndarray:
    """Ticks for a log axis over [lo, hi]: the powers of ten, with 2 and 5 between them when the range is short."""
    lo, hi = max(float(lo), 1e-12), max(float(hi), 1e-12)
    if hi < lo:
        lo, hi = hi, lo
    a, b = int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi)))
    mults = (1, 2, 5) if b - a <= 2 else (1,)
    ticks = [m * 10.0**e for e in range(a, b + 1) for m in mults]
    inside = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    return np.asarray(inside if len(inside) >= 2 else ticks[:2] if len(ticks) >= 2 else [lo, hi])


def text_color_on(background: str) -> str:
    """``#111111`` or ``#ffffff``, whichever contrasts more with a ``#rrggbb`` background."""
    r, g, b = (int(background[i : i + 2], 16) / 255 for i in (1, 3, 5))

    def lin(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    L = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#111111" if (L + 0.05) / (0.0056 + 0.05) >= 1.05 / (L + 0.05) else "#ffffff"


#: d3's RdBu scheme (bqplot's ``ColorScale(scheme="RdBu")``): -1 red ... +1 blue
_RDBU = ["#67001f", "#b2182b", "#d6604d", "#f4a582", "#fddbc7", "#f7f7f7", "#d1e5f0", "#92c5de", "#4393c3", "#2166ac", "#053061"]


def rdbu(value: float, lo: float = -1.0, hi: float = 1.0) -> str:
    """The RdBu colour of ``value`` on [lo, hi] (piecewise linear between the scheme's 11 colours)."""
    t = float(np.clip((value - lo) / (hi - lo), 0.0, 1.0)) * (len(_RDBU) - 1)
    i = min(int(t), len(_RDBU) - 2)
    f = t - i
    a = [int(_RDBU[i][k : k + 2], 16) for k in (1, 3, 5)]
    b = [int(_RDBU[i + 1][k : k + 2], 16) for k in (1, 3, 5)]
    return "#" + "".join(f"{round(x + f * (y - x)):02x}" for x, y in zip(a, b))


# ---- a chart ----------------------------------------------------------------------------------------


class Chart:
    """A bqplot figure with an HTML title and legend above it, and one coloured ``Scatter`` per series.

    ``chart.figure`` is the ``bq.Figure`` (its marks are the explorer's); ``chart.widget`` is what goes
    in a layout. ``set_dots`` keeps one Scatter per series after the figure's own marks; ``set_legend``
    fills the HTML legend.
    """

    def __init__(
        self,
        title: str,
        x_label: str,
        y_label: str,
        *,
        x_scale: Any = None,
        y_scale: Any = None,
        height: int = 260,
        margin: dict | None = None,
        basis: str = CHART_BASIS,
        tooltip_fields: tuple[str, str] = ("x", "y"),
        tooltip_format: str = ".4g",
        rows: bool = False,
    ):
        self.scales = {
            "x": x_scale if x_scale is not None else bq.LinearScale(),
            "y": y_scale if y_scale is not None else bq.LinearScale(),
        }
        m = dict(top=12, bottom=46, left=66, right=18)
        m.update(margin or {})
        self.x_axis = bq.Axis(scale=self.scales["x"], label=x_label, grid_lines="none", label_offset="34px")
        self.y_axis = bq.Axis(
            scale=self.scales["y"], label=y_label, side="left", grid_lines="dashed", label_offset=f"{m['left'] - 18}px",
        )
        self.figure = bq.Figure(
            title="",
            axes=[self.x_axis, self.y_axis],
            marks=[],
            fig_margin=m,
            layout=W.Layout(width="auto", min_width="0", height=f"{height}px", min_height=f"{height}px", overflow="hidden"),
        )
        self._title = W.HTML(title_html(title), layout=W.Layout(margin="0 4px"))
        self.legend = W.HTML("", layout=W.Layout(margin="0 4px", min_height="0"))
        self.legend.add_class("rw-legend")
        self.widget = W.VBox(
            [self._title, self.legend, self.figure],
            layout=W.Layout(flex=f"1 1 {basis}", min_width=CHART_MIN, margin="0 0 6px 0"),
        )
        self.widget.add_class("rw-chart")
        self._title_text = title
        self._dots: list[bq.Scatter] = []
        self._tip_labels = tooltip_fields
        self._tip_format = tooltip_format
        #: x is the residual row: ticks read ``embed, 0, 1, ...`` and a dot's tooltip names its row
        self.rows = rows

    def set_rows(self, rows: Sequence[int], max_ticks: int = 12) -> None:
        """The x axis spans these residual rows, labelled with the one layer numbering."""
        row_ticks(self.x_axis, rows, max_ticks)

    @property
    def title(self) -> str:
        return self._title_text

    @title.setter
    def title(self, value: str) -> None:
        if value != self._title_text:
            self._title_text = value
            self._title.value = title_html(value)

    def set_legend(self, items: Iterable[tuple[str, str, str, str]]) -> None:
        items = list(items)
        value = legend_html(items) if items else ""
        if self.legend.value != value:
            self.legend.value = value

    @property
    def dots(self) -> list[bq.Scatter]:
        return list(self._dots)

    def set_dots(
        self,
        x: Any,
        ys: Sequence[Sequence[float]],
        names: Sequence[str],
        cols: Sequence[str],
        *,
        size: int = 24,
        visible: Sequence[bool] | None = None,
    ) -> None:
        """One Scatter per series (x shared or one per series), each with its series' single colour."""
        n = len(ys)
        if self.rows:  # the row's name (after layer l) goes in the dot's name: the x value would be a row index
            tip = bq.Tooltip(fields=["name", "y"], labels=["", self._tip_labels[1]], formats=["", self._tip_format])
        else:
            tip = bq.Tooltip(fields=["name", "x", "y"], labels=["", *self._tip_labels], formats=["", "", self._tip_format])
        if len(self._dots) < n:
            new = [
                bq.Scatter(
                    x=[0], y=[0], scales=self.scales, default_size=size, colors=[PALETTE[0]], stroke="transparent",
                    tooltip=tip, display_names=False,
                )
                for _ in range(n - len(self._dots))
            ]
            self._dots += new
            self.figure.marks = list(self.figure.marks) + new
        xs = x if (len(x) == n and np.ndim(x[0]) == 1 and n > 0 and not np.isscalar(x[0])) else [x] * n
        for i, dot in enumerate(self._dots):
            if i < n:
                xi = np.asarray(xs[i])
                point_names = [f"{names[i]} · {row_name(int(x))}" for x in xi] if self.rows else [names[i]] * len(xi)
                update(
                    dot, x=xi, y=np.asarray(ys[i], dtype=np.float64), names=point_names,
                    default_size=size, visible=True if visible is None else bool(visible[i]),
                )
                paint(dot, [cols[i]])
            else:
                update(dot, visible=False)


def update(mark: Any, **values: Any) -> None:
    """Assign several traits of one mark in a single sync message."""
    with mark.hold_sync(), mark.hold_trait_notifications():  # cross-validation (row vs color shape) at the end
        for k, v in values.items():
            setattr(mark, k, v)


def paint(mark: Any, cols: Sequence[str]) -> None:
    """Give a Scatter / Label its colours in a message of their own, after its data.

    bqplot 0.13 can leave the markers of a redrawn Scatter unfilled (black) when new data arrive, and it
    restyles them only on a change of ``colors``. So the list is sent every time, alternating between the
    colours and the colours twice (bqplot cycles the list, so both paint the same)."""
    cols = list(cols)
    mark.colors = cols * 2 if list(mark.colors) == cols else cols


def tooltip(fields: Sequence[str], labels: Sequence[str], formats: Sequence[str] | None = None) -> bq.Tooltip:
    return bq.Tooltip(fields=list(fields), labels=list(labels), formats=list(formats or [""] * len(fields)))


def flow_row(*children: W.Widget) -> W.HBox:
    """A wrapping row (no fixed width: it never makes the output area scroll)."""
    return W.HBox(list(children), layout=W.Layout(flex_flow="row wrap", align_items="flex-start"))


def dropdown(options, value, description: str) -> W.Dropdown:
    """A dropdown as wide as its longest option (never truncated), at most the output's width."""
    w = W.Dropdown(options=options, value=value, description=description, style={"description_width": "initial"})
    fit_dropdown(w)
    return w


def fit_dropdown(w: W.Dropdown) -> None:
    """Size a dropdown to its description and longest option (~7.5 px a character at 13 px, plus the arrow)."""
    longest = max((len(str(label)) for label in w._options_labels), default=4)
    w.layout = W.Layout(width=f"{int(8 * len(w.description) + 7.5 * longest + 56)}px", max_width="100%")


# ---- the base ---------------------------------------------------------------------------------------


class Explorer(W.VBox):
    """The explorers' template: compute, build, draw, then ``figures`` and ``data``.

    A subclass creates its controls and ``self.status``, then calls ``self._start(children)``, which runs
    ``_compute`` (numbers into ``self._data``; may raise on bad input, before anything is shown),
    ``_build`` (the ``Chart``s into ``self._charts``, once) and ``_draw`` (the numbers into the charts'
    marks, in place), and lays out ``children(self._charts)`` (a callable: the charts exist only after
    ``_build``) with the status line under them. ``_refresh`` recomputes and redraws; ``_replace`` sets attributes and
    refreshes, restoring them if that raises (nothing shown changes on bad input).
    """

    _charts: dict[str, Chart]
    _data: dict[str, Any]

    def _start(self, children: Callable[[dict[str, Any]], Sequence[W.Widget]], *, compute: bool = True) -> None:
        if compute:
            self._compute()
        self._build()
        self._draw()
        self._init_layout(children(self._charts))

    def _compute(self) -> None:
        raise NotImplementedError

    def _build(self) -> None:
        raise NotImplementedError

    def _draw(self) -> None:
        raise NotImplementedError

    def _refresh(self) -> None:
        self._compute()
        self._draw()

    def _replace(self, **attrs: Any) -> None:
        """Set these attributes and refresh; if that raises, put them back (the charts are untouched) and re-raise."""
        old = {k: getattr(self, k) for k in attrs}
        for k, v in attrs.items():
            setattr(self, k, v)
        try:
            self._refresh()
        except Exception:
            for k, v in old.items():
                setattr(self, k, v)
            raise

    @property
    def figures(self) -> dict[str, Any]:
        """``{name: bq.Figure}`` of every chart."""
        return {name: c.figure for name, c in self._charts.items()}

    def data(self) -> dict[str, Any]:
        """Every plotted number (numpy arrays, lists, DataFrames)."""
        return dict(self._data)

    def _init_layout(self, children: Sequence[W.Widget]) -> None:
        W.VBox.__init__(self, children=list(children) + [self.status], layout=W.Layout(width="auto", overflow="hidden"))
        self.add_class("rw-explorer")

    def _guard(self, fn: Callable[[], None]) -> Callable[[Any], None]:
        return lambda *_: guarded(self.status, fn)


# ---- argument checks (bad input: a clear error with the valid range, nothing changed) ----------------


def check_index(name: str, value: Any, n: int, what: str = "") -> int:
    """``value`` as an index in ``[0, n)``; no wrapping, no bools, no floats."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer in [0, {n - 1}]{what}, got {value!r}")
    if not 0 <= int(value) < n:
        raise ValueError(f"{name} must be in [0, {n - 1}]{what}, got {int(value)}")
    return int(value)


def check_tau(value: Any, lo: float = 0.01) -> float:
    """τ as a float in ``[lo, 1]`` (never clamped)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"tau must be a number in [{lo:g}, 1], got {value!r}")
    tau = float(value)
    if not lo <= tau <= 1.0:
        raise ValueError(f"tau must be in [{lo:g}, 1] (a fraction of W_U's energy), got {tau:g}")
    return tau


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
