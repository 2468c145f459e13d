"""The edits of one widget, as a plain object (no traitlets, no comm): ordering, cancellation, the
per-lens cache of analyses, and the payload sequence numbers the views see.

* **Ordering**: edits (from any view, or from Python) are numbered in arrival order; each applies on
  top of the ones queued before it (``enqueue`` merges its changes onto the last requested
  parameters). Only the latest may show: ``is_latest(no)`` / ``cancelled(no)`` let a running
  computation stop between blocks once a newer edit arrived.
* **Cache**: the last few analyses by (parameters, session key): switching the lens back to one
  computed before is a lookup, not a computation (``cached``).
* **Sequence numbers**: every payload or streamed analysis the views see gets a ``seq``; which
  analysis was sent as which seq is remembered (the last few), so an edit can send only a delta
  against what the views show, and a details request can name the analysis it asks about.

Example::

    q = EditQueue()
    t1 = q.enqueue({"prompt": "a", "targets": [], "top_k": 10, "lens": "logit"}, {"prompt": "ab"})
    t2 = q.enqueue({"prompt": "a", "targets": [], "top_k": 10, "lens": "logit"}, {"top_k": 5})
    assert t2.params == {"prompt": "ab", "targets": [], "top_k": 5, "lens": "logit"} and not q.is_latest(t1.no)
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from resid_widgets.analyses.result import trim_cache
from resid_widgets.payload.contract import check_changes

#: analyses kept: one per lens of the current prompt (Analysis.nbytes: 89 MB at 1,000 tokens of GPT-2 small; at most
#: CACHE_BYTES in all, see analyses.result.trim_cache)
CACHE_SIZE = 3
#: sent analyses remembered by seq (deltas and details refer to them)
SENT_KEPT = 4


@dataclass(frozen=True)
class Ticket:
    """One queued edit: its arrival number and the full parameters once it applies."""

    no: int
    params: dict[str, Any]
    view: str = ""
    seq: int = 0


def params_key(params: dict[str, Any], tau_free_key: Hashable = None) -> tuple:
    """Cache key of an analysis: prompt, targets, top-k, lens (and the session's own key)."""
    return (params["prompt"], tuple(params["targets"] or ()), int(params["top_k"]), params["lens"], tau_free_key)


class EditQueue:
    def __init__(self, cache_size: int = CACHE_SIZE):
        self.lock = threading.RLock()
        self._no = 0
        self._requested: dict[str, Any] | None = None
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resid-widget")
        self.last_job: Future | None = None
        self._cache: dict[tuple, Any] = {}
        self._cache_size = cache_size
        self.seq = 0  # the last payload seq handed out
        self.stream_seq = 0  # the seq of the analysis being streamed (0: none)
        self._sent: dict[int, int] = {}  # id(analysis) -> the seq it was sent as
        self._sent_objects: list[Any] = []

    # ---- ordering -------------------------------------------------------------------------------
    def enqueue(self, current: dict[str, Any], changes: Any, *, view: str = "", seq: int = 0) -> Ticket:
        """Queue an edit on top of those queued before it. Only the names of ``changes`` are checked
        here (``ContractError``: nothing is queued); the values are checked when the edit runs, in
        order, so an edit after a bad one fails the same way instead of silently dropping it."""
        changes = check_changes(changes, values=False)
        with self.lock:
            base = self._requested or dict(current)
            params = {**base, **changes}
            self._no += 1
            self._requested = params
            return Ticket(self._no, params, view, seq)

    def is_latest(self, no: int) -> bool:
        return no == self._no

    def cancelled(self, no: int) -> Callable[[], bool]:
        """For the pipeline: true once a newer edit has arrived."""
        return lambda: not self.is_latest(no)

    def settle(self, no: int) -> None:
        """Edit ``no`` finished (shown or failed): later edits start from the traits again."""
        with self.lock:
            if self.is_latest(no):
                self._requested = None

    @property
    def pending(self) -> bool:
        return self._requested is not None

    def submit(self, fn: Callable, *args: Any) -> Future:
        """Run ``fn(*args)`` in the widget's one worker thread, after the jobs before it."""
        self.last_job = self._jobs.submit(fn, *args)
        return self.last_job

    def last_job_done(self) -> bool:
        """No job queued or running in the worker."""
        return self.last_job is None or self.last_job.done()

    def shutdown(self) -> None:
        self._jobs.shutdown(wait=False, cancel_futures=True)

    # ---- cache ----------------------------------------------------------------------------------
    def cached(self, key: tuple) -> Any | None:
        return self._cache.get(key)

    def store(self, key: tuple, analysis: Any) -> None:
        self._cache[key] = analysis
        trim_cache(self._cache, self._cache_size)  # and at most CACHE_BYTES in all (Analysis.nbytes)

    # ---- payload sequence numbers ---------------------------------------------------------------
    def begin_stream(self, analysis: Any, base: Any | None) -> tuple[int, int]:
        """A streamed analysis begins: (its seq, the seq its kept positions come from; 0 = none)."""
        with self.lock:
            self.seq += 1
            self.stream_seq = self.seq
            base_seq = self._sent.get(id(base), 0) if base is not None else 0
            self._remember(analysis, self.seq)
            return self.seq, base_seq

    def publish_seq(self, analysis: Any) -> int:
        """The seq a payload of ``analysis`` carries: the one its stream had, else a new one."""
        with self.lock:
            seq = self._sent.get(id(analysis), 0)
            if not seq or seq != self.stream_seq:
                self.seq += 1
                seq = self.seq
                self._remember(analysis, seq)
            return seq

    def seq_of(self, analysis: Any) -> int:
        return self._sent.get(id(analysis), 0)

    @property
    def live(self) -> Any | None:
        """The analysis sent last (streamed or published)."""
        return self._sent_objects[-1] if self._sent_objects else None

    def _remember(self, analysis: Any, seq: int) -> None:
        self._sent[id(analysis)] = seq
        self._sent_objects.append(analysis)  # keeps the id valid while it is in the table
        while len(self._sent_objects) > SENT_KEPT:
            self._sent.pop(id(self._sent_objects.pop(0)), None)


__all__ = ["CACHE_SIZE", "EditQueue", "Ticket", "params_key"]
