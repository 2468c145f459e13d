"""The Writers panel of ``ResidWidget`` (Python half): who wrote the pinned cell, on request, cached.

The browser asks ``{type: "writers", req, seq, row, pos, writer?, labels?}`` (protocol.json
``messages.to_python.writers``, checked by ``contract.parse_writers``) and gets one reply
``{type: "writers", req, seq, row, pos, n_layers, n_heads, direction, lens_value, constant, labels?}`` with one
float32 buffer, or ``{type: "writers", req, error}``:

* a cell (no ``writer``): every writer's direct logit attribution at (row, pos), in the model's full label
  layout (``labels``: TransformerLens's, for the last row: ``L{l}H{h}``..., ``{l}_mlp_out``..., ``embed``,
  ``pos_embed``, ``bias``; writers that come after the row are NaN), then the layer strip [L, 2] (each
  layer's whole attention and MLP output; NaN at and after the row): ``4 (W + 2L)`` bytes;
* one writer (``writer`` = its index in ``labels``): its attribution at every position [T], same row and
  direction as the cell.

``labels`` travel once per view (the view asks with ``labels: true`` until it has them). The direction is
``cell_direction``: the one definition, shared with ``AttributionPanel``. Results come from one
``AttributionRun`` per (token ids, weights key) and are cached per cell (``MAX_CELLS``, least recently used
first out) and per (row, direction) for the every-position view (``MAX_ROWS``). ``export`` gives what
``ResidWidget.save_html`` inlines: the cells computed so far for the analysis shown (at most
``EXPORT_CELLS``, the latest) and the every-position arrays fetched for them (at most ``EXPORT_WRITERS``).
"""

from __future__ import annotations

import base64
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from resid_widgets.payload.contract import ContractError, WritersAsk, parse_writers

#: cells kept per widget (each 4 (W + 2L) bytes plus a small header)
MAX_CELLS = 512
#: (row, direction) attributions at every position kept for the per-writer view (each W x T float32)
MAX_ROWS = 4
#: the most cells and every-position arrays an offline HTML export carries (the latest computed)
EXPORT_CELLS = 256
EXPORT_WRITERS = 32


def cell_direction(run: Any, analysis: Any, row: int, pos: int) -> tuple[int, int | None, str]:
    """(target id, counterfactual id or None, text): the widget's targets[0] − targets[1] (two targets or
    more), targets[0]'s logit (one), or the logit lens's top-1 at (row, pos) (none). ``run``: the prompt's
    ``AttributionRun``; ``analysis``: the widget's (its resolved single-token targets)."""
    ids = [int(i) for i in analysis.target_ids]
    if len(ids) >= 2:
        return ids[0], ids[1], f"{analysis.targets[0]!r} − {analysis.targets[1]!r}"
    if len(ids) == 1:
        return ids[0], None, f"logit of {analysis.targets[0]!r}"
    top = int(run.directions("top1", None, row=row, positions=[pos])[0][0])
    text = run.session.token_strings([top])[top]
    return top, None, f"the lens's top-1 here, {text!r}"


@dataclass
class Cell:
    """One cell's attribution as the panel shows it."""

    row: int
    pos: int
    values: np.ndarray  # [W] float32, the full label layout (NaN: writers after the row)
    strip: np.ndarray  # [L, 2] float32: attn_out, mlp_out per layer (NaN at and after the row)
    target: int
    counterfactual: int | None
    direction: str
    lens_value: float
    constant: float

    def buffer(self) -> bytes:
        return np.concatenate([self.values, self.strip.ravel()]).astype("<f4").tobytes()


