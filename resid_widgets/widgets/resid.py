"""``ResidWidget``: the live logit-lens / projection / norms view of one prompt.

Python owns the session and the analysis; the browser gets a binary payload (``_meta`` +
``_payload``) and draws everything else itself (layer scrubbing, the tau grid, hover). Traits are
the small UI state, synced both ways. The browser sends back three custom messages:

* ``{"type": "edit", "view": v, "seq": n, "changes": {prompt?, targets?, top_k?}}``: ``v`` is the
  sending view's random id and ``n`` counts that view's edits. Edits are applied in arrival order,
  whatever view sent them, each on top of the ones before it, and computed in a worker thread (the
  kernel keeps handling messages); an edit superseded by a newer one is skipped. Every edit is
  acknowledged with ``{"type": "edit_done", "view": v, "seq": n}`` (sent to all views; each waits
  only for its own), and the payload that answers it carries ``client_view``/``client_seq``. So
  any number of views of one widget (a widget displayed twice, a reloaded page) can edit it.
* ``{"type": "details", "req": id, "seq": s, "pos": p, "run"?: "after"}``: the full top-k list of every row at p
  (of the steering panel's steered run with ``run: "after"``).
* ``{"type": "writers", "req": id, "seq": s, "row": r, "pos": p, ...}``: the Writers panel's cell (resid_writers.py).

Changes made from Python (``w.prompt = "..."``) compute synchronously, so ``w.analysis`` is current
when the assignment returns, and an invalid value (a bad prompt, ``w.layer = 99``, ``w.top_k = "a"``)
raises, shows the error in the widget's banner and leaves the widget as it was.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from resid_widgets.analyses.pipeline import Cancelled
from resid_widgets.analyses.result import Analysis
from resid_widgets.payload.contract import Checked, ContractError, browser_may_set, check, parse_details, parse_edit, reply_address
from resid_widgets.payload.arrays import metric_lacking
from resid_widgets.payload.encode import cell_details, encode_analysis, encode_delta
from resid_widgets.payload.protocol import METRICS, TRAITS  # METRICS: re-exported (older imports)
from resid_widgets.session import as_session, backends
from resid_widgets.session.backends import capabilities
from resid_widgets.session.prompts import target_list
from resid_widgets.session.tokens import multibyte_chars
from resid_widgets.widgets.edit_queue import EditQueue, Ticket, params_key
from resid_widgets.widgets.resid_steering import SteerPanel
from resid_widgets.widgets.resid_writers import WritersSource

STATIC = Path(__file__).resolve().parent.parent / "static"
#: a prompt on which the embedded demo model's lens is telling (family names fill it from layer 1 on).
DEMO_PROMPT = "Mr. and Mrs."
DEFAULT_PROMPT = "The capital of France is"
#: the largest top-k the widget asks for (the editor's limit; the session allows up to d_vocab)
MAX_TOP_K = TRAITS["top_k"]["max"]
#: traits a user sets from Python; a TraitError on them is also shown in the widget's error banner
_USER_TRAITS = frozenset(k for k, v in TRAITS.items() if v["from_browser"] != "none")
#: the traits an edit changes (recomputed), from Python or the browser
_EDIT_TRAITS = tuple(k for k, v in TRAITS.items() if v["from_browser"] == "edit")


def _bundle_file(name: str) -> Path:
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(
            f"The widget's JavaScript bundle {path} is missing. Install the package with `pip install .` "
            "(which builds it) or run `npm --prefix js install && npm --prefix js run build`."
        )
    return path


__all__ = ["DEMO_PROMPT", "DEFAULT_PROMPT", "MAX_TOP_K", "METRICS", "ResidWidget", "as_session"]



class ResidWidget(SteerPanel, anywidget.AnyWidget):
    """Traits (the small UI state, limits in protocol.json ``traits``) and messages; the edits'
    ordering, cache and payload numbering live in ``EditQueue``, the limits in ``payload/contract.py``."""

    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    # the user's traits: types, defaults and limits from protocol.json, checked by the contract
    prompt = Checked("prompt").tag(sync=True)
    targets = t.List(t.Union([t.Unicode(), t.Int()])).tag(sync=True)
    top_k = Checked("top_k").tag(sync=True)
    lens = Checked("lens").tag(sync=True)
    tau = Checked("tau").tag(sync=True)
    metric = Checked("metric").tag(sync=True)  # any registered metric (register_metric)
    layer = Checked("layer").tag(sync=True)
    selected = t.List(t.Int(), maxlen=2).tag(sync=True)
    status = t.Unicode("idle").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    stage = t.Unicode("").tag(sync=True)  # a remote backend's stage (queued, running, reading out) while computing
    error = t.Unicode("").tag(sync=True)
    _static = t.Bool(False).tag(sync=True)
    _meta = t.Dict().tag(sync=True)
    _payload = t.Bytes(b"").tag(sync=True)

    def __init__(
        self,
        model_or_session: Any = None,
        prompt: str | None = None,
        *,
        targets: list[str] | None = None,
        top_k: int = 10,
        tau: float = 0.9,
        metric: str | None = None,
        device: str | None = None,
        wait: bool = True,
        lens: str = "logit",
        **kwargs: Any,
    ):
        """``wait=False`` returns as soon as the first stage is shown (norms, projection, the final row)
        and reads the lens in the background; ``w.wait()`` blocks until ``w.analysis`` is complete.
        ``metric`` defaults to the top-1 probability, or the target rank when targets are given."""
        self.session = as_session(model_or_session, device=device)
        if prompt is None:
            prompt = DEMO_PROMPT if self.session.is_demo else DEFAULT_PROMPT
        if not isinstance(prompt, str):  # the widget's prompt is text its editor shows and edits
            raise TypeError(f"ResidWidget's prompt is text, not {type(prompt).__name__}; analyse token ids with "
                            "Session.analyze(ids), or pass the text")
        if metric is None:
            metric = TRAITS["metric"]["default_with_targets" if targets else "default"]
        self._applying = False
        self._pending: Analysis | None = None
        self._trait_error = False  # the banner shows a rejected trait value
        self._queue = EditQueue()
        self.writers = WritersSource(self.session)  # the Writers panel's cells (resid_writers.py)
        targets = target_list(targets)  # a dict or a bare string is an error, not its keys / its letters
        self._lens = lens
        if wait:
            self.analysis: Analysis = self._compute(prompt, list(targets or []), top_k, tau)
        self._applying = True
        try:
            super().__init__(prompt=prompt, targets=list(targets or []), top_k=top_k, tau=tau, metric=metric, lens=lens, **kwargs)
        finally:
            self._applying = False
        self.on_msg(self._on_frontend_msg)
        if wait:
            self.layer = self.analysis.n_layers
            self._publish(self.analysis, client_seq=0)
            if self.steer.get("on"):  # ResidWidget(..., steer={...}): the after payload too
                self._steer_refresh()
        else:
            self._start_streaming(prompt, list(targets or []), top_k, tau)

    def _start_streaming(self, prompt, targets, top_k, tau) -> None:
        """``wait=False``: compute in the worker thread; return once the first stage (norms, projection, the
        final row) is published, so the widget shows at once and fills in as the lens blocks arrive."""
        begun = threading.Event()
        failure: list[BaseException] = []

        def first(analysis: Analysis) -> None:
            self.analysis = analysis
            self.layer = analysis.n_layers
            self._publish(analysis, client_seq=0)
            begun.set()

        def run() -> None:
            try:
                analysis = self._compute(prompt, targets, top_k, tau, progress=self._progress_for(0), on_begin=first)
                self._publish(analysis, client_seq=0)
            except BaseException as exc:  # noqa: BLE001 - reported to the constructor or the banner
                failure.append(exc)
                if begun.is_set():
                    self.error = str(exc)
            finally:
                self.status, self.stage = "idle", ""
                begun.set()

        self.status = "computing"
        self._queue.submit(run)
        begun.wait()
        if failure and not hasattr(self, "analysis"):
            self.close()
            raise failure[0]

    # ---- computing ------------------------------------------------------------------------------
    def _cache_key(self, prompt, targets, top_k, lens) -> tuple:
        return params_key({"prompt": prompt, "targets": targets, "top_k": top_k, "lens": lens}, self.session._params_key())

    def _compute(
        self, prompt, targets, top_k, tau, progress=None, cancelled=None, window=None, on_begin=None, lens=None
    ) -> Analysis:
        """Run the staged analysis; once the widget exists, every stage goes to its views as a
        ``delta`` message while the rest is computed (the browser paints as they arrive). An analysis of
        the same prompt, targets, top-k and lens computed before (a lens switched back) is reused."""
        lens = self._lens if lens is None else lens
        key = self._cache_key(prompt, targets, top_k, lens)
        cached = self._queue.cached(key)
        if cached is not None:
            return cached if cached.tau == tau else cached.with_tau(tau)
        updates = self.session.stream(
            prompt, top_k=top_k, targets=targets or None, tau=tau, lens=lens, view=window, cancelled=cancelled
        )
        streaming = getattr(self, "comm", None) is not None
        update = None
        remote = (lambda stage: progress(0.0, stage)) if progress is not None else (lambda stage: None)  # noqa: E731
        with backends.stages(self.session.model, remote):  # a driver's or NDIF's queued / running / reading out
            for update in updates:
                if progress is not None:
                    progress(update.fraction, update.stage)
                if streaming:
                    self._send_delta(update)
                    self.writers.serve_pending()  # a pinned cell asked about this analysis: answered between blocks
                if on_begin is not None and update.stage == "begin":
                    on_begin(update.analysis)
        self._queue.store(key, update.analysis)
        return update.analysis

    def _send_delta(self, update) -> None:
        """One stage to the views. The begin stage reserves the seq that the final payload will carry;
        its kept positions refer to the payload the base analysis was sent as (else everything is sent)."""
        q = self._queue
        with q.lock:
            if update.stage == "begin":
                seq, base_seq = q.begin_stream(update.analysis, update.base)
                if not base_seq:  # the views never saw that analysis: send every position
                    update = dataclasses.replace(update, keep=0, positions=(0, update.analysis.n_tokens))
            else:
                seq, base_seq = q.stream_seq, 0
            content, blob = encode_delta(update, seq=seq, base_seq=base_seq, is_demo=self.session.is_demo)
            if update.stage == "begin":
                content["meta"].update(self._header_extras(update.analysis))
        try:
            self.send(content, buffers=[blob])
        except Exception:  # the widget was closed meanwhile
            pass

    def _encode(self, analysis: Analysis, **kwargs) -> tuple[dict, bytes]:
        """The payload of `analysis`, with what the widget adds to the header: the characters that
        byte tokens belong to (``chars``) and target suggestions that are single tokens here."""
        meta, blob = encode_analysis(analysis, is_demo=self.session.is_demo, **kwargs)
        meta.update(self._header_extras(analysis))
        return meta, blob

    def _header_extras(self, analysis: Analysis) -> dict:
        tokenizer = self.session.tokenizer
        try:
            runs = multibyte_chars(tokenizer, analysis.token_ids) if tokenizer is not None else {}
        except Exception:  # a tokenizer without byte-level pieces: nothing to show
            runs = {}
        refused = capabilities.refused(self.session)  # a captured / traced backend: no steering, no attribution
        return {
            "chars": {str(p): [list(r) for r in v] for p, v in runs.items()},
            "suggested_targets": self._suggest_targets(analysis),
            **({"refused": refused} if refused else {}),
        }

    def _suggest_targets(self, analysis: Analysis, n: int = 4) -> list[str]:
        """What the empty targets field suggests, the way a researcher picks targets: the distinct tokens
        that were top-1 at any row of the last position (the model's own answer first, then the earlier
        rows' guesses), then the final row's runners-up; only single tokens of this vocabulary that read
        back as themselves."""
        out: list[str] = []
        if self.session.tokenizer is None:
            return out
        last = analysis.n_tokens - 1
        candidates = [analysis.top_ids[r, last, 0] for r in range(analysis.n_rows - 1, -1, -1)]
        candidates += list(analysis.top_ids[-1, last, 1:])
        for tid in [int(i) for i in dict.fromkeys(int(c) for c in candidates) if i >= 0]:
            text = analysis.strings.get(int(tid))
            if not text or not text.strip() or "," in text or text in out:
                continue
            try:
                _, ids = self.session.resolve_targets([text])
            except (ValueError, TypeError):
                continue
            if ids == [int(tid)]:
                out.append(text)
            if len(out) == n:
                break
        return out

    def _publish(self, analysis: Analysis, *, client_seq: int, client_view: str = "") -> None:
        with self._queue.lock:
            seq = self._queue.publish_seq(analysis)  # the analysis being streamed keeps the seq its deltas had
            meta, blob = self._encode(analysis, seq=seq, client_seq=client_seq)
            meta["client_view"] = str(client_view)
            self.analysis = analysis
            with self.hold_sync():
                self._payload = blob
                self._meta = meta
                self._steer_publish(analysis, seq)
                self.error = ""
                self._trait_error = False
                self.layer = min(self.layer, analysis.n_rows - 1)
                if self.selected and (self.selected[0] >= analysis.n_rows or self.selected[1] >= analysis.n_tokens):
                    self.selected = []

    # ---- the one edit path: Python trait changes and browser edits ------------------------------
    def _params(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "targets": list(self.targets), "top_k": self.top_k, "lens": self.lens, "steer": self.steer}

    def _edit(self, changes: dict, *, view: str = "", seq: int = 0, window=None, sync: bool = False) -> Analysis | None:
        """Queue an edit on top of the edits before it (any view's, or Python's), in arrival order.
        ``sync`` (a trait set from Python): compute now and return the analysis, raising
        ``ContractError`` on a bad value. Otherwise the worker computes it and every view is told
        ``edit_done``; an edit whose analysis is cached (a lens switched back) shows at once."""
        ticket = self._queue.enqueue(self._params(), changes, view=view, seq=seq)
        if sync:
            return self._run_edit(ticket, window, sync=True)
        if self._is_cached(ticket):
            self._run_and_ack(ticket, window)  # instant: no "computing" state at all
            return None
        with self._queue.lock:
            self.status = "computing"
            self.progress = 0.0
        self._queue.submit(self._run_and_ack, ticket, window)
        return None

    def _is_cached(self, ticket: Ticket) -> bool:
        p = ticket.params
        try:
            key = self._cache_key(p["prompt"], list(p["targets"]), int(p["top_k"]), p["lens"])
        except (TypeError, ValueError):
            return False
        return self._queue.cached(key) is not None and self._queue.last_job_done() and self._steer_cached(p)

    def _run_and_ack(self, ticket: Ticket, window=None) -> None:
        self._edit_error = ""
        try:
            self._run_edit(ticket, window)
        finally:
            self._ack(ticket.view, ticket.seq, self._edit_error)

    def _run_edit(self, ticket: Ticket, window=None, *, sync: bool = False) -> Analysis | None:
        q, no = self._queue, ticket.no
        if not q.is_latest(no):
            return None  # a newer edit is queued: skip the stale one entirely
        try:
            p = {k: check(k, v) for k, v in ticket.params.items()}  # the contract, in arrival order
            analysis = self._compute(
                p["prompt"], p["targets"], p["top_k"], self.tau, progress=self._progress_for(no),
                cancelled=q.cancelled(no), window=window, lens=p["lens"],
            )
            steered = self._steered(p, analysis, q.cancelled(no))  # the after analysis (steering panel), or None
        except Cancelled:
            return None
        except Exception as exc:  # shown in the widget; the last good view stays
            message = str(exc) if isinstance(exc, (ValueError, TypeError)) else f"{type(exc).__name__}: {exc}"
            self._edit_error = message
            with q.lock:
                if q.is_latest(no):
                    self.error = message
                    self._trait_error = False
                    q.settle(no)
                    self.status, self.stage = "idle", ""
            if sync:
                raise (exc if isinstance(exc, ContractError) else ContractError(message)) from exc
            return None
        with q.lock:
            if not q.is_latest(no):
                return None  # stale: a newer edit arrived while computing
            q.settle(no)
            self._steer_done(p, steered)
            if sync:
                return analysis  # the trait being set publishes it (_inputs_changed)
            self._apply(analysis, p["prompt"], ticket)
        return analysis

    def _apply(self, analysis: Analysis, prompt: str, ticket: Ticket) -> None:
        """A browser edit's analysis: its inputs into the traits, its payload to the views."""
        self._applying = True
        try:
            with self.hold_trait_notifications():
                self.prompt = prompt
                self.targets = list(analysis.targets)  # exactly what the analysis reports
                self.top_k = analysis.top_k
                self.lens = analysis.lens
                self.steer = check("steer", ticket.params.get("steer", {}))
        finally:
            self._applying = False
        self._publish(analysis, client_seq=ticket.seq, client_view=ticket.view)
        self.status = "idle"
        self.progress = 1.0

    def _ack(self, view: str, seq: int, error: str = "") -> None:
        """Tell the views that edit (view, seq) is done (computed, superseded or failed)."""
        try:
            self.send({"type": "edit_done", "view": view, "seq": seq, **({"error": error} if error else {})})
        except Exception:  # the widget was closed meanwhile
            pass

    def _progress_for(self, no: int):
        def report(fraction: float, stage: str) -> None:
            if not self._queue.is_latest(no):
                return
            if stage in backends.REMOTE_STAGES or stage == "done" or self.stage:
                self.stage = stage if stage in backends.REMOTE_STAGES else ""  # shown until the lens streams
            if stage not in backends.REMOTE_STAGES and (fraction >= 1.0 or abs(fraction - self.progress) >= 0.05):
                self.progress = fraction

        return report

    # ---- validation: a rejected value raises in Python AND shows in the widget ------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _USER_TRAITS:
            return super().__setattr__(name, value)
        try:
            why = metric_lacking(value, self.session.lacks) if name == "metric" else None
            if why:  # a backend without what the metric needs (a driver capturing blocks.{l}.hook_out only)
                raise t.TraitError(f"the metric {value!r} is unavailable on this session's backend: {why}")
            super().__setattr__(name, value)
        except t.TraitError as exc:
            self._show_trait_error(str(exc))
            raise
        else:
            if self._trait_error and name in ("layer", "selected", "metric", "tau", "top_k"):
                self._trait_error = False
                self.error = ""

    def _show_trait_error(self, message: str) -> None:
        self._trait_error = True
        self.error = message

    def set_state(self, sync_data: dict) -> None:
        """A state update from the browser: only the traits it may set (protocol.json ``traits``:
        ``from_browser == "sync"``), each checked by the contract before anything changes or is
        echoed to other views; a refused value shows in the banner and the browser gets the kept one."""
        accepted, refused, problems = {}, [], []
        for name, value in sync_data.items():
            if name not in TRAITS:  # not the contract's (ipywidgets' own layout, tooltip...): as before
                accepted[name] = value
                continue
            try:
                if not browser_may_set(name):
                    raise ContractError(f"the browser cannot set {name}")
                check(name, value, rows=self._rows(), tokens=self._tokens())
            except ContractError as exc:
                refused.append(name)
                problems.append(str(exc))
            else:
                accepted[name] = value
        if accepted:
            super().set_state(accepted)
        if refused:
            self._show_trait_error("; ".join(problems))
            self.send_state(refused)  # the browser's copy goes back to the kept values

    @t.validate("selected")
    def _validate_view(self, proposal):
        return check(proposal["trait"].name, proposal["value"], rows=self._rows(), tokens=self._tokens())

    def _rows(self) -> int | None:
        a = self.__dict__.get("analysis")
        return a.n_rows if a is not None else None

    def _tokens(self) -> int:
        a = self.__dict__.get("analysis")
        return a.n_tokens if a is not None else 0

    @t.validate(*_EDIT_TRAITS)
    def _validate_inputs(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        value = check(name, value)
        if self._applying:
            return value
        self._pending = self._edit({name: value}, sync=True)
        return value

    @t.observe(*_EDIT_TRAITS)
    def _inputs_changed(self, change) -> None:
        if change["name"] == "lens":
            self._lens = change["new"]
        if self._applying or self._pending is None:
            return
        analysis, self._pending = self._pending, None
        self._publish(analysis, client_seq=0)

    @t.validate("tau")
    def _validate_tau(self, proposal):
        try:
            return check("tau", proposal["value"])
        except ContractError as exc:
            self._trait_error = False
            self.error = str(exc)
            raise

    @t.observe("tau")
    def _tau_changed(self, change) -> None:
        if self._applying or not hasattr(self, "analysis"):
            return
        # re-threshold the stored cumulative curves: no forward pass
        self._publish(self.analysis.with_tau(change["new"]), client_seq=0)

    # ---- messages from the browser --------------------------------------------------------------
    def _on_frontend_msg(self, _widget, content: Any, buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        try:
            if kind == "edit":
                edit = parse_edit(content)
                self._edit(edit.changes, view=edit.view, seq=edit.seq, window=edit.window)
            elif kind == "details":
                self._send_details(content)
            elif kind == "writers":  # the Writers panel (resid_writers.py)
                self.writers.handle(self, content)
            else:
                raise ContractError(f"the widget got a message it does not know ({str(kind)[:40]!r}); expected edit, details or writers")
        except ContractError as exc:
            self._refuse(content, str(exc), ack=kind == "edit")

    def _refuse(self, content: Any, message: str, *, ack: bool) -> None:
        """A malformed message: the reason in the banner, the sender's edit acknowledged, nothing else changes."""
        with self._queue.lock:
            self._show_trait_error(message)
            if not self._queue.pending and (self._queue.last_job is None or self._queue.last_job.done()):
                self.status = "idle"
        if ack:
            self._ack(*reply_address(content), error=message)

    def _send_details(self, content: dict) -> None:
        req = content.get("req")
        try:
            ask = parse_details(content)
            if ask.run == "after":  # the steering panel's steered run (resid_steering.py)
                return self.send({**self._after_details(ask), "type": "details", "req": req})
            # a view showing a streamed analysis asks about that one (its cells not read yet come back as -1)
            seq, analysis = self._meta.get("seq", 0), self.analysis
            live = self._queue.live
            if live is not None and ask.seq == self._queue.seq_of(live) and ask.seq != seq:
                seq, analysis = ask.seq, live
            reply = cell_details(analysis, ask.pos)
            reply.update(type="details", req=req, seq=seq)
        except (IndexError, TypeError, ValueError) as exc:
            reply = {"type": "details", "req": req if isinstance(req, (str, int)) else None, "error": str(exc)}
        self.send(reply)

    # ---- Python API -----------------------------------------------------------------------------
    def wait(self, timeout: float | None = 30.0) -> "ResidWidget":
        """Block until edits sent from the browser have been computed (for scripts and tests)."""
        job = self._queue.last_job
        if job is not None:
            job.result(timeout=timeout)
        return self

    def set_prompt(self, prompt: str) -> Analysis:
        self.prompt = prompt
        return self.analysis

    def save_html(self, path, *, title: str | None = None) -> Path:
        """Write one self-contained offline HTML file (data and code inline; hover and scrubbing work)."""
        from resid_widgets.widgets.export import export_html

        meta, blob = self._encode(self.analysis, seq=self._queue.seq, full=True)
        meta["writers"] = self.writers.export(self.analysis)  # the Writers panel's cells computed so far
        state = {
            "prompt": self.prompt,
            "targets": list(self.targets),
            "top_k": self.top_k,
            "lens": self.lens,
            "tau": self.tau,
            "metric": self.metric,
            "layer": self.layer,
            "selected": list(self.selected),
            "status": "idle",
            "progress": 1.0,
            "error": "",
            "_static": True,
            **self._steer_export(),
        }
        return export_html(
            path,
            esm=_bundle_file("widget.js").read_text(encoding="utf-8"),
            css=_bundle_file("widget.css").read_text(encoding="utf-8"),
            state=state,
            meta=meta,
            blob=blob,
            title=title or f"resid_widgets: {self.prompt[:60]}",
        )

    def close(self) -> None:
        # also called by ipywidgets' __del__ on a widget whose __init__ failed before these existed
        if hasattr(self, "_queue"):
            self._queue.shutdown()
        if hasattr(self, "writers"):
            self.writers.close()
        super().close()
