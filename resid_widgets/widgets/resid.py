"""``ResidWidget``: the live logit-lens / projection / norms view of one prompt.

Python owns the session and the analysis; the browser gets a binary payload (``_meta`` +
``_payload``) and draws everything else itself (layer scrubbing, the tau grid, hover). Traits are
the small UI state, synced both ways. The browser sends back exactly two custom messages:

* ``{"type": "edit", "view": v, "seq": n, "changes": {prompt?, targets?, top_k?}}``: ``v`` is the
  sending view's random id and ``n`` counts that view's edits. Edits are applied in arrival order,
  whatever view sent them, each on top of the ones before it, and computed in a worker thread (the
  kernel keeps handling messages); an edit superseded by a newer one is skipped. Every edit is
  acknowledged with ``{"type": "edit_done", "view": v, "seq": n}`` (sent to all views; each waits
  only for its own), and the payload that answers it carries ``client_view``/``client_seq``. So
  any number of views of one widget (a widget displayed twice, a reloaded page) can edit it.
* ``{"type": "details", "req": id, "seq": s, "pos": p}``: the full top-k list of every row at p.

Changes made from Python (``w.prompt = "..."``) compute synchronously, so ``w.analysis`` is current
when the assignment returns, and an invalid value (a bad prompt, ``w.layer = 99``, ``w.top_k = "a"``)
raises, shows the error in the widget's banner and leaves the widget as it was.
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anywidget
import traitlets as t

from resid_widgets.analyses.pipeline import Cancelled
from resid_widgets.analyses.result import Analysis, trim_cache
from resid_widgets.payload.encode import cell_details, encode_analysis, encode_delta
from resid_widgets.payload.protocol import LENSES, METRICS
from resid_widgets.session import Session
from resid_widgets.session.session import target_list
from resid_widgets.session.tokens import multibyte_chars

STATIC = Path(__file__).resolve().parent.parent / "static"
#: a prompt on which the embedded demo model's lens is telling (family names fill it from layer 1 on).
DEMO_PROMPT = "Mr. and Mrs."
DEFAULT_PROMPT = "The capital of France is"
#: the largest top-k the widget asks for (the editor's limit; the session allows up to d_vocab)
MAX_TOP_K = 100
#: traits a user sets from Python; a TraitError on them is also shown in the widget's error banner
_USER_TRAITS = frozenset({"prompt", "targets", "top_k", "lens", "tau", "metric", "layer", "selected"})
#: analyses kept per (prompt, targets, top-k, lens): switching lens back and forth is instant
_CACHE_SIZE = 3  # one per lens of the current prompt (Analysis.nbytes: 89 MB at 1,000 tokens of GPT-2 small)


def _bundle_file(name: str) -> Path:
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(
            f"The widget's JavaScript bundle {path} is missing. Install the package with `pip install .` "
            "(which builds it) or run `npm --prefix js install && npm --prefix js run build`."
        )
    return path


def as_session(model_or_session: Any = None, *, device: str | None = None) -> Session:
    if isinstance(model_or_session, Session):
        return model_or_session
    return Session(model_or_session, device=device)


class ResidWidget(anywidget.AnyWidget):
    _esm = STATIC / "widget.js"
    _css = STATIC / "widget.css"

    prompt = t.Unicode("").tag(sync=True)
    targets = t.List(t.Unicode()).tag(sync=True)
    top_k = t.Int(10).tag(sync=True)
    lens = t.Enum(LENSES, default_value="logit").tag(sync=True)
    tau = t.Float(0.9).tag(sync=True)
    metric = t.Enum(METRICS, default_value="projection").tag(sync=True)
    layer = t.Int(0).tag(sync=True)
    selected = t.List(t.Int(), maxlen=2).tag(sync=True)
    status = t.Unicode("idle").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
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
        metric: str = "projection",
        device: str | None = None,
        wait: bool = True,
        lens: str = "logit",
        **kwargs: Any,
    ):
        """``wait=False`` returns as soon as the first stage is shown (norms, projection, the final row)
        and reads the lens in the background; ``w.wait()`` blocks until ``w.analysis`` is complete."""
        self.session = as_session(model_or_session, device=device)
        if prompt is None:
            prompt = DEMO_PROMPT if self.session.is_demo else DEFAULT_PROMPT
        self._applying = False
        self._pending: Analysis | None = None
        self._seq = 0
        self._edit_no = 0  # edits from any view, counted in arrival order
        self._requested: dict | None = None  # prompt/targets/top_k once the queued edits apply
        self._trait_error = False  # the banner shows a rejected trait value
        self._jobs = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resid-widget")
        self._last_job: Future | None = None
        self._state_lock = threading.RLock()
        self._sent: dict[int, int] = {}  # id(analysis) -> the payload seq it was sent as
        self._sent_objects: list[Analysis] = []
        self._stream_seq = 0  # the seq of the analysis being streamed (0: none)
        self._cache: dict[tuple, Analysis] = {}
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
                analysis = self._compute(prompt, targets, top_k, tau, progress=self._progress_for(self._edit_no), on_begin=first)
                self._publish(analysis, client_seq=0)
            except BaseException as exc:  # noqa: BLE001 - reported to the constructor or the banner
                failure.append(exc)
                if begun.is_set():
                    self.error = str(exc)
            finally:
                self.status = "idle"
                begun.set()

        self.status = "computing"
        self._last_job = self._jobs.submit(run)
        begun.wait()
        if failure and not hasattr(self, "analysis"):
            self.close()
            raise failure[0]

    # ---- computing ------------------------------------------------------------------------------
    def _compute(
        self, prompt, targets, top_k, tau, progress=None, cancelled=None, window=None, on_begin=None, lens=None
    ) -> Analysis:
        """Run the staged analysis; once the widget exists, every stage goes to its views as a
        ``delta`` message while the rest is computed (the browser paints as they arrive). An analysis of
        the same prompt, targets, top-k and lens computed before (a lens switched back) is reused."""
        lens = self._lens if lens is None else lens
        key = (prompt, tuple(targets or ()), int(top_k), lens, self.session._params_key())
        cached = self._cache.get(key)
        if cached is not None:
            return cached if cached.tau == tau else cached.with_tau(tau)
        updates = self.session.stream(
            prompt, top_k=top_k, targets=targets or None, tau=tau, lens=lens, view=window, cancelled=cancelled
        )
        streaming = getattr(self, "comm", None) is not None
        update = None
        for update in updates:
            if progress is not None:
                progress(update.fraction, update.stage)
            if streaming:
                self._send_delta(update)
            if on_begin is not None and update.stage == "begin":
                on_begin(update.analysis)
        self._cache[key] = update.analysis
        trim_cache(self._cache, _CACHE_SIZE)  # and at most CACHE_BYTES in all
        return update.analysis

    def _send_delta(self, update) -> None:
        """One stage to the views. The begin stage reserves the seq that the final payload will carry;
        its kept positions refer to the payload the base analysis was sent as (else everything is sent)."""
        with self._state_lock:
            if update.stage == "begin":
                self._seq += 1
                self._stream_seq = self._seq
                base_seq = self._sent.get(id(update.base), 0) if update.base is not None else 0
                if not base_seq:  # the views never saw that analysis: send every position
                    update = dataclasses.replace(update, keep=0, positions=(0, update.analysis.n_tokens))
                self._remember(update.analysis, self._seq)
            else:
                base_seq = 0
            content, blob = encode_delta(update, seq=self._stream_seq, base_seq=base_seq, is_demo=self.session.is_demo)
            if update.stage == "begin":
                content["meta"].update(self._header_extras(update.analysis))
        try:
            self.send(content, buffers=[blob])
        except Exception:  # the widget was closed meanwhile
            pass

    def _remember(self, analysis: Analysis, seq: int) -> None:
        """Which payload seq an analysis was sent as (the last few), so an edit can send only a delta."""
        self._sent[id(analysis)] = seq
        self._sent_objects.append(analysis)  # keeps the id valid while it is in the table
        while len(self._sent_objects) > 4:
            self._sent.pop(id(self._sent_objects.pop(0)), None)

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
        return {
            "chars": {str(p): [list(r) for r in v] for p, v in runs.items()},
            "suggested_targets": self._suggest_targets(analysis),
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
        with self._state_lock:
            seq = self._sent.get(id(analysis), 0)  # the analysis being streamed keeps the seq its deltas had
            if not seq or seq != self._stream_seq:  # anything else (a cached one shown again) gets a new seq
                self._seq += 1
                seq = self._seq
                self._remember(analysis, seq)
            meta, blob = self._encode(analysis, seq=seq, client_seq=client_seq)
            meta["client_view"] = str(client_view)
            self.analysis = analysis
            with self.hold_sync():
                self._payload = blob
                self._meta = meta
                self.error = ""
                self._trait_error = False
                self.layer = min(self.layer, analysis.n_rows - 1)
                if self.selected and (self.selected[0] >= analysis.n_rows or self.selected[1] >= analysis.n_tokens):
                    self.selected = []

    # ---- validation: a rejected value raises in Python AND shows in the widget ------------------
    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _USER_TRAITS:
            return super().__setattr__(name, value)
        try:
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

    @t.validate("layer")
    def _validate_layer(self, proposal):
        value = proposal["value"]
        rows = self._rows()
        if rows is not None and not 0 <= value < rows:
            raise t.TraitError(f"layer must be a residual row 0..{rows - 1} (0 = embeddings), got {value}")
        return value

    @t.validate("selected")
    def _validate_selected(self, proposal):
        value = list(proposal["value"])
        if not value:
            return value
        if len(value) != 2:
            raise t.TraitError(f"selected must be [] or [row, pos], got {value}")
        rows, tokens = self._rows(), self._tokens()
        row, pos = value
        if rows is not None and not (0 <= row < rows and 0 <= pos < tokens):
            raise t.TraitError(
                f"selected must be [] or [row, pos] with row in 0..{rows - 1} and pos in 0..{tokens - 1}, got {value}"
            )
        return value

    def _rows(self) -> int | None:
        a = self.__dict__.get("analysis")
        return a.n_rows if a is not None else None

    def _tokens(self) -> int:
        a = self.__dict__.get("analysis")
        return a.n_tokens if a is not None else 0

    @t.validate("prompt", "targets", "top_k", "lens")
    def _validate_inputs(self, proposal):
        value = proposal["value"]
        if proposal["trait"].name == "top_k" and not 1 <= value <= MAX_TOP_K:
            raise t.TraitError(f"top_k must be between 1 and {MAX_TOP_K}, got {value}")
        if self._applying:
            return value
        params = {"prompt": self.prompt, "targets": list(self.targets), "top_k": self.top_k, "lens": self.lens}
        params[proposal["trait"].name] = value
        try:
            self._pending = self._compute(params["prompt"], params["targets"], params["top_k"], self.tau, lens=params["lens"])
        except (ValueError, TypeError) as exc:
            self._trait_error = False
            self.error = str(exc)
            raise
        return value

    @t.observe("prompt", "targets", "top_k", "lens")
    def _inputs_changed(self, change) -> None:
        if change["name"] == "lens":
            self._lens = change["new"]
        if self._applying or self._pending is None:
            return
        analysis, self._pending = self._pending, None
        self._publish(analysis, client_seq=0)

    @t.validate("tau")
    def _validate_tau(self, proposal):
        from resid_widgets.analyses.projection import check_tau

        try:
            return check_tau(proposal["value"])
        except (ValueError, TypeError) as exc:
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
    def _on_frontend_msg(self, _widget, content: dict, buffers) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "edit":
            window = content.get("window")
            window = (int(window[0]), int(window[1])) if isinstance(window, list) and len(window) == 2 else None
            self._submit_edit(str(content.get("view", "")), int(content.get("seq", 0)), dict(content.get("changes") or {}), window)
        elif kind == "details":
            self._send_details(content)

    def _submit_edit(self, view: str, seq: int, changes: dict, window: tuple[int, int] | None = None) -> None:
        """Queue an edit on top of the edits before it (any view's), in arrival order."""
        with self._state_lock:
            self._edit_no += 1
            no = self._edit_no
            self.status = "computing"
            self.progress = 0.0
            base = self._requested or {"prompt": self.prompt, "targets": list(self.targets), "top_k": self.top_k, "lens": self.lens}
            unknown = sorted(set(changes) - base.keys())
            params = {**base, **{k: v for k, v in changes.items() if k in base}}
            if not unknown:
                self._requested = params
            self._last_job = self._jobs.submit(self._run_edit, no, view, seq, params, unknown, window)

    def _is_latest(self, no: int) -> bool:
        return no == self._edit_no

    def _run_edit(self, no: int, view: str, seq: int, params: dict, unknown: list[str], window=None) -> None:
        try:
            self._compute_edit(no, view, seq, params, unknown, window)
        finally:
            self._ack(view, seq)

    def _compute_edit(self, no: int, view: str, seq: int, params: dict, unknown: list[str], window=None) -> None:
        if not self._is_latest(no):
            return  # a newer edit is queued: skip the stale one entirely
        try:
            if unknown:
                raise ValueError(f"cannot edit {', '.join(unknown)} from the browser")
            targets = params["targets"]
            if isinstance(targets, str):
                targets = [x for x in targets.split(",") if x != ""]
            analysis = self._compute(
                params["prompt"],
                list(targets),
                int(params["top_k"]),
                self.tau,
                progress=self._progress_for(no),
                cancelled=lambda: not self._is_latest(no),  # a newer edit stops this one between blocks
                window=window,
                lens=params["lens"],
            )
        except Cancelled:
            return
        except Exception as exc:  # shown in the widget; the last good view stays
            with self._state_lock:
                if self._is_latest(no):
                    self.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ValueError, TypeError)) else str(exc)
                    self._requested = None
                    self.status = "idle"
            return
        with self._state_lock:
            if not self._is_latest(no):
                return  # stale: a newer edit arrived while computing
            self._applying = True
            try:
                with self.hold_trait_notifications():
                    self.prompt = params["prompt"]
                    self.targets = list(analysis.targets)  # exactly what the analysis reports
                    self.top_k = analysis.top_k
                    self.lens = analysis.lens
            finally:
                self._applying = False
            self._requested = None
            self._publish(analysis, client_seq=seq, client_view=view)
            self.status = "idle"
            self.progress = 1.0

    def _ack(self, view: str, seq: int) -> None:
        """Tell the views that edit (view, seq) is done (computed, superseded or failed)."""
        try:
            self.send({"type": "edit_done", "view": view, "seq": seq})
        except Exception:  # the widget was closed meanwhile
            pass

    def _progress_for(self, seq: int):
        def report(fraction: float, stage: str) -> None:
            if self._is_latest(seq) and (fraction >= 1.0 or abs(fraction - self.progress) >= 0.05):
                self.progress = fraction

        return report

    def _send_details(self, content: dict) -> None:
        req = content.get("req")
        try:
            # a view showing a streamed analysis asks about that one (its cells not read yet come back as -1)
            seq, analysis = self._meta.get("seq", 0), self.analysis
            live = self._sent_objects[-1] if self._sent_objects else None
            if live is not None and content.get("seq") == self._sent.get(id(live)) and content.get("seq") != seq:
                seq, analysis = content["seq"], live
            reply = cell_details(analysis, int(content.get("pos", -1)))
            reply.update(type="details", req=req, seq=seq)
        except (IndexError, TypeError, ValueError) as exc:
            reply = {"type": "details", "req": req, "error": str(exc)}
        self.send(reply)

    # ---- Python API -----------------------------------------------------------------------------
    def wait(self, timeout: float | None = 30.0) -> "ResidWidget":
        """Block until edits sent from the browser have been computed (for scripts and tests)."""
        job = self._last_job
        if job is not None:
            job.result(timeout=timeout)
        return self

    def set_prompt(self, prompt: str) -> Analysis:
        self.prompt = prompt
        return self.analysis

    def save_html(self, path, *, title: str | None = None) -> Path:
        """Write one self-contained offline HTML file (data and code inline; hover and scrubbing work)."""
        from resid_widgets.widgets.export import export_html

        meta, blob = self._encode(self.analysis, seq=self._seq, full=True)
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
        self._jobs.shutdown(wait=False, cancel_futures=True)
        super().close()
