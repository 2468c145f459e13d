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
