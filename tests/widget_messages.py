"""Send one browser message through a widget's own comm handler and collect what the widget sends back
(shared by the contract and steering tests)."""

from __future__ import annotations

from typing import Any


def send_collect(w: Any, content: dict) -> list[dict]:
    """``content`` as if the browser sent it; the custom messages the widget sent meanwhile (until it is idle)."""
    sent: list[dict] = []
    real = w.send
    w.send = lambda c, buffers=None: sent.append(c)
    try:
        w._on_frontend_msg(w, content, [])
        w.wait()
    finally:
        w.send = real
    return sent