class WritersSource:
    """Computes and caches the panel's cells for one widget's session."""

    def __init__(self, session: Any):
        self.session = session
        self._runs: OrderedDict[tuple, Any] = OrderedDict()
        self._cells: OrderedDict[tuple, Cell] = OrderedDict()
        self._rows: OrderedDict[tuple, Any] = OrderedDict()
        self._fetched: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (run key, dir, row, pos, writer) -> [T]
        self._lock = threading.Lock()
        self._label_count: dict[tuple, int] = {}  # token ids -> W (the writer index's range)
        self._keys: OrderedDict[int, tuple[Any, tuple]] = OrderedDict()  # id(analysis) -> (analysis, run key)
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resid-writers")
        self._pending: deque = deque()  # (widget, analysis, seq, ask) checked and waiting for the session lock
        self.last_job: Future | None = None

    # ---- computing ------------------------------------------------------------------------------
    def run(self, analysis: Any) -> tuple[tuple, Any]:
        """The ``AttributionRun`` of ``analysis``'s prompt, keyed by (token ids, weights key). The weights key
        (which reads every weight: ~0.1 s on GPT-2 small) is read once per analysis shown: weights edited in
        place are followed once the widget analyses again, so the panel explains the lens it sits under."""
        from resid_widgets.session.attribution import AttributionRun

        memo = self._keys.get(id(analysis))
        if memo is None or memo[0] is not analysis:
            memo = self._keys[id(analysis)] = (analysis, (tuple(int(i) for i in analysis.token_ids), self.session._params_key()))
            while len(self._keys) > 4:
                self._keys.popitem(last=False)
        key = memo[1]
        if key not in self._runs:
            self._runs[key] = AttributionRun(self.session, list(key[0]))
            self._label_count[key[0]] = len(self._runs[key].labels)
            while len(self._runs) > 2:
                self._runs.popitem(last=False)
        self._runs.move_to_end(key)
        return key, self._runs[key]

    def cell(self, analysis: Any, row: int, pos: int) -> Cell:
        """The attribution of every writer at (row, pos) of ``analysis`` (cached)."""
        with self.session._lock, self._lock:
            key, run = self.run(analysis)
            ckey = (key, tuple(int(i) for i in analysis.target_ids[:2]), row, pos)
            hit = self._cells.get(ckey)
            if hit is not None:
                self._cells.move_to_end(ckey)
                return hit
            target, cf, text = cell_direction(run, analysis, row, pos)
            att = run.dla(target, cf, row=row, positions=[pos])
            labels = run.labels
            values = np.full(len(labels), np.nan, np.float32)
            index = {name: i for i, name in enumerate(labels)}
            values[[index[name] for name in att.labels]] = att.values[:, 0]
            strip = np.full((run.writers.n_layers, 2), np.nan, np.float32)
            strip[: att.row] = att.layer_values[:, :, 0]
            cell = Cell(row, pos, values, strip, target, cf, text, float(att.lens_value[0]), float(att.constant[0]))
            self._cells[ckey] = cell
            while len(self._cells) > MAX_CELLS:
                self._cells.popitem(last=False)
            return cell

    def writer(self, analysis: Any, row: int, pos: int, writer: int) -> np.ndarray:
        """Writer ``writer`` (index into the labels)'s attribution at every position [T] float32, in the
        direction of cell (row, pos)."""
        cell = self.cell(analysis, row, pos)
        with self.session._lock, self._lock:
            key, run = self.run(analysis)
            labels = run.labels
            if not 0 <= writer < len(labels):
                raise ValueError(f"writer must be an index 0..{len(labels) - 1}, got {writer}")
            rkey = (key, row, cell.target, cell.counterfactual)
            att = self._rows.get(rkey)
            if att is None:
                att = self._rows[rkey] = run.dla(cell.target, cell.counterfactual, row=row)
                while len(self._rows) > MAX_ROWS:
                    self._rows.popitem(last=False)
            self._rows.move_to_end(rkey)
            if labels[writer] not in att.labels:  # a layer at or after the row: it has not written yet
                out = np.full(len(run.token_ids), np.nan, np.float32)
            else:
                out = att.values[att.labels.index(labels[writer])].astype(np.float32)
            fkey = (key, tuple(int(i) for i in analysis.target_ids[:2]), row, pos, writer)
            self._fetched[fkey] = out
            while len(self._fetched) > EXPORT_WRITERS:
                self._fetched.popitem(last=False)
            return out

    # ---- the message ----------------------------------------------------------------------------
    def reply(self, analysis: Any, seq: int, ask: WritersAsk) -> tuple[dict, list[bytes]]:
        """The reply to a checked request, about ``analysis`` (the one payload ``seq`` shows)."""
        cell = self.cell(analysis, ask.row, ask.pos)
        _, run = self.run(analysis)
        content: dict[str, Any] = {
            "type": "writers", "req": ask.req, "seq": seq, "row": ask.row, "pos": ask.pos,
            "n_layers": run.writers.n_layers, "n_heads": run.weights.n_heads, "direction": cell.direction,
            "lens_value": cell.lens_value, "constant": cell.constant,
        }
        if ask.labels:
            content["labels"] = run.labels
        if ask.writer is None:
            return content, [cell.buffer()]
        content["writer"] = ask.writer
        return content, [self.writer(analysis, ask.row, ask.pos, ask.writer).astype("<f4").tobytes()]

    def handle(self, widget: Any, content: dict) -> None:
        """A ``writers`` message to ``widget`` (a ResidWidget), on the comm thread: checked now (a malformed
        message or a cell outside the analysis: an error reply, which the panel shows, and the banner says it
        too via ``widget._refuse``; nothing shown changes), computed in this source's own worker thread (the
        comm thread never waits for the session lock, which a running lens stream holds), then answered."""
        req = content.get("req") if isinstance(content.get("req"), str) else None
        try:
            seq, analysis = widget._meta.get("seq", 0), widget.analysis
            live = widget._queue.live  # a view showing a streamed analysis asks about that one
            asked = content.get("seq")
            if live is not None and asked == widget._queue.seq_of(live) and asked != seq:
                seq, analysis = asked, live
            ask = parse_writers(content, rows=analysis.n_rows, tokens=analysis.n_tokens, writers=self.n_labels(analysis))
        except ContractError as exc:
            widget._refuse(content, str(exc), ack=False)
            return _send(widget, {"type": "writers", "req": req, "error": str(exc)}, [])
        if ask.seq != seq:  # about a payload no longer shown: the view drops the reply
            return _send(widget, {"type": "writers", "req": ask.req, "seq": ask.seq, "error": "that analysis is no longer shown"}, [])
        with self._lock:
            self._pending.append((widget, analysis, seq, ask))
        self.last_job = self._jobs.submit(self._serve_locked)

    def _serve_locked(self) -> None:
        """The worker: take the session lock first, then answer what is still pending. While a lens stream
        holds the lock, the streaming thread answers between its blocks (``serve_pending``) instead."""
        with self.session._lock:
            self.serve_pending()

    def serve_pending(self) -> None:
        """Answer the requests received so far, on the calling thread, which holds the session lock: the worker,
        or the widget's streaming thread between two lens blocks, so that a cell pinned while a new analysis
        streams paints before the rest of the lens has arrived (issue 21: the panel streams like the lens)."""
        while True:
            with self._lock:
                if not self._pending:
                    return
                job = self._pending.popleft()
            self._answer(*job)

    def _answer(self, widget: Any, analysis: Any, seq: int, ask: WritersAsk) -> None:
        try:
            reply, buffers = self.reply(analysis, seq, ask)
        except (IndexError, TypeError, ValueError, RuntimeError) as exc:
            reply, buffers = {"type": "writers", "req": ask.req, "seq": seq, "error": str(exc)}, []
        _send(widget, reply, buffers)

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until the requests received so far are answered (scripts, tests)."""
        if self.last_job is not None:
            self.last_job.result(timeout=timeout)

    def close(self) -> None:
        self._jobs.shutdown(wait=False, cancel_futures=True)

    def n_labels(self, analysis: Any) -> int | None:
        """How many writers the prompt of ``analysis`` has, once its run exists (read on the comm thread: one
        dict lookup, no lock, while the worker may be computing)."""
        return self._label_count.get(tuple(int(i) for i in analysis.token_ids))

    # ---- the offline export ---------------------------------------------------------------------
    def export(self, analysis: Any) -> dict | None:
        """What ``save_html`` inlines (``meta["writers"]``): the cells of ``analysis`` computed so far (the
        latest ``EXPORT_CELLS``) and the every-position arrays fetched for them (``EXPORT_WRITERS``), float32
        little-endian in base64; None when none was computed."""
        with self._lock:
            ids = tuple(int(i) for i in analysis.token_ids)
            tg = tuple(int(i) for i in analysis.target_ids[:2])
            run = next((r for (i, _), r in reversed(self._runs.items()) if i == ids), None)
            mine = [(k, c) for k, c in self._cells.items() if k[0][0] == ids and k[1] == tg][-EXPORT_CELLS:]
            if run is None or not mine:
                return None
            cells = {
                f"{c.row}:{c.pos}": {"direction": c.direction, "lens_value": c.lens_value, "constant": c.constant, "values": _b64(c.buffer())}
                for _, c in mine
            }
            positions = {
                f"{k[2]}:{k[3]}:{k[4]}": _b64(v.astype("<f4").tobytes())
                for k, v in self._fetched.items() if k[0][0] == ids and k[1] == tg and f"{k[2]}:{k[3]}" in cells
            }
            return {"labels": run.labels, "n_layers": run.writers.n_layers, "n_heads": run.weights.n_heads, "cells": cells, "positions": positions}


def _send(widget: Any, content: dict, buffers: list[bytes]) -> None:
    try:
        widget.send(content, buffers=buffers)
    except Exception:  # noqa: BLE001 - the widget was closed meanwhile
        pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


__all__ = ["EXPORT_CELLS", "EXPORT_WRITERS", "MAX_CELLS", "Cell", "WritersSource", "cell_direction"]
