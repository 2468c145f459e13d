"""Text helpers shared by the explorers: HTML tables and prompt labels (charts: ``_explorer.py``)."""

from __future__ import annotations

import html
from typing import Any, Sequence


def table_html(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str = "") -> str:
    """A small HTML table; every cell is escaped (token text is untrusted)."""
    head = "".join(f"<th style='text-align:left;padding:0 8px'>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:0 8px'>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    # the caption is a paragraph above the table, not a <caption>: a caption wraps to the table's width
    # (a narrow ranking table made it three lines at ~300 px with the output's width free)
    cap = f"<div class='rw-table-caption' style='overflow-wrap:anywhere'>{html.escape(caption)}</div>" if caption else ""
    return (
        f"{cap}<table style='border-collapse:collapse;font-family:var(--jp-code-font-family, monospace)'>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def prompt_labels(prompts: Any) -> tuple[list[str], list[str]]:
    """A prompt, a list of prompts or a ``{label: prompt}`` mapping -> (labels, prompts).

    Every prompt must be a string (``None`` or a number is refused, never analysed as the text "None")."""
    if isinstance(prompts, str):
        return [_short(prompts)], [prompts]
    if isinstance(prompts, dict):
        labels, values = [str(k) for k in prompts], list(prompts.values())
    elif prompts is None or not hasattr(prompts, "__iter__"):
        raise TypeError(f"prompts must be a string, a list of strings or a {{label: prompt}} dict, got {prompts!r}")
    else:
        values = list(prompts)
        labels = None
    bad = [(i, p) for i, p in enumerate(values) if not isinstance(p, str)]
    if bad:
        i, p = bad[0]
        raise TypeError(f"every prompt must be a string; prompt {i} is {type(p).__name__} {p!r}")
    if not values:
        raise ValueError("no prompts: give at least one")
    return (labels if labels is not None else unique([_short(p) for p in values])), values


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
